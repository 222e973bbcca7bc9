"""Gradients read from the blog API's own ``backprop``: one path for model ``zhou`` and users.

The blog's classes ("CNNs, Part 2", Victor Zhou) have no gradient method: each layer's
``backprop(d_L_d_out, learn_rate)`` computes its weight gradient, steps its weights
``w -= learn_rate * gradient`` and returns the gradient of its input. That method is what
users write and train with, so the harness reads every gradient from it, for the shipped
blog network (``scratch.zhou``, model ``zhou``) and for a user's own classes
(``parity check --api blog``) alike, with :func:`read_backprop`:

1. ``backprop(d_L_d_out, learn_rate=-1)`` on the real weights: the input gradient it
   returns. The blog takes it with the weights it holds and only then steps them, so the
   learning rate does not change it; a ``backprop`` that steps first returns the gradient
   at the stepped weights, which the gradients check then reports (with ``learn_rate = 0``
   the step would be a no-op and the order invisible outside training).
2. The weights set to zero, ``backprop(d_L_d_out, learn_rate=-1)`` again: the update
   leaves ``0 - (-1) * g = g`` in the weights, the gradient bit for bit (``-1 * g`` and
   ``0 + g`` are exact). An update written ``w += learn_rate * g`` leaves ``-g``.

The weights are restored bit for bit afterwards. Batch gradients are means over the
images (Keras's loss is the batch mean), one image at a time as the blog trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scratch.protocol import Tree
from scratch.user_api import ApiError, source_of
from spec.networks import ZHOU

LAYER_NAMES = ZHOU.native_names  # ("conv2d", "max_pooling2d", "flatten", "dense", "softmax")
NUM_FILTERS = 8
NUM_CLASSES = 10
FLAT = 13 * 13 * NUM_FILTERS  # 1352: the pooled (13, 13, 8) volume, flattened
READ_LEARN_RATE = -1  # both reads of read_backprop (see the module docstring)
# (layer, attribute, shape): the blog API's weights, under the Keras layer they belong to.
WEIGHTS = (
    ("conv2d", "filters", (NUM_FILTERS, 3, 3)),
    ("dense", "weights", (FLAT, NUM_CLASSES)),
    ("dense", "biases", (NUM_CLASSES,)),
)
KERAS_WEIGHT = {"filters": "kernel", "weights": "kernel", "biases": "bias"}


def read_backprop(layer, attributes: tuple[str, ...], d_L_d_out) -> tuple:
    """``(input gradient or None, [gradient of each weight attribute])`` from
    ``layer.backprop(d_L_d_out, learn_rate)``, the weights restored bit-exactly.

    Parameters
    ----------
    layer : a blog-API layer with weights (``Conv3x3``: ``filters``; ``Softmax``:
        ``weights``, ``biases``), after its ``forward``.
    attributes : names of the layer's weight arrays.
    d_L_d_out : the upstream gradient, in the shape of the layer's last output.

    Two calls, both with ``learn_rate = -1`` (:data:`READ_LEARN_RATE`): on the real
    weights for the input gradient (a copy; None if ``backprop`` returns None), then on
    zeroed weights, which the update leaves equal to the gradient exactly (in the dtype
    the weights keep after a step). A ``backprop`` that rebinds its weights
    (``self.w = self.w - ...``) instead of updating them in place is read as well.
    """
    live = {a: getattr(layer, a) for a in attributes}
    saved = {a: array.copy() for a, array in live.items()}
    try:
        d_input = layer.backprop(d_L_d_out, READ_LEARN_RATE)
        if d_input is not None:
            d_input = np.array(d_input, copy=True)
        for attribute, array in live.items():
            array[...] = 0
            setattr(layer, attribute, array)
        layer.backprop(d_L_d_out, READ_LEARN_RATE)
        grads = [np.array(getattr(layer, a), copy=True) for a in attributes]
    finally:
        for attribute, array in live.items():
            array[...] = saved[attribute]
            setattr(layer, attribute, array)
    return d_input, grads


@dataclass(frozen=True)
class BlogGradients:
    """What :func:`backprop_gradients` read for a batch of N images.

    ``grads``: ``conv2d`` ``kernel`` (8, 3, 3) and ``dense`` ``kernel`` (1352, 10), ``bias``
    (10,) (batch means, in the blog's layouts); every layer's ``input`` gradient of the
    batch-mean loss (per image, divided by N): ``max_pooling2d`` (N, 26, 26, 8), ``flatten``
    (N, 13, 13, 8), ``dense`` (N, 1352), ``conv2d`` (N, 28, 28) when ``Conv3x3.backprop``
    returned it, ``softmax`` (N, 10) (of the logits) when the model reads it.
    """

    loss: float  # mean over the batch of -ln p[label]
    grads: Tree
    probabilities: np.ndarray  # (N, 10)
    image_gradient: bool  # Conv3x3.backprop returned an input gradient (not None)


def backprop_gradients(conv, pool, softmax, x, labels, dtype, *, logits_gradient=None,
                       need_input_grad: bool = True) -> BlogGradients:  # fmt: skip
    """Loss, gradients and probabilities of the batch ``x`` (N, 28, 28), each read from the
    layers' own ``backprop`` (:func:`read_backprop`); the weights are left as they were.

    ``logits_gradient``: the name of the ``Softmax`` attribute its ``backprop`` leaves the
    logits' gradient in (the blog computes it, ``d_L_d_t``, but returns only the input's);
    None when the class does not keep it. ``need_input_grad=False`` leaves out
    ``conv2d``'s input gradient. Raises ValueError when a layer past the first returns
    None, or ``Conv3x3.backprop`` returns None for some images only.
    """
    dtype = np.dtype(dtype)
    per_image = [_one_image(conv, pool, softmax, image, int(label), dtype, logits_gradient)
                 for image, label in zip(x, labels, strict=True)]  # fmt: skip
    n = len(per_image)
    tree: Tree = {name: {} for name in LAYER_NAMES}
    for layer, attribute, _ in WEIGHTS:
        total = _sum(g[attribute] for g in per_image)
        tree[layer][KERAS_WEIGHT[attribute]] = total / total.dtype.type(n)
    for layer, key in (("max_pooling2d", "conv"), ("flatten", "pooled"), ("softmax", "logits")):
        if per_image[0][key] is not None:
            stacked = np.stack([g[key] for g in per_image])
            tree[layer]["input"] = stacked / stacked.dtype.type(n)
    tree["dense"]["input"] = tree["flatten"]["input"].reshape(n, -1)
    returned = [g["image"] is not None for g in per_image]
    if any(returned) and not all(returned):
        raise ApiError(f"{type(conv).__name__}.backprop returned None for some images and an "
                       "array for others.", source_of(conv, "backprop"))  # fmt: skip
    if all(returned) and need_input_grad:
        stacked = np.stack([g["image"] for g in per_image])
        tree["conv2d"]["input"] = stacked / stacked.dtype.type(n)
    return BlogGradients(
        loss=float(np.mean([g["loss"] for g in per_image])), grads=tree,
        probabilities=np.stack([g["probs"] for g in per_image]), image_gradient=all(returned),
    )  # fmt: skip


def _one_image(conv, pool, softmax, image, label: int, dtype, logits_gradient) -> dict:
    pooled = pool.forward(conv.forward(image))
    probs = np.array(softmax.forward(pooled), copy=True)
    gradient = np.zeros(NUM_CLASSES, dtype=dtype)
    gradient[label] = -1 / probs[label]  # the blog: d(-ln p_label) / d p_label
    d_pooled, (d_w, d_b) = read_backprop(softmax, ("weights", "biases"), gradient)
    d_pooled = _returned(d_pooled, softmax)
    logits = None
    if logits_gradient is not None:
        logits = np.array(getattr(softmax, logits_gradient), copy=True)
    d_conv = _returned(pool.backprop(d_pooled), pool)
    d_image, (d_filters,) = read_backprop(conv, ("filters",), d_conv)
    return dict(
        loss=-math.log(probs[label]), probs=probs, filters=d_filters, weights=d_w, biases=d_b,
        image=d_image, conv=d_conv, pooled=d_pooled, logits=logits,
    )  # fmt: skip


def backprop_step(conv, pool, softmax, image, label: int, learn_rate, dtype) -> tuple[float, int]:
    """The blog's training step on one image through the layers' own ``backprop``:
    forward, ``Softmax.backprop(gradient, lr)``, ``MaxPool2.backprop``,
    ``Conv3x3.backprop(gradient, lr)``; returns ``(loss, 1 if correct else 0)`` before it."""
    probs = softmax.forward(pool.forward(conv.forward(image)))
    loss, correct = -math.log(probs[label]), int(np.argmax(probs) == label)
    gradient = np.zeros(NUM_CLASSES, dtype=dtype)
    gradient[label] = -1 / probs[label]
    gradient = softmax.backprop(gradient, learn_rate)
    conv.backprop(pool.backprop(gradient), learn_rate)
    return loss, correct


def _returned(gradient, layer) -> np.ndarray:
    """A layer's returned input gradient (a copy); None is an error past the first layer."""
    if gradient is None:
        raise ApiError(
            f"{type(layer).__name__}.backprop returned None; the blog API "
            "returns the gradient of its input (only the first layer may not).",
            source_of(layer, "backprop"),
        )
    return np.array(gradient, copy=True)


def _sum(arrays) -> np.ndarray:
    arrays = iter(arrays)
    total = np.array(next(arrays), copy=True)
    for array in arrays:
        total += array
    return total
