from dataclasses import asdict, dataclass

import numpy as np
import pytest

from parity import catalog, training_report
from parity.checks import training, training_config
from parity.data import load_mnist
from reference.backend import run_in_dtype_process

# Every catalog bug that shows only in training: (layer, weights over budget at the first
# step, kind, global step, origin). A new training entry must be added here.
EXPECTED = {
    "update-sign-flipped": ("conv2d", {"kernel", "bias"}, "update-sign", 1, ""),
    "learning-rate-twice": ("dense", {"kernel", "bias"}, "learning-rate-twice", 1, ""),
    "bias-never-updated": ("conv2d_1", {"bias"}, "never-updated", 1, ""),
    "gradient-buffer-never-reset": ("conv2d_1", {"kernel", "bias"}, "gradient", 2, "conv2d_1"),
    "update-before-input-grad": ("conv2d", {"kernel"}, "input-gradient-after-update", 1, "dense"),
    "adam-epsilon-inside-sqrt": (None, {"kernel", "bias"}, "adam-epsilon-inside-sqrt", 1, ""),
    "batchnorm-momentum-reversed": (
        "batch_normalization",
        {"moving_mean", "moving_variance"},
        "moving-average",
        1,
        "",
    ),
    # the velocity is what is wrong (optimizer-state); the weights follow it, at step 1 from
    # a zero velocity exactly negated (update-sign)
    "momentum-velocity-sign-flipped": (None, {"kernel", "bias", "kernel momentum",
                                              "bias momentum"},
                                       {"update-sign", "optimizer-state"}, 1, ""),
    "rmsprop-epsilon-outside-sqrt": (None, {"kernel", "bias"}, "rmsprop-epsilon-outside-sqrt",
                                     1, ""),
}  # fmt: skip
PATCHING = (
    "adam-epsilon-inside-sqrt",
    "momentum-velocity-sign-flipped",
    "rmsprop-epsilon-outside-sqrt",
)  # patch scratch.optim for the rest of the process


# -- planted controls (picklable hooks: they run in the dtype's child process) -------------


@dataclass(frozen=True)
class ScaledUpdate:
    """Every SGD step 1.5 x too long: an update rule the diagnosis has no name for."""

    def __call__(self, model) -> None:
        original = model.train_step
        model.train_step = lambda x, labels, lr: original(x, labels, 1.5 * lr)


@dataclass(frozen=True)
class ScaledInputGradient:
    """Dense's input gradient 1.5 x too large, its own gradients right: the pattern of an
    update before the input gradient, without the moved kernel behind it."""

    def __call__(self, model) -> None:
        layer = model.layer("dense")
        original = layer._backward

        def _backward(dout, need_dx=True):
            dx = original(dout, need_dx)
            return None if dx is None else dx * dx.dtype.type(1.5)

        layer._backward = _backward


@dataclass(frozen=True)
class GradientsRaise:
    """``model.gradients`` raises (training steps through ``train_step``, unaffected)."""

    def __call__(self, model) -> None:
        def gradients(x, labels):
            raise FloatingPointError("planted in gradients")

        model.gradients = gradients


@dataclass(frozen=True)
class LossMisreported:
    """The SGD step reports its loss 1% high; the updates are right."""

    def __call__(self, model) -> None:
        original = model.train_step

        def train_step(x, labels, lr):
            loss, correct = original(x, labels, lr)
            return loss * 1.01, correct

        model.train_step = train_step


ADAM_EPSILON = catalog.BY_NAME["adam-epsilon-inside-sqrt"]
# name: (model, hooks, training spec, diagnose); the optimizer entries patch scratch.optim
# for the rest of the process (catalog.restore_globals is not called between jobs): keep
# them last
RUNS = {
    **{name: (catalog.BY_NAME[name].model, catalog.hooks_of(catalog.BY_NAME[name]),
              catalog.BY_NAME[name].training, False)
       for name in EXPECTED if name not in PATCHING},
    "correct-two-conv": ("two-conv", (), catalog.SGD_RUN, False),
    "correct-zhou-diagnose": ("zhou", (), catalog.SGD_RUN, True),
    "scaled-update": ("two-conv", (ScaledUpdate(),), catalog.SGD_RUN, False),
    "scaled-input-gradient": ("two-conv", (ScaledInputGradient(),), catalog.SGD_RUN, False),
    "gradients-raise": ("two-conv", (catalog.FaultyUpdate("conv2d", "sign"), GradientsRaise()),
                        catalog.SGD_RUN, False),
    "loss-misreported": ("two-conv", (LossMisreported(),), catalog.SGD_RUN, False),
    # lr 2: a probability underflows to 0 within a few steps (test_lockstep.py's "diverges")
    "diverges": ("two-conv", (), catalog.Training(learning_rate=2.0, epochs=1, train_size=40,
                                                  test_size=100, keras_paths=()), False),
    "correct-chw-adam": ("chw", (), catalog.ADAM_RUN, False),
    "adam-epsilon-inside-sqrt": ("chw", catalog.hooks_of(ADAM_EPSILON), catalog.ADAM_RUN,
                                 False),
    **{name: (catalog.BY_NAME[name].model, catalog.hooks_of(catalog.BY_NAME[name]),
              catalog.BY_NAME[name].training, False)
       for name in PATCHING if name != "adam-epsilon-inside-sqrt"},
}  # fmt: skip


# One xdist group per dtype (`pytest -n 2 --dist loadgroup`): each dtype's runs are computed
# once, on one worker, while the other dtype's run on the other; ungrouped, both workers
# computed both (four setups of ~11 s for two).
@pytest.fixture(scope="module", params=[
    pytest.param(d, marks=pytest.mark.xdist_group(f"first_divergence_{d}"))
    for d in ("float64", "float32")
])  # fmt: skip
def runs(request):
    mnist = load_mnist()
    jobs = []
    for model, hooks, spec, diagnose in RUNS.values():
        config = training_config.TrainingConfig(
            model, request.param, **{**asdict(spec), "diagnose": diagnose})  # fmt: skip
        jobs.append((config, training_config.pools_from(mnist, config), hooks))
    results = run_in_dtype_process(request.param, training.run_many, jobs)
    return dict(zip(RUNS, results, strict=True))


def test_every_training_only_catalog_bug_is_expected_here():
    assert set(EXPECTED) == {entry.name for entry in catalog.ENTRIES if entry.training}


@pytest.mark.parametrize("name", EXPECTED)
def test_training_only_bug_gets_its_first_step_layer_and_kind(runs, name):
    layer, weights, kind, step, origin = EXPECTED[name]
    result = runs[name]
    rows = result.first_divergence
    assert not result.passed and len(rows), result.failures()
    kinds = kind if isinstance(kind, set) else {kind}
    assert set(rows["kind"]) == kinds, rows[["layer", "quantity", "kind", "evidence"]]
    assert set(rows["global_step"]) == {step} and set(rows["origin"]) == {origin}
    if layer is not None:  # an optimizer's bug: every weight of the model
        assert set(rows["layer"]) == {layer}
    assert set(rows["quantity"]) == weights


def test_the_failing_lockstep_record_says_why(runs):
    records = {(c.layer, c.quantity): c for path, _, c in runs["bias-never-updated"].comparisons
               if path == training_config.LOCKSTEP}  # fmt: skip
    assert records[("conv2d_1", "bias update")].message.startswith(
        "first divergence at global step 1, never-updated: the weight is never updated: "
    )
    assert not records[("conv2d_1", "kernel update")].message.startswith("first divergence")


def test_a_row_says_where_the_step_is(runs):
    rows = runs["gradient-buffer-never-reset"].first_divergence
    steps = runs["gradient-buffer-never-reset"].training
    at = steps[(steps.keras_path == "lockstep") & (steps.global_step == 2)].iloc[0]
    row = rows.iloc[0]
    assert (row["epoch"], row["step"], row["example"], row["label"]) == (
        1, 2, at["example"], at["label"])  # fmt: skip
    assert row["model"] == "two-conv" and row["dtype"] == runs["correct-two-conv"].config.dtype


def test_update_rule_names_the_numbers(runs):
    assert np.allclose(runs["update-sign-flipped"].first_divergence["update_ratio"], -1, rtol=1e-5)
    ratios = runs["learning-rate-twice"].first_divergence["update_ratio"]
    assert np.allclose(ratios, catalog.SGD_RUN.learning_rate, rtol=1e-4)
    assert (runs["bias-never-updated"].first_divergence["update_ratio"] == 0).all()
    rows = runs["update-sign-flipped"].first_divergence
    assert (rows["gradient_rel_diff"] < 1e-5).all()  # the gradients agree


def test_correct_code_gets_no_divergence_row(runs):
    for name in ("correct-two-conv", "correct-chw-adam"):
        assert runs[name].passed and runs[name].first_divergence.empty, name


def test_diagnose_on_passing_code_reports_only_the_closest_step(runs):
    result = runs["correct-zhou-diagnose"]
    assert result.passed
    (row,) = result.first_divergence.to_dict("records")
    assert row["kind"] == "none" and 0 <= row["budget_use"] <= 1
    assert row["evidence"].startswith("no lockstep step is over its budget: the closest is ")


def test_a_failure_outside_the_updates_is_a_none_row_naming_it(runs):
    (row,) = runs["loss-misreported"].first_divergence.to_dict("records")
    assert row["kind"] == "none" and "; what fails: " in row["evidence"]
    assert "loss/per-step loss (lockstep)" in row["evidence"].split("; what fails: ")[1]


def test_a_non_finite_gradient_is_named_with_its_side(runs):
    rows = runs["diverges"].first_divergence  # -ln p from probabilities: 1/p at p = 0
    assert set(rows["kind"]) == {"gradient"} and set(rows["origin"]) == {"softmax"}
    assert "first differ at softmax/input non-finite (scratch)" in rows.iloc[0]["evidence"]


def test_an_unnamed_update_rule_is_not_given_a_name(runs):
    rows = runs["scaled-update"].first_divergence
    assert set(rows["kind"]) == {"update-rule"}
    assert np.allclose(rows["update_ratio"], 1.5, rtol=1e-4)


def test_a_wrong_input_gradient_is_not_called_an_update_before_it(runs):
    rows = runs["scaled-input-gradient"].first_divergence
    assert set(rows["kind"]) == {"gradient"} and set(rows["origin"]) == {"dense"}
    assert "while dense's own gradients (kernel, bias) agree" in rows.iloc[0]["evidence"]


def test_a_diagnosis_that_raises_is_a_row_not_an_exception(runs):
    rows = runs["gradients-raise"].first_divergence
    assert set(rows["kind"]) == {"not-diagnosed"} and set(rows["layer"]) == {"conv2d"}
    assert "FloatingPointError: planted in gradients" in rows.iloc[0]["evidence"]


def test_console_lines_name_step_layer_kind_and_fix(runs):
    text = training_report.format_first_divergence([runs["correct-two-conv"],
                                                    runs["update-sign-flipped"]])  # fmt: skip
    lines = text.splitlines()
    assert lines[1] == "first divergence (lockstep training):"
    assert lines[2].startswith("  two-conv ") and " conv2d (kernel, bias) at epoch 1 step 1 " \
        "(global step 1," in lines[2]  # fmt: skip
    assert "the update's sign is flipped" in lines[2] and "-1 x Keras's" in lines[2]
    assert lines[3] == "    fix: step against the gradient, w -= lr * dL/dw; the update adds " \
                       "it (gradient ascent)."  # fmt: skip
    assert training_report.format_first_divergence([runs["correct-two-conv"]]) == ""
