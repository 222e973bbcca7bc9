"""False alarms of ``parity run`` on the shipped, correct code, over many seeds.

    .venv/bin/python benchmarks/false_alarms.py [--seeds 50] [--epochs 3] [--models ...]

Each seed runs exactly what ``parity run --seed S`` runs (``parity.runner.run_dtype``:
forward, gradients, derivations, ties at the three weight states on 32 images, then the
training-curve check with ``--epochs`` epochs of the blog's schedule), for every model, in
one process per dtype (the two dtypes in parallel). Every row that is not PASS is a false
alarm: the code is correct. Prints the count per model and dtype, then each false alarm.
A script, not a test: it takes minutes per seed with training on (README, "Verdicts").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import pandas as pd  # noqa: E402

from parity import runner  # noqa: E402
from parity.compare import is_failure  # noqa: E402
from scratch.models import MODEL_NAMES  # noqa: E402

SHIPPED = ("zhou", "two-conv", "chw", "chw-relu")


def sweep(dtype: str, models: tuple, seeds: range, epochs: int, csv: str) -> list[dict]:
    """In the dtype's process: one summary row per (seed, check, model, layer, quantity),
    each seed's rows also appended to ``csv`` as it ends (a long sweep can be read early)."""
    training = runner.TrainingOptions(epochs=epochs) if epochs else None
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        config = runner.RunConfig(models=models, dtypes=(dtype,), seed=seed, training=training)
        part = runner.run_dtype(config, dtype, runner.load_batches(config))
        summary = runner.gather([part]).summary
        coverage = {}  # the lowest share of FD points judged, per model (derivations.csv)
        for r in part["rows"]["derivations"]:
            coverage[r["model"]] = min(coverage.get(r["model"], 1.0), r["evaluated_fraction"])
        new = [{**r, "seed": seed, "fd_coverage": coverage.get(r["model"], float("nan"))}
               for r in summary.to_dict("records")]  # fmt: skip
        pd.DataFrame(new).to_csv(csv, mode="a", header=not os.path.exists(csv), index=False)
        rows += new
        bad = int(summary["status"].map(is_failure).sum())
        print(f"[false alarms {dtype}] seed {seed}: {len(summary)} rows, {bad} not PASS, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--seeds", type=int, default=50, help="how many seeds, from --start")
    parser.add_argument("--start", type=int, default=0, help="first seed (to resume a sweep)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs; 0: none")
    parser.add_argument("--models", default=",".join(SHIPPED))
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--out", default="reports/false_alarms",
                        help="folder of <dtype>.csv, rows appended per seed")  # fmt: skip
    args = parser.parse_args()
    models = tuple(args.models.split(","))
    assert set(models) <= set(MODEL_NAMES), f"--models: choose from {MODEL_NAMES}"
    from reference.backend import run_in_dtype_process

    start = time.perf_counter()
    dtypes = args.dtypes.split(",")
    os.makedirs(args.out, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(len(dtypes)) as pool:
        seeds = range(args.start, args.start + args.seeds)
        jobs = [pool.submit(run_in_dtype_process, d, sweep, d, models, seeds, args.epochs,
                            os.path.join(args.out, f"{d}.csv")) for d in dtypes]  # fmt: skip
        frame = pd.DataFrame([row for job in jobs for row in job.result()])
    frame["false_alarm"] = frame["status"].map(is_failure)
    table = frame.groupby(["model", "dtype"], sort=False).agg(
        seeds=("seed", "nunique"),
        rows=("status", "size"),
        false_alarms=("false_alarm", "sum"),
        min_fd_coverage=("fd_coverage", "min"),
    )
    took, load = time.perf_counter() - start, os.getloadavg()[0]
    print(f"\n{args.seeds} seeds, training {args.epochs} epochs, {took:.0f} s, load {load:.1f}")
    print(table.to_string())
    alarms = frame[frame["false_alarm"]]
    for r in alarms.itertuples():
        print(f"seed {r.seed} {r.model} {r.dtype} {r.check} {r.layer}/{r.quantity} "
              f"{r.status}: {r.message}")  # fmt: skip


if __name__ == "__main__":
    main()
