"""Zero padding as a layer, NHWC (numpy only).

Keras's ``ZeroPadding2D(padding)`` with an int: ``padding`` rows of zeros above and below
and ``padding`` columns left and right. LeNet-5's 32x32 input is MNIST's 28x28 padded by 2.
"""

from __future__ import annotations

import numbers

import numpy as np

from scratch.layer_base import Layer, invalid_argument


class ZeroPadding2D(Layer):
    """``(N, H, W, C)`` -> ``(N, H + 2p, W + 2p, C)``, zeros around each map.

    Backward: the upstream gradient cropped to the input's rows and columns (the padded
    border is a constant: no gradient flows to anything from it).

    Parameters
    ----------
    padding : int >= 0
        Rows (top and bottom) and columns (left and right) of zeros.
    name : str, optional

    Raises
    ------
    ValueError
        ``padding`` not a non-negative int.
    """

    base_name = "zero_padding2d"
    input_rank = 3

    def __init__(self, padding, name=None):
        super().__init__(name)
        is_int = isinstance(padding, numbers.Integral) and not isinstance(padding, bool)
        if not is_int or padding < 0:
            raise invalid_argument("padding", "a non-negative integer", padding)
        self.padding = int(padding)

    def _build(self, shape, rng):
        height, width, channels = shape
        return (height + 2 * self.padding, width + 2 * self.padding, channels)

    def _forward(self, x):
        self._keep(x.shape[0], True)
        p = self.padding
        return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        p, (height, width, _) = self.padding, self.input_shape
        return np.ascontiguousarray(dout[:, p : p + height, p : p + width])
