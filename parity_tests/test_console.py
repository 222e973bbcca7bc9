"""What `parity run` / `parity check` print around the table: the messages section, the
progress lines of the diagnosis phase and of the start-up (TensorFlow import)."""

import concurrent.futures
import threading
import time

import pandas as pd
import pytest
from test_cli import narrowed_run

from parity import cli, runner, start_up
from parity.compare import ERROR, FAIL, NOT_PROVIDED, PASS

WHERE = " (at /home/me/cnn/softmax.py:17 in Softmax.forward)"
RAISED = "ApiError: Softmax.forward did not set `self.last_totals`." + WHERE


def _summary(rows) -> pd.DataFrame:
    keys = ("check", "model", "dtype", "layer", "quantity", "status", "message")
    return pd.DataFrame([dict(zip(keys, row, strict=True)) for row in rows])


def test_one_exception_in_many_checks_is_printed_once_with_its_rows():
    # One exception in the user's forward: an ERROR row in every check that called it.
    checks = ("forward", "gradients", "isolation", "ties", "derivations", "diagnosis")
    rows = [(c, "user", "float64", "-", "-", ERROR, f"error: layer `-` quantity `-`: {RAISED}")
            for c in checks]  # fmt: skip
    rows += [("training", "user", "float64", "-", "training", ERROR,
              f"error: layer `-` quantity `training`: {RAISED}"),
             ("forward", "user", "float32", "dense", "output", FAIL, "values: too far."),
             ("forward", "user", "float64", "conv2d", "output", PASS, "values: fine.")]  # fmt: skip
    text = cli.format_messages(_summary(rows))
    assert text.count("Softmax.forward did not set") == 1, text
    assert "ERROR in 7 rows (user float64: forward -/-, gradients -/-, isolation -/-, ties -/-, "\
           "derivations -/-, diagnosis -/-, training -/training)" in text  # fmt: skip
    assert "error: layer `-`" not in text  # the rows say where; the prefix is not repeated
    assert "forward user float32 dense/output FAIL: values: too far." in text
    assert "values: fine." not in text


def test_not_provided_reasons_are_printed_once_in_their_own_section():
    reason = "the blog's Softmax is dense and softmax in one class: no gradient of the logits."
    rows = [(c, "user", "float64", "softmax", "input", NOT_PROVIDED,
             f"not provided: layer `softmax` quantity `input`: {reason}")
            for c in ("gradients", "isolation", "derivations")]  # fmt: skip
    rows.append(("forward", "user", "float64", "dense", "output", FAIL, "values: too far."))
    summary = _summary(rows)
    text = cli.format_not_provided(summary)
    assert text.startswith("\nnot provided:") and text.count(reason) == 1
    assert "NOT_PROVIDED in 3 rows (user float64: gradients softmax/input, " in text
    assert "too far" not in text and reason not in cli.format_messages(summary)
    assert cli.format_not_provided(_summary(rows[3:])) == ""


def test_rows_beyond_the_listed_ones_are_counted():
    rows = [("gradients", "user", "float64", f"dense{i}", "kernel", FAIL, "same.")
            for i in range(cli.LISTED_ROWS + 3)]  # fmt: skip
    text = cli.format_messages(_summary(rows))
    assert f"FAIL in {cli.LISTED_ROWS + 3} rows" in text and "and 3 more" in text
    assert f"dense{cli.LISTED_ROWS - 1}/kernel" in text and f"dense{cli.LISTED_ROWS}/" not in text


def test_a_long_message_keeps_where_it_was_raised():
    long = "ValueError: " + "x" * 1000 + WHERE
    short = cli.shorten(long, cli.MESSAGE_CHARS)
    assert len(short) == cli.MESSAGE_CHARS and short.endswith(WHERE) and "..." in short
    assert cli.shorten("short", 10) == "short"


class _Ctx:
    name, dtype = "user", "float64"

    def __init__(self, state):
        self.state = state

    def row(self, check, record):
        return dict(check=check, message=record.message)


def test_diagnosis_phase_prints_one_progress_line(monkeypatch):
    # Signatures, then the layout search (a weighted layer fails at its state): one phase.
    from parity.diagnosis import layout, signatures

    lines = []
    monkeypatch.setattr(runner, "progress", lines.append)
    monkeypatch.setattr(signatures, "signature_rows", lambda ctx: [])
    monkeypatch.setattr(layout, "failing_layers", lambda rows, state: ["conv2d"])
    searched = []
    monkeypatch.setattr(layout, "layout_rows", lambda ctx, failing: searched.append(1) or [])
    rows = {runner.DIAGNOSIS: [], "errors": []}
    runner._diagnose(_Ctx(layout.STATE), rows)
    assert searched == [1]  # both parts ran
    assert lines == [f"user float64 {layout.STATE}: diagnosis"]


def test_start_up_speaks_every_heartbeat_until_a_process_is_ready(tmp_path, monkeypatch):
    lines = []
    monkeypatch.setattr(start_up, "HEARTBEAT", 0.2)
    monkeypatch.setattr(start_up, "POLL", 0.01)
    ready = [tmp_path / "float64", tmp_path / "float32"]
    running = [concurrent.futures.Future(), concurrent.futures.Future()]  # never done
    toucher = threading.Timer(0.7, ready[1].touch)  # float32's process gets ready
    started = time.perf_counter()
    toucher.start()
    start_up.wait(ready, running, started, lines.append)
    waited = time.perf_counter() - started
    toucher.join()
    assert 0.7 <= waited < 3, waited  # it returned once float32 was ready
    assert len(lines) >= 2 and all(line.startswith("importing TensorFlow: ") for line in lines)


def test_start_up_returns_when_every_process_ended_without_being_ready(tmp_path):
    failed = concurrent.futures.Future()
    failed.set_exception(RuntimeError("the child died while importing"))
    started = time.perf_counter()
    start_up.wait([tmp_path / "float64"], [failed], started, print)
    assert time.perf_counter() - started < 1


@pytest.mark.slow
def test_a_run_prints_the_start_up_phase_and_each_process_ready(tmp_path, capfd, monkeypatch):
    # A fresh float64 process (capfd: not the suite's kept one); one check at one state, as
    # the start-up is over before any check runs.
    narrowed_run(monkeypatch, checks=("forward",), states=("initial",))
    code = cli.main(["check", str(cli_example()), "--epochs", "0", "--images", "2",
                     "--out", str(tmp_path)])  # fmt: skip
    err = capfd.readouterr().err
    assert code == 0
    assert "starting one process per dtype (float64): importing TensorFlow" in err
    assert "float64: TensorFlow imported, process ready after" in err


def cli_example():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "examples" / "blog"


def test_the_trained_states_steps_report_progress_step_by_step():
    from parity.checks.common import train_scratch
    from parity.data import load_mnist
    from scratch.models import build

    data, events = load_mnist(), []
    train_scratch(build("zhou"), data.train_images[:20], data.train_labels[:20], 0, steps=7,
                  progress=events.append, description="[zhou float64] trained")  # fmt: skip
    assert [(e.description, e.done, e.total) for e in events] == [
        ("[zhou float64] trained", done, 7) for done in range(1, 8)]  # fmt: skip
