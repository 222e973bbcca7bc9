"""Catalog hooks for batch norm and dropout (model ``cs231n-3layer``): the mistakes
people make deriving them by hand (cs231n assignment 2's batchnorm and dropout layers).

Each hook swaps one method on the model's own layer object (``scratch.normalization.
BatchNormalization`` / ``scratch.dropout.Dropout``, through ``Sequential.layer(name)``);
the faulty arithmetic lives here only, never in ``scratch/``. Entries: ``parity.catalog``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scratch.reductions import channel_mean_var, channel_sum


@dataclass(frozen=True)
class BatchNormBackwardNoMeanTerm:
    """Training-mode backward without the mean term: ``dx = (M dxhat - xhat sum(dxhat
    xhat)) / (M std)``, the ``- sum(dxhat)`` that the batch mean's dependence on x gives
    left out (the usual slip when d mean / dx is forgotten)."""

    layer: str

    def __call__(self, model) -> None:
        bn = model.layer(self.layer)

        def _backward(dout, need_dx=True):
            xhat, std, training = bn._cache
            bn.grads = {"gamma": channel_sum(dout * xhat), "beta": channel_sum(dout)}
            if not need_dx:
                return None
            dxhat = dout * bn.params["gamma"]
            if not training:
                return dxhat / std
            count = dout.size // dout.shape[-1]
            projected = channel_sum(dxhat * xhat)
            return (count * dxhat - xhat * projected) / (count * std)  # the bug: no - sum dxhat

        bn._backward = _backward


def _forward_with(bn, statistics, update):
    """A batch-norm ``_forward`` whose training mode takes ``(mean, variance, moved)`` from
    ``statistics(x, batch mean, batch variance)``: it normalizes with ``mean`` and
    ``variance`` and updates the moving statistics with ``update(moving, batch)``, from the
    batch mean and ``moved``. The batch statistics are the layer's own
    (``scratch.reductions``), so a mutant differs from it only by its planted fault."""

    def _forward(x):
        if bn.training:
            batch_mean, batch_var = channel_mean_var(x)
            mean, variance, moved = statistics(x, batch_mean, batch_var)
            for name, batch in (("moving_mean", batch_mean), ("moving_variance", moved)):
                bn.state[name][...] = update(bn.state[name], batch)
        else:
            mean, variance = bn.state["moving_mean"], bn.state["moving_variance"]
        std = np.sqrt(variance + bn.epsilon)
        xhat = (x - mean) / std
        bn._keep(x.shape[0], (xhat, std, bn.training))
        return bn.params["gamma"] * xhat + bn.params["beta"]

    return _forward


def _keras_update(bn):
    return lambda moving, batch: moving * bn.momentum + batch * (1 - bn.momentum)


@dataclass(frozen=True)
class BatchNormUnbiasedVariance:
    """Training mode divides the variance by M - 1 (``np.var(x, ddof=1)``, Bessel's
    correction) instead of M, for the normalization and the moving variance. Keras (and
    cs231n) use the biased batch variance. Tiny: the output moves by about 1 / (2M)
    relative, 2.3e-5 at the first batch norm's M = 32 x 26 x 26 = 21,632 elements per
    channel, which only float64's budgets can resolve."""

    layer: str

    def __call__(self, model) -> None:
        bn = model.layer(self.layer)

        def statistics(x, mean, biased):
            count = x.size // x.shape[-1]
            unbiased = biased * x.dtype.type(count / (count - 1))  # the bug: / (M - 1)
            return mean, unbiased, unbiased

        bn._forward = _forward_with(bn, statistics, _keras_update(bn))


@dataclass(frozen=True)
class BatchNormMomentumReversed:
    """The moving averages written ``moving = momentum * batch + (1 - momentum) *
    moving``: the weights of the old value and the batch swapped (the moving statistics
    follow each batch almost entirely). Training mode's output does not use them, so only
    the moving statistics (lockstep, after every step) and inference show it."""

    layer: str

    def __call__(self, model) -> None:
        bn = model.layer(self.layer)

        def statistics(x, mean, variance):
            return mean, variance, variance

        def update(moving, batch):
            return moving * (1 - bn.momentum) + batch * bn.momentum  # the bug: reversed

        bn._forward = _forward_with(bn, statistics, update)


@dataclass(frozen=True)
class BatchNormTrainingUsesMoving:
    """Training mode normalizes with the MOVING statistics (test mode's formula) while
    still updating them; backward is the training-mode derivation."""

    layer: str

    def __call__(self, model) -> None:
        bn = model.layer(self.layer)

        def statistics(x, mean, variance):  # the bug: normalizes with the moving ones
            moving = bn.state["moving_mean"].copy(), bn.state["moving_variance"].copy()
            return (*moving, variance)  # and updates them from the batch, as it should

        bn._forward = _forward_with(bn, statistics, _keras_update(bn))


@dataclass(frozen=True)
class DropoutNotScaled:
    """Inverted dropout without the 1 / (1 - rate) scale (cs231n: ``/ p``), forward and
    backward: the expected activation shrinks by 1 - rate in training mode."""

    layer: str

    def __call__(self, model) -> None:
        layer = model.layer(self.layer)
        zero = layer.dtype.type(0)

        def _forward(x):
            if not layer.training:
                layer._keep(x.shape[0], (None, None))
                return x.copy()
            if layer.mask is None or layer.mask.shape != x.shape:
                layer.mask = layer._rng.random(x.shape) >= layer.rate
            layer._keep(x.shape[0], (layer.mask, None))
            return np.where(layer.mask, x, zero)  # the bug: x * scale

        def _backward(dout, need_dx=True):
            layer.grads = {}
            mask, _ = layer._cache
            if not need_dx:
                return None
            return dout.copy() if mask is None else np.where(mask, dout, zero)

        layer._forward, layer._backward = _forward, _backward


@dataclass(frozen=True)
class DropoutMaskNotReused:
    """Backward draws a fresh mask instead of reusing the one its forward pass applied
    (``mask = np.random.rand(*dout.shape) < p`` again in ``dropout_backward``)."""

    layer: str

    def __call__(self, model) -> None:
        layer = model.layer(self.layer)
        zero = layer.dtype.type(0)

        def _backward(dout, need_dx=True):
            layer.grads = {}
            mask, scale = layer._cache
            if not need_dx:
                return None
            if mask is None:
                return dout.copy()
            fresh = layer._rng.random(dout.shape) >= layer.rate  # the bug: a new mask
            return np.where(fresh, dout * scale, zero)

        layer._backward = _backward
