"""The `parity` fixture (parity/pytest_plugin.py) driven as a user would: a separate
temporary repository whose own tests use it, run once by a pytest subprocess that finds
the plugin through the installed ``pytest11`` entry point; each test here reads one part
of that session.

The user's repository checks the example examples/blog and its copy with the blog's tie
rule, both dtypes, at the initial weights only (its conftest.py narrows the run's weight
states, as test_cli.py does): the claims here are the fixture's (pass, fail with the rows,
bad input, processes kept), not the checks'. The example's full check (every state, the
derivations) is test_check_command.py's test_example_passes_*; the tie rule at every check
is test_check_command.py's test_blog_all_ties_max_pool_rule_fails_*.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_check_command import ALL_TIES, EXAMPLE, FIRST_MAX

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pytest_plugin")]  # one session

# Each check records the processes that imported the user's code: the pytest process
# validates it before TensorFlow is imported, the dtype processes run the checks.
RECORD_PID = """
import os as _os

with open("{pids}", "a") as _f:
    _f.write(f"{{_os.getpid()}}\\n")
"""
USER_CONFTEST = """\
import dataclasses

import pytest
from parity import runner


@pytest.fixture(autouse=True)
def initial_weights_only(monkeypatch):
    real_run = runner.run

    def run(config, **kwargs):
        return real_run(dataclasses.replace(config, states=("initial",)), **kwargs)

    monkeypatch.setattr(runner, "run", run)
"""
OPTIONS = dict(epochs=0, images=4, dtypes="float64,float32")
USER_TESTS = f"""\
import os


def test_correct(parity):
    with open("session.pid", "w") as f:
        f.write(str(os.getpid()))
    parity.check("correct", api="blog", **{OPTIONS!r})


def test_tie_rule(parity):
    parity.check("ties", api="blog", **{OPTIONS!r})


def test_bad_input(parity):
    result = parity.check("missing", expect_pass=False)
    assert result.exit_code == 2 and result.report is None
    parity.check("missing")


def test_captured(parity, capfd):  # after test_correct: the kept processes exist by now
    parity.check("captured", api="blog", **{dict(OPTIONS, dtypes="float64")!r})
    assert "float64: TensorFlow imported, process ready" in capfd.readouterr().err
"""


def _require_entry_point() -> None:
    plugins = {e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert "parity.pytest_plugin" in plugins, (
        "the pytest11 entry point of cnn-parity is not installed (metadata older than "
        "pyproject.toml): run `.venv/bin/pip install -e .`"
    )


def _user_code(repo: Path, name: str, replace: tuple | None = None) -> None:
    code = repo / name
    shutil.copytree(EXAMPLE, code, ignore=shutil.ignore_patterns("__pycache__"))
    if replace:
        text = (code / "maxpool.py").read_text()
        assert text.count(replace[0]) == 1
        (code / "maxpool.py").write_text(text.replace(*replace))
    with open(code / "conv.py", "a") as conv:
        conv.write(RECORD_PID.format(pids=repo / f"{name}.pids"))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The user's pytest session: its output (``-v``) and the repository."""
    _require_entry_point()
    repo = tmp_path_factory.mktemp("users_repository")
    _user_code(repo, "correct")
    _user_code(repo, "ties", replace=(FIRST_MAX, ALL_TIES))
    _user_code(repo, "captured")
    (repo / "conftest.py").write_text(USER_CONFTEST)
    (repo / "test_user.py").write_text(USER_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "test_user.py"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return run.stdout + run.stderr, repo


def _section(output: str, test: str) -> str:
    """The failure report of the user's ``test`` (pytest's ``___ test ___`` section)."""
    found = re.search(rf"_{{3,}} {test} _{{3,}}\n(.*?)(?=\n_{{3,}} |\n={{3,}} )", output, re.S)
    assert found, output
    return found.group(1)


def _child_pids(repo: Path, name: str) -> set[int]:
    pids = {int(p) for p in (repo / f"{name}.pids").read_text().split()}
    return pids - {int((repo / "session.pid").read_text())}


def test_a_users_correct_cnn_passes_through_the_fixture(session):
    output, _ = session
    assert "test_user.py::test_correct PASSED" in output, output


def test_the_blogs_tie_rule_fails_the_users_test_naming_the_pool_layer(session):
    output, _ = session
    assert "test_user.py::test_tie_rule FAILED" in output, output
    failure = _section(output, "test_tie_rule")
    assert "exited 1" in failure and "report: " in failure, failure
    assert re.search(r"max_pooling2d \(MaxPool2\)/routing .* FAIL", failure), failure


def test_bad_input_fails_with_the_commands_message_and_expect_pass_false_returns_it(session):
    output, _ = session
    assert "test_user.py::test_bad_input FAILED" in output, output
    failure = _section(output, "test_bad_input")
    assert "exited 2" in failure and "missing" in failure, failure


def test_the_session_keeps_one_process_per_dtype_across_checks(session):
    # Two checks in two tests, two dtypes each: the same two dtype processes ran both (a
    # fresh pair per check would show four).
    _, repo = session
    correct, ties = _child_pids(repo, "correct"), _child_pids(repo, "ties")
    assert len(correct) == 2 and ties == correct, (correct, ties)


def test_a_test_reading_capfd_gets_a_fresh_process_that_writes_into_its_capture(session):
    output, repo = session
    assert "test_user.py::test_captured PASSED" in output, output
    captured, kept = _child_pids(repo, "captured"), _child_pids(repo, "correct")
    assert len(captured) == 1 and not captured & kept, (captured, kept)
