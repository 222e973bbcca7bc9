"""Wall time of the README's test command (the pytest part, install excluded), with the load
average and the slowest tests.

    python benchmarks/bench_suite.py [--durations 25] [-- extra pytest options]

Reads the command between README's ``test-command`` markers (the one ``.ci/run`` runs), keeps
what follows its last ``&&`` (``.venv/bin/pytest ...``: the suite itself; issue 16's
5-minute target excludes the install) and runs it from the repository root in a subprocess,
with ``--durations`` added. Prints the command, the load average before and after, the wall
time, pytest's summary line and the slowest test phases. Needs the ``.venv`` that README's
command creates. A script, not a test: timings are never asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKERS = re.compile(
    r"<!-- test-command:start -->.*?```bash\n(.*?)\n```.*?<!-- test-command:end -->", re.DOTALL
)


def suite_command(readme: Path = ROOT / "README.md") -> list[str]:
    """The pytest part of README's test command, as an argument list.

    Raises SystemExit naming README when the markers or the ``&&`` chain are missing."""
    found = MARKERS.search(readme.read_text(encoding="utf-8"))
    if found is None:
        raise SystemExit(f"{readme}: no ```bash block between the test-command markers")
    command = found.group(1).split("&&")[-1].strip()
    if "pytest" not in command:
        raise SystemExit(f"{readme}: the test command's last step is not pytest: {command!r}")
    return shlex.split(command)


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--durations", type=int, default=25)
    parser.add_argument("extra", nargs="*", help="more pytest options (after --)")
    args = parser.parse_args(argv)
    command = [*suite_command(), f"--durations={args.durations}", *args.extra]
    print("$", shlex.join(command), f"\nload average before: {load()}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    lines = done.stdout.splitlines()
    slowest = next((i for i, line in enumerate(lines) if "slowest" in line), len(lines))
    print("\n".join(lines[slowest:]))
    print(f"exit {done.returncode}, {took:.0f} s wall ({took / 60:.1f} min), load average "
          f"after: {load()}")  # fmt: skip
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
