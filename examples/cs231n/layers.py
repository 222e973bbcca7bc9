"""Channels-first layers in the style of the second seed document (cs231n-style API).

Written for the ``parity check --api cs231n`` example: that API, our own code. One image
at a time, ``(C, H, W)``; every ``backward`` returns ``dx`` or ``(dx, dw, db)`` and updates
nothing (the caller steps the weights). The loops run over the filter's offsets and the
pool window's cells, each step vectorized over every output position.
"""

import numpy as np


class Conv:
    """``out_channels`` filters of ``filter_size`` x ``filter_size`` over ``in_channels``,
    with bias, zero padding ``pad`` and step ``stride``: a cross-correlation.

    ``forward(x)`` takes ``(C, H, W)`` and returns ``(F, H', W')`` with
    ``H' = 1 + (H + 2 * pad - filter_size) // stride`` (same for W).
    """

    def __init__(self, in_channels, out_channels, filter_size, pad=0, stride=1):
        shape = (out_channels, in_channels, filter_size, filter_size)
        self.filters = 1e-3 * np.random.default_rng().standard_normal(shape)
        self.bias = np.zeros(out_channels)
        self.pad, self.stride = pad, stride

    def _windows(self, height, width):
        """For each filter offset (i, j): the strided slices of the padded input it meets."""
        k, s = self.filters.shape[2], self.stride
        out_h = 1 + (height + 2 * self.pad - k) // s
        out_w = 1 + (width + 2 * self.pad - k) // s
        for i in range(k):
            for j in range(k):
                yield i, j, (slice(None), slice(i, i + s * out_h, s), slice(j, j + s * out_w, s))

    def forward(self, x):
        self.x = x
        p = self.pad
        # Pad H and W only: np.pad(x, p) would pad the channel axis too.
        self.x_pad = np.pad(x, ((0, 0), (p, p), (p, p)))
        out = None
        for i, j, where in self._windows(*x.shape[1:]):
            # (F, C) filter taps times (C, H', W') inputs, summed over C.
            term = np.tensordot(self.filters[:, :, i, j], self.x_pad[where], axes=1)
            out = term if out is None else out + term
        return out + self.bias[:, None, None]

    def backward(self, dout):
        dx_pad = np.zeros_like(self.x_pad)
        dw = np.zeros_like(self.filters)
        for i, j, where in self._windows(*self.x.shape[1:]):
            dw[:, :, i, j] = np.tensordot(dout, self.x_pad[where], axes=([1, 2], [1, 2]))
            dx_pad[where] += np.tensordot(self.filters[:, :, i, j], dout, axes=([0], [0]))
        db = dout.sum(axis=(1, 2))
        p, (_, height, width) = self.pad, self.x.shape
        return dx_pad[:, p : p + height, p : p + width], dw, db


class ReLU:
    """``max(x, 0)``; the gradient at exactly 0 is 0 (as TensorFlow's)."""

    def forward(self, x):
        self.mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dout):
        return np.where(self.mask, dout, 0).astype(dout.dtype)


class MaxPool2x2:
    """Max over 2x2 windows, stride 2; an odd last row or column is dropped.

    ``backward`` routes each window's gradient to its FIRST maximum in row-major order,
    TensorFlow's rule (MNIST's black background ties most windows).
    """

    def forward(self, x):
        self.x = x
        channels, height, width = x.shape
        h, w = height // 2, width // 2
        self.out = x[:, : 2 * h, : 2 * w].reshape(channels, h, 2, w, 2).max(axis=(2, 4))
        return self.out

    def backward(self, dout):
        dx = np.zeros_like(self.x)
        h, w = self.out.shape[1:]
        routed = np.zeros(self.out.shape, dtype=bool)
        for di in (0, 1):  # the window's cells in row-major order
            for dj in (0, 1):
                cell = self.x[:, di : 2 * h : 2, dj : 2 * w : 2]
                first = (cell == self.out) & ~routed
                dx[:, di : 2 * h : 2, dj : 2 * w : 2] = np.where(first, dout, 0)
                routed |= first
        return dx


class Linear:
    """Fully connected: ``weights`` (in_features, out_features), ``bias`` (out_features,).

    ``forward(x)`` flattens ``x`` in C, H, W order (numpy's reshape of a (C, H, W) array).
    """

    def __init__(self, in_features, out_features):
        shape = (in_features, out_features)
        self.weights = 1e-3 * np.random.default_rng().standard_normal(shape)
        self.bias = np.zeros(out_features)

    def forward(self, x):
        self.shape = x.shape
        self.flat = x.reshape(-1)  # C, H, W order
        return self.flat @ self.weights + self.bias

    def backward(self, dout):
        dw = np.outer(self.flat, dout)
        dx = (self.weights @ dout).reshape(self.shape)
        return dx, dw, dout.copy()


def softmax_loss(scores, y):
    """Mean cross-entropy of softmax(scores) ``(N, K)`` at labels ``y`` ``(N,)``, and
    its gradient with respect to the scores (of the mean: divided by N)."""
    n = scores.shape[0]
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(sums[:, 0]) - shifted[np.arange(n), y])
    dscores = exp / sums
    dscores[np.arange(n), y] -= 1
    dscores /= n
    return loss, dscores
