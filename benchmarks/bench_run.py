"""Wall time of ``parity run`` and of its training check, with the load average.

    python benchmarks/bench_run.py [--repeats 2] [--skip-run] [-- extra parity run options]

- ``parity run``: the default command (or with the extra options), in a subprocess,
  wall clock from start to exit (TensorFlow imports, both dtype processes, the report);
- training: the training-curve check alone (``parity.checks.training.training_check``,
  the default schedule: zhou, 3 epochs over 1,000 images, SGD, batch 1), each dtype in
  its own process as ``parity run`` does, one after the other; wall clock of the check
  and the seconds per step of each side it reports.

Runs whatever ``parity`` is importable (``PYTHONPATH`` picks a tree), so the same
script times a branch and its base; a tree from before ``parity/curves.py`` was split
is timed through ``parity.curves``. The best of ``--repeats`` runs is reported (shared
cores: the least disturbed). A script, not a test: timings are never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def time_parity_run(extra: list[str], repeats: int, out: str) -> float:
    """Best wall seconds of ``parity run --out OUT *extra``."""
    command = [sys.executable, "-m", "parity.cli", "run", "--out", out, *extra]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        best = min(best, time.perf_counter() - start)
        if done.returncode not in (0, 1):
            raise SystemExit(f"parity run exited {done.returncode}:\n{done.stderr[-2000:]}")
    return best


def _check_module():
    try:
        from parity.checks import training
    except ImportError:  # a tree from before the split
        from parity import curves as training
    return training


def time_training(dtype: str, repeats: int) -> tuple[float, dict]:
    """Best wall seconds of the default training check in ``dtype`` (its own process,
    TensorFlow import excluded) and that run's seconds per step by side."""
    from parity.data import load_mnist
    from reference.backend import run_in_dtype_process

    return run_in_dtype_process(dtype, _train_here, dtype, load_mnist(), repeats)


def _train_here(dtype: str, mnist, repeats: int) -> tuple[float, dict]:
    import tensorflow  # noqa: F401  (imported before the clock starts)

    training = _check_module()
    best, per_step = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        result = training.training_check("zhou", dtype, mnist, in_process=True)
        seconds = time.perf_counter() - start
        if seconds < best:
            best, per_step = seconds, dict(result.seconds_per_step)
    return best, per_step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-run", action="store_true", help="time only the training check")
    parser.add_argument("--out", default="/tmp/bench_run_reports")
    parser.add_argument("extra", nargs="*", help="options passed to parity run (after --)")
    args = parser.parse_args(argv)
    import parity

    print(f"parity from {os.path.dirname(parity.__file__)}; load average {load()}")
    if not args.skip_run:
        wall = time_parity_run(args.extra, args.repeats, args.out)
        print(f"parity run {' '.join(args.extra)}: {wall:.1f} s wall (best of {args.repeats}); "
              f"load average {load()}")  # fmt: skip
    for dtype in ("float64", "float32"):
        seconds, per_step = time_training(dtype, args.repeats)
        steps = ", ".join(f"{side} {value * 1e3:.3f}" for side, value in per_step.items())
        print(f"training check {dtype}: {seconds:.1f} s wall (best of {args.repeats}); ms per "
              f"step: {steps}; load average {load()}")  # fmt: skip


if __name__ == "__main__":
    main()
