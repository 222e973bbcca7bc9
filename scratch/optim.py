"""Optimizers over a weight tree ``{layer: {weight: array}}``, updating in place.

``update(params, grads)`` walks ``params`` (the live arrays) and takes each weight's
gradient from ``grads`` under the same keys; ``input`` entries of ``grads`` (loss
gradients of layer inputs) are ignored. Every hyper-parameter is held as a Python
float and cast to each weight's dtype when used, as Keras casts to the variable's
dtype; so a float32 model steps with ``float32(0.005) = 0.004999999888``.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext

import numpy as np

from scratch.layer_base import invalid_argument
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


@functools.lru_cache(maxsize=4096)
def keras_beta_power(beta: float, step: int) -> float:
    """``beta ** step`` as Keras's Adam gets it on TensorFlow, as a Python float.

    Two measured facts (TF 2.21, 3,000 steps, both betas): ``ops.cast(0.9, float64)``
    is ``tf.cast`` of a Python float, which goes through a float32 tensor, so the
    base is ``float32(beta)`` (0.9 -> 0.8999999761581421) in every dtype; and TF's
    ``pow`` is correctly rounded in all but 2-3 of 3,000 steps, where C's ``pow`` (numpy)
    is off by one ulp in ~5% of them. So: the exact power, rounded once to float64
    (rounding that to float32 matches TF's float32 ``pow`` too, bar denormals).
    """
    with localcontext() as context:
        context.prec = 50  # 50 digits: the rounding to 53 bits is decided correctly
        return float(Decimal(float(np.float32(beta))) ** step)


def keras_cast(value: float, dtype) -> np.floating:
    """``ops.cast(value, dtype)`` of a Python float as Keras 3 on TensorFlow computes it:
    ``tf.cast`` converts the float to a float32 tensor first, so the constant is
    ``float32(value)`` even in float64 (measured, TF 2.21: SGD's momentum 0.9 ->
    0.8999999761581421; AdamW's weight decay likewise). Constants Keras combines with a
    tensor directly (``ops.multiply(rho, v)``, ``1 - rho``) keep their float64 value."""
    return np.dtype(dtype).type(np.float32(value))


class _Slots:
    """Per-weight optimizer state (``{slot: {(layer, weight): array}}``), created as zeros
    in the weight's dtype on first use; a later shape or dtype change is a ValueError."""

    def __init__(self):
        self.iterations = 0
        self.slots: dict[str, dict[tuple[str, str], np.ndarray]] = {}

    def slot(self, name: str, key: tuple[str, str], array: np.ndarray) -> np.ndarray:
        store = self.slots.setdefault(name, {})
        if key not in store:
            store[key] = np.zeros_like(array)
        value = store[key]
        if value.shape != array.shape or value.dtype != array.dtype:
            raise ValueError(
                f"Invalid value for argument `params`. Expected layer `{key[0]}` weight "
                f"`{key[1]}` with the shape {value.shape} and dtype {value.dtype} this optimizer "
                f"was built with. Received shape {array.shape} and dtype {array.dtype}."
            )
        return value

    def update(self, params: Tree, grads: Tree) -> None:
        """One step on every weight of ``params``, in place (all validated first)."""
        pairs = list(weight_pairs(params, grads))
        for layer, weight, array, gradient in pairs:
            self._update_step((layer, weight), array, gradient)
        self.iterations += 1

    def _update_step(self, key, w, g) -> None:
        raise NotImplementedError


class SGD(_Slots):
    """Stochastic gradient descent as Keras 3's ``SGD`` (keras/src/optimizers/sgd.py).

    Plain (``momentum = 0``): ``w -= lr * g``. With momentum ``mu`` (cast as
    :func:`keras_cast`: float32-rounded in every dtype) and velocity ``m`` (zeros)::

        m = m * mu - g * lr
        w = w + m                       (nesterov=False)
        w = w + (m * mu - g * lr)       (nesterov=True)

    Parameters
    ----------
    learning_rate : float, default 0.01 (Keras's default)
        Cast to each weight's dtype (Keras's learning-rate variable follows floatx).
    momentum : float in [0, 1), default 0.0
    nesterov : bool, default False
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov=False):
        super().__init__()
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        self.momentum = _beta("momentum", momentum)
        if not isinstance(nesterov, bool):
            raise invalid_argument("nesterov", "a bool", nesterov)
        self.nesterov = nesterov

    def _update_step(self, key, w, g) -> None:
        lr = w.dtype.type(self.learning_rate)
        if self.momentum == 0:
            np.subtract(w, lr * g, out=w)
            return
        mu = keras_cast(self.momentum, w.dtype)
        m = self.slot("momentum", key, w)
        m[...] = self._velocity(m, g, lr, mu)
        w += self._velocity(m, g, lr, mu) if self.nesterov else m

    def _velocity(self, m, g, lr, mu):
        """Keras's ``m * mu - g * lr`` (the new velocity; with Nesterov, also the step
        taken from it)."""
        return m * mu - g * lr


class RMSprop(_Slots):
    """RMSprop as Keras 3's ``RMSprop`` (keras/src/optimizers/rmsprop.py), not centered.

    With ``rho``, ``epsilon`` and ``momentum`` combined with tensors as Python floats
    (float64-exact in float64)::

        v = rho * v + (1 - rho) * g**2
        increment = (lr * g) / sqrt(v + epsilon)      # epsilon INSIDE the square root
        w = w - increment                             (momentum = 0)
        b = momentum * b + increment; w = w - b       (momentum > 0)

    cs231n's form divides by ``sqrt(v) + epsilon`` instead (a different optimizer at small
    ``v``). Parameters: ``learning_rate=0.001``, ``rho=0.9``, ``momentum=0.0``,
    ``epsilon=1e-7`` (Keras's defaults).
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7):
        super().__init__()
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        self.rho = _beta("rho", rho)
        self.momentum = _beta("momentum", momentum)
        self.epsilon = _positive_float("epsilon", epsilon)

    def _update_step(self, key, w, g) -> None:
        cast = w.dtype.type
        v = self.slot("velocity", key, w)
        v[...] = cast(self.rho) * v + cast(1 - self.rho) * np.square(g)
        increment = (cast(self.learning_rate) * g) / self._denominator(v, cast(self.epsilon))
        if self.momentum > 0:
            b = self.slot("momentum", key, w)
            b[...] = cast(self.momentum) * b + increment
            increment = b
        w -= increment

    def _denominator(self, v, epsilon):
        """Keras's ``sqrt(v + epsilon)``: epsilon INSIDE the square root."""
        return np.sqrt(v + epsilon)


class Adam(_Slots):
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
    ``1 - beta_1`` and ``1 - beta_2`` are Python floats cast to the dtype (Keras's
    ``1 - self.beta_1``, a weak Python scalar); ``alpha`` is
    ``(lr * sqrt(1 - b2t)) / (1 - b1t)`` evaluated left to right; and ``beta ** t`` is
    what TensorFlow computes (``keras_beta_power``: the base is float32-rounded even
    in float64). Measured against Keras 3.15 on TensorFlow 2.21 (200 steps, 7,920
    weights): float32 bit for bit; float64 bit for bit except after the rare steps
    where TF's ``pow`` is one ulp off the exact power (t = 31 and 170 for beta_2 =
    0.999; 5 of 6,000 (beta, t) pairs), which leaves 87 of 7,920 weights one ulp
    apart (norm-wise 6e-17). Using C's ``pow`` instead: ~5% of steps off, and a
    float64 base for beta: 1e-7 apart after 200 steps. ``iterations`` counts
    ``update`` calls; state ``m`` and ``v`` is kept per ``(layer, weight)`` in the
    weight's dtype.

    Parameters
    ----------
    learning_rate : float, default 0.001
    beta_1 : float, default 0.9
    beta_2 : float, default 0.999
    epsilon : float, default 1e-7
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__()
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        self.beta_1 = _beta("beta_1", beta_1)
        self.beta_2 = _beta("beta_2", beta_2)
        self.epsilon = _positive_float("epsilon", epsilon)

    @property
    def momentums(self) -> dict[tuple[str, str], np.ndarray]:
        """First moments ``m`` per ``(layer, weight)``."""
        return self.slots.setdefault("momentum", {})

    @property
    def velocities(self) -> dict[tuple[str, str], np.ndarray]:
        """Second moments ``v`` per ``(layer, weight)``."""
        return self.slots.setdefault("velocity", {})

    def _update_step(self, key, w, g) -> None:
        m, v = self.slot("momentum", key, w), self.slot("velocity", key, w)
        cast = w.dtype.type
        lr = cast(self.learning_rate)
        beta_1_power = cast(keras_beta_power(self.beta_1, self.iterations + 1))
        beta_2_power = cast(keras_beta_power(self.beta_2, self.iterations + 1))
        alpha = lr * np.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        m += (g - m) * cast(1 - self.beta_1)
        v += (np.square(g) - v) * cast(1 - self.beta_2)
        w -= (m * alpha) / self._denominator(v, cast(self.epsilon))

    def _denominator(self, v, epsilon):
        """Keras's "epsilon hat": added outside the square root of the raw ``v``."""
        return np.sqrt(v) + epsilon


class AdamW(Adam):
    """Adam with decoupled weight decay, as Keras 3's ``AdamW`` on TensorFlow: before
    Adam's step, ``w = w - (w * wd) * lr`` with ``wd`` cast as :func:`keras_cast`
    (float32-rounded in every dtype) and ``lr`` in the weight's dtype
    (keras/src/backend/tensorflow/optimizer.py, ``_apply_weight_decay``).

    Parameters: those of :class:`Adam`, and ``weight_decay=0.004`` (Keras's default).
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7):  # fmt: skip
        super().__init__(learning_rate, beta_1, beta_2, epsilon)
        self.weight_decay = _positive_float("weight_decay", weight_decay)

    def _update_step(self, key, w, g) -> None:
        w -= w * keras_cast(self.weight_decay, w.dtype) * w.dtype.type(self.learning_rate)
        super()._update_step(key, w, g)
