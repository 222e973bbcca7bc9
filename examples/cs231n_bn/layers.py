"""Channels-first layers in the cs231n style, with batch norm and dropout.

Written for the ``parity check --api cs231n`` example with batch norm and dropout: that
API, our own code. ``Conv``, ``ReLU``, ``MaxPool2x2``, ``Linear`` and ``softmax_loss``
are ``examples/cs231n/layers.py``'s (one image at a time); ``BatchNorm``,
``SpatialBatchNorm`` and ``Dropout`` take batches, as cs231n's assignment 2 does:
``forward(x, mode)`` with ``mode`` ``"train"`` or ``"test"``, ``backward(dout)``.
Arrays keep the dtype of their input (float32 in, float32 out).
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


class BatchNorm:
    """Batch normalization of ``(N, D)`` over its N rows, cs231n's ``batchnorm_forward``.

    Training: ``xhat = (x - mean) / sqrt(var + eps)`` with the batch mean and biased
    variance, ``out = gamma * xhat + beta``; ``running = momentum * running + (1 -
    momentum) * batch``. Test: the running statistics instead.
    """

    def __init__(self, D, eps=1e-5, momentum=0.9):
        self.gamma, self.beta = np.ones(D), np.zeros(D)
        self.running_mean, self.running_var = np.zeros(D), np.ones(D)
        self.eps, self.momentum = eps, momentum

    def forward(self, x, mode="train"):
        # statistics as (D, N) rows: numpy sums a contiguous last axis pairwise
        rows = np.ascontiguousarray(x.T)
        if mode == "train":
            mean = rows.sum(axis=1) / rows.shape[1]
            var = (np.ascontiguousarray((x - mean).T) ** 2).sum(axis=1) / rows.shape[1]
            m = x.dtype.type(self.momentum)
            self.running_mean = m * self.running_mean + (1 - m) * mean
            self.running_var = m * self.running_var + (1 - m) * var
        else:
            mean, var = self.running_mean, self.running_var
        std = np.sqrt(var + x.dtype.type(self.eps))
        self.xhat, self.std, self.mode = (x - mean) / std, std, mode
        return self.gamma * self.xhat + self.beta

    def backward(self, dout):
        n = dout.shape[0]
        dgamma = np.ascontiguousarray((dout * self.xhat).T).sum(axis=1)
        dbeta = np.ascontiguousarray(dout.T).sum(axis=1)
        dxhat = dout * self.gamma
        if self.mode == "test":
            return dxhat / self.std, dgamma, dbeta
        total = np.ascontiguousarray(dxhat.T).sum(axis=1)
        projected = np.ascontiguousarray((dxhat * self.xhat).T).sum(axis=1)
        dx = (n * dxhat - total - self.xhat * projected) / (n * self.std)
        return dx, dgamma, dbeta


class SpatialBatchNorm:
    """Batch normalization of each channel of ``(N, C, H, W)`` over N, H and W: a
    ``BatchNorm`` on ``(N * H * W, C)``, as cs231n's ``spatial_batchnorm_forward``."""

    def __init__(self, C, eps=1e-5, momentum=0.9):
        self.bn = BatchNorm(C, eps, momentum)

    # gamma, beta and the running statistics live in the inner BatchNorm
    gamma = property(lambda self: self.bn.gamma, lambda self, v: setattr(self.bn, "gamma", v))
    beta = property(lambda self: self.bn.beta, lambda self, v: setattr(self.bn, "beta", v))
    running_mean = property(
        lambda self: self.bn.running_mean, lambda self, v: setattr(self.bn, "running_mean", v)
    )
    running_var = property(
        lambda self: self.bn.running_var, lambda self, v: setattr(self.bn, "running_var", v)
    )

    def forward(self, x, mode="train"):
        n, c, h, w = x.shape
        out = self.bn.forward(x.transpose(0, 2, 3, 1).reshape(-1, c), mode)
        return out.reshape(n, h, w, c).transpose(0, 3, 1, 2)

    def backward(self, dout):
        n, c, h, w = dout.shape
        dx, dgamma, dbeta = self.bn.backward(dout.transpose(0, 2, 3, 1).reshape(-1, c))
        return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


class Dropout:
    """Inverted dropout, ``p`` the probability of keeping a unit (cs231n's convention).

    Training: ``mask = (rand < p) / p``, ``out = x * mask``; the mask is kept for
    ``backward``. Test: the identity.
    """

    def __init__(self, p):
        self.p = p
        self.mask = None
        self.rng = np.random.default_rng()

    def forward(self, x, mode="train"):
        if mode == "test":
            self.mask = None
            return x.copy()
        self.mask = (self.rng.random(x.shape) < self.p) / x.dtype.type(self.p)
        self.mask = self.mask.astype(x.dtype)
        return x * self.mask

    def backward(self, dout):
        if self.mask is None:  # test mode
            return dout.copy()
        return dout * self.mask
