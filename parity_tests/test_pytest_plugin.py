"""The `parity` fixture (parity/pytest_plugin.py) driven as a user would: a separate
temporary repository whose own test uses it, run by a pytest subprocess that finds the
plugin through the installed ``pytest11`` entry point."""

import importlib.metadata
import shutil

import pytest
from test_check_command import ALL_TIES, EXAMPLE, FIRST_MAX

pytestmark = pytest.mark.slow  # each run imports TensorFlow and checks the example (~30 s)

FAST = dict(epochs=0, images=4, dtypes="float64")


def _require_entry_point() -> None:
    plugins = {e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert "parity.pytest_plugin" in plugins, (
        "the pytest11 entry point of cnn-parity is not installed (metadata older than "
        "pyproject.toml): run `.venv/bin/pip install -e .`"
    )


def _user_repository(pytester, body: str, replace: tuple | None = None):
    code = pytester.path / "cnn"
    shutil.copytree(EXAMPLE, code, ignore=shutil.ignore_patterns("__pycache__"))
    if replace:
        text = (code / "maxpool.py").read_text()
        assert text.count(replace[0]) == 1
        (code / "maxpool.py").write_text(text.replace(*replace))
    pytester.makepyfile(test_user=body)


def test_a_users_correct_cnn_passes_through_the_fixture(pytester):
    _require_entry_point()
    _user_repository(pytester, f"def test_my_cnn(parity):\n"
                               f"    parity.check('cnn', api='blog', **{FAST!r})\n")  # fmt: skip
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_blogs_tie_rule_fails_the_users_test_naming_the_pool_layer(pytester):
    _require_entry_point()
    _user_repository(pytester, f"def test_my_cnn(parity):\n"
                               f"    parity.check('cnn', api='blog', **{FAST!r})\n",
                     replace=(FIRST_MAX, ALL_TIES))  # fmt: skip
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*exited 1*", "*max_pooling2d (MaxPool2)/routing*FAIL*",
                                 "*report: *"])  # fmt: skip


def test_bad_input_fails_with_the_commands_message_and_expect_pass_false_returns_it(pytester):
    _require_entry_point()
    _user_repository(pytester, "def test_my_cnn(parity):\n"
                               "    result = parity.check('missing', expect_pass=False)\n"
                               "    assert result.exit_code == 2 and result.report is None\n"
                               "    parity.check('missing')\n")  # fmt: skip
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*exited 2*", "*missing*"])
