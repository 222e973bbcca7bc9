from dataclasses import dataclass

import numpy as np
import pytest

from parity import lockstep
from parity.catalog import UpdateBeforeInputGradient
from parity.checks import ties, training, training_config
from parity.data import load_mnist
from reference.backend import run_in_dtype_process

SHORT = dict(epochs=1, train_size=200, test_size=100, seed=0)  # ~1 s of lockstep per run
pytestmark = pytest.mark.xdist_group("lockstep")  # one worker runs `runs` once per dtype


# -- planted bugs (picklable hooks: they run in the dtype's child process) ----------------


@dataclass(frozen=True)
class GradientAscent:
    """A sign slip in the SGD step: ``w += lr * g`` (every layer of the update)."""

    def __call__(self, model) -> None:
        original = model.train_step
        model.train_step = lambda x, labels, lr: original(x, labels, -lr)


@dataclass(frozen=True)
class RaiseAtStep:
    """The scratch training step raises at its ``step``-th call."""

    step: int

    def __call__(self, model) -> None:
        original, calls = model.train_step, [0]

        def train_step(x, labels, lr):
            calls[0] += 1
            if calls[0] == self.step:
                raise FloatingPointError(f"planted at call {calls[0]}")
            return original(x, labels, lr)

        model.train_step = train_step


# name: (model, hooks, options); every run: lockstep, plus the free paths it names
RUNS = {
    "zhou": ("zhou", (), dict(keras_paths=("tape",))),
    "two-conv": ("two-conv", (), {}),
    "zhou-adam": ("zhou", (), dict(optimizer="adam", learning_rate=0.001, batch_size=32)),
    "gradient-ascent": ("zhou", (GradientAscent(),), {}),
    "update-before-input-grad": ("zhou", (UpdateBeforeInputGradient(),), {}),
    "raises-at-step-5": ("zhou", (RaiseAtStep(5),), dict(keras_paths=("tape",))),
    # two-conv's loss is -log(p) from probabilities, unclipped: at lr 2 a probability
    # underflows to 0 within a few steps (inf), where Keras's loss from the logits is finite
    "diverges": ("two-conv", (), dict(learning_rate=2.0, keras_paths=("tape",))),
}


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module", params=["float64", "float32"])
def runs(request, mnist):
    """Every run of ``RUNS`` in one process of the dtype."""
    jobs = []
    for model, hooks, options in RUNS.values():
        config = training_config.TrainingConfig(model, request.param, **{**SHORT, "keras_paths": (),
                                                                **options})  # fmt: skip
        jobs.append((config, training_config.pools_from(mnist, config), hooks))
    results = run_in_dtype_process(request.param, training.run_many, jobs)
    return dict(zip(RUNS, results, strict=True))


def _lockstep(result) -> list:
    return [c for path, _, c in result.comparisons if path == training_config.LOCKSTEP]


def _failed(result) -> list[str]:
    return [f"{c.layer}/{c.quantity}" for _, _, c in result.comparisons if not c.passed]


def _step_rows(result, path=training_config.LOCKSTEP):
    rows = result.training
    return rows[rows["keras_path"] == path].set_index("global_step")


# -- correct code --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zhou", "two-conv", "zhou-adam"])
def test_lockstep_passes_correct_code(runs, name):
    assert _lockstep(runs[name]) and runs[name].passed, runs[name].failures()


def test_lockstep_runs_every_step_with_keras_in_sync(runs):
    rows = _step_rows(runs["two-conv"])
    assert len(rows) == 200 and (rows["update_budget_use"] <= 1).all()


def test_free_running_is_a_verdict_in_float64_only(runs):
    result = runs["zhou"]
    judged = {path for path, _, _ in result.comparisons}
    assert judged == ({"tape", "lockstep"} if result.config.dtype == "float64" else {"lockstep"})
    assert set(result.training["keras_path"]) == {"tape", "lockstep"}  # measured either way


def test_unjudged_paths_have_no_verdict_threshold(runs):
    result = runs["zhou"]
    divergence = result.divergence.set_index("keras_path")
    judged_tape = result.config.dtype == "float64"
    assert divergence.loc["tape", "verdict_threshold"].any() == judged_tape
    assert divergence.loc["lockstep", "verdict_threshold"].sum() == 1


# -- planted bugs: caught at step 1 --------------------------------------------------------


def test_gradient_ascent_fails_lockstep_at_step_1(runs):
    result = runs["gradient-ascent"]
    step_1 = _step_rows(result).loc[1]
    assert step_1["update_budget_use"] > 1  # while the loss before the update agrees:
    assert step_1["abs_diff"] <= training_config.LOCKSTEP_LOSS_ATOL[result.config.dtype]
    assert {"conv2d/kernel update", "dense/kernel update", "dense/bias update"} <= set(
        _failed(result)
    )


def test_failing_update_record_names_the_first_step_over_budget(runs):
    kernel = next(c for c in _lockstep(runs["gradient-ascent"]) if c.layer == "dense"
                  and c.quantity == "kernel update")  # fmt: skip
    assert "first step over budget epoch 1 step 1 (global step 1)" in kernel.message


def test_update_before_input_gradient_fails_lockstep_at_step_1(runs):
    result = runs["update-before-input-grad"]
    assert _step_rows(result).loc[1, "update_budget_use"] > 1
    assert "conv2d/kernel update" in _failed(result)


# -- exceptions and non-finite values ------------------------------------------------------


def test_scratch_exception_is_an_error_record_with_type_message_and_line(runs):
    result = runs["raises-at-step-5"]
    record = next(c for path, _, c in result.comparisons if path == "scratch")
    assert not record.passed and record.stage == "error"
    assert "global step 5" in record.message and "FloatingPointError: planted at call 5" in (
        record.message
    )
    assert "test_lockstep.py:" in record.message and "in train_step" in record.message


def test_scratch_exception_keeps_the_steps_before_it(runs):
    result = runs["raises-at-step-5"]
    assert result.training.groupby("keras_path").size().to_dict() == {"lockstep": 4, "tape": 4}
    assert all(c.passed for path, _, c in result.comparisons if path != "scratch")


def test_one_side_non_finite_fails_and_names_the_side(runs):
    result = runs["diverges"]
    loss = next(c for path, _, c in result.comparisons if path == "lockstep"
                and c.layer == "loss")  # fmt: skip
    end = len(_step_rows(result))
    assert not loss.passed and end < 10
    assert f"scratch loss went non-finite at epoch 1 step {end} " in loss.message
    assert np.isinf(_step_rows(result).loc[end, "scratch_loss"])
    assert np.isfinite(_step_rows(result).loc[end, "keras_loss"])


def test_non_finite_scratch_ends_every_path_at_that_step(runs):
    counts = runs["diverges"].training.groupby("keras_path").size()
    assert counts["tape"] == counts["lockstep"]


# -- units (no Keras) ----------------------------------------------------------------------


def _snapshot(w, iterations=0):
    from reference.lockstep_step import OptimizerState

    return lockstep.Snapshot({"dense": {"kernel": np.asarray(w, dtype=np.float64)}},
                             OptimizerState(iterations))  # fmt: skip


def _use(before, mine, theirs, rtol=1e-13):
    judge = lockstep.Judge("float64", lockstep.Budgets(1e-13, rtol, rtol, 2.0**-52))
    entries = judge.measure(_snapshot(before), _snapshot(mine, 1), _snapshot(theirs, 1))
    return {e.quantity: e.use for e in entries}


def test_update_rule_is_relative_to_the_update_not_the_weight():
    before = [1.0, -1.0]
    assert _use(before, [1.0 - 1e-3, -1.0], [1.0 - 1e-3 * (1 + 1e-10), -1.0])["kernel"] > 1
    assert _use(before, [1.0 - 1e-3, -1.0], [1.0 - 1e-3, -1.0])["kernel"] == 0.0


def test_update_rule_allows_one_rounding_of_the_weight():
    before = np.array([1.0, 0.5])
    one_ulp = np.nextafter(before[0], 2.0) - before[0]
    assert _use(before, before, before + [one_ulp, 0.0])["kernel"] <= 1


def test_seed_condition_is_batch_size_over_the_other_classes_mass():
    p = np.array([[0.5, 0.25, 0.25], [1e-4, 1 - 2e-4, 1e-4]])
    # example 0: 1 - p[label 0] = 0.5; example 1: 2e-4 -> kappa = 2 / 0.5002
    assert lockstep.seed_condition(p, [0, 1], 2.0**-52) == pytest.approx(2 / 0.5002, rel=1e-12)


def test_seed_condition_stays_finite_where_the_label_probability_rounds_to_one():
    p = np.array([[1.0, 3e-6, 1e-6]], np.float32)  # p[label] as rounded: 1 - p[label] = 0
    assert lockstep.seed_condition(p, [0], float(np.finfo(np.float32).eps)) == pytest.approx(
        1 / 4e-6, rel=1e-6)  # from the other classes' mass  # fmt: skip
    eps = float(np.finfo(np.float32).eps)
    assert lockstep.seed_condition(np.array([[1.0, 0.0]]), [0], eps) == 1 / eps  # capped


def _use_at(kappa, mine, theirs, before=(1.0, -1.0)):
    judge = lockstep.Judge("float64", lockstep.Budgets(1e-13, 1e-13, 1e-13, 2.0**-52))
    entries = judge.measure(_snapshot(before), _snapshot(mine, 1), _snapshot(theirs, 1), kappa)
    return {e.quantity: e.use for e in entries}["kernel"]


def test_update_budget_grows_with_the_loss_gradients_condition():
    # an update 1e-3 that differs by 1e-9 of itself: over budget at kappa 1, within it where
    # the loss gradient itself is known to only ~1e-12 of itself (kappa 1e4: eps*kappa 2e-12)
    mine, theirs = [1.0 - 1e-3, -1.0], [1.0 - 1e-3 * (1 + 1e-12), -1.0]
    assert _use_at(1.0, mine, theirs) > 1
    assert _use_at(1e4, mine, theirs) <= 1
    # an update rule gone wrong (the sign) is far over it even at that condition
    assert _use_at(1e4, mine, [1.0 + 1e-3, -1.0]) > 1e6


def _velocity_use(v_before, v_mine, v_theirs, decays):
    from reference.lockstep_step import OptimizerState

    def snap(v, iterations):
        state = OptimizerState(iterations, {"velocity": {"dense": {"kernel": np.asarray(v)}}})
        return lockstep.Snapshot({"dense": {"kernel": np.zeros(2)}}, state)

    judge = lockstep.Judge("float64", lockstep.Budgets(0, 1e-13, 1e-12, 2.0**-52),
                           slots=("velocity",), decays=decays)  # fmt: skip
    entries = judge.measure(snap(v_before, 0), snap(v_mine, 1), snap(v_theirs, 1))
    return {e.quantity: e.use for e in entries}["kernel velocity"]


def test_rmsprops_velocity_is_judged_against_its_new_term_not_its_change():
    # steady state g^2 = v: v = 0.9 v + 0.1 g^2 does not change, the term 0.1 g^2 = 0.1 does;
    # 1e-14 is a rounding of that term (1e-13 of it), against the change it is over budget
    before, theirs, mine = [1.0, 1.0], [1.0, 1.0], [1.0 + 1e-14, 1.0]
    assert _velocity_use(before, mine, theirs, {"velocity": 0.9}) <= 1
    assert _velocity_use(before, mine, theirs, {}) > 1  # the change: M = 0
    # a 1% error of the term is far over it
    assert _velocity_use(before, [1.001, 1.0], theirs, {"velocity": 0.9}) > 1e6


def test_iterations_must_be_equal():
    judge = lockstep.Judge("float64", lockstep.Budgets(0, 1e-13, 1e-13, 2.0**-52))
    entries = judge.measure(_snapshot([1.0]), _snapshot([1.0], 1), _snapshot([1.0], 2))
    assert {e.quantity: e.use for e in entries}["iterations"] == np.inf


def _pool(values):  # one window of 4: (N, H, W, C) = (1, 2, 2, 1) in, (1, 1, 1, 1) out
    x = np.asarray(values, dtype=np.float32).reshape(1, 2, 2, 1)
    return {"conv2d": x, "max_pooling2d": x.max(axis=(1, 2), keepdims=True)}


class _NHWC:  # the layout of a model whose activations are NHWC already
    def to_keras(self, layer, quantity, array):
        return array

    from_keras = to_keras


POOL = ties.Pool("max_pooling2d", "max_pooling2d", "conv2d", "flatten", (2, 2), (2, 2))


def _nudges(mine, theirs):
    layers = [("max_pooling2d", "max-pool", POOL)]
    nudges, _ = lockstep.decision_nudges(_pool(mine), _pool(theirs), layers, 1e-5, _NHWC())
    return nudges.get("max_pooling2d")


def test_near_tie_decided_differently_by_rounding_is_re_synced_to_scratch_values():
    mine, theirs = [1.7, 1.88129, 1.88129, 1.4], [1.7, 1.88129, 1.8812901, 1.4]
    nudge = _nudges(mine, theirs).ravel()
    assert (np.float32(theirs) + nudge).tolist() == np.float32(mine).tolist()


def test_exact_tie_on_both_sides_is_never_re_synced():
    assert _nudges([1.0, 2.0, 2.0, 0.0], [1.0, 2.0, 2.0, 0.0]) is None


def test_clear_maximum_differing_is_not_rounding():
    assert _nudges([1.0, 2.0, 1.5, 0.0], [1.0, 1.5, 2.0, 0.0]) is None


def test_relu_sign_within_rounding_is_re_synced():
    scratch = {"conv2d": np.float32([[1e-9, 0.5]]), "re_lu": np.float32([[1e-9, 0.5]])}
    keras = {"conv2d": np.float32([[-1e-9, 0.5]]), "re_lu": np.float32([[0.0, 0.5]])}
    layers = [("re_lu", "relu", None)]
    nudges, found = lockstep.decision_nudges(scratch, keras, layers, 1e-5, _NHWC())
    assert found == "1 re_lu input(s)"
    assert (keras["conv2d"] + nudges["re_lu"]).tolist() == scratch["conv2d"].tolist()


def test_a_check_without_any_keras_path_is_refused():
    with pytest.raises(ValueError, match="argument `keras_paths`.*non-empty when lockstep=False"):
        training_config.TrainingConfig("zhou", "float64", keras_paths=(), lockstep=False)


def test_truncated_schedule_cuts_at_the_step_where_training_ended():
    orders = [np.arange(10), np.arange(10, 20)]
    cut = training._truncated(orders, 6, 3)  # 4 steps per epoch (3, 3, 3, 1)
    assert [o.tolist() for o in cut] == [list(range(10)), [10, 11, 12, 13, 14, 15]]
