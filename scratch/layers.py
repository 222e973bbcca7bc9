"""General batch-first NHWC layers with hand-derived backward passes (numpy only).

Keras layout and names: a convolution kernel is ``(kh, kw, c_in, c_out)``, a dense
kernel ``(in_features, units)``, biases ``(c_out,)`` / ``(units,)``; weight names
``kernel`` and ``bias``; default layer names (``conv2d``, ``max_pooling2d``, ``dense``,
``flatten``, ``re_lu``, ``softmax``) are given by ``Sequential`` when none is passed.

Every layer has the same life cycle:

* ``build(input_shape, rng, dtype)`` fixes the per-example input shape (no batch
  axis), creates the weights (glorot uniform kernels, zero biases, drawn from the
  seeded ``numpy.random.Generator``) and returns the per-example output shape. An
  unbuilt layer builds itself on its first ``forward`` (seed 0, the input's dtype).
* ``forward(x)`` validates ``x`` (rank, shape, dtype, finite values), computes the
  output and keeps what ``backward`` needs.
* ``backward(dout)`` returns ``dx`` (the loss gradient of the input) and fills
  ``grads`` with the gradient of every weight, keyed like ``params``. Each call
  binds fresh arrays: gradients are overwritten, never accumulated.

No Python loop over pixels, windows or filters: convolutions gather their patches
with precomputed indices (built once from ``sliding_window_view`` over an index
image) and use one matrix product; the adjoint gather (the input gradient) is a
``bincount`` scatter over the same indices.

This module holds the layers: ``Conv2D``, ``Dense``, ``Flatten``, ``ReLU``, ``Softmax``.
Their base class and argument checks are in ``scratch.layer_base``, the window geometry
and the gather/scatter core in ``scratch.windows``; the pools, padding, activations,
normalization and dropout each have their own module.
"""

from __future__ import annotations

import math

import numpy as np

from scratch.layer_base import (
    Layer,
    glorot_uniform,
    int_pair,
    invalid_argument,
    positive_int,
)
from scratch.windows import gather, same_padding, scatter_add, window_indices

# ----------------------------------------------------------------------------------
# Layers.


class Conv2D(Layer):
    """2-D cross-correlation, NHWC, Keras layout and TensorFlow's padding rule.

    Parameters
    ----------
    filters : int
        Output channels ``c_out``.
    kernel_size : int or (int, int)
        ``(kh, kw)``.
    strides : int or (int, int), default 1
    padding : {"valid", "same"}, default "valid"
        "same" pads like TensorFlow: total = max((ceil(in/s) - 1)*s + k - in, 0),
        total // 2 at top/left and the rest at bottom/right.
    use_bias : bool, default True
    name : str, optional

    Shapes: input ``(N, H, W, c_in)``; kernel ``(kh, kw, c_in, c_out)``; bias
    ``(c_out,)``; output ``(N, oh, ow, c_out)``.
    """

    base_name = "conv2d"
    input_rank = 3

    def __init__(self, filters, kernel_size, strides=1, padding="valid", use_bias=True, name=None):
        super().__init__(name)
        self.filters = positive_int("filters", filters)
        self.kernel_size = int_pair("kernel_size", kernel_size)
        self.strides = int_pair("strides", strides)
        if padding not in ("valid", "same"):
            raise invalid_argument("padding", "one of ('valid', 'same')", padding)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise invalid_argument("use_bias", "a bool", use_bias)
        self.padding, self.use_bias = padding, bool(use_bias)

    def _build(self, shape, rng):
        height, width, channels = shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "same":
            oh, top, bottom = same_padding(height, kh, sh)
            ow, left, right = same_padding(width, kw, sw)
        else:
            if kh > height or kw > width:
                raise invalid_argument(
                    "kernel_size",
                    f"a kernel no larger than the padded input {(height, width)} "
                    f"(padding='valid', layer `{self.label}`)",
                    self.kernel_size,
                )
            oh, ow, top, bottom, left, right = (
                (height - kh) // sh + 1,
                (width - kw) // sw + 1,
                0,
                0,
                0,
                0,
            )
        self._pads = ((0, 0), (top, bottom), (left, right), (0, 0))
        self._padded = (height + top + bottom, width + left + right, channels)
        self._indices = window_indices(*self._padded, (kh, kw), (sh, sw), (oh, ow))
        fan_in, fan_out = kh * kw * channels, kh * kw * self.filters
        self.params = {
            "kernel": glorot_uniform(
                rng, (kh, kw, channels, self.filters), fan_in, fan_out, self.dtype
            )
        }
        if self.use_bias:
            self.params["bias"] = np.zeros(self.filters, dtype=self.dtype)
        return (oh, ow, self.filters)

    def _pad(self, x):
        if self._padded == self.input_shape:
            return x
        (_, _), (top, _), (left, _), _ = self._pads
        height, width, _ = self.input_shape
        padded = np.zeros((x.shape[0],) + self._padded, dtype=x.dtype)  # np.pad is slower
        padded[:, top : top + height, left : left + width] = x
        return padded

    def _forward(self, x):
        n, (oh, ow, f) = x.shape[0], self.output_shape
        cols = gather(self._pad(x), self._indices).reshape(n * oh * ow, -1)  # (N*oh*ow, kh*kw*c)
        out = cols @ self.params["kernel"].reshape(-1, f)
        if self.use_bias:
            out += self.params["bias"]
        self._keep(n, cols)
        return out.reshape(n, oh, ow, f)

    def _backward(self, dout, need_dx=True):
        cols, kernel = self._cache, self.params["kernel"]
        d2 = dout.reshape(-1, self.filters)  # (N*oh*ow, c_out)
        grads = {"kernel": (cols.T @ d2).reshape(kernel.shape)}
        if self.use_bias:
            grads["bias"] = d2.sum(axis=0)
        self.grads = grads
        if not need_dx:
            return None
        n = dout.shape[0]
        dcols = (d2 @ kernel.reshape(-1, self.filters).T).reshape((n,) + self._indices.shape)
        dxp = scatter_add(dcols, self._indices, math.prod(self._padded), self.dtype)
        dxp = dxp.reshape((n,) + self._padded)
        (_, _), (top, bottom), (left, right), _ = self._pads
        return dxp[:, top : top + self.input_shape[0], left : left + self.input_shape[1]]


class Dense(Layer):
    """Fully connected: ``x @ kernel + bias``.

    Shapes: input ``(N, D)``; kernel ``(D, units)``; bias ``(units,)``; output
    ``(N, units)``.
    """

    base_name = "dense"
    input_rank = 1

    def __init__(self, units, use_bias=True, name=None):
        super().__init__(name)
        self.units = positive_int("units", units)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise invalid_argument("use_bias", "a bool", use_bias)
        self.use_bias = bool(use_bias)

    def _build(self, shape, rng):
        (features,) = shape
        self.params = {
            "kernel": glorot_uniform(rng, (features, self.units), features, self.units, self.dtype)
        }
        if self.use_bias:
            self.params["bias"] = np.zeros(self.units, dtype=self.dtype)
        return (self.units,)

    def _forward(self, x):
        out = x @ self.params["kernel"]
        if self.use_bias:
            out += self.params["bias"]
        self._keep(x.shape[0], x)
        return out

    def _backward(self, dout, need_dx=True):
        grads = {"kernel": self._cache.T @ dout}
        if self.use_bias:
            grads["bias"] = dout.sum(axis=0)
        self.grads = grads
        return dout @ self.params["kernel"].T if need_dx else None


class Flatten(Layer):
    """``(N, H, W, C)`` -> ``(N, H*W*C)`` in NHWC order (Keras's Flatten)."""

    base_name = "flatten"

    def _build(self, shape, rng):
        return (math.prod(shape),)

    def _forward(self, x):
        self._keep(x.shape[0], True)
        return x.reshape(x.shape[0], -1)

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        return dout.reshape((dout.shape[0],) + self.input_shape) if need_dx else None


class ReLU(Layer):
    """``max(x, 0)``; the gradient at exactly 0 is 0 (TensorFlow's rule)."""

    base_name = "re_lu"

    def _forward(self, x):
        positive = x > 0
        self._keep(x.shape[0], positive)
        return np.where(positive, x, self.dtype.type(0))

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        return np.where(self._cache, dout, self.dtype.type(0)) if need_dx else None


class Softmax(Layer):
    """Softmax over the last axis, stable (the row maximum is subtracted first).

    Backward: ``dx = p * (dout - sum(dout * p, axis=-1))``.
    """

    base_name = "softmax"

    def _forward(self, x):
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
        self._keep(x.shape[0], probs)
        return probs

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        probs = self._cache
        return probs * (dout - (dout * probs).sum(axis=-1, keepdims=True))
