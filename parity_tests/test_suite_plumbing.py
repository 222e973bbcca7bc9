"""The suite's own plumbing: what the README's test command relies on for its speed."""

import pytest

GROUPED = """
import os, pytest
pytestmark = pytest.mark.xdist_group("one")

@pytest.fixture(scope="session")
def computed():
    with open("setups.log", "a") as log:
        log.write(f"{os.getpid()}\\n")

@pytest.mark.parametrize("i", range(12))
def test_grouped(computed, i):
    pass
"""
FREE = """
import pytest

@pytest.mark.parametrize("i", range(12))
def test_free(i):
    pass
"""


@pytest.mark.slow
def test_loadgroup_keeps_a_group_on_one_worker_and_its_session_fixture_runs_once(pytester):
    # The README's `pytest -n 2 --dist loadgroup`: parity_tests/test_checks*.py mark their
    # session runs with xdist_group. With pytest 9.2 and pytest-xdist 3.8 the mark is
    # silently ignored (pytest-dev/pytest-xdist#1386) and this test fails: two setups.
    pytester.makepyfile(test_grouped=GROUPED, test_free=FREE)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-p",
                                           "no:cacheprovider", "-q")  # fmt: skip
    result.assert_outcomes(passed=24)
    setups = (pytester.path / "setups.log").read_text().split()
    assert len(setups) == 1, f"the session fixture ran in {len(setups)} workers"
