"""What lockstep costs: its second Keras pass per step against the scratch step, and what
diagnosing the first divergence costs, with the load average.

    python benchmarks/bench_lockstep.py [--models zhou,two-conv] [--epochs 1] [--repeats 2]

For each model and dtype (each dtype in its own process, as ``parity run`` does), the
training check with lockstep only (no free-running path), the blog's schedule (SGD
0.005, batch 1) over 1,000 images: per step, ``scratch`` (``ScratchRun.seconds``: the
scratch training code only) and ``lockstep`` (``LockstepRun.seconds``: the Keras step
from the scratch weights and state, plus judging every weight's update). Then the same
run with the catalog's update-sign bug planted on two-conv, timing the first-divergence
diagnosis (one gradient evaluation on each side at one step). The best of ``--repeats``
(shared cores: the least disturbed). A script, not a test: timings are never asserted.
"""

from __future__ import annotations

import argparse
import os
import time


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def measure(jobs):
    """In the dtype's process: per job ``(scratch ms, lockstep ms, diagnosis s or None)``."""
    from parity.checks import training
    from parity.diagnosis import first_step

    out = []
    real = first_step.diagnose
    for config, pools, hooks in jobs:
        spent: list[float] = []
        first_step.diagnose = _timed(real, spent)
        try:
            result = training.run_training(config, pools, None, tuple(hooks))
        finally:
            first_step.diagnose = real
        steps = result.seconds_per_step
        out.append((1e3 * steps["scratch"], 1e3 * steps["lockstep"], spent[0] if spent else None))
    return out


def _timed(function, spent: list):
    """``function`` that appends the seconds of each call to ``spent``."""

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)

    return timed


def main() -> None:
    from parity import catalog
    from parity.checks.training_config import TrainingConfig, pools_from
    from parity.data import load_mnist
    from reference.backend import run_in_dtype_process

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="zhou,two-conv")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    mnist = load_mnist()
    bug = catalog.BY_NAME["update-sign-flipped"]
    for dtype in ("float64", "float32"):
        jobs, names = [], []
        for model in args.models.split(","):
            config = TrainingConfig(model, dtype, epochs=args.epochs, keras_paths=())
            jobs.append((config, pools_from(mnist, config), ()))
            names.append(model)
        config = TrainingConfig(bug.model, dtype, epochs=1, train_size=40, keras_paths=())
        jobs.append((config, pools_from(mnist, config), catalog.hooks_of(bug)))
        names.append(f"{bug.model} + {bug.name}")
        print(f"{dtype}: load average before {load()}", flush=True)
        best = None
        for _ in range(args.repeats):
            runs = run_in_dtype_process(dtype, measure, jobs)
            best = runs if best is None else [min(a, b, key=lambda r: r[1])
                                              for a, b in zip(best, runs, strict=True)]  # fmt: skip
        for name, (scratch, lock, diagnosis) in zip(names, best, strict=True):
            extra = f", diagnosis {diagnosis:.3f} s" if diagnosis is not None else ""
            print(f"  {name}: scratch {scratch:.3f} ms/step, lockstep {lock:.3f} ms/step "
                  f"({lock / scratch:.1f}x){extra}")  # fmt: skip
        print(f"  load average after {load()}", flush=True)


if __name__ == "__main__":
    main()
