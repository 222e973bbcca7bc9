"""Batch normalization over the last axis (NHWC channels, or dense features), numpy only.

Keras's ``BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3)`` semantics:

- training mode (``training = True``): the batch's mean and BIASED variance over every
  axis but the last; output ``gamma * (x - mean) / sqrt(var + epsilon) + beta``; then
  ``moving = moving * momentum + batch statistic * (1 - momentum)`` for the mean and the
  (biased) variance (measured against Keras 3.15: no Bessel correction).
- inference mode (``training = False``, the default, as Keras's ``model(x)``): the moving
  statistics instead of the batch's; nothing is updated.

``params`` holds the trainable ``gamma`` and ``beta``; ``state`` holds the non-trainable
``moving_mean`` and ``moving_variance`` (Keras's weight names): state is copied and
compared, never differentiated.
"""

from __future__ import annotations

import numpy as np

from scratch.layer_base import Layer, invalid_argument
from scratch.reductions import channel_mean_var, channel_sum


class BatchNormalization(Layer):
    """Batch normalization; ``training`` selects batch or moving statistics.

    Parameters
    ----------
    momentum : float in [0, 1), default 0.99 (Keras)
    epsilon : float > 0, default 1e-3 (Keras)
    name : str, optional

    Shapes: input ``(N, ..., C)``; output the same; ``gamma``, ``beta``, ``moving_mean``,
    ``moving_variance``: ``(C,)``. Initial values: ones, zeros, zeros, ones (Keras).

    Backward (training mode), with ``xhat = (x - mean) / std`` over the ``M`` elements of a
    channel: ``dx = (M dxhat - sum dxhat - xhat sum(dxhat xhat)) / (M std)``,
    ``dxhat = dout * gamma``; ``dgamma = sum(dout xhat)``; ``dbeta = sum(dout)``.
    Inference mode: ``dx = dout * gamma / sqrt(moving_variance + epsilon)``.
    """

    base_name = "batch_normalization"

    def __init__(self, momentum=0.99, epsilon=1e-3, name=None):
        super().__init__(name)
        if not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise invalid_argument("momentum", "a float in [0, 1)", momentum)
        if not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise invalid_argument("epsilon", "a float > 0", epsilon)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.training = False
        self.state: dict[str, np.ndarray] = {}

    def _build(self, shape, rng):
        channels = shape[-1]
        self.params = {"gamma": np.ones(channels, self.dtype),
                       "beta": np.zeros(channels, self.dtype)}  # fmt: skip
        self.state = {"moving_mean": np.zeros(channels, self.dtype),
                      "moving_variance": np.ones(channels, self.dtype)}  # fmt: skip
        return shape

    def _forward(self, x):
        if self.training:
            # pairwise sums per channel (scratch.reductions): numpy's x.mean/var over the
            # leading axes is a running sum, 6.0e-5 off in float32 where Keras is 1.3e-5
            mean, variance = channel_mean_var(x)
            for name, batch in (("moving_mean", mean), ("moving_variance", variance)):
                moving = self.state[name]
                moving[...] = moving * self.momentum + batch * (1 - self.momentum)
        else:
            mean, variance = self.state["moving_mean"], self.state["moving_variance"]
        std = np.sqrt(variance + self.epsilon)
        xhat = (x - mean) / std
        self._keep(x.shape[0], (xhat, std, self.training))
        return self.params["gamma"] * xhat + self.params["beta"]

    def _backward(self, dout, need_dx=True):
        xhat, std, training = self._cache
        self.grads = {"gamma": channel_sum(dout * xhat), "beta": channel_sum(dout)}
        if not need_dx:
            return None
        dxhat = dout * self.params["gamma"]
        if not training:
            return dxhat / std
        count = dout.size // dout.shape[-1]  # M: elements per channel
        total = channel_sum(dxhat)
        projected = channel_sum(dxhat * xhat)
        return (count * dxhat - total - xhat * projected) / (count * std)
