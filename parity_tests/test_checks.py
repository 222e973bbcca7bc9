"""Thin parametrized tests over the parity checks: pytest fails exactly when
``parity run`` would (same runner, same checks, same tolerances; one run per dtype
process for the whole session)."""

import pytest

from parity import runner, tolerances
from parity.plant import BlogAllTiesMaxPool, CastLoss, ScaleGradient, ScaleOutput

# the CLI default; every model's default run (seed 0, 32 images, exactly these keys, each
# PASS) in both dtypes: test_selftest.py's test_correct_code_raises_no_false_alarm
MODELS = ("zhou",)
DTYPES = ("float64", "float32")
pytestmark = pytest.mark.xdist_group("checks")  # the session's run, computed once
KEYS = [(m, d, *key) for m in MODELS for d in DTYPES for key in runner.expected_keys(m, d)]


def _id(key) -> str:
    return "-".join(str(part) for part in key)


@pytest.fixture(scope="session")
def results(_parity_processes):
    # A session fixture is set up before conftest's autouse (function-scoped) fixture that
    # activates the worker's kept dtype processes: without this, two more TensorFlow imports.
    with _parity_processes.active():
        return runner.run(runner.RunConfig(models=MODELS, dtypes=DTYPES))


def _summary_row(results, model, dtype, check, layer, quantity):
    s = results.summary
    hit = s[(s.model == model) & (s.dtype == dtype) & (s.check == check) & (s.layer == layer)
            & (s.quantity == quantity)]  # fmt: skip
    assert len(hit) == 1, f"{model} {dtype} {check} {layer}/{quantity}: no row in the run"
    return hit.iloc[0]


@pytest.mark.parametrize("model,dtype,check,layer,quantity", KEYS, ids=[_id(k) for k in KEYS])
def test_check_passes(results, model, dtype, check, layer, quantity):
    row = _summary_row(results, model, dtype, check, layer, quantity)
    assert row.status == "PASS", row.message


def test_run_reports_nothing_beyond_the_tested_keys(results):
    columns = ["model", "dtype", "check", "layer", "quantity"]
    reported = {tuple(r) for r in results.summary[columns].itertuples(index=False)}
    assert reported == set(KEYS)


def test_every_state_is_checked(results):
    states = set(results.tables["forward"]["state"]) | set(results.tables["gradients"]["state"])
    assert states == {"initial", "trained", "random", "large-logits"}


def test_derivations_run_three_ways(results):
    sides = set(zip(results.tables["derivations"]["actual_side"],
                    results.tables["derivations"]["desired_side"], strict=True))  # fmt: skip
    assert sides == {("scratch", "fd"), ("keras", "fd"), ("scratch", "keras")}


def test_ties_are_counted_on_real_images(results):
    table = results.tables["ties"]
    assert (table["tied_scratch"] > 1000).all() and (table["routing_mismatches"] == 0).all()


def test_ties_rows_are_ordinary_comparisons_with_the_counts_beside_them(results):
    table, gradients = results.tables["ties"], results.tables["gradients"]
    assert list(table.columns[: len(gradients.columns)]) == list(gradients.columns)
    assert set(table["quantity"]) == {"routing"} and (table["stage"] == "values").all()
    summary = results.summary[results.summary["check"] == "ties"]
    assert (summary["error_kind"] == "norm-wise rel").all()
    assert set(summary["worst_error"]) <= set(table["rel_error"])


@pytest.mark.keras
def test_planted_conv_kernel_gradient_fails_and_names_layer_and_quantity():
    config = runner.RunConfig(models=("zhou",), dtypes=("float64",), checks=("gradients",),
                              states=("initial",),
                              model_hooks=(ScaleGradient("conv2d", "kernel", 1.01),))  # fmt: skip
    summary = runner.run(config, in_process=True).summary
    failed = summary[summary.status != "PASS"]
    assert list(zip(failed.layer, failed.quantity, strict=True)) == [("conv2d", "kernel")]
    assert "layer `conv2d` quantity `kernel`" in failed.iloc[0].message
    assert failed.iloc[0].worst_error == pytest.approx(0.01, rel=1e-9)


@pytest.mark.keras
def test_planted_blog_all_ties_rule_fails_ties_gradients_and_filter_derivation():
    config = runner.RunConfig(models=("zhou",), dtypes=("float64",), states=("random",),
                              model_hooks=(BlogAllTiesMaxPool(),))  # fmt: skip
    results = runner.run(config, in_process=True)
    summary, d = results.summary, results.tables["derivations"]
    bad = summary[summary.status != "PASS"]
    failed = set(zip(bad.check, bad.layer, bad.quantity, strict=True))
    assert ("ties", "max_pooling2d", "routing") in failed
    assert ("gradients", "conv2d", "kernel") in failed
    assert ("derivations", "conv2d", "kernel") in failed  # scratch vs FD, on real images
    assert ("derivations", "max_pooling2d", "input") not in failed  # tie-free inputs
    kernel = d[(d.layer == "conv2d") & (d.quantity == "kernel")].set_index("actual_side")
    sides = kernel[kernel.desired_side == "fd"].status.eq("PASS").to_dict()
    assert sides == {"scratch": False, "keras": True}  # the report says which side is wrong


@pytest.mark.parametrize("key", sorted(tolerances.TABLE), ids="-".join)
def test_every_budget_is_above_its_measured_error_and_far_below_a_one_percent_bug(key):
    tol = tolerances.TABLE[key]
    budget = max(tol.atol, tol.rtol)
    assert tol.reason and 0 < tol.measured < budget <= 1e-3


def test_planted_float64_loss_of_a_float32_model_fails_the_loss_row_at_the_dtype_stage():
    config = runner.RunConfig(models=("zhou",), dtypes=("float32",), checks=("gradients",),
                              states=("initial",), model_hooks=(CastLoss("float64"),))  # fmt: skip
    rows = runner.run(config).tables["gradients"]  # float32: its own spawned process
    loss = rows[rows.layer == "loss"].iloc[0]
    assert (loss.status, loss.stage) == ("FAIL", "dtype"), loss.message


@pytest.mark.keras
def test_planted_forward_error_of_1e_minus_12_in_the_logits_fails_only_that_layer():
    config = runner.RunConfig(models=("zhou",), dtypes=("float64",), checks=("forward",),
                              states=("initial",),
                              model_hooks=(ScaleOutput("dense", 1 + 1e-12),))  # fmt: skip
    summary = runner.run(config, in_process=True).summary
    assert list(summary.layer[summary.status != "PASS"]) == ["dense"]
