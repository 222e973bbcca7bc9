"""A user's own blog-style classes as the harness sees them (``parity check --api blog``).

The network is the blog's: ``Conv3x3(8)`` -> ``MaxPool2()`` -> ``Softmax(13 * 13 * 8, 10)``,
one image at a time, inputs ``image / 255 - 0.5``, loss ``-ln p[label]`` with the initial
gradient ``-1 / p[label]`` at the label. Layer names, layouts and the Keras twin are those
of model ``zhou`` (its network description ``spec.networks.ZHOU``); the report names the
user's classes beside them (:data:`USER_CLASSES`).

Gradients come from the user's OWN ``backprop(d_L_d_out, learn_rate)``, read exactly
(:func:`read_backprop`): the blog's ``backprop`` takes the input gradient with the weights
it holds, then steps ``weights -= learn_rate * gradient``. So a first call with
``learn_rate = 0`` gives the input gradient at the current weights; a second call on
weights set to zero with ``learn_rate = -1`` leaves ``0 - (-1) * g = g`` in the weights,
the weight gradient bit for bit. The weights are restored bit-exactly after both. A
``backprop`` that returns None (the blog's first layer) makes that layer's ``input``
gradient NOT_PROVIDED (:meth:`UserBlogModel.not_provided`), and so is the gradient of
the logits (``softmax`` ``input``): the blog's ``Softmax`` is dense and softmax in one
class, its backprop returns the gradient of its input only.

Nothing is cast: arrays are reported in the dtype the user's code returned (the blog's
``np.zeros`` buffers are float64 even for float32 inputs: a dtype FAIL, which is honest).
"""

from __future__ import annotations

import math

import numpy as np

from scratch.protocol import HarnessModel, Tree, check_dtype
from scratch.user_code import UserCode, load
from scratch.zhou import NUM_CLASSES, NUM_FILTERS
from scratch.zhou_model import LAYER_NAMES, check_images
from spec.networks import ZHOU

POOLED = (13, 13, NUM_FILTERS)
FLAT = 13 * 13 * NUM_FILTERS  # 1352
USER_CLASSES = {
    "conv2d": "Conv3x3", "max_pooling2d": "MaxPool2", "flatten": "Softmax",
    "dense": "Softmax", "softmax": "Softmax",
}  # fmt: skip
# (layer, attribute, shape): the blog API's weights, each checked on construction.
WEIGHTS = (
    ("conv2d", "filters", (NUM_FILTERS, 3, 3)),
    ("dense", "weights", (FLAT, NUM_CLASSES)),
    ("dense", "biases", (NUM_CLASSES,)),
)
KERAS_WEIGHT = {"filters": "kernel", "weights": "kernel", "biases": "bias"}
LOGITS_GRADIENT = (
    "the blog's Softmax is dense and softmax in one class: its backprop returns no gradient "
    "of the logits (that gradient equals the biases' gradient, compared as dense/bias)."
)


class UserBlogModel(HarnessModel):
    """The user's ``Conv3x3``, ``MaxPool2`` and ``Softmax`` behind ``HarnessModel``.

    Initial weights are the blog's distribution drawn from ``seed`` exactly as model
    ``zhou`` draws them (filters N(0, 1)/9, weights N(0, 1)/1352, biases 0), in ``dtype``,
    so runs repeat and start where ``parity run`` does; the user's own unseeded draws are
    replaced.
    """

    spec = ZHOU  # the blog's network: its layouts and its twin

    def __init__(self, classes: dict[str, type], seed: int = 0, dtype="float64", name="user"):
        self.name = name
        self.dtype = check_dtype(dtype)
        self.conv = classes["Conv3x3"](NUM_FILTERS)
        self.pool = classes["MaxPool2"]()
        self.softmax = classes["Softmax"](FLAT, NUM_CLASSES)
        self._owners = {"filters": self.conv, "weights": self.softmax, "biases": self.softmax}
        self._check_weights()
        rng = np.random.default_rng(seed)  # zhou's order: filters, then softmax weights
        self.conv.filters = (rng.standard_normal((NUM_FILTERS, 3, 3)) / 9).astype(self.dtype)
        self.softmax.weights = (rng.standard_normal((FLAT, NUM_CLASSES)) / FLAT).astype(self.dtype)
        self.softmax.biases = np.zeros(NUM_CLASSES, dtype=self.dtype)
        self._not_provided: dict[tuple[str, str], str] = {("softmax", "input"): LOGITS_GRADIENT}

    def _check_weights(self) -> None:
        for _, attribute, shape in WEIGHTS:
            owner = self._owners[attribute]
            cls = type(owner).__name__
            array = getattr(owner, attribute, None)
            if not isinstance(array, np.ndarray):
                raise ValueError(
                    f"{cls} has no array attribute `{attribute}` after construction; the "
                    f"blog API keeps its weights in `{attribute}` {shape}. Received "
                    f"{type(array).__name__}."
                )
            if array.shape != shape:
                raise ValueError(
                    f"{cls}.{attribute}: expected shape {shape} (the blog API), received "
                    f"{array.shape}."
                )

    @property
    def layer_names(self) -> tuple[str, ...]:
        return LAYER_NAMES

    def not_provided(self) -> dict[tuple[str, str], str]:
        """Quantities the user's code did not return, found while taking gradients."""
        return dict(self._not_provided)

    def preprocess(self, images) -> np.ndarray:
        """``(N, 28, 28)`` uint8 -> ``image / 255 - 0.5`` in ``dtype`` (the blog's cnn.py)."""
        images = check_images(images)
        return (images / 255 - 0.5).astype(self.dtype)

    def params(self) -> Tree:
        return {
            "conv2d": {"kernel": self.conv.filters},
            "dense": {"kernel": self.softmax.weights, "bias": self.softmax.biases},
        }

    def _forward_one(self, image) -> tuple:
        conv = self.conv.forward(image)
        pooled = self.pool.forward(conv)
        probs = self.softmax.forward(pooled)
        return conv, pooled, probs

    def forward(self, x) -> dict[str, np.ndarray]:
        """Every layer's output, ``flatten`` the pool output in C order (the blog's Softmax
        flattens so) and ``dense`` the logits the blog's ``Softmax.forward`` caches in
        ``last_totals``."""
        outputs = {name: [] for name in LAYER_NAMES}
        for image in np.asarray(x):
            conv, pooled, probs = (np.array(a, copy=True) for a in self._forward_one(image))
            outputs["conv2d"].append(conv)
            outputs["max_pooling2d"].append(pooled)
            outputs["flatten"].append(pooled.reshape(-1))
            outputs["dense"].append(np.array(_cached(self.softmax, "last_totals"), copy=True))
            outputs["softmax"].append(probs)
        return {name: np.stack(arrays) for name, arrays in outputs.items()}

    def _loss_gradient(self, probs, label: int) -> np.ndarray:
        gradient = np.zeros(NUM_CLASSES, dtype=self.dtype)
        gradient[label] = -1 / probs[label]  # the blog: d(-ln p_label) / d p_label
        return gradient

    def _gradients_one(self, image, label: int) -> tuple[float, dict]:
        _, _, probs = self._forward_one(image)
        probs = np.array(probs, copy=True)
        loss = -math.log(probs[label])
        d_pooled, (d_w, d_b) = read_backprop(self.softmax, ("weights", "biases"),
                                             self._loss_gradient(probs, label))  # fmt: skip
        d_conv = _returned(self.pool.backprop(_returned(d_pooled, self.softmax)), self.pool)
        d_image, (d_filters,) = read_backprop(self.conv, ("filters",), d_conv)
        return loss, dict(
            filters=d_filters, weights=d_w, biases=d_b, image=d_image, conv=d_conv,
            pooled=d_pooled, probs=probs,
        )  # fmt: skip

    def gradients_and_probabilities(self, x, labels, need_input_grad: bool = True):
        """``(mean loss, grads, probabilities (N, 10))``; nothing is updated.

        Batch means, as model ``zhou``: weight gradients summed over the images and divided
        by N; each layer's ``input`` gradient per image divided by N.
        """
        x, labels = np.asarray(x), np.asarray(labels)
        per_image = [
            self._gradients_one(image, int(label)) for image, label in zip(x, labels, strict=True)
        ]
        losses = [loss for loss, _ in per_image]
        grads = [g for _, g in per_image]
        probs = np.stack([g["probs"] for g in grads])
        n = len(x)
        tree: Tree = {name: {} for name in LAYER_NAMES}
        for layer, attribute, _ in WEIGHTS:
            total = _sum(g[attribute] for g in grads)
            tree[layer][KERAS_WEIGHT[attribute]] = total / total.dtype.type(n)
        inputs = {"max_pooling2d": "conv", "flatten": "pooled"}
        for layer, key in inputs.items():
            stacked = np.stack([g[key] for g in grads])
            tree[layer]["input"] = stacked / stacked.dtype.type(n)
        tree["dense"]["input"] = tree["flatten"]["input"].reshape(n, -1)
        self._conv_input(tree, [g["image"] for g in grads], n, need_input_grad)
        return float(np.mean(losses)), tree, probs

    def _conv_input(self, tree: Tree, returned: list, n: int, need: bool) -> None:
        missing = [r is None for r in returned]
        if all(missing):
            self._not_provided[("conv2d", "input")] = (
                "Conv3x3.backprop returned None (the blog's first layer computes no gradient "
                "of its image)."
            )
            return
        if any(missing):
            raise ValueError("Conv3x3.backprop returned None for some images and an array for "
                             "others.")  # fmt: skip
        self._not_provided.pop(("conv2d", "input"), None)
        if need:
            stacked = np.stack(returned)
            tree["conv2d"]["input"] = stacked / stacked.dtype.type(n)

    def gradients(self, x, labels) -> tuple[np.floating, Tree]:
        loss, grads, _ = self.gradients_and_probabilities(x, labels)
        return self.dtype.type(loss), grads

    def train_step(self, x, labels, learning_rate) -> tuple[float, int]:
        """One SGD step; ``(loss, correct)`` before it.

        A batch of one runs the blog's training step through the user's own updates:
        forward, ``Softmax.backprop(gradient, lr)``, ``MaxPool2.backprop``,
        ``Conv3x3.backprop(gradient, lr)``. A larger batch (the blog has none) steps the
        weights by the mean of the gradients read from the user's ``backprop``.
        """
        x, labels = np.asarray(x), np.asarray(labels)
        lr = self.dtype.type(learning_rate)
        if len(x) == 1:
            label = int(labels[0])
            _, _, probs = self._forward_one(x[0])
            loss, correct = -math.log(probs[label]), int(np.argmax(probs) == label)
            gradient = self.softmax.backprop(self._loss_gradient(probs, label), lr)
            gradient = self.pool.backprop(gradient)
            self.conv.backprop(gradient, lr)
            return loss, correct
        loss, grads, probs = self.gradients_and_probabilities(x, labels, need_input_grad=False)
        for layer, weights in self.params().items():
            for weight, array in weights.items():
                np.subtract(array, lr * grads[layer][weight], out=array)
        return loss, int(np.count_nonzero(probs.argmax(axis=1) == labels))


def read_backprop(layer, attributes: tuple[str, ...], d_L_d_out) -> tuple:
    """``(input gradient, [gradient of each weight attribute])`` from the user's
    ``layer.backprop(d_L_d_out, learn_rate)``, the weights restored bit-exactly.

    1. ``learn_rate = 0`` on the real weights: the input gradient at the current weights
       (the blog computes it before its update).
    2. Weights set to zero, ``learn_rate = -1``: the update ``w -= -1 * g`` leaves exactly
       ``g`` in ``w`` (an update written ``w += lr * g`` leaves ``-g``: gradient ascent
       shows as a negated gradient). The update's own arithmetic, so ``g`` is in the
       dtype the weights keep after a step.
    A ``backprop`` that rebinds its weights (``self.w = self.w - ...``) is handled too.
    """
    live = {a: getattr(layer, a) for a in attributes}
    saved = {a: array.copy() for a, array in live.items()}
    try:
        d_input = layer.backprop(d_L_d_out, 0)
        if d_input is not None:
            d_input = np.array(d_input, copy=True)
        for attribute, array in live.items():
            array[...] = 0
            setattr(layer, attribute, array)
        layer.backprop(d_L_d_out, -1)
        grads = [np.array(getattr(layer, a), copy=True) for a in attributes]
    finally:
        for attribute, array in live.items():
            array[...] = saved[attribute]
            setattr(layer, attribute, array)
    return d_input, grads


def _returned(gradient, layer) -> np.ndarray:
    """A layer's returned input gradient (a copy); None is an error past the first layer."""
    if gradient is None:
        raise ValueError(
            f"{type(layer).__name__}.backprop returned None; the blog API "
            "returns the gradient of its input (only the first layer may not)."
        )
    return np.array(gradient, copy=True)


def _cached(layer, attribute: str):
    value = getattr(layer, attribute, None)
    if value is None:
        raise ValueError(
            f"{type(layer).__name__}.forward did not set `{attribute}`; the blog API caches "
            f"the logits there (the harness compares them as the `dense` output)."
        )
    return value


def _sum(arrays) -> np.ndarray:
    arrays = iter(arrays)
    total = np.array(next(arrays), copy=True)
    for array in arrays:
        total += array
    return total


def build_user_blog(code: UserCode, seed: int = 0, dtype="float64") -> UserBlogModel:
    """The user's blog classes, loaded from ``code.path``, as a ``HarnessModel``."""
    return UserBlogModel(load(code), seed=seed, dtype=dtype, name=code.name)
