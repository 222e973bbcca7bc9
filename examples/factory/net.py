"""A channels-first CNN of one's own, for ``parity check PATH:FUNCTION``:
``parity check examples/factory/net.py:make_network``.

The network: zero padding 1 and a 4x4 conv at stride 2 (28 -> 14), ReLU, a 2x2 conv
(14 -> 13), a 2x2 max-pool on the odd 13x13 map (the last row and column dropped: 6x6),
a Linear layer on the 6 * 6 * 10 = 360 features in C, H, W order, softmax cross-entropy.
Pixels are scaled to [-0.5, 0.5].

The layers follow the cs231n API: one image ``(C, H, W)`` at a time, ``backward(dout)``
returns ``dx`` or ``(dx, dw, db)`` and updates nothing. The conv works on windows
(``sliding_window_view``) and ``einsum``; the pool on 2x2 windows gathered into a last
axis, routing each window's gradient to its first maximum in row-major order (TensorFlow's
rule: MNIST's black background ties most windows).
"""

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from scratch.user_factory import Subject
from spec import Preprocess
from spec.layers import stack
from spec.networks import channels_first

# What the network is: the harness builds its Keras twin and every layout from this.
NETWORK = channels_first(
    "my-net",
    stack(
        ("ZeroPadding2D", dict(padding=1, folded=True)),  # Conv(pad=1): 30x30
        ("Conv2D", dict(filters=6, kernel_size=4, strides=2)),  # 14x14x6
        ("ReLU", {}),
        ("Conv2D", dict(filters=10, kernel_size=2)),  # 13x13x10
        ("MaxPooling2D", dict(pool_size=2)),  # 6x6x10
        ("Flatten", dict(folded=True)),  # inside the Linear
        ("Dense", dict(units=10)),
        ("Softmax", {}),  # softmax_loss
    ),
    preprocess=Preprocess(255.0, -0.5),  # the reference: image / 255 - 0.5
)


def make_network(seed, dtype):
    """The factory ``parity check`` calls: every weight drawn from ``seed``, in ``dtype``."""
    rng = np.random.default_rng(seed)
    layers = [
        Conv(1, 6, 4, pad=1, stride=2, rng=rng, dtype=dtype),  # conv2d
        ReLU(),  # re_lu
        Conv(6, 10, 2, rng=rng, dtype=dtype),  # conv2d_1
        MaxPool2x2(),  # max_pooling2d
        Linear(360, 10, rng=rng, dtype=dtype),  # dense
    ]
    return Subject(
        network=NETWORK,
        layers=layers,
        loss=softmax_loss,
        preprocess=functools.partial(preprocess, dtype=dtype),  # optional
    )


def preprocess(images, dtype):
    """``(N, 28, 28)`` uint8 -> ``(N, 1, 28, 28)`` in [-0.5, 0.5]."""
    x = images.astype(dtype) / 255 - 0.5
    return x[:, None]


class Conv:
    """Cross-correlation of ``(C, H, W)`` with ``filters`` (F, C, k, k), plus ``bias``
    (F,), after zero padding ``pad``, at step ``stride``."""

    def __init__(self, in_channels, out_channels, filter_size, pad=0, stride=1, *, rng, dtype):
        fan_in = in_channels * filter_size * filter_size
        shape = (out_channels, in_channels, filter_size, filter_size)
        self.filters = (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(dtype)
        self.bias = np.zeros(out_channels, dtype=dtype)
        self.pad, self.stride = pad, stride

    def forward(self, x):
        p, s, k = self.pad, self.stride, self.filters.shape[-1]
        self.x_shape = x.shape
        self.x_pad = np.pad(x, ((0, 0), (p, p), (p, p)))  # H and W only
        # (C, H', W', k, k): the window under every output position
        self.windows = sliding_window_view(self.x_pad, (k, k), axis=(1, 2))[:, ::s, ::s]
        out = np.einsum("chwij,fcij->fhw", self.windows, self.filters)
        return out + self.bias[:, None, None]

    def backward(self, dout):
        p, s, k = self.pad, self.stride, self.filters.shape[-1]
        dw = np.einsum("chwij,fhw->fcij", self.windows, dout)
        db = dout.sum(axis=(1, 2))
        dwindows = np.einsum("fcij,fhw->chwij", self.filters, dout)
        dx_pad = np.zeros_like(self.x_pad)
        _, h, w = dout.shape
        for i in range(k):  # each filter offset: its strided slice of the padded input
            for j in range(k):
                dx_pad[:, i : i + s * h : s, j : j + s * w : s] += dwindows[..., i, j]
        _, height, width = self.x_shape
        return dx_pad[:, p : p + height, p : p + width], dw, db


class ReLU:
    def forward(self, x):
        self.positive = x > 0
        return np.where(self.positive, x, 0).astype(x.dtype)

    def backward(self, dout):
        return np.where(self.positive, dout, 0).astype(dout.dtype)


class MaxPool2x2:
    """2x2 windows at stride 2; an odd last row or column is dropped (as Keras's 'valid')."""

    def forward(self, x):
        self.x_shape = x.shape
        channels, height, width = x.shape
        h, w = height // 2, width // 2
        cells = x[:, : 2 * h, : 2 * w].reshape(channels, h, 2, w, 2)
        # (C, h, w, 4): each window's cells in row-major order
        self.cells = cells.transpose(0, 1, 3, 2, 4).reshape(channels, h, w, 4)
        self.first = self.cells.argmax(axis=-1)[..., None]  # argmax: the first maximum
        return np.take_along_axis(self.cells, self.first, axis=-1)[..., 0]

    def backward(self, dout):
        channels, h, w, _ = self.cells.shape
        dcells = np.zeros(self.cells.shape, dtype=dout.dtype)
        np.put_along_axis(dcells, self.first, dout[..., None], axis=-1)
        dx = np.zeros(self.x_shape, dtype=dout.dtype)
        grid = dcells.reshape(channels, h, w, 2, 2).transpose(0, 1, 3, 2, 4)
        dx[:, : 2 * h, : 2 * w] = grid.reshape(channels, 2 * h, 2 * w)
        return dx


class Linear:
    """``weights`` (in_features, out_features), ``bias`` (out_features,); flattens its
    input in C, H, W order."""

    def __init__(self, in_features, out_features, *, rng, dtype):
        scale = np.sqrt(1 / in_features)
        self.weights = (rng.standard_normal((in_features, out_features)) * scale).astype(dtype)
        self.bias = np.zeros(out_features, dtype=dtype)

    def forward(self, x):
        self.x_shape = x.shape
        self.flat = x.reshape(-1)
        return self.flat @ self.weights + self.bias

    def backward(self, dout):
        dx = (self.weights @ dout).reshape(self.x_shape)
        return dx, np.outer(self.flat, dout), dout.copy()


def softmax_loss(scores, y):
    """Mean cross-entropy of softmax(scores) ``(N, K)`` at labels ``y``, and its gradient
    with respect to the scores (divided by N: the loss is a mean)."""
    n = len(y)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_sums = np.log(np.exp(shifted).sum(axis=1))
    loss = np.mean(log_sums - shifted[np.arange(n), y])
    dscores = np.exp(shifted - log_sums[:, None])
    dscores[np.arange(n), y] -= 1
    return loss, dscores / n
