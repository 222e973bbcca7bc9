import os
import stat

import pandas as pd
import pytest

from parity import reports, runner


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _modes(folder):
    return stat.S_IMODE(folder.stat().st_mode), stat.S_IMODE(
        (folder / "summary.csv").stat().st_mode
    )


def _write(tmp_path, extra_writers=()):
    results = runner.Results({"summary": pd.DataFrame({"x": [0.1]})})
    return reports.write_report(results, tmp_path, run_id="r", extra_writers=extra_writers)


def test_report_folder_and_files_are_readable_by_others(tmp_path, umask):
    umask(0o022)
    assert _modes(_write(tmp_path)) == (0o755, 0o644)


def test_report_modes_follow_the_umask(tmp_path, umask):
    umask(0o027)
    assert _modes(_write(tmp_path)) == (0o750, 0o640)


def test_files_from_extra_writers_are_readable_by_others(tmp_path, umask):
    umask(0o022)
    folder = _write(tmp_path, [lambda temp: (temp / "plot.png").write_bytes(b"png")])
    assert stat.S_IMODE((folder / "plot.png").stat().st_mode) == 0o644
