"""The channels-first family's other layers, in the document's style (``scratch.chw``):
``Sigmoid``, ``Tanh``, ``LeakyReLU``, ``AvgPool`` and ``GlobalAvgPool``.

Each ``forward(x)`` keeps what its backward needs and returns its output; ``backward(dout)``
returns ``dx`` alone (none has weights). Activations take any shape; the pools take
``(N, C, H, W)`` or one image ``(C, H, W)``. Inputs are cast to the layer's dtype on
entry, as in ``scratch.chw``. numpy only, no Python loop over pixels or windows.

Keras facts mirrored here (TensorFlow 2.21 / Keras 3.15; ``scratch.activations`` measured
them for the NHWC layers):
- ``LeakyReLU(negative_slope=0.3)``: TensorFlow's LeakyRelu op takes its slope as a
  float32 attribute, so even in float64 the slope is ``float32(0.3) =
  0.30000001192092896``; the gradient at exactly 0 is the slope (``x > 0`` selects 1).
- sigmoid'(x) = s (1 - s) and tanh'(x) = 1 - t^2, computed from the OUTPUTS s and t.
- ``AveragePooling2D(padding="valid")`` averages whole windows only (a partial window at
  the bottom/right is dropped) and spreads ``dout / (p*p)`` over each window.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from scratch.chw import window_sums_view
from scratch.chw_checks import _as_image_batch, _cast_finite, _check_dout, _check_int, _invalid
from scratch.protocol import check_dtype

__all__ = ["AvgPool", "GlobalAvgPool", "LeakyReLU", "Sigmoid", "Tanh"]


class _Elementwise:
    """An activation of any shape whose derivative is read from what ``forward`` kept."""

    def __init__(self, dtype=np.float64):
        self.dtype = check_dtype(dtype)
        self._cache = None

    def forward(self, x) -> np.ndarray:
        """``x`` (any shape) -> the activation, same shape, in ``dtype``."""
        x = _cast_finite(x, self.dtype)
        out, self._cache = self._apply(x)
        return out

    def backward(self, dout) -> np.ndarray:
        """``dout`` shaped like the last output -> ``dx``, same shape."""
        shape = None if self._cache is None else self._cache.shape
        dout = _check_dout(dout, shape, self.dtype, type(self).__name__)
        return self._derivative(dout, self._cache)


class Sigmoid(_Elementwise):
    """``s = 1 / (1 + exp(-x))`` without overflow at large ``|x|``; ``dx = dout * s (1 - s)``."""

    def _apply(self, x):
        e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
        s = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(self.dtype, copy=False)
        return s, s

    def _derivative(self, dout, s):
        return dout * s * (1 - s)


class Tanh(_Elementwise):
    """``t = tanh(x)``; ``dx = dout * (1 - t^2)``, from the output (tanh' = 1 - tanh^2)."""

    def _apply(self, x):
        t = np.tanh(x)
        return t, t

    def _derivative(self, dout, t):
        return dout * (1 - t * t)


class LeakyReLU(_Elementwise):
    """``x`` where ``x > 0``, else ``negative_slope * x``; the gradient at 0 is the slope.

    Parameters
    ----------
    negative_slope : float >= 0, default 0.3 (Keras's default)
        Rounded to float32 as TensorFlow's op does, in every dtype.
    dtype : float32 or float64

    Raises
    ------
    ValueError
        ``negative_slope`` not a finite number >= 0.
    """

    def __init__(self, negative_slope=0.3, dtype=np.float64):
        super().__init__(dtype)
        real = isinstance(negative_slope, numbers.Real) and not isinstance(negative_slope, bool)
        if not (real and np.isfinite(negative_slope) and negative_slope >= 0):
            raise _invalid(
                "negative_slope", "a finite number >= 0", f"negative_slope={negative_slope!r}"
            )
        self.negative_slope = float(negative_slope)
        self._slope = self.dtype.type(np.float32(self.negative_slope))  # TensorFlow's float32

    def _apply(self, x):
        positive = x > 0
        return np.where(positive, x, x * self._slope), positive

    def _derivative(self, dout, positive):
        return np.where(positive, dout, dout * self._slope)


class AvgPool:
    """Average pooling over square windows, channels-first, padding 'valid'.

    Parameters
    ----------
    pool_size : int
        The window side ``p``.
    stride : int, optional
        Step in H and W; defaults to ``pool_size`` (Keras). Windows overlap when
        ``stride < pool_size`` (their gradients add); rows and columns past the last
        whole window are dropped and get zero gradient.
    dtype : float32 or float64

    Shapes: ``x (N, C, H, W) -> out (N, C, Ho, Wo)``, ``Ho = (H - p) // stride + 1``;
    ``backward`` gives each pixel the sum of ``dout / (p*p)`` over the windows holding it.

    Raises
    ------
    ValueError
        ``pool_size`` or ``stride`` not a positive int; in ``forward``, a window larger
        than the input.
    """

    def __init__(self, pool_size=2, stride=None, dtype=np.float64):
        self.pool_size = _check_int("pool_size", pool_size, 1)
        self.stride = self.pool_size if stride is None else _check_int("stride", stride, 1)
        self.dtype = check_dtype(dtype)
        self._cache = None

    def forward(self, x) -> np.ndarray:
        """``x (N, C, H, W)`` or ``(C, H, W)`` -> the window means, ``(N, C, Ho, Wo)``."""
        xb, single = _as_image_batch(x, self.dtype)
        p, s = self.pool_size, self.stride
        if p > xb.shape[2] or p > xb.shape[3]:
            raise _invalid(
                "x", f"H >= pool_size={p} and W >= pool_size={p}", f"x.shape={np.shape(x)}"
            )
        # (N, C, Ho, Wo, p, p): a strided view of xb, no copy.
        windows = sliding_window_view(xb, (p, p), axis=(2, 3))[:, :, ::s, ::s]
        out = windows.sum(axis=(4, 5)) / self.dtype.type(p * p)
        self._cache = (xb.shape, out.shape, single)
        return out[0] if single else out

    def backward(self, dout) -> np.ndarray:
        """``dout`` shaped like the last output -> ``dx`` like the last input."""
        if self._cache is None:
            raise RuntimeError("AvgPool.backward called before AvgPool.forward.")
        shape, out_shape, single = self._cache
        dout = _check_dout(dout, out_shape[1:] if single else out_shape, self.dtype, "AvgPool")
        d = dout[None] if single else dout
        share = d / self.dtype.type(self.pool_size**2)  # each cell's part of its window
        dx = window_sums_view(share, self.pool_size, self.stride, shape[2:]).sum(axis=(4, 5))
        return dx[0] if single else dx


class GlobalAvgPool:
    """The mean over H and W: ``x (N, C, H, W) -> (N, C)`` (one image ``(C, H, W) ->
    (C,)``); ``backward`` spreads ``dout / (H*W)`` over every pixel of its channel."""

    def __init__(self, dtype=np.float64):
        self.dtype = check_dtype(dtype)
        self._shape = None

    def forward(self, x) -> np.ndarray:
        xb, single = _as_image_batch(x, self.dtype)
        self._shape = (xb.shape, single)
        out = xb.mean(axis=(2, 3))
        return out[0] if single else out

    def backward(self, dout) -> np.ndarray:
        """``dout (N, C)`` (or ``(C,)``) -> ``dx`` like the last input."""
        if self._shape is None:
            raise RuntimeError("GlobalAvgPool.backward called before GlobalAvgPool.forward.")
        (n, c, h, w), single = self._shape
        dout = _check_dout(dout, (c,) if single else (n, c), self.dtype, "GlobalAvgPool")
        d = dout[None] if single else dout
        dx = np.broadcast_to((d / self.dtype.type(h * w))[:, :, None, None], (n, c, h, w))
        return dx[0].copy() if single else dx.copy()
