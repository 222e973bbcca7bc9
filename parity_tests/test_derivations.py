"""The finite-difference kink classifier: kinks left out, round-off never taken for one."""

from __future__ import annotations

import numpy as np

from parity.checks import derivations as d

STEPS = np.array([1, -1, 2, -2]) * d.EPS


def _losses(f):
    """``(4, 1)`` losses at +EPS, -EPS, +2EPS, -2EPS and the base ``(1,)``."""
    return np.array([[f(t)] for t in STEPS]), np.array([f(0.0)])


def test_round_off_of_a_small_smooth_gradient_is_not_a_kink():
    ulp = np.spacing(2.3)
    noise = iter([ulp, -ulp, 0.0, ulp, 0.0])  # a loss of 2.3 rounded, gradient 1e-5
    losses, base = _losses(lambda t: 2.3 + 1e-5 * t + next(noise))
    central, kinks = d._classify(losses, base)
    assert not kinks.any() and abs(central[0] - 1e-5) < 1e-10


def test_a_relu_at_zero_is_a_kink():
    _, kinks = d._classify(*_losses(lambda t: 2.3 + max(t, 0.0)))
    assert kinks.all()


def test_a_kink_inside_the_double_step_is_a_kink():
    _, kinks = d._classify(*_losses(lambda t: 2.3 + 0.1 * t + max(t - 1.5 * d.EPS, 0.0)))
    assert kinks.all()


def test_a_small_slope_change_within_the_step_is_a_kink_when_it_would_exceed_the_budget():
    # gradient 0.01 (budget 1e-10 + 1e-7 * 0.01 = 1.1e-9); a slope change of 3e-8 at
    # 0.3 EPS puts 1.05e-8 into C(EPS): the seed-18 zhou input pixel, 9.5e-7 relative
    _, kinks = d._classify(*_losses(lambda t: 2.3 + 0.01 * t + 3e-8 * max(t - 0.3 * d.EPS, 0)))
    assert kinks.all()
