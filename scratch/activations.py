"""Elementwise activations as layers, NHWC or any shape (numpy only): sigmoid, tanh and
LeakyReLU (ReLU and Softmax live in ``scratch.layers``).

Keras facts mirrored here (measured, TensorFlow 2.21 / Keras 3.15):
- ``LeakyReLU(negative_slope=0.3)``: TensorFlow's LeakyRelu op takes its slope as a
  float32 attribute, so even in float64 the slope is ``float32(0.3) =
  0.30000001192092896``; the gradient at exactly 0 is the slope (``x > 0`` selects 1).
- sigmoid'(x) = s (1 - s) and tanh'(x) = 1 - t^2, from the outputs.
"""

from __future__ import annotations

import numpy as np

from scratch.layer_base import Layer, invalid_argument


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""

    base_name = "sigmoid"

    def _forward(self, x):
        e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
        out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(self.dtype, copy=False)
        self._keep(x.shape[0], out)
        return out

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        s = self._cache
        return dout * s * (1 - s)


class Tanh(Layer):
    """``tanh(x)``; backward ``dout * (1 - tanh(x)^2)``."""

    base_name = "tanh"

    def _forward(self, x):
        out = np.tanh(x)
        self._keep(x.shape[0], out)
        return out

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        t = self._cache
        return dout * (1 - t * t)


class LeakyReLU(Layer):
    """``x`` where ``x > 0``, else ``slope * x``, with Keras's float32-rounded slope.

    Parameters
    ----------
    negative_slope : float >= 0, default 0.3 (Keras's default)
    name : str, optional
    """

    base_name = "leaky_re_lu"

    def __init__(self, negative_slope=0.3, name=None):
        super().__init__(name)
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise invalid_argument("negative_slope", "a float >= 0", negative_slope)
        if not negative_slope >= 0:
            raise invalid_argument("negative_slope", "a float >= 0", negative_slope)
        self.negative_slope = float(negative_slope)
        # TensorFlow's op attribute is float32 (see the module docstring).
        self._slope = float(np.float32(self.negative_slope))

    def _forward(self, x):
        positive = x > 0
        self._keep(x.shape[0], positive)
        return np.where(positive, x, x * self.dtype.type(self._slope))

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        return np.where(self._cache, dout, dout * self.dtype.type(self._slope))
