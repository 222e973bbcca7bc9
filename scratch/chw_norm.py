"""Batch normalization and dropout for the channels-first family, in cs231n's API.

Written natively for ``(N, D)`` and ``(N, C, H, W)``, on purpose independent of the NHWC
``scratch.normalization`` / ``scratch.dropout`` (two implementations cross-check each
other, and both are checked against Keras).

- ``BatchNorm(D, eps=1e-5, momentum=0.9)`` on ``(N, D)``; ``SpatialBatchNorm(C, ...)`` on
  ``(N, C, H, W)`` normalizes each channel over N, H and W. ``forward(x, mode="train"|
  "test")``; ``backward(dout) -> (dx, dgamma, dbeta)``. Training mode uses the batch mean
  and the biased variance and updates ``running_mean``/``running_var`` as
  ``momentum * running + (1 - momentum) * batch``: the same rule as Keras's
  ``BatchNormalization(momentum=momentum, epsilon=eps)``, whose defaults differ (0.99 and
  1e-3), so an adapter passes cs231n's values to Keras explicitly.
- ``Dropout(p)``: ``p`` is the KEEP probability (cs231n); Keras's ``rate = 1 - p``.
  Inverted: kept units are scaled by ``1 / p``. ``mask`` holds the last mask drawn
  (or one injected before ``forward``), so the harness can give Keras the same one.
"""

from __future__ import annotations

import numpy as np

from scratch.chw_checks import _check_dout, _invalid
from scratch.protocol import check_dtype
from scratch.reductions import channel_mean_var, channel_sum

MODES = ("train", "test")


class BatchNorm:
    """Batch normalization over ``(N, D)``: ``gamma`` and ``beta`` ``(D,)``, ones and zeros.

    Backward (train mode), ``xhat = (x - mu) / std`` over the N rows:
    ``dx = (N dxhat - sum dxhat - xhat sum(dxhat xhat)) / (N std)``, ``dxhat = dout gamma``.
    Test mode: ``dx = dout * gamma / sqrt(running_var + eps)``.
    """

    channel_axis = 1  # the feature axis of (N, D), the channel axis of (N, C, H, W)

    def __init__(self, D, eps=1e-5, momentum=0.9, dtype=np.float64):
        if not isinstance(D, int) or D <= 0:
            raise _invalid("D", "a strictly positive integer", f"D={D!r}")
        if not 0 <= momentum < 1:
            raise _invalid("momentum", "a float in [0, 1)", f"momentum={momentum!r}")
        if not eps > 0:
            raise _invalid("eps", "a float > 0", f"eps={eps!r}")
        self.dtype = check_dtype(dtype)
        self.eps, self.momentum = float(eps), float(momentum)
        self.gamma, self.beta = np.ones(D, self.dtype), np.zeros(D, self.dtype)
        self.running_mean, self.running_var = np.zeros(D, self.dtype), np.ones(D, self.dtype)
        self._cache = None

    def _shape(self, v: np.ndarray) -> np.ndarray:
        return v  # (D,) broadcasts over (N, D)

    def forward(self, x, mode="train") -> np.ndarray:
        if mode not in MODES:
            raise _invalid("mode", f"one of {MODES}", f"mode={mode!r}")
        x = np.asarray(x, dtype=self.dtype)
        if mode == "train":
            # pairwise per channel (scratch.reductions): numpy's x.mean/var over N (, H, W)
            # is a running sum (measured on the NHWC twin: scratch.reductions)
            mu, var = channel_mean_var(x, self.channel_axis)
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            mu, var = self.running_mean, self.running_var
        std = np.sqrt(self._shape(var) + self.eps)
        xhat = (x - self._shape(mu)) / std
        self._cache = (xhat, std, mode)
        return self._shape(self.gamma) * xhat + self._shape(self.beta)

    def backward(self, dout):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward.")
        xhat, std, mode = self._cache
        dout = _check_dout(dout, xhat.shape, self.dtype, type(self).__name__)
        dgamma, dbeta = (
            channel_sum(dout * xhat, self.channel_axis),
            channel_sum(dout, self.channel_axis),
        )
        dxhat = dout * self._shape(self.gamma)
        if mode == "test":
            return dxhat / std, dgamma, dbeta
        m = dout.size // dgamma.size  # elements per feature or channel
        total = self._shape(channel_sum(dxhat, self.channel_axis))
        projected = self._shape(channel_sum(dxhat * xhat, self.channel_axis))
        return (m * dxhat - total - xhat * projected) / (m * std), dgamma, dbeta


class SpatialBatchNorm(BatchNorm):
    """Batch normalization of each channel of ``(N, C, H, W)`` over N, H and W."""

    def __init__(self, C, eps=1e-5, momentum=0.9, dtype=np.float64):
        super().__init__(C, eps, momentum, dtype)

    def _shape(self, v: np.ndarray) -> np.ndarray:
        return v.reshape(1, -1, 1, 1)  # (C,) broadcast over (N, C, H, W)


class Dropout:
    """Inverted dropout with KEEP probability ``p`` (cs231n); identity in test mode."""

    def __init__(self, p, seed=0, dtype=np.float64):
        if not 0 < p <= 1:
            raise _invalid("p", "a keep probability in (0, 1]", f"p={p!r}")
        self.p, self.dtype = float(p), check_dtype(dtype)
        self.mask = None
        self._rng = np.random.default_rng(seed)
        self._cache = None

    def forward(self, x, mode="train") -> np.ndarray:
        if mode not in MODES:
            raise _invalid("mode", f"one of {MODES}", f"mode={mode!r}")
        x = np.asarray(x, dtype=self.dtype)
        if mode == "test":
            self._cache = None
            return x.copy()
        if self.mask is None or self.mask.shape != x.shape:
            self.mask = self._rng.random(x.shape) < self.p
        scale = self.dtype.type(1 / self.p)
        self._cache = (self.mask, scale)
        return np.where(self.mask, x * scale, self.dtype.type(0))

    def backward(self, dout) -> np.ndarray:
        if self._cache is None:
            return np.asarray(dout, dtype=self.dtype).copy()  # test mode: the identity
        mask, scale = self._cache
        return np.where(mask, dout * scale, self.dtype.type(0))
