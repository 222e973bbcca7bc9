import dataclasses
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from parity import cli, reports, runner
from parity.plant import ColumnBias, Raise, ScaleGradient

REPORT_FILES = {"summary.csv", "forward.csv", "gradients.csv", "isolation.csv", "derivations.csv",
                "diagnosis.csv",
                "ties.csv",
                "environment.json", "index.html"}  # fmt: skip


EXAMPLE_BLOG = Path(__file__).resolve().parents[1] / "examples" / "blog"


def _run(tmp_path, *args):
    return cli.main(["run", "--out", str(tmp_path / "out"), *args])


def narrowed_run(monkeypatch, in_process: bool = False, **changes) -> None:
    """Make the command's ``runner.run`` run its config with ``changes`` (checks, states,
    hooks...), in this (float64) process if ``in_process``: a test pays for what it judges."""
    real_run = runner.run

    def run(config, **kwargs):
        return real_run(dataclasses.replace(config, **changes), in_process=in_process, **kwargs)

    monkeypatch.setattr(runner, "run", run)


def _folders(tmp_path):
    out = tmp_path / "out"
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.mark.parametrize(
    "args,option,received",
    [
        (["--models", "zhou,lenet"], "--models", "'zhou,lenet'"),
        (["--models", ""], "--models", "''"),
        (["--dtypes", "float16"], "--dtypes", "'float16'"),
        (["--dtypes", "float64,float64"], "--dtypes", "'float64,float64'"),
        (["--seed", "-1"], "--seed", "'-1'"),
        (["--images", "0"], "--images", "'0'"),
        (["--images", "many"], "--images", "'many'"),
        (["--epochs", "-1"], "--epochs", "'-1'"),
        (["--optimizer", "adagrad"], "--optimizer", "'adagrad'"),
        (["--optimizer", "sgd,adam"], "--optimizer", "'sgd,adam'"),
        (["--lr", "0"], "--lr", "'0'"),
        (["--lr", "nan"], "--lr", "'nan'"),
        (["--batch-size", "0"], "--batch-size", "'0'"),
        (["--train-size", "4001"], "--train-size", "4001"),
        (["--test-size", "1001"], "--test-size", "1001"),
        (["--epochs", "0", "--optimizer", "bogus"], "--optimizer", "'bogus'"),
        (["--epochs", "0", "--lr", "-1"], "--lr", "'-1'"),
        (["--epochs", "0", "--batch-size", "0"], "--batch-size", "'0'"),
        (["--keras-path", "fast"], "--keras-path", "'fast'"),
        (["--keras-path", "fit,fit"], "--keras-path", "'fit,fit'"),
    ],
    ids=[
        "unknown-model",
        "empty-models",
        "bad-dtype",
        "repeated-dtype",
        "negative-seed",
        "zero-images",
        "non-integer-images",
        "negative-epochs",
        "unknown-optimizer",
        "two-optimizers",
        "zero-lr",
        "nan-lr",
        "zero-batch-size",
        "train-size-over-pool",
        "test-size-over-pool",
        "unused-optimizer",
        "unused-lr",
        "unused-batch-size",
        "unknown-keras-path",
        "repeated-keras-path",
    ],  # fmt: skip
)
def test_bad_option_exits_2_naming_argument_rule_and_value(tmp_path, capsys, args, option,
                                                            received):  # fmt: skip
    assert _run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert f"argument `{option}`. Expected" in err and f"Received {option}={received}" in err
    assert _folders(tmp_path) == []


@pytest.mark.parametrize("command", ["run", "check", "selftest"])
@pytest.mark.parametrize("data", ["nope.npz", "keras", "bad.npz"],
                         ids=["missing", "no-cache", "bad"])  # fmt: skip
def test_data_errors_name_the_option_as_typed(tmp_path, capsys, monkeypatch, command, data):
    # Every --data message says `--data` (what the user typed), never the Python name `data`.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no Keras cache there
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    given = data if data == "keras" else str(tmp_path / data)
    path = [str(EXAMPLE_BLOG)] if command == "check" else []
    out = tmp_path / "out"
    assert cli.main([command, *path, "--data", given, "--out", str(out), "--epochs", "0"]
                    if command != "selftest" else
                    [command, "--data", given, "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"parity {command}: Invalid value for argument `--data`." in err, err
    assert f"Received --data='{given}'" in err and "argument `data`" not in err
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["run", "--out", str(blocker / "reports")]) == 2
    assert "argument `--out`" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys):
    assert cli.main(["run", "--bogus"]) == 2
    assert "parity run: Unknown argument `--bogus`" in capsys.readouterr().err


def test_passing_run_exits_0_prints_table_and_writes_report(tmp_path, capsys):
    assert _run(tmp_path, "--dtypes", "float32", "--images", "8", "--epochs", "0") == 0
    out = capsys.readouterr().out
    assert re.search(r"forward +zhou +float32 +\w+ +conv2d/output", out) and "FAIL" not in out
    (folder,) = _folders(tmp_path)
    assert f"report: {tmp_path / 'out' / folder}" in out
    assert {p.name for p in (tmp_path / "out" / folder).iterdir()} == REPORT_FILES
    environment = json.loads((tmp_path / "out" / folder / "environment.json").read_text())
    assert environment["args"]["images"] == 8 and environment["per_dtype"]["float32"]


@pytest.mark.keras
def test_planted_bug_exits_1_and_the_report_names_layer_and_quantity(tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    narrowed_run(monkeypatch, in_process=True, dtypes=("float64",), checks=("gradients",),
                 states=("initial",), model_hooks=(ScaleGradient("dense", "bias", 1.01),),
                 training=None)  # fmt: skip
    assert _run(tmp_path, "--dtypes", "float64", "--images", "4") == 1
    assert "dense/bias" in capsys.readouterr().out
    (folder,) = _folders(tmp_path)
    summary = pd.read_csv(tmp_path / "out" / folder / "summary.csv")
    failed = summary[summary.status != "PASS"]
    assert list(zip(failed.layer, failed.quantity, strict=True)) == [("dense", "bias")]


@pytest.mark.keras
def test_same_seed_gives_identical_csv_contents(tmp_path):
    config = runner.RunConfig(dtypes=("float64",), images=4, checks=("forward", "gradients",
                              "ties"), states=("initial", "random"))  # fmt: skip
    folders = [reports.write_report(runner.run(config, in_process=True), tmp_path / str(i))
               for i in range(2)]  # fmt: skip
    for name in ("summary", "forward", "gradients", "ties"):
        texts = [(f / f"{name}.csv").read_text() for f in folders]
        assert texts[0] == texts[1] and len(texts[0].splitlines()) > 1


def test_a_failing_writer_leaves_no_report_folder(tmp_path):
    results = runner.Results({"summary": pd.DataFrame({"a": [1.0]})})

    def broken(folder):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        reports.write_report(results, tmp_path, run_id="r1", extra_writers=[broken])
    assert list(tmp_path.iterdir()) == []


def test_report_is_renamed_into_place_complete(tmp_path):
    results = runner.Results({"summary": pd.DataFrame({"x": [0.1]})})
    folder = reports.write_report(results, tmp_path, run_id="r2")
    assert folder == tmp_path / "r2" and [p.name for p in tmp_path.iterdir()] == ["r2"]
    assert (folder / "summary.csv").read_text() == "x\n1.000000e-01\n"


TRAINING_FILES = {"training.csv", "epochs.csv", "divergence.csv", "first_divergence.csv"}


@pytest.mark.slow
def test_a_run_with_training_prints_and_writes_its_curves_in_both_dtypes(tmp_path, capsys):
    # The plumbing, on a short schedule (2 epochs of 100 images). The default schedule's
    # curves (3 epochs of 1,000, both dtypes: 3,000 steps per path, passing, 75% test
    # accuracy, tables, plots and the blog's printout) are test_curves.py's zhou_default.
    args = ("--images", "4", "--epochs", "2", "--train-size", "100", "--test-size", "100")
    assert _run(tmp_path, *args, "--blog-printout") == 0
    out = capsys.readouterr().out
    assert "[Step 100] Past 100 steps: Average Loss" in out
    assert re.search(r"training +zhou +float64 +\S+ +loss/per-step loss \(epoch\)", out)
    folder = tmp_path / "out" / _folders(tmp_path)[0]
    names = {p.name for p in folder.iterdir()}
    assert REPORT_FILES | TRAINING_FILES <= names
    assert sum(name.startswith("training_") and name.endswith(".png") for name in names) == 4
    training = pd.read_csv(folder / "training.csv")
    counts = training.groupby(["dtype", "keras_path"]).size()
    assert counts.to_dict() == {
        (d, p): 200 for d in ("float32", "float64") for p in ("epoch", "lockstep")
    }
    epochs = pd.read_csv(folder / "epochs.csv")
    assert sorted(epochs.groupby("dtype").epoch.max().items()) == [("float32", 2), ("float64", 2)]


def test_the_default_run_trains_on_the_schedule_of_test_curves_zhou_default():
    # DESIGN.md's default: the blog's SGD at 0.005, batch 1, 3 epochs of 1,000 images,
    # 1,000 test images, the epoch function and lockstep: what training.training_check
    # runs by default (test_curves.py's zhou_default judges those curves in both dtypes).
    from parity.checks.training_config import TrainingConfig

    args = cli.build_parser().parse_args(["run"])
    training = cli.training_from_args(args).for_model("zhou", "float64", 0)
    assert training == TrainingConfig("zhou", "float64")
    schedule = (training.optimizer, training.learning_rate, training.batch_size)
    assert schedule == ("sgd", 0.005, 1) and training.epochs == 3
    assert (training.train_size, training.test_size, training.lockstep) == (1000, 1000, True)
    assert args.dtypes == "float64,float32" and args.models == "zhou"


@pytest.mark.keras
@pytest.mark.parametrize("diagnose", [False, True], ids=["default", "diagnose"])
def test_diagnose_reports_a_passing_runs_closest_lockstep_step(tmp_path, capsys, monkeypatch,
                                                               diagnose):  # fmt: skip
    narrowed_run(monkeypatch, in_process=True, checks=("forward",), states=("initial",))
    flags = ["--diagnose"] if diagnose else []
    assert _run(tmp_path, "--dtypes", "float64", "--images", "4", "--epochs", "1",
                "--train-size", "20", "--test-size", "20", *flags) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert ("first divergence (lockstep training):" in out) == diagnose
    assert ("no lockstep step is over its budget: the closest is " in out) == diagnose
    rows = pd.read_csv(tmp_path / "out" / _folders(tmp_path)[0] / "first_divergence.csv")
    assert list(rows["kind"]) == (["none"] if diagnose else [])


def _planted_run(monkeypatch, hook):
    narrowed_run(monkeypatch, in_process=True, dtypes=("float64",), states=("initial",),
                 model_hooks=(hook,), training=None)  # fmt: skip


@pytest.mark.keras
def test_a_crash_in_the_code_under_test_exits_3_with_error_rows_and_a_report(
    tmp_path, capsys, monkeypatch
):
    _planted_run(monkeypatch, Raise("gradients"))
    assert _run(tmp_path, "--dtypes", "float64", "--images", "4", "--epochs", "0") == 3
    assert "Traceback" not in capsys.readouterr().err
    (folder,) = _folders(tmp_path)
    summary = pd.read_csv(tmp_path / "out" / folder / "summary.csv").set_index("check")
    assert set(summary.loc["forward", "status"]) == {"PASS"}  # the other checks still ran
    error = summary.loc["gradients"]
    assert error.status == "ERROR" and "ZeroDivisionError: division by zero" in error.message
    assert "plant.py" in error.message  # file:line of the raising code


@pytest.mark.keras
def test_a_column_bias_is_an_error_row_not_a_traceback(tmp_path, capsys, monkeypatch):
    _planted_run(monkeypatch, ColumnBias())
    assert _run(tmp_path, "--dtypes", "float64", "--images", "4", "--epochs", "0") == 3
    (folder,) = _folders(tmp_path)
    summary = pd.read_csv(tmp_path / "out" / folder / "summary.csv")
    assert "ERROR" in set(summary.status) and "Traceback" not in capsys.readouterr().err


def test_help_documents_statuses_and_exit_codes(capsys):
    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(s in out for s in ("NOT_PROVIDED", "INCONCLUSIVE", "3 an ERROR row"))
    assert "``" not in out  # no reStructuredText markup in the terminal
    assert "--keras-path" in out and "bit-identical to fit" in out


def test_check_help_shows_no_restructuredtext_markup(capsys):
    assert cli.main(["check", "--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and "--api cs231n" in out and "3 an ERROR row" in out


@pytest.mark.slow
def test_keras_path_fit_runs_fit_beside_the_epoch_function(tmp_path, monkeypatch):
    narrowed_run(monkeypatch, checks=(), states=())  # the training check only
    args = ("--dtypes", "float64", "--images", "4", "--epochs", "1", "--train-size", "60")
    assert _run(tmp_path, *args, "--keras-path", "fit,epoch") == 0
    training = pd.read_csv(tmp_path / "out" / _folders(tmp_path)[0] / "training.csv")
    loss = {path: rows.keras_loss.to_numpy() for path, rows in training.groupby("keras_path")}
    assert sorted(loss) == ["epoch", "fit", "lockstep"] and len(loss["fit"]) == 60
    assert (loss["fit"] == loss["epoch"]).all()  # float64 CSV with 17 digits: exact


def test_abbreviated_options_are_refused(tmp_path, capsys):
    assert _run(tmp_path, "--epoch", "0") == 2
    assert "did you mean `--epochs`?" in capsys.readouterr().err and _folders(tmp_path) == []


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"parity {version('cnn-parity')}"


def test_run_help_lists_the_model_names(capsys):
    from scratch.models import MODEL_NAMES

    assert cli.main(["run", "--help"]) == 0
    assert ", ".join(MODEL_NAMES) in " ".join(capsys.readouterr().out.split())


def test_lr_help_gives_each_networks_own_rates(capsys):
    # issue 15's recipe (spec.networks.CS231N_LEARNING_RATES), for both cs231n networks
    assert cli.main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "cs231n-3layer, cs231n-3layer-chw (0.01 for momentum, nesterov; 0.001 for adam)" in out


@pytest.mark.parametrize("command", ["run", "check"])
def test_help_lists_every_optimizer_with_its_keras_class(command, capsys):
    from reference.optimizers import OPTIMIZERS

    assert cli.main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, kind in OPTIMIZERS.items():
        assert f"{name} = {kind.describe()}" in out
    assert "0.0005 for momentum, nesterov; 0.001 for rmsprop, adam, adamw" in out


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.005), ("momentum", 0.0005),
                                           ("nesterov", 0.0005), ("rmsprop", 0.001),
                                           ("adam", 0.001), ("adamw", 0.001)])  # fmt: skip
def test_optimizer_option_sets_the_schedule_with_its_default_learning_rate(optimizer, lr):
    for command in (["run"], ["check", "user.py"]):
        args = cli.build_parser().parse_args([*command, "--optimizer", optimizer])
        training = cli.training_from_args(args).for_model("zhou", "float64", 0)
        assert (training.optimizer, training.learning_rate) == (optimizer, lr)
    args = cli.build_parser().parse_args(["run", "--optimizer", optimizer, "--lr", "0.1"])
    assert cli.training_from_args(args).learning_rate == 0.1


# issue 15's recipe for cs231n-3layer (spec.networks.CS231N_LEARNING_RATES), else the table's
@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.005), ("momentum", 0.01), ("nesterov", 0.01),
                                           ("rmsprop", 0.001), ("adam", 0.001)])  # fmt: skip
def test_a_networks_own_learning_rate_is_its_default_and_an_explicit_lr_wins(optimizer, lr):
    args = cli.build_parser().parse_args(["run", "--optimizer", optimizer])
    training = cli.training_from_args(args).for_model("cs231n-3layer", "float32", 0)
    assert (training.learning_rate, training.batch_size) == (lr, 32)
    args = cli.build_parser().parse_args(["run", "--optimizer", optimizer, "--lr", "0.1"])
    assert cli.training_from_args(args).for_model("cs231n-3layer", "float32", 0).learning_rate \
        == 0.1  # fmt: skip


def test_the_run_records_each_models_learning_rate_as_resolved():
    training = runner.TrainingOptions(optimizer="momentum", learning_rate=None)
    config = runner.RunConfig(models=("cs231n-3layer", "zhou"), training=training)
    rates = config.describe()["training"]["learning_rate_of_model"]
    assert rates == {"cs231n-3layer": 0.01, "zhou": 0.0005}


def test_a_runs_own_user_code_resolves_its_network_not_one_registered_before(tmp_path, monkeypatch):
    # A process that ran another user's code under the same name (the suite's in-process
    # checks) must describe this run's code: cs231n's batch-norm example -> cs231n-3layer-chw
    from scratch import models
    from scratch.models import register_user_code
    from scratch.user_code import UserCode

    monkeypatch.setattr(models, "_USER_CODE", {})  # this test's registrations end with it

    stale = tmp_path / "raising.py"
    stale.write_text("def make_network(seed, dtype):\n    return 1 / 0\n")
    register_user_code(UserCode(str(stale), "factory", function="make_network"))
    example = Path(__file__).parents[1] / "examples" / "cs231n_bn" / "layers.py"
    training = runner.TrainingOptions(optimizer="momentum", learning_rate=None, batch_size=None)
    config = runner.RunConfig(models=("user",), user_code=(UserCode(str(example), "cs231n"),),
                              training=training)  # fmt: skip
    described = config.describe()["training"]
    assert described["learning_rate_of_model"] == {"user": 0.01}  # the network's recipe
