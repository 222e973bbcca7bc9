"""The finite-difference engine (parity.finite_diff): its kink classifier (kinks left out,
round-off never taken for one), its batched and pointwise paths, exact restores."""

from __future__ import annotations

import numpy as np
import pytest

from parity import finite_diff as fd
from parity.testing import FD_EPS, FD_RTOL, check

STEPS = np.array(fd.MULTIPLES) * fd.EPS


def _losses(f):
    """``(4, 1)`` losses at +EPS, -EPS, +2EPS, -2EPS and the base ``(1,)``."""
    return np.array([[f(t)] for t in STEPS]), np.array([f(0.0)])


def test_round_off_of_a_small_smooth_gradient_is_not_a_kink():
    ulp = np.spacing(2.3)
    noise = iter([ulp, -ulp, 0.0, ulp, 0.0])  # a loss of 2.3 rounded, gradient 1e-5
    losses, base = _losses(lambda t: 2.3 + 1e-5 * t + next(noise))
    result = fd.classify(losses, base)
    assert not result.kinks.any() and abs(result.values[0] - 1e-5) < 1e-10


def test_a_relu_at_zero_is_a_kink():
    assert fd.classify(*_losses(lambda t: 2.3 + max(t, 0.0))).kinks.all()


def test_a_kink_inside_the_double_step_is_a_kink():
    assert fd.classify(*_losses(lambda t: 2.3 + 0.1 * t + max(t - 1.5 * fd.EPS, 0.0))).kinks.all()


def test_a_small_slope_change_within_the_step_is_a_kink_when_it_would_exceed_the_budget():
    # gradient 0.01 (budget 1e-10 + 1e-7 * 0.01 = 1.1e-9); a slope change of 3e-8 at
    # 0.3 EPS puts 1.05e-8 into C(EPS): the seed-18 zhou input pixel, 9.5e-7 relative
    result = fd.classify(*_losses(lambda t: 2.3 + 0.01 * t + 3e-8 * max(t - 0.3 * fd.EPS, 0)))
    assert result.kinks.all()


def _per_example_ce(z, labels):
    shifted = z - z.max(axis=1, keepdims=True)
    y = np.tile(labels, len(z) // len(labels))
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(z)), y]


@pytest.mark.parametrize("chunk_bytes", [1, 4 * 2**20], ids=["one_position_per_call", "4MiB"])
def test_batched_differences_equal_one_point_at_a_time(chunk_bytes):
    rng = np.random.default_rng(0)
    z, labels = rng.normal(size=(3, 7)), np.array([0, 4, 6])
    batched = fd.per_example(lambda b: _per_example_ce(b, labels), z, chunk_bytes=chunk_bytes)
    pointwise = fd.pointwise(lambda: _per_example_ce(z, labels).mean(), z, range(z.size))
    assert not batched.kinks.any() and not pointwise.kinks.any()
    check(batched.values.ravel(), pointwise.values, 1e-9, "softmax", "input", "pointwise FD")
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    exact = (p - np.eye(7)[labels]) / 3  # d mean CE / dz, the closed form
    check(batched.values, exact, 1e-9, "softmax", "input", "closed form")


def test_batched_differences_count_excluded_points_as_kinks():
    z, labels = np.random.default_rng(1).normal(size=(2, 5)), np.array([1, 2])
    exclude = np.zeros(z.shape, dtype=bool)
    exclude[1, 3] = True
    result = fd.per_example(lambda b: _per_example_ce(b, labels), z, exclude=exclude)
    assert result.kinks.tolist() == exclude.tolist() and result.values[1, 3] == 0.0
    assert result.judged_fraction == pytest.approx(0.9)


def test_pointwise_restores_every_element_bit_for_bit():
    x = np.random.default_rng(2).normal(size=(4, 3))
    before = x.copy()
    fd.pointwise(lambda: float(np.sum(np.sin(x))), x, range(x.size))
    assert np.array_equal(x.view(np.int64), before.view(np.int64))


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), "1e-5"])
def test_a_step_that_is_not_strictly_positive_is_refused(eps):
    with pytest.raises(ValueError, match=r"^Invalid value for argument `eps`\. Expected a "):
        fd.central_difference(lambda: 0.0, np.zeros(2), eps)


def test_a_read_only_array_is_refused():
    x = np.zeros(3)
    x.flags.writeable = False
    with pytest.raises(ValueError, match=r"argument `x`\. Expected a writeable numpy array"):
        fd.central_difference(lambda: 0.0, x, 1e-6)


def test_central_difference_restores_every_element_bit_exactly():
    x = np.random.default_rng(0).uniform(size=(10, 10)) * 1e-3
    assert np.any((x + 1e-6) - 1e-6 != x)  # so restoring by arithmetic would be caught
    before = x.copy()
    numeric = fd.central_difference(lambda: float(np.sum(x**2)), x, FD_EPS)
    assert np.array_equal(x, before)
    check(numeric, 2 * before, FD_RTOL, "fd", "d sum(x^2)", "formula")


def test_central_difference_at_chosen_indices_and_non_contiguous_views():
    base = np.random.default_rng(1).normal(size=(4, 6))
    view = base[:, ::2]  # perturbing it must reach the array f reads
    numeric = fd.central_difference(lambda: float(np.sum(base**2)), view, FD_EPS, [0, 5, 11])
    check(numeric, 2 * view.ravel()[[0, 5, 11]], FD_RTOL, "fd", "d sum(x^2)", "formula")


def test_a_vector_loss_is_classified_element_by_element():
    """Per-example losses: a kink in example 0's loss (relu at exactly 0) leaves the same
    point judged in example 1, whose loss is smooth there."""
    x = np.array([0.0, 0.3])

    def losses():
        return np.array([np.maximum(x[0], 0.0) + x[1] ** 2, 2.0 * x[0] + np.sin(x[1])])

    diff = fd.pointwise(losses, x, range(2))
    assert diff.values.shape == diff.kinks.shape == (2, 2)  # (points, examples)
    np.testing.assert_array_equal(diff.kinks, [[True, False], [False, False]])
    np.testing.assert_allclose(diff.values[0, 1], 2.0, rtol=1e-9)
    np.testing.assert_allclose(diff.values[1], [0.6, np.cos(0.3)], rtol=1e-9)
    assert diff.judged_fraction == 0.75
