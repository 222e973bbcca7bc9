"""Lockstep's RMSprop rule: the update difference that the two sides' gradient magnitudes
(held in the velocity ``v``) explain is taken out before the update is judged
(``parity.lockstep_judge.Judge._rms_explained``). The numbers mirror the false alarm it
removes: cs231n-3layer, float32, seed 9, step 1, a conv-kernel element with ``|g|`` 7.39e-4
on scratch's side and 7.34e-4 on Keras's (``v`` below epsilon), whose updates differed by
2.3x the budget."""

import numpy as np
import pytest

from parity.lockstep_judge import Budgets, Judge

LR, RHO, EPSILON = 0.001, 0.9, 1e-7  # Keras's RMSprop defaults (reference.optimizers)


def _step(g, v0, dtype, denominator=lambda v, cast: np.sqrt(v + cast(EPSILON))):
    """Keras's RMSprop step in ``dtype``: the new ``v`` and the update ``-lr g / sqrt(v + eps)``."""
    cast = np.dtype(dtype).type
    g, v0 = np.asarray(g, dtype), np.asarray(v0, dtype)
    v = cast(RHO) * v0 + cast(1 - RHO) * np.square(g)
    return v, -(cast(LR) * g) / denominator(v, cast)


def _explained(g_s, g_k, v0, dtype="float32", **scratch_rule):
    """(explained part, |d_s - d_k|) of one RMSprop step from the same ``v0``."""
    v_s, d_s = _step(g_s, v0, dtype, **scratch_rule)
    v_k, d_k = _step(g_k, v0, dtype)
    judge = Judge(dtype, Budgets.of(dtype, "rmsprop"), ("velocity",), rmsprop_rule=(LR, RHO,
                  EPSILON))  # fmt: skip
    f64 = [np.asarray(a, np.float64) for a in (v0, v_s, v_k)]
    w = np.zeros_like(f64[0])
    rows = [("conv2d", "kernel", w, w + d_s, w + d_k, (w, w + d_s, w + d_k)),
            ("conv2d", "kernel velocity", f64[0], f64[1], f64[2], tuple(f64))]  # fmt: skip
    explained = judge._rms_explained(rows)[("conv2d", "kernel")]
    return explained, np.abs(np.asarray(d_s, np.float64) - np.asarray(d_k, np.float64))


def test_gradient_magnitudes_below_epsilon_explain_the_update_difference():
    explained, diff = _explained([7.386668e-4, -0.42], [7.341877e-4, -0.42], [0.0, 0.0])
    assert diff[0] > 1e-3 * LR  # 2.3x the float32 budget at M = lr sqrt(10): the false alarm
    # what is left is the float32 rounding of each side's own update (a few eps of it)
    assert abs(diff[0] - explained[0]) < 4 * np.finfo(np.float32).eps * LR * np.sqrt(10)


def test_a_flipped_update_sign_is_not_explained():
    explained, diff = _explained([-7.4e-4, 0.3], [7.4e-4, -0.3], [0.0, 0.0])
    assert diff.min() > 1e-3 * LR and np.all(explained < 1e-6 * diff)


def test_cs231n_epsilon_outside_the_root_is_not_explained():
    # the catalog's rmsprop-epsilon-outside-sqrt: same g and v on both sides, other rule
    g = [7.4e-4, 2e-4, 0.3]
    explained, diff = _explained(
        g, g, [0.0, 0.0, 0.0], denominator=lambda v, cast: np.sqrt(v) + cast(EPSILON)
    )
    assert diff[:2].min() > 0.1 * LR and explained.max() < 1e-6 * diff[:2].min()


def test_no_magnitude_is_read_where_the_old_velocity_swamps_the_new_term():
    # v0 = 1, g^2 (1 - rho) = 1e-12: the subtraction v - rho v0 is all rounding in float32
    explained, _ = _explained([1e-6], [2e-6], [1.0])
    assert explained[0] == 0.0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_later_steps_with_a_well_conditioned_velocity_are_explained(dtype):
    v0 = np.array([3e-8, 2e-2])  # below epsilon and far above it
    explained, diff = _explained([5e-4, 0.1], [5.02e-4, 0.1002], v0, dtype)
    # left: each side's own rounding, a few eps of the step's scale M = lr sqrt(1 / (1 - rho))
    assert np.all(np.abs(diff - explained) <= 4 * np.finfo(dtype).eps * LR * np.sqrt(10))


@pytest.mark.keras
def test_lockstep_gives_rmsprop_the_rule_and_other_optimizers_not():
    from parity import lockstep
    from reference.lockstep_step import LockstepStepper
    from reference.optimizers import OPTIMIZERS
    from reference.twin import twin
    from scratch.models import build

    rules = {}
    for name in ("rmsprop", "adam", "sgd"):
        model = build("chw", seed=0, dtype="float64")
        stepper = LockstepStepper(twin(model, "float64"), model, optimizer=name,
                                  learning_rate=OPTIMIZERS[name].learning_rate)  # fmt: skip
        judge = lockstep.Lockstep(stepper, model, "float64", name).judge
        rules[name] = (judge.rmsprop_rule, judge.adam_rule is not None)
    assert rules == {"rmsprop": ((LR, RHO, EPSILON), False), "adam": (None, True),
                     "sgd": (None, False)}  # fmt: skip
