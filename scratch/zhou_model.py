"""The blog network (``scratch.zhou.ZhouCNN``) as the harness sees it: model ``zhou``.

Layers (Keras names, shared with the twin): ``conv2d`` (the blog's Conv3x3, no
bias) -> ``max_pooling2d`` (MaxPool2) -> ``flatten`` -> ``dense`` -> ``softmax`` (the
blog's Softmax class covers the last three). Layouts stay the blog's: conv kernel
``(8, 3, 3)``, activations HWC per image stacked to NHWC, inputs ``(N, 28, 28)``
scaled ``image / 255 - 0.5``. The blog works one image at a time; a batch is a loop
over its images, and its loss is the mean over the batch (Keras).
"""

from __future__ import annotations

import numpy as np

from scratch.blog_api import LAYER_NAMES, backprop_gradients
from scratch.protocol import REQUIRED, Capability, HarnessModel, Tree
from scratch.zhou import IMAGE_SHAPE, softmax_probabilities
from scratch.zhou_cnn import ZhouCNN
from spec.networks import ZHOU


def check_images(images) -> np.ndarray:
    """``images`` as an array if its shape is ``(N, 28, 28)``; else ValueError."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            "Invalid value for argument `images`. Expected shape (N, 28, 28). "
            f"Received images.shape={images.shape}."
        )
    return images


class ZhouModel(HarnessModel):
    """``ZhouCNN`` behind ``scratch.protocol.HarnessModel``.

    ``forward`` -> ``{"conv2d": (N, 26, 26, 8), "max_pooling2d": (N, 13, 13, 8),
    "flatten": (N, 1352), "dense": logits (N, 10), "softmax": (N, 10)}``.
    ``gradients`` -> ``(mean loss, tree)``: ``kernel`` of ``conv2d`` ``(8, 3, 3)``,
    ``kernel``/``bias`` of ``dense`` ``(1352, 10)``/``(10,)`` (batch means), and every
    layer's ``input`` gradient of the batch-mean loss (per image, divided by N):
    ``conv2d`` ``(N, 28, 28)``, ``max_pooling2d`` ``(N, 26, 26, 8)``, ``flatten``
    ``(N, 13, 13, 8)``, ``dense`` ``(N, 1352)``, ``softmax`` ``(N, 10)`` (of the logits).
    Network description: ``spec.networks.ZHOU``.
    """

    spec = ZHOU
    capabilities = REQUIRED | {Capability.TRAIN_STEP, Capability.LOSS_FROM}

    def __init__(self, seed=0, dtype="float64"):
        self.name = "zhou"
        self.net = ZhouCNN(seed=seed, dtype=dtype)
        self.dtype = self.net.dtype

    @property
    def layer_names(self) -> tuple[str, ...]:
        return LAYER_NAMES

    def preprocess(self, images) -> np.ndarray:
        """``(N, 28, 28)`` uint8 -> ``image / 255 - 0.5`` in ``dtype``, as in the blog's cnn.py."""
        images = check_images(images)
        if images.dtype == np.uint8:
            return self.net.scale_table.take(images)  # the same bits as image / 255 - 0.5
        return (images / 255 - 0.5).astype(self.dtype)

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE or len(x) == 0:
            raise ValueError(
                "Invalid value for argument `x`. Expected a non-empty batch of scaled "
                f"images (N, 28, 28). Received x.shape={x.shape}."
            )
        return x

    def _check_labels(self, labels, n: int) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(
                f"Invalid value for argument `labels`. Expected shape ({n},) (one per "
                f"image). Received labels.shape={labels.shape}."
            )
        return labels

    def forward(self, x) -> dict[str, np.ndarray]:
        x = self._check_x(x)
        net = self.net
        outputs = {name: [] for name in LAYER_NAMES}
        for image in x:
            conv = net.conv.forward(image)
            pooled = net.pool.forward(conv)
            probs = net.softmax.forward(pooled)
            outputs["conv2d"].append(conv)
            outputs["max_pooling2d"].append(pooled)
            outputs["flatten"].append(net.softmax.last_input)
            outputs["dense"].append(net.softmax.last_totals)
            outputs["softmax"].append(probs)
        return {name: np.stack(arrays) for name, arrays in outputs.items()}

    def gradients_and_probabilities(self, x, labels, need_input_grad: bool = True):
        """``(mean loss, grads, probabilities (N, 10))`` read from the blog classes' own
        ``backprop`` (:func:`scratch.blog_api.backprop_gradients`, the code that reads a
        user's classes too); nothing is updated. ``softmax`` ``input`` is the logits'
        gradient ``Softmax.backprop`` leaves in ``d_L_d_t``."""
        x = self._check_x(x)
        labels = self._check_labels(labels, len(x))
        net = self.net
        read = backprop_gradients(net.conv, net.pool, net.softmax, x, labels, self.dtype,
                                  logits_gradient="d_L_d_t",
                                  need_input_grad=need_input_grad)  # fmt: skip
        return read.loss, read.grads, read.probabilities

    def gradients(self, x, labels) -> tuple[np.floating, Tree]:
        loss, grads, _ = self.gradients_and_probabilities(x, labels)
        return self.dtype.type(loss), grads  # the blog's math.log losses, rounded once

    def train_step(self, x, labels, learning_rate) -> tuple[float, int]:
        """One SGD step ``w -= lr * g`` on the batch-mean loss; ``(loss, correct)`` before it.

        A batch of one runs the blog's own ``train`` (the same arithmetic).
        """
        x = self._check_x(x)
        labels = self._check_labels(labels, len(x))
        lr = self.dtype.type(learning_rate)
        if len(x) == 1:
            return self.net.train_scaled(x[0], labels[0], lr)
        loss, grads, probs = self.gradients_and_probabilities(x, labels, need_input_grad=False)
        for layer, weights in self.params().items():
            for weight, array in weights.items():
                np.subtract(array, lr * grads[layer][weight], out=array)
        return loss, int(np.count_nonzero(probs.argmax(axis=1) == labels))

    def loss_from(self, layer_name: str, h, labels) -> float:
        """Mean loss when ``h`` (N, ...) is fed as the input of ``layer_name`` (for finite
        differences of every layer's input gradient)."""
        if layer_name not in LAYER_NAMES:
            raise ValueError(
                f"Invalid value for argument `layer_name`. Expected one of {LAYER_NAMES}. "
                f"Received layer_name={layer_name!r}."
            )
        h = np.asarray(h, dtype=self.dtype)
        labels = self._check_labels(labels, len(h))
        start = LAYER_NAMES.index(layer_name)
        net = self.net
        losses = []
        for item, label in zip(h, labels, strict=True):
            if start <= 0:
                item = net.conv.forward(item)
            if start <= 1:
                item = net.pool.forward(item)
            if start <= 3:  # flatten and dense: the blog's Softmax flattens any shape
                probs = net.softmax.forward(item)
            else:
                probs = softmax_probabilities(item)
            losses.append(-np.log(probs[label]))
        return float(np.mean(losses))

    def params(self) -> Tree:
        return {
            "conv2d": {"kernel": self.net.conv.filters},
            "dense": {"kernel": self.net.softmax.weights, "bias": self.net.softmax.biases},
        }


def build_zhou(seed=0, dtype="float64") -> ZhouModel:
    """Model ``zhou``: the blog's Conv3x3(8) -> MaxPool2 -> Softmax(1352, 10)."""
    return ZhouModel(seed=seed, dtype=dtype)
