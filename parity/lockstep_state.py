"""Lockstep state: what one side holds between steps (weights, optimizer state), as
snapshots the judge compares (``parity.lockstep``, ``parity.lockstep_judge``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ITERATIONS = ("optimizer", "iterations")  # (layer, quantity) of the iteration count


def is_model_state(name: str) -> bool:
    """Whether a snapshot entry is a layer's non-trainable state (batch norm's
    ``moving_mean``/``moving_variance``, ``spec.layers.STATE_WEIGHTS``), not a weight."""
    from spec.layers import STATE_WEIGHTS

    return any(name in names for names in STATE_WEIGHTS.values())


# -- state --------------------------------------------------------------------------------


def scratch_state(optimizer):
    """A copy of a scratch optimizer's state (``scratch.optim``: its ``iterations`` and its
    ``slots``, ``{slot: {(layer, weight): array}}``, empty before the first step), in the
    form the Keras side takes (``reference.lockstep_step.OptimizerState``)."""
    from reference.lockstep_step import OptimizerState

    slots = {name: _tree(by_key) for name, by_key in getattr(optimizer, "slots", {}).items()}
    return OptimizerState(int(optimizer.iterations), slots)


def _tree(by_key: dict) -> dict:
    out: dict = {}
    for (layer, weight), array in by_key.items():
        out.setdefault(layer, {})[weight] = np.array(array, copy=True)
    return out


def copy_weights(tree) -> dict:
    return {layer: {k: np.array(v, copy=True) for k, v in w.items()} for layer, w in tree.items()}


@dataclass
class Snapshot:
    """Weights (scratch layout, copies) and optimizer state at one point of training."""

    weights: dict
    state: object  # reference.lockstep_step.OptimizerState

    @classmethod
    def take(cls, model, optimizer) -> Snapshot:
        return cls(model.snapshot(), scratch_state(optimizer))


def quantities(snapshot: Snapshot, slots: tuple[str, ...]):
    """``(layer, quantity, array)`` of everything lockstep compares after a step: every
    weight, then every weight's ``slots`` (``reference.optimizers``: quantity
    ``"<weight> <slot>"``, None where the state has none yet), then the iteration count."""
    for layer, weights in snapshot.weights.items():
        for weight, array in weights.items():
            yield layer, weight, array
    for name in slots:
        tree = snapshot.state.slots.get(name, {})
        for layer, weights in snapshot.weights.items():
            for weight in weights:
                if not is_model_state(weight):  # moving statistics: no optimizer slots
                    yield layer, f"{weight} {name}", tree.get(layer, {}).get(weight)
    yield *ITERATIONS, np.array(snapshot.state.iterations, dtype=np.int64)
