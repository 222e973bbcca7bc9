"""Pooling, NHWC, with hand-derived backward passes (numpy only).

``Pool2D`` holds the window geometry every 2-D pool shares; ``MaxPool2D`` routes each
window's gradient to its first maximum (TensorFlow's tie rule, through a lookup table of
lowest set bits); ``AveragePooling2D`` and ``GlobalAveragePooling2D`` average. Keras names
and defaults: ``pool_size=2``, ``strides=None -> pool_size``, ``padding="valid"``.
"""

from __future__ import annotations

import math

import numpy as np

from scratch.layer_base import Layer, int_pair, invalid_argument
from scratch.windows import gather, scatter_add, window_indices


class Pool2D(Layer):
    """Base of the 2-D pools, NHWC, padding 'valid': the window geometry they share.

    ``pool_size`` and ``strides`` (default: ``pool_size``, as Keras) as ``(rows, cols)``;
    ``_indices`` ``(p*q, oh, ow, C)``: each window's flat per-example input positions,
    window position first (row-major inside the window), so reductions over a window
    run along a leading axis, vectorized over everything else.

    Parameters
    ----------
    pool_size : int or (int, int), default 2
    strides : int or (int, int), optional
        Defaults to ``pool_size`` (Keras).
    padding : {"valid"}
    name : str, optional

    Shapes: input ``(N, H, W, C)``; output ``(N, (H-p)//s + 1, (W-q)//t + 1, C)``.
    """

    input_rank = 3

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None):
        super().__init__(name)
        self.pool_size = int_pair("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else int_pair("strides", strides)
        if padding != "valid":
            raise invalid_argument("padding", "one of ('valid',)", padding)
        self.padding = padding

    def _build(self, shape, rng):
        height, width, channels = shape
        (p, q), (sh, sw) = self.pool_size, self.strides
        if p > height or q > width:
            raise invalid_argument(
                "pool_size",
                f"a window no larger than the input {(height, width)} (layer `{self.label}`)",
                self.pool_size,
            )
        oh, ow = (height - p) // sh + 1, (width - q) // sw + 1
        idx = window_indices(height, width, channels, (p, q), (sh, sw), (oh, ow))
        self._indices = np.ascontiguousarray(idx.transpose(2, 3, 0, 1, 4)).reshape(
            p * q, oh, ow, channels
        )
        return (oh, ow, channels)


class MaxPool2D(Pool2D):
    """Max pooling, NHWC, padding 'valid'.

    Backward routes each window's gradient to the window's FIRST maximum in
    row-major order (TensorFlow's rule for ties, which are the norm on MNIST).
    Windows overlap when ``strides < pool_size``; their gradients then add.

    Parameters and shapes: those of :class:`Pool2D`.
    """

    base_name = "max_pooling2d"

    def _build(self, shape, rng):
        out = super()._build(shape, rng)
        (p, q), (sh, sw) = self.pool_size, self.strides
        self._offsets = self._indices[:, 0, 0, 0] - self._indices[0, 0, 0, 0]  # (p*q,)
        self._first_bit = _lowest_set_bit_table(p * q)
        self._overlap = sh < p or sw < q
        return out

    def _forward(self, x):
        windows = gather(x, self._indices)  # (N, p*q, oh, ow, C)
        out = windows.max(axis=1)
        first = _first_true(windows == out[:, None], self._first_bit)  # (N, oh, ow, C)
        # Flat per-example input position of each window's first maximum.
        self._keep(x.shape[0], self._indices[0] + self._offsets[first])
        return out

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        n, where = dout.shape[0], self._cache.reshape(dout.shape[0], -1)
        dx = np.zeros((n, math.prod(self.input_shape)), dtype=self.dtype)
        rows = np.arange(n)[:, None]
        if self._overlap:  # one input pixel can be the maximum of several windows
            np.add.at(dx, (rows, where), dout.reshape(n, -1))
        else:
            dx[rows, where] = dout.reshape(n, -1)
        return dx.reshape((n,) + self.input_shape)


_MAX_TABLE_BITS = 16  # windows of up to 16 pixels use the lookup table (64 Ki entries)


def _lowest_set_bit_table(bits: int) -> np.ndarray | None:
    """``table[m]`` = index of the lowest set bit of ``m`` (0 for ``m = 0``)."""
    if bits > _MAX_TABLE_BITS:
        return None
    masks = np.arange(1 << bits, dtype=np.int64)
    return np.log2(np.maximum(masks & -masks, 1)).astype(np.int64)


def _first_true(equal: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """Index of the first True along axis 1 of a boolean ``(N, K, ...)`` array.

    Packs the K flags into a bit mask and looks its lowest set bit up in ``table``:
    a sum along a leading axis is vectorized, whereas ``argmax`` along a short axis
    pays per-window overhead (measured 0.18 ms vs 1.4 ms for a (32, 4, 14, 14, 8) batch).
    """
    if table is None:
        return equal.argmax(axis=1)
    weights = (np.uint32(1) << np.arange(equal.shape[1], dtype=np.uint32)).reshape(
        (1, -1) + (1,) * (equal.ndim - 2)
    )
    return table[(equal * weights).sum(axis=1)]


class AveragePooling2D(Pool2D):
    """Mean over each ``pool_size`` window, padding 'valid' (a partial window is dropped).

    Backward: each window's upstream gradient divided by the window's size ``p*q`` goes to
    every pixel of the window; overlapping windows (``strides < pool_size``) add.

    Parameters and shapes: those of :class:`Pool2D`.
    """

    base_name = "average_pooling2d"

    def _forward(self, x):
        self._keep(x.shape[0], True)
        return gather(x, self._indices).mean(axis=1)  # (N, oh, ow, C)

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        n, cells = dout.shape[0], self._indices.shape[0]
        share = np.broadcast_to((dout / cells)[:, None], (n,) + self._indices.shape)
        dx = scatter_add(share, self._indices, math.prod(self.input_shape), self.dtype)
        return dx.reshape((n,) + self.input_shape)


class GlobalAveragePooling2D(Layer):
    """Mean over the spatial axes: ``(N, H, W, C) -> (N, C)``; backward spreads
    ``dout / (H*W)`` over every pixel of its channel."""

    base_name = "global_average_pooling2d"
    input_rank = 3

    def _build(self, shape, rng):
        return (shape[-1],)

    def _forward(self, x):
        self._keep(x.shape[0], True)
        return x.mean(axis=(1, 2))

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        height, width, _ = self.input_shape
        spread = (dout / (height * width))[:, None, None, :]
        return np.broadcast_to(spread, (dout.shape[0],) + self.input_shape).copy()
