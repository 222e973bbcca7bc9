"""The ``parity`` pytest fixture: check your own numpy CNN from your own test suite.

Installed with cnn-parity (a ``pytest11`` entry point), so a repository that lists
cnn-parity in its test requirements can write::

    def test_my_cnn(parity):
        parity.check("path/to/cnn", api="blog", epochs=0)

``parity.check`` runs exactly ``parity check PATH`` (same checks, same exit codes) with
its report in the test's temporary folder, and fails the test with the rows that did
not pass (FAIL, ERROR, INCONCLUSIVE) and the report's path. Bad usage or input (exit 2)
fails it with the command's own message.

TensorFlow processes are kept for the session (issue 16): one per dtype, started by the
first check that needs it, reused by every later check, shut down when the session ends
(``reference.backend.KeptProcesses``). Each check starts in it from the state a new
process has (Keras session cleared, default seed), so verdicts and reports are those of
fresh processes. Under pytest-xdist each worker keeps its own. A test that also uses
``capfd`` gets fresh processes per check, as a kept process writes to the file
descriptors it was started with.

Loading this plugin imports neither TensorFlow nor the harness; ``check`` does.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CheckResult:
    """What one ``parity.check`` measured.

    Attributes
    ----------
    exit_code : int
        0 passed, 1 a FAIL or INCONCLUSIVE row, 2 bad usage or input, 3 an ERROR row.
    report : pathlib.Path or None
        The report folder (``None`` when nothing ran: exit 2).
    summary : pandas.DataFrame or None
        summary.csv, one row per check (reports/README.md documents the columns).
    output : str
        What the command printed (table, or the usage message on exit 2).
    """

    exit_code: int
    report: Path | None
    summary: object
    output: str

    def failing_rows(self):
        """The summary rows whose status is not PASS or NOT_PROVIDED."""
        if self.summary is None:
            return None
        return self.summary[~self.summary["status"].isin(["PASS", "NOT_PROVIDED"])]


class Parity:
    """The fixture: ``check(path, api="auto", **options)`` runs ``parity check``."""

    def __init__(self, out: Path, processes=None):
        self._out = out
        self._processes = processes  # a reference.backend.KeptProcesses, or None: fresh ones

    def check(self, path, api: str = "auto", *, expect_pass: bool = True, **options):
        """Run ``parity check PATH --api API`` with ``options`` as command-line options.

        Parameters
        ----------
        path : str or os.PathLike
            A folder laid out like the blog's repository, or one .py file (blog or cs231n).
        api : str
            ``auto``, ``blog`` or ``cs231n`` (``parity check --help`` lists them).
        expect_pass : bool
            True (default): fail the test unless the exit code is 0. False: return the
            result whatever it is (for tests that expect a failure).
        **options
            Options of ``parity check`` by their Python name: ``epochs=0``,
            ``dtypes="float64,float32"``, ``seed=3``, ``train_size=200``.

        Returns
        -------
        CheckResult

        Raises
        ------
        pytest.fail.Exception
            With the failing rows and the report path, if ``expect_pass`` and the exit
            code is not 0.
        """
        from parity.cli import main

        out = self._fresh_folder()
        argv = ["check", str(path), "--api", api, "--out", str(out), *_options(options)]
        printed = io.StringIO()
        kept = self._processes.active() if self._processes else contextlib.nullcontext()
        with kept, contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            code = main(argv)
        result = _result(code, out, printed.getvalue())
        if expect_pass and code != 0:
            pytest.fail(_failure_message(argv, result), pytrace=False)
        return result

    def _fresh_folder(self) -> Path:
        index = sum(1 for _ in self._out.glob("check-*"))
        folder = self._out / f"check-{index}"
        folder.mkdir(parents=True)
        return folder


def _options(options: dict) -> list[str]:
    """``{"train_size": 200, "blog_printout": True}`` -> ``--train-size 200 --blog-printout``."""
    argv = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return argv


def _result(code: int, out: Path, output: str) -> CheckResult:
    import pandas as pd

    folders = [p for p in out.iterdir() if p.is_dir()]
    report = folders[0] if len(folders) == 1 else None
    summary = pd.read_csv(report / "summary.csv") if report is not None else None
    return CheckResult(code, report, summary, output)


def _failure_message(argv: list[str], result: CheckResult) -> str:
    command = "parity " + " ".join(argv)
    if result.summary is None:  # exit 2: nothing ran; the command said why
        return f"{command} exited {result.exit_code}:\n{result.output.strip()}"
    from parity.cli import format_messages, format_table, status_counts

    failing = result.failing_rows()
    return (
        f"{command} exited {result.exit_code} ({status_counts(result.summary)}):\n"
        f"{format_table(failing)}\n{format_messages(failing)}\nreport: {result.report}"
    )


CAPTURES_FDS = ("capfd", "capfdbinary")  # a kept process would write past their capture


@pytest.fixture(scope="session")
def _parity_processes():
    """The session's TensorFlow processes, one per dtype, each started at first use."""
    from reference.backend import KeptProcesses

    kept = KeptProcesses()
    yield kept
    kept.close()


@pytest.fixture
def parity(request, tmp_path_factory) -> Parity:
    """Check a numpy CNN against its Keras twin: ``parity.check(path, api=..., **options)``."""
    fresh = any(name in request.fixturenames for name in CAPTURES_FDS)
    processes = None if fresh else request.getfixturevalue("_parity_processes")
    return Parity(tmp_path_factory.mktemp("parity"), processes)
