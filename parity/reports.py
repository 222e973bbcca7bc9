"""Report folders: ``<out>/<run-id>/`` with the CSV tables and environment.json.

Written atomically: everything is built in a hidden temporary sibling folder
(``<out>/.<run-id>.partial-XXXX``) and renamed to ``<out>/<run-id>`` only when complete;
on any error the temporary folder is removed, so a report folder is never partial.
The run folder and its files get the modes of anything the user creates (folder 0777,
files 0666, minus the umask): 0755 and 0644 under the usual umask 022, so other users
can read a finished report (``tempfile.mkdtemp`` would make it 0700).
Same seed, same machine: identical CSV contents (rows in a deterministic order, floats
in one fixed format); only environment.json carries the run id and timestamps.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

CSV_TABLES = (  # fmt: skip
    "summary",
    "forward",
    "gradients",
    "isolation",
    "derivations",
    "ties",
    "sweep",
    "preprocessing",
    "modal",
    "diagnosis",
)
FLOAT_FORMAT = "%.6e"  # every float column: 7 significant digits, always scientific


class ReportError(OSError):
    """The report folder cannot be written; the message names the folder."""


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (UTC; 4 random hex digits keep parallel runs apart)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def check_writable(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and prove it is writable (a probe folder); else ReportError."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        Path(tempfile.mkdtemp(prefix=".parity-probe-", dir=path)).rmdir()
    except OSError as error:
        raise ReportError(
            f"Invalid value for argument `--out`. Expected a folder that can be created and "
            f"written. Received --out='{out}' ({error.strerror or error})."
        ) from None
    return path


def write_report(
    results,
    out: str | os.PathLike = "reports",
    run_id: str | None = None,
    extra_writers: Iterable[Callable[[Path], None]] = (),
) -> Path:
    """Write ``results`` (tables, environment) to ``<out>/<run-id>``; return that path.

    ``extra_writers`` are called with the temporary folder (plots, training tables) so
    they are part of the same atomic rename. Last come the heatmaps of failing layers
    (``results.heatmaps``, ``parity.heatmaps``) and ``index.html`` (``parity.html_report``),
    which shows every file written before it.
    """
    parent = check_writable(out)
    run_id = run_id or new_run_id()
    final = parent / run_id
    if final.exists():
        raise ReportError(f"{final}: a report with run id {run_id!r} already exists.")
    temp = parent / f".{run_id}.partial-{secrets.token_hex(4)}"
    temp.mkdir()  # 0777 minus the umask, unlike mkdtemp's 0700; fails if it exists
    try:
        for name, frame in results.tables.items():
            frame.to_csv(temp / f"{name}.csv", index=False, float_format=FLOAT_FORMAT)
        for writer in extra_writers:
            writer(temp)
        environment = dict(
            run_id=run_id, written_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            seconds=round(results.seconds, 3), **results.environment,
        )  # fmt: skip
        text = json.dumps(environment, indent=2, sort_keys=True, default=str)
        (temp / "environment.json").write_text(text + "\n")
        _write_pages(results, temp, run_id)
        temp.rename(final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def _write_pages(results, folder: Path, run_id: str) -> None:
    """The heatmaps of failing layers, then index.html, into the temporary folder."""
    from parity.heatmaps import write_heatmaps
    from parity.html_report import write_index

    write_heatmaps(getattr(results, "heatmaps", []), results.tables.get("summary"), folder)
    write_index(folder, f"parity report {run_id}")
