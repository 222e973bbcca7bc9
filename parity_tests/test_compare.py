import numpy as np
import pytest

from parity.compare import compare

NAMES = dict(layer="conv2d", quantity="kernel")


def _pair(shape=(4, 5, 6), dtype=np.float64, seed=0):
    desired = np.random.default_rng(seed).normal(size=shape).astype(dtype)
    return desired.copy(), desired


def test_identical_arrays_pass_with_zero_error():
    a, b = _pair()
    record = compare(a, b, atol=0.0, rtol=0.0, **NAMES)
    assert record.passed and record.max_abs_error == 0.0 and record.stage == "values"


def test_planted_one_element_error_is_found_with_its_index():
    a, b = _pair()
    a[2, 3, 4] += 1e-6
    record = compare(a, b, atol=0.0, rtol=1e-9, **NAMES)
    assert not record.passed
    assert record.worst_index == "(2, 3, 4)"
    assert record.worst_flat_index == np.ravel_multi_index((2, 3, 4), a.shape)
    assert record.actual_at_worst == a[2, 3, 4] and record.desired_at_worst == b[2, 3, 4]
    assert record.max_abs_error == pytest.approx(1e-6, rel=1e-6)
    assert "(2, 3, 4)" in record.message and "conv2d" in record.message


def test_norm_wise_rule_passes_an_error_that_is_small_against_the_largest_element():
    a, b = np.array([1e-12, 1.0]), np.array([2e-12, 1.0])  # elementwise 50%, norm-wise 1e-12
    record = compare(a, b, atol=0.0, rtol=1e-11, **NAMES)
    assert record.passed and record.max_elem_rel_error == pytest.approx(0.5)
    assert record.rel_error == pytest.approx(1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("side", ["actual", "desired"])
def test_non_finite_never_passes(bad, side):
    a, b = _pair()
    (a if side == "actual" else b)[1, 1, 1] = bad
    record = compare(a, b, atol=np.inf, rtol=np.inf, **NAMES)
    assert not record.passed and record.worst_index == "(1, 1, 1)"
    assert "non-finite" in record.message


def test_nan_on_both_sides_never_passes():
    a, b = np.array([np.nan]), np.array([np.nan])
    assert not compare(a, b, atol=1.0, rtol=1.0, **NAMES).passed


def test_shape_mismatch_fails_before_values_are_compared():
    a, b = np.full((2, 3), np.nan), np.zeros((3, 2))  # NaN would fail values; shape comes first
    record = compare(a, b, atol=np.inf, rtol=np.inf, **NAMES)
    assert not record.passed and record.stage == "shape"
    assert record.message.startswith("shape: layer `conv2d` quantity `kernel`: scratch")
    assert np.isnan(record.max_abs_error)


def test_dtype_mismatch_fails_before_values_are_compared():
    a, b = _pair()
    record = compare(a.astype(np.float32), b, atol=np.inf, rtol=np.inf, **NAMES)
    assert not record.passed and record.stage == "dtype"
    assert "float32" in record.message and "float64" in record.message


def test_expected_dtype_catches_both_sides_in_the_wrong_precision():
    a, b = _pair(dtype=np.float32)
    record = compare(a, b, atol=1.0, rtol=1.0, expected_dtype="float64", **NAMES)
    assert not record.passed and record.stage == "dtype"


def test_side_labels_appear_in_the_message():
    a, b = _pair()
    a[0, 0, 0] += 1.0
    record = compare(a, b, atol=0, rtol=0, actual_side="keras", desired_side="fd", **NAMES)
    assert "keras=" in record.message and "fd=" in record.message


def test_all_zero_reference_with_a_difference_fails():
    record = compare(np.array([0.0, 1e-3]), np.zeros(2), atol=0.0, rtol=1.0, **NAMES)
    assert not record.passed and record.rel_error == np.inf


def test_exit_code_follows_the_worst_status():
    from parity.compare import exit_code

    assert exit_code(["PASS", "NOT_PROVIDED"]) == 0
    assert exit_code(["PASS", "INCONCLUSIVE"]) == 1
    assert exit_code(["FAIL", "PASS"]) == 1
    assert exit_code(["FAIL", "ERROR", "INCONCLUSIVE"]) == 3


def test_a_pass_on_too_few_fd_points_is_inconclusive_never_a_pass():
    from parity.checks.derivations import FD_COVERAGE_FLOOR, _coverage

    record = compare([1.0, 0.0], [1.0, 0.0], layer="conv2d", quantity="kernel", atol=0, rtol=0)
    low = _coverage(record, FD_COVERAGE_FLOOR / 2)
    assert low.status == "INCONCLUSIVE" and f"judged {FD_COVERAGE_FLOOR / 2:.1%}" in low.message
    assert _coverage(record, FD_COVERAGE_FLOOR).status == "PASS"


def test_an_exception_record_names_type_message_and_the_raising_line():
    from parity.compare import error

    def user_code():
        return [][1]

    try:
        user_code()
    except IndexError as exc:
        record = error("dense", "bias", exc)
    assert record.status == "ERROR" and not record.passed
    assert "IndexError: list index out of range" in record.message
    assert "test_compare.py:" in record.message and "in user_code" in record.message
