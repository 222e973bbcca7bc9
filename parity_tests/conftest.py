"""Keras/TensorFlow setup of the pytest process.

Keras is exact in float64 only if ``keras.config.set_floatx("float64")`` runs before
any Keras object exists (DESIGN.md), so this process is configured for float64
(``reference.backend.configure``: floatx, ``keras.utils.set_random_seed``, op
determinism) before the first test that uses Keras; float32 work runs in its own
process (``reference.backend.run_in_dtype_process``). TensorFlow is imported only when
a test needs it: tests marked ``keras``, or any test once Keras is imported, so runs of
numpy-only tests stay fast and free of TensorFlow.
"""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is ever imported
# One OpenBLAS thread per process. The suite runs two xdist workers on 2 cores, each with
# its dtype processes: OpenBLAS's default, a thread per core that spins while it waits
# (OpenMathLib/OpenBLAS#731), oversubscribes the cores for matrices this small (measured
# under load 13: 60 cs231n-3layer-chw training steps 36.5 s wall / 6.2 s CPU with the
# default, 6.1 s / 1.1 s with one thread). Set here, before the xdist workers start (they
# and every process they spawn inherit it, and load numpy after). Verdicts do not depend
# on it: rounding budgets hold on any CPU and thread count (README, "Verdicts that hold on
# any CPU").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

pytest_plugins = ["pytester"]  # test_suite_plumbing.py runs pytest sessions in a subprocess

PROCESS_DTYPE = "float64"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "keras: uses Keras in the pytest process (configured for float64 before the test)",
    )


def _configure_keras() -> None:
    from reference import backend

    backend.configure(PROCESS_DTYPE)


def _needs_keras(items) -> bool:
    return "keras" in sys.modules or any(item.get_closest_marker("keras") for item in items)


def pytest_collection_finish(session):
    if _needs_keras(session.items):
        _configure_keras()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _needs_keras([item]):
        _configure_keras()


@pytest.fixture
def check(tmp_path, monkeypatch):
    """``parity check PATH *args`` in this (float64) process: ``(exit code, summary)``, the
    summary read back from the report (None when no report was written: exit 2)."""
    import functools

    import pandas as pd

    from parity import cli, runner

    monkeypatch.setattr(runner, "run", functools.partial(runner.run, in_process=True))
    out = tmp_path / "out"

    def run(path, *args):
        code = cli.main(["check", str(path), "--out", str(out), *args])
        folders = sorted(out.iterdir()) if out.exists() else []
        return code, (pd.read_csv(folders[0] / "summary.csv") if folders else None)

    return run


@pytest.fixture(autouse=True)
def _dtype_processes_kept(request):
    """Every ``run_in_dtype_process`` of a test reuses the session's process for its dtype:
    the installed ``parity`` plugin's ``_parity_processes`` (``reference.backend.
    KeptProcesses``), so TensorFlow is imported once per dtype and xdist worker, not once
    per call. A test that reads the child's output with ``capfd`` gets fresh processes, by
    the plugin's own rule (a kept process writes where it was spawned)."""
    from parity.pytest_plugin import CAPTURES_FDS

    if any(name in request.fixturenames for name in CAPTURES_FDS):
        yield
        return
    with request.getfixturevalue("_parity_processes").active():
        yield
