"""The blog's whole network, its cnn.py: ``ZhouCNN`` (Conv3x3(8) -> MaxPool2 -> Softmax).

Built from the blog's layers (``scratch.zhou``); ``forward``, ``train`` and ``gradients``
take a raw image and scale it ``image / 255 - 0.5`` as the blog does, their ``_scaled``
forms an image already scaled. The harness adapter is ``scratch.zhou_model``.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from scratch.protocol import check_dtype
from scratch.zhou import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    NUM_FILTERS,
    Conv3x3,
    MaxPool2,
    Softmax,
    check_finite,
    check_rank,
)


class ZhouCNN:
    """The blog's whole network (its cnn.py): Conv3x3(8) -> MaxPool2 -> Softmax(1352, 10).

    Parameters
    ----------
    seed : int
        Seed of the one Generator that draws the conv filters, then the softmax weights.
    dtype : float32 or float64

    ``forward(image, label)`` and ``train(image, label, lr)`` take a raw 2-D image
    (uint8 (28, 28), or any real array) and scale it ``image / 255 - 0.5`` first,
    as the blog does.
    """

    def __init__(self, seed=0, dtype="float64"):
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        self.conv = Conv3x3(NUM_FILTERS, rng, self.dtype)  # 28x28 -> 26x26x8
        self.pool = MaxPool2()  # 26x26x8 -> 13x13x8
        self.softmax = Softmax(13 * 13 * NUM_FILTERS, NUM_CLASSES, rng, self.dtype)  # -> 10
        # image / 255 - 0.5 for every uint8 value: a table lookup gives the same bits.
        self.scale_table = (np.arange(256) / 255 - 0.5).astype(self.dtype)

    def scale(self, image) -> np.ndarray:
        """``image / 255 - 0.5`` in the model's dtype, for one 2-D image ``(28, 28)``."""
        image = np.asarray(image)
        if image.shape != IMAGE_SHAPE:
            check_rank(image, 2, "(H, W)", "image")
            raise ValueError(
                f"Invalid value for argument `image`. Expected shape {IMAGE_SHAPE} "
                f"(the network's input). Received shape {image.shape}."
            )
        if image.dtype == np.uint8:
            return self.scale_table.take(image)
        check_finite(image, "image")
        return (image / 255 - 0.5).astype(self.dtype, copy=False)

    def _check_label(self, label) -> int:
        try:
            index = operator.index(label)  # ints and numpy integers; not floats or bools
        except TypeError:
            index = None
        if index is None or isinstance(label, bool) or not 0 <= index < NUM_CLASSES:
            raise ValueError(
                "Invalid value for argument `label`. Expected an integer in "
                f"[0, {NUM_CLASSES - 1}]. Received label={label!r}."
            )
        return index

    def _forward(self, x, label: int):
        # x: a checked, scaled (28, 28) image; label: a checked class.
        out = self.conv._forward(x)
        out = self.pool.forward(out)
        out = self.softmax.forward(out)
        loss = -math.log(out[label])
        acc = 1 if out.argmax() == label else 0
        return out, loss, acc

    def forward_scaled(self, x, label):
        """``forward`` on an already scaled image ``x`` (28, 28)."""
        label = self._check_label(label)
        return self._forward(self.conv.check_input(x), label)

    def forward(self, image, label):
        """Returns ``(probabilities (10,), cross-entropy loss, 1 if correct else 0)``."""
        label = self._check_label(label)
        return self._forward(self.scale(image), label)

    def _loss_gradient(self, label: int) -> np.ndarray:
        # The blog: the gradient of L = -ln(p_label) is -1 / p_label at the label, 0 elsewhere.
        gradient = np.zeros(NUM_CLASSES, dtype=self.dtype)
        gradient[label] = -1 / self.softmax.last_output[label]
        return gradient

    def _train(self, x, label: int, lr):
        _, loss, acc = self._forward(x, label)
        gradient = self.softmax.backprop(self._loss_gradient(label), lr)
        gradient = self.pool.backprop(gradient)
        # The blog discards the conv's input gradient; skip computing it.
        self.conv.backprop(gradient, lr, input_grad=False)
        return loss, acc

    def train_scaled(self, x, label, lr=0.005):
        """``train`` on an already scaled image ``x`` (28, 28)."""
        label = self._check_label(label)
        return self._train(self.conv.check_input(x), label, lr)

    def train(self, image, label, lr=0.005):
        """One SGD step of the blog on one image; returns ``(loss, acc)`` before the step."""
        label = self._check_label(label)
        return self._train(self.scale(image), label, lr)

    def gradients_scaled(self, x, label):
        """``gradients`` on an already scaled image ``x`` (28, 28)."""
        _, loss, _ = self.forward_scaled(x, label)
        d_pool_output = self.softmax.backward(self._loss_gradient(label))
        d_conv_output = self.pool.backward(d_pool_output)
        d_input = self.conv.backward(d_conv_output)
        grads = {
            "filters": self.conv.d_L_d_filters,  # (8, 3, 3)
            "weights": self.softmax.d_L_d_w,  # (1352, 10)
            "biases": self.softmax.d_L_d_b,  # (10,)
            "input": d_input,  # (28, 28), of the scaled image
            "conv_output": d_conv_output,  # (26, 26, 8)
            "pool_output": d_pool_output,  # (13, 13, 8)
            "totals": self.softmax.d_L_d_t,  # (10,), of the logits
        }
        return loss, grads

    def gradients(self, image, label):
        """Loss and gradients of one image, without updating any weight.

        Returns ``(loss, grads)``; ``grads`` maps ``filters`` (8, 3, 3), ``weights``
        (1352, 10), ``biases`` (10,), ``input`` (28, 28) (of the scaled image),
        ``conv_output`` (26, 26, 8), ``pool_output`` (13, 13, 8) and ``totals`` (10,).
        """
        return self.gradients_scaled(self.scale(image), label)
