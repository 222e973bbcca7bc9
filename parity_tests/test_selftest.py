import argparse
from dataclasses import dataclass

import numpy as np
import pytest

from parity import catalog, runner, selftest, selftest_cli
from parity.data import load_mnist
from scratch.models import MODEL_NAMES

ENTRY_IDS = [e.name for e in catalog.ENTRIES]


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def batch0():
    return runner.load_batches(runner.RunConfig(seed=0, images=selftest.DEFAULT_IMAGES))


# -- the catalog itself (numpy only) --------------------------------------------------------


def test_catalog_has_at_least_twelve_distinct_entries_on_registered_models():
    assert len(catalog.ENTRIES) >= 12 and len(catalog.BY_NAME) == len(catalog.ENTRIES)
    assert all(e.model in MODEL_NAMES and e.description and e.claims for e in catalog.ENTRIES)


@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=ENTRY_IDS)
def test_hook_changes_the_values_it_claims(entry, mnist):
    changed = catalog.changed_values(entry, "float64", mnist.test_images[:8],
                                     mnist.test_labels[:8])  # fmt: skip
    assert all(np.isfinite(v) and v > 1e-6 for v in changed.values()), changed


@dataclass(frozen=True)
class DoesNothing:
    def __call__(self, model) -> None:
        pass


def test_a_hook_that_changes_nothing_fails_the_claim_test(mnist):
    idle = catalog.Entry("idle", "zhou", "no change", DoesNothing(), ("forward:conv2d",))
    changed = catalog.changed_values(idle, "float64", mnist.test_images[:8], mnist.test_labels[:8])
    assert changed == {"forward:conv2d": 0.0}


def test_pad_then_crop_variant_changes_nothing(mnist):
    variant = catalog.Entry("pad", "chw", "correct", catalog.PadThenCrop(),
                            ("forward:conv2d", "gradient:conv2d/input",
                             "gradient:conv2d/kernel"))  # fmt: skip
    changed = catalog.changed_values(variant, "float64", mnist.test_images[:8],
                                     mnist.test_labels[:8])  # fmt: skip
    assert max(changed.values()) < 1e-15, changed


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_hook_with_the_epsilon_bug_removed_changes_nothing(mnist, dtype):
    control = catalog.Entry("adam-control", "chw", "correct",
                            catalog.AdamEpsilonInsideSqrt(inside_sqrt=False), ("training",),
                            training=catalog.ADAM_RUN)  # fmt: skip
    changed = catalog.changed_values(control, dtype, mnist.test_images[:64], mnist.test_labels[:64])
    assert changed == {"training": 0.0}  # two Adam steps, bit for bit


def test_restore_globals_undoes_the_adam_patch():
    from scratch.models import build
    from scratch.optim import Adam

    original = Adam._denominator
    catalog.AdamEpsilonInsideSqrt()(build("chw"))
    assert Adam._denominator is not original
    catalog.restore_globals()
    assert Adam._denominator is original


def test_layout_bug_touches_only_the_marked_model():
    from reference import layout
    from scratch.models import build

    marked, plain = build("zhou"), build("zhou")
    catalog.FiltersReshapeNotTranspose()(marked)
    try:
        kernel = plain.params()["conv2d"]["kernel"]
        good = layout.layout_for(plain).to_keras("conv2d", "kernel", kernel)
        bad = layout.layout_for(marked).to_keras("conv2d", "kernel", kernel)
        assert np.array_equal(good, layout.blog_filters_to_keras(kernel, "test"))
        assert not np.array_equal(bad, good)
    finally:
        catalog.restore_globals()


# -- verdicts: a catch is a failure on values -----------------------------------------------


def _row(check, stage, passed, position=0):
    status = "PASS" if passed else "FAIL"
    return dict(check=check, stage=stage, status=status, layer="conv2d", quantity="kernel",
                state="initial", rel_error=0.5, max_abs_error=1.0, atol=0.0, rtol=1e-13,
                message=f"{stage}: ...", _position=position)  # fmt: skip


def test_a_shape_failure_is_not_a_catch():
    verdict = selftest._verdict(
        [_row("forward", "shape", False), _row("gradients", "values", True)]
    )
    assert verdict["caught"] == "no" and verdict["message"].startswith("shape failure only")


def test_the_first_value_failure_is_the_catch():
    rows = [_row("forward", "values", True, 0), _row("gradients", "values", False, 1),
            _row("ties", "values", False, 2)]  # fmt: skip
    verdict = selftest._verdict(rows)
    assert (verdict["caught"], verdict["check"], verdict["checks_failed"]) == (
        "yes",
        "gradients",
        "gradients;ties",
    )


def test_a_ties_catch_reports_its_relative_error_like_any_comparison():
    verdict = selftest._verdict([_row("ties", "values", False)])
    assert (verdict["check"], verdict["error"], verdict["error_kind"]) == (
        "ties",
        0.5,
        "norm-wise rel",
    )


@dataclass(frozen=True)
class Raises:
    def __call__(self, model) -> None:
        raise RuntimeError("planted")


def test_a_variant_that_raises_is_not_caught(batch0):
    entry = catalog.Entry("raises", "zhou", "raises", Raises(), ("forward:conv2d",))
    row = selftest.evaluate_bug(entry, "float64", batch0)
    assert row["caught"] == "no" and row["raised"] == "RuntimeError: planted"


# -- every entry is caught (float64 in this process; float32 in its own) -------------------


@pytest.mark.keras
@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=ENTRY_IDS)
def test_bug_is_caught_on_values_float64(entry, batch0):
    row = selftest.evaluate_bug(entry, "float64", batch0)
    assert row["caught"] == "yes", row["message"]


@pytest.mark.keras
def test_tie_to_last_max_is_invisible_in_the_filter_gradient_but_caught(batch0):
    row = selftest.evaluate_bug(catalog.BY_NAME["tie-to-last-max"], "float64", batch0)
    assert "gradients:max_pooling2d/input" in row["failed_keys"]
    assert "gradients:conv2d/kernel" not in row["failed_keys"]


@pytest.mark.keras
def test_training_only_bug_passes_the_static_checks_and_fails_training(batch0):
    row = selftest.evaluate_bug(catalog.BY_NAME["adam-epsilon-inside-sqrt"], "float64", batch0)
    assert row["check"] == "training" and row["checks_failed"] == "training"


@pytest.mark.keras
def test_update_before_input_gradient_is_caught_outside_training(batch0):
    # the gradients are read from Softmax.backprop with a nonzero learning rate
    row = selftest.evaluate_bug(catalog.BY_NAME["update-before-input-grad"], "float64", batch0)
    assert row["check"] == "gradients" and "gradients:flatten/input" in row["failed_keys"]
    assert "gradients:dense/kernel" not in row["failed_keys"]


@pytest.mark.slow
def test_every_bug_is_caught_in_float32():
    # float32 runs in its own process; float64's catches are test_bug_is_caught_on_values_float64
    options = selftest.Options(dtypes=("float32",), sweep=False)
    result = selftest.run_selftest(options)
    bugs = result.catalog
    assert len(bugs) == sum("float32" in e.dtypes for e in catalog.ENTRIES)
    missed = bugs[bugs["caught"] != "yes"]
    assert missed.empty, missed[["bug", "message"]].to_string()


# -- the correct implementation: no false alarm ---------------------------------------------


@pytest.mark.keras
@pytest.mark.parametrize(
    "model, variant, hooks", [("zhou", "", ()), ("chw", "pad-then-crop", (catalog.PadThenCrop(),))]
)
def test_correct_code_raises_no_false_alarm_fast(model, variant, hooks):  # fmt: skip
    options = selftest.Options(seeds=2, derivation_seeds=0, training_seeds=1)
    batches = {s: runner.load_batches(runner.RunConfig(seed=s, images=8)) for s in range(2)}
    row, failing = selftest.sweep_correct(model, variant, hooks, "float64", options,
                                          batches.__getitem__)  # fmt: skip
    assert row["false_alarms"] == 0 and row["checks_run"] > 0, row["message"]


# One seed, the one `parity run` uses: every model and correct variant, both dtypes, every
# check (derivations in float64) and the catalog's short training runs, at seed 0 on the
# 32 images `parity run` checks. Each (target, dtype) is one test, run in its dtype's kept
# process, so pytest-xdist spreads them. The wide sweeps live elsewhere: `parity selftest`
# (20 seeds) and benchmarks/false_alarms.py (50 seeds; README, "Verdicts that hold on any
# CPU"). A second seed (this test ran seeds 0 and 1 at 8 images until issue 16) judged the
# same keys again at other weights: more seeds are those sweeps' job, not the suite's.
# This test is also where the default run of every model is shown to report exactly
# `runner.expected_keys` and to pass each one (test_checks_slow.py did it for six models at
# seed 0, 32 images, again: the same run twice; zhou's runner.run path: test_checks.py).
SWEEP = selftest.Options(seeds=1, derivation_seeds=1, training_seeds=1,
                         images=runner.DEFAULT_IMAGES)  # fmt: skip
TARGETS = selftest._correct_targets()
TARGET_IDS = [f"{m}-{v}" if v else m for m, v, _ in TARGETS]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", runner.DEFAULT_DTYPES)
@pytest.mark.parametrize("model, variant, hooks", TARGETS, ids=TARGET_IDS)
def test_correct_code_raises_no_false_alarm(model, variant, hooks, dtype):
    from reference.backend import run_in_dtype_process

    row, judged = run_in_dtype_process(dtype, selftest.sweep_target, model, variant, hooks,
                                       dtype, SWEEP)  # fmt: skip
    assert row["seeds"] == SWEEP.seeds and row["checks_run"] == len(judged)
    static = {(r["check"], r["layer"], r["quantity"]) for r in judged if r["check"] != "training"}
    expected = set(runner.expected_keys(model, dtype))
    missing, beyond = sorted(expected - static), sorted(static - expected)
    assert not missing and not beyond, f"missing {missing}; beyond the expected keys {beyond}"
    trained = [r for r in judged if r["check"] == "training"]  # the catalog's runs on model
    assert bool(trained) == any(e.training and e.model == model for e in catalog.ENTRIES)
    assert row["false_alarms"] == 0, row["message"]
    not_passed = [(r["check"], r["layer"], r["quantity"], r["status"]) for r in judged
                  if r["status"] != "PASS"]  # fmt: skip
    assert not not_passed, not_passed


# -- command line ---------------------------------------------------------------------------


def _args(*argv):
    parser = argparse.ArgumentParser()
    selftest_cli.add_selftest_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv", [("--bugs", "nope"), ("--seeds", "-1"), ("--dtypes", "float16"),
                                  ("--seeds", "3", "--derivation-seeds", "4"),
                                  ("--models", "lenet6")])  # fmt: skip
def test_bad_usage_exits_2_and_names_the_argument(argv, tmp_path, capsys):
    assert selftest_cli.selftest_command(_args("--out", str(tmp_path), *argv)) == 2
    assert argv[-2] in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_models_option_limits_the_sweep_and_the_bugs_to_those_models():
    options = selftest_cli.options_from_args(_args("--models", "lenet5,chw"))
    assert options.models == ("lenet5", "chw")
    assert set(options.bugs) == {e.name for e in catalog.ENTRIES if e.model in ("lenet5", "chw")}
    assert [t[:2] for t in selftest._correct_targets(options.models)] == [
        ("chw", ""), ("lenet5", ""), ("chw", "pad-then-crop")]  # fmt: skip
    assert selftest_cli.options_from_args(_args("--models", "lenet5", "--bugs", "true-convolution")
                                          ).bugs == ("true-convolution",)  # fmt: skip
    assert selftest_cli.options_from_args(_args()).bugs == tuple(catalog.BY_NAME)


@pytest.mark.slow
def test_selftest_command_writes_catalog_csv(tmp_path, capsys):
    import pandas as pd

    argv = ("--out", str(tmp_path), "--seeds", "0", "--bugs", "tie-to-last-max,pad-all-axes")
    code = selftest_cli.selftest_command(_args(*argv))
    (folder,) = tmp_path.iterdir()
    frame = pd.read_csv(folder / "catalog.csv")
    assert code == 0 and list(frame.columns) == selftest.CATALOG_COLUMNS
    assert (frame["caught"] == "yes").all() and len(frame) == 4  # 2 bugs x 2 dtypes
