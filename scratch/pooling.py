"""Average pooling, NHWC, with hand-derived backward passes (numpy only).

Max pooling lives in ``scratch.layers`` (its tie rule needs the window lookup table);
these average. Keras names and defaults: ``AveragePooling2D(pool_size=2, strides=None ->
pool_size, padding="valid")`` and ``GlobalAveragePooling2D()``.
"""

from __future__ import annotations

import math

import numpy as np

from scratch.layers import Layer, Pool2D, gather, scatter_add


class AveragePooling2D(Pool2D):
    """Mean over each ``pool_size`` window, padding 'valid' (a partial window is dropped).

    Backward: each window's upstream gradient divided by the window's size ``p*q`` goes to
    every pixel of the window; overlapping windows (``strides < pool_size``) add.

    Parameters
    ----------
    pool_size : int or (int, int), default 2
    strides : int or (int, int), optional
        Defaults to ``pool_size`` (Keras).
    padding : {"valid"}
    name : str, optional

    Shapes: input ``(N, H, W, C)``; output ``(N, (H-p)//s + 1, (W-q)//t + 1, C)``.
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
