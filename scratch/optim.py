"""Optimizers over a weight tree ``{layer: {weight: array}}``, updating in place.

``update(params, grads)`` walks ``params`` (the live arrays) and takes each weight's
gradient from ``grads`` under the same keys; ``input`` entries of ``grads`` (loss
gradients of layer inputs) are ignored. Every hyper-parameter is held as a Python
float and cast to each weight's dtype when used, as Keras casts to the variable's
dtype; so a float32 model steps with ``float32(0.005) = 0.004999999888``.
"""

from __future__ import annotations

import math

import numpy as np

from scratch.layers import invalid_argument
from scratch.protocol import Tree


def _positive_float(argument: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise invalid_argument(argument, "a finite, strictly positive float", value)
    if not math.isfinite(value) or value <= 0:
        raise invalid_argument(argument, "a finite, strictly positive float", value)
    return float(value)


def _beta(argument: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise invalid_argument(argument, "a float in [0, 1)", value)
    if not 0 <= value < 1:
        raise invalid_argument(argument, "a float in [0, 1)", value)
    return float(value)


def weight_pairs(params: Tree, grads: Tree):
    """Yield ``(layer, weight, array, gradient)`` for every weight in ``params``.

    Raises ValueError when a gradient is missing or differs in shape or dtype.
    """
    for layer, weights in params.items():
        for weight, array in weights.items():
            if weight == "input":
                continue
            gradient = grads.get(layer, {}).get(weight)
            if gradient is None:
                raise ValueError(
                    f"Invalid value for argument `grads`. Expected a gradient for every "
                    f"weight. Received none for layer `{layer}` weight `{weight}`."
                )
            if gradient.shape != array.shape or gradient.dtype != array.dtype:
                raise ValueError(
                    f"Invalid value for argument `grads`. Expected layer `{layer}` weight "
                    f"`{weight}` gradient with shape {array.shape} and dtype {array.dtype}. "
                    f"Received shape {gradient.shape} and dtype {gradient.dtype}."
                )
            yield layer, weight, array, gradient


class SGD:
    """Plain stochastic gradient descent: ``w -= lr * g``.

    Parameters
    ----------
    learning_rate : float, default 0.01 (Keras's default)
        Cast to each weight's dtype: the same product Keras's ``SGD`` computes
        (``variable - gradient * learning_rate`` with momentum 0).
    """

    def __init__(self, learning_rate: float = 0.01):
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        self.iterations = 0

    def update(self, params: Tree, grads: Tree) -> None:
        """Update every weight of ``params`` in place from ``grads``."""
        for _, _, array, gradient in list(weight_pairs(params, grads)):
            lr = array.dtype.type(self.learning_rate)
            np.subtract(array, lr * gradient, out=array)
        self.iterations += 1


class Adam:
    """Adam exactly as Keras 3 computes it (``keras/src/optimizers/adam.py``).

    ``Adam.update_step`` in keras/src/optimizers/adam.py (Keras 3.15), amsgrad off,
    every constant cast to the variable's dtype, ``t = iterations + 1``::

        alpha = lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        m = m + (g - m) * (1 - beta_1)
        v = v + (g ** 2 - v) * (1 - beta_2)
        w = w - (m * alpha) / (sqrt(v) + epsilon)

    This is Kingma & Ba's algorithm with the bias correction folded into the step
    size, and ``epsilon`` is "epsilon hat": added outside the square root of the raw
    (uncorrected) ``v``. Ours keeps Keras's order of floating-point operations:
    ``1 - beta_1`` and ``1 - beta_2`` are computed as Python floats and then cast
    (Keras's ``1 - self.beta_1``); ``beta ** t`` is ``pow(cast(beta), cast(t))`` in the
    weight's dtype; ``alpha`` is ``(lr * sqrt(1 - b2t)) / (1 - b1t)``. In float64
    this matches Keras bit for bit as far as ``pow`` and ``sqrt`` agree (C ``pow`` here,
    TensorFlow's kernel there). ``iterations`` counts ``update`` calls; state
    ``m`` and ``v`` is kept per ``(layer, weight)`` in the weight's dtype.

    Parameters
    ----------
    learning_rate : float, default 0.001
    beta_1 : float, default 0.9
    beta_2 : float, default 0.999
    epsilon : float, default 1e-7
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        self.beta_1 = _beta("beta_1", beta_1)
        self.beta_2 = _beta("beta_2", beta_2)
        self.epsilon = _positive_float("epsilon", epsilon)
        self.iterations = 0
        self.momentums: dict[tuple[str, str], np.ndarray] = {}
        self.velocities: dict[tuple[str, str], np.ndarray] = {}

    def update(self, params: Tree, grads: Tree) -> None:
        """One Adam step on every weight of ``params``, in place."""
        pairs = list(weight_pairs(params, grads))  # validate everything before updating
        for layer, weight, array, gradient in pairs:
            m, v = self._state((layer, weight), array)
            self._update_step(array, gradient, m, v)
        self.iterations += 1

    def _state(self, key, array):
        if key not in self.momentums:
            self.momentums[key] = np.zeros_like(array)
            self.velocities[key] = np.zeros_like(array)
        m, v = self.momentums[key], self.velocities[key]
        if m.shape != array.shape or m.dtype != array.dtype:
            raise ValueError(
                f"Invalid value for argument `params`. Expected layer `{key[0]}` weight "
                f"`{key[1]}` with the shape {m.shape} and dtype {m.dtype} this optimizer "
                f"was built with. Received shape {array.shape} and dtype {array.dtype}."
            )
        return m, v

    def _update_step(self, w, g, m, v) -> None:
        cast = w.dtype.type
        lr = cast(self.learning_rate)
        local_step = cast(self.iterations + 1)
        beta_1_power = np.power(cast(self.beta_1), local_step)
        beta_2_power = np.power(cast(self.beta_2), local_step)
        alpha = lr * np.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        m += (g - m) * cast(1 - self.beta_1)
        v += (np.square(g) - v) * cast(1 - self.beta_2)
        w -= (m * alpha) / (np.sqrt(v) + cast(self.epsilon))
