import numpy as np
import pandas as pd
import pytest

from parity import plots, progress, training_report
from parity.catalog import AdamEpsilonInsideSqrt  # patches Adam in the dtype's child only
from parity.checks import training, training_config
from parity.data import load_mnist
from parity.diagnosis import divergence
from parity.plant import BlogAllTiesMaxPool

# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module", params=["float64", "float32"])
def zhou_default(request, mnist):
    return training.training_check("zhou", request.param, mnist)


# The tests of zhou_default (the default schedule, ~10 s per dtype) run on one pytest-xdist
# worker (`--dist loadgroup`), which computes it once per dtype.
DEFAULT_RUN = pytest.mark.xdist_group("curves_zhou_default")


# -- unit tests (fast) --------------------------------------------------------------------


def test_epoch_orders_are_fresh_per_epoch_and_reproducible():
    orders = training_config.epoch_orders
    first, again = orders(0, 3, 1000), orders(0, 3, 1000)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], first[1])
    assert sorted(first[2]) == list(range(1000))


@pytest.mark.parametrize(
    "field, value",
    [("optimizer", "adagrad"), ("batch_size", 0), ("epochs", -1), ("learning_rate", float("nan")),
     ("dtype", "float16"), ("keras_paths", ("predict",)), ("keras_paths", ("lockstep",))],
)  # fmt: skip
def test_bad_config_names_the_argument(field, value):
    with pytest.raises(ValueError, match=f"argument `{field}`.*Received"):
        training_config.TrainingConfig(**{"model": "zhou", "dtype": "float64", field: value})


def test_train_size_larger_than_pool_is_refused(mnist):
    with pytest.raises(ValueError, match="`train_size`. Expected at most 4000"):
        training.training_check("zhou", "float64", mnist, train_size=5000)


def _frame(diffs):
    n = len(diffs)
    return pd.DataFrame(dict(
        model="m", dtype="float64", keras_path="tape", epoch=1, step=np.arange(1, n + 1),
        global_step=np.arange(1, n + 1), example=np.arange(n), label=0, batch_size=1,
        scratch_loss=2.3 + np.asarray(diffs), keras_loss=2.3, abs_diff=np.abs(diffs),
        scratch_correct=1, keras_correct=1,
    ))  # fmt: skip


def test_first_exceeding_names_the_first_step_and_nan_counts():
    frame = _frame([0.0, 1e-16, 3e-12, 1e-3])
    assert divergence.first_exceeding(frame, "tape", 1e-13)["global_step"] == 3
    assert divergence.first_exceeding(frame, "tape", 1e-2) is None
    assert divergence.first_exceeding(_frame([0.0, np.nan]), "tape", 1.0)["global_step"] == 2


def test_block_means_of_100_steps():
    ends, means = plots.block_means(np.arange(250.0), 100)
    assert ends.tolist() == [100, 200, 250] and means.tolist() == [49.5, 149.5, 224.5]


def test_progress_is_a_tqdm_bar_on_stderr_per_phase(capsys):
    import pickle

    bars = pickle.loads(pickle.dumps(progress.TqdmProgress(min_interval=0)))  # child process
    report = progress.phase(bars, "[training zhou float64] scratch", 3000)
    for done in (0, 500, 3000):
        report(done)
    err = capsys.readouterr().err
    assert "[training zhou float64] scratch" in err and "500/3000" in err
    assert "3000/3000" in err and "step/s" in err and bars._bars == {}  # closed at the total
    assert progress.phase(None, "x", 3)(1) is None  # no callback: nothing to report


def test_plots_are_png(tmp_path):
    frame = _frame(np.r_[0.0, np.full(299, 1e-15)])
    written = plots.write_training_plots(frame, tmp_path, {("m", "float64", "tape"): 1e-13})
    assert [p.name for p in written] == [
        "training_loss_m_float64.png",
        "training_diff_m_float64.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


# -- the seed network with the defaults (slow: ~40 s per dtype) ---------------------------


@pytest.mark.slow
@DEFAULT_RUN
def test_default_run_has_3000_steps_per_keras_path(zhou_default):
    counts = zhou_default.training.groupby("keras_path").size().to_dict()
    assert counts == {"epoch": 3000, "lockstep": 3000}


@pytest.mark.slow
@DEFAULT_RUN
def test_default_run_passes(zhou_default):
    assert zhou_default.passed, zhou_default.failures()


@pytest.mark.slow
@DEFAULT_RUN
def test_scratch_zhou_reaches_75_percent_test_accuracy(zhou_default):
    assert zhou_default.epochs["scratch_test_accuracy"].iloc[-1] >= 0.75


@pytest.mark.slow
@DEFAULT_RUN
def test_default_run_writes_tables_and_plots(zhou_default, tmp_path):
    names = {p.name for p in training_report.write_outputs([zhou_default], tmp_path)}
    dtype = zhou_default.config.dtype
    assert {"training.csv", "epochs.csv", "divergence.csv"} <= names
    assert {f"training_loss_zhou_{dtype}.png", f"training_diff_zhou_{dtype}.png"} <= names
    assert len(pd.read_csv(tmp_path / "training.csv")) == 6000  # epoch, lockstep
    assert len(pd.read_csv(tmp_path / "epochs.csv")) == 6


@pytest.mark.slow
@DEFAULT_RUN
def test_blog_printout_every_100_steps(zhou_default):
    lines = training_report.blog_printout(zhou_default)
    steps = [line for line in lines if line.startswith("[Step ")]
    assert len(steps) == 30 and lines[1] == "--- Epoch 1 ---"
    assert steps[0].startswith("[Step 100] Past 100 steps: Average Loss 2.")


# -- planted bugs are caught --------------------------------------------------------------


@pytest.mark.slow
def test_blog_all_ties_max_pool_fails_and_names_the_first_diverging_step(mnist):
    hooks = (BlogAllTiesMaxPool(),)
    result = training.training_check("zhou", "float64", mnist, epochs=1, train_size=20,
                                     test_size=20, keras_paths=("tape",),
                                     model_hooks=hooks)  # fmt: skip
    loss = next(c for _, _, c in result.comparisons if c.layer == "loss")
    first = result.first_exceeding("tape", training_config.STEP_LOSS_ATOL["float64"])
    assert not loss.passed and first["global_step"] == 2
    assert (
        "first step with |scratch-keras| > 1.0e-13: epoch 1 step 2 (global step 2" in loss.message
    )


def adam_run(dtype, mnist, hook, **schedule):
    return training.training_check("chw", dtype, mnist, optimizer="adam", learning_rate=0.001,
                                   batch_size=32, epochs=1, keras_paths=("tape",),
                                   model_hooks=(hook,), **schedule)  # fmt: skip


BUG_STEPS = dict(train_size=96, test_size=32)  # 3 steps: the bug shows at step 1 and 2


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_with_epsilon_inside_sqrt_is_caught_by_lockstep_at_step_1(mnist, dtype):
    result = adam_run(dtype, mnist, AdamEpsilonInsideSqrt(), **BUG_STEPS)
    lockstep = result.training[result.training["keras_path"] == "lockstep"]
    assert not result.passed and lockstep["update_budget_use"].iloc[0] > 1


@pytest.mark.slow
def test_adam_with_epsilon_inside_sqrt_drifts_the_float64_curve_at_step_2(mnist):
    result = adam_run("float64", mnist, AdamEpsilonInsideSqrt(), lockstep=False, **BUG_STEPS)
    atol = training_config.STEP_LOSS_ATOL["float64"]
    assert result.first_exceeding("tape", atol)["global_step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_hook_with_the_epsilon_bug_removed_raises_no_alarm(mnist, dtype):
    result = adam_run(dtype, mnist, AdamEpsilonInsideSqrt(inside_sqrt=False))
    assert result.passed, result.failures()


# -- the channels-first family (issue 7) --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", ["chw", "chw-relu"])
@pytest.mark.parametrize(
    "dtype, optimizer, lr, batch",
    [("float64", "sgd", 0.005, 1), ("float32", "sgd", 0.005, 1),
     ("float64", "adam", 0.001, 32), ("float32", "adam", 0.001, 32)],
    ids=["f64_sgd_b1", "f32_sgd_b1", "f64_adam_b32", "f32_adam_b32"],
)  # fmt: skip
def test_chw_three_epochs_pass(mnist, model, dtype, optimizer, lr, batch):
    result = training.training_check(model, dtype, mnist, optimizer=optimizer, learning_rate=lr,
                                     batch_size=batch)  # fmt: skip
    assert result.passed, result.failures()
    assert len(result.training) == 2 * 3 * -(-1000 // batch)  # epoch, lockstep
