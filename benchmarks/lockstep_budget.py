"""What the lockstep update budget must cover on correct code: the measurement behind
``parity.tolerances.LOCKSTEP_SEED_ROUNDINGS`` and ``LOCKSTEP_WEIGHTS_*``.

    .venv/bin/python benchmarks/lockstep_budget.py [--seeds 10] [--dtype float32]
        [--models zhou,two-conv,chw,chw-relu] [--optimizer sgd]

Runs the training check's lockstep (3 epochs x 1,000 images, the blog's schedule, or
Adam 0.001 batch 32 with ``--optimizer adam``) on the shipped, correct code and records,
for every step and every weight (and Adam moment), what the budget
``eps * max|before| + (rtol + SEED_ROUNDINGS * eps * kappa) * M`` is made of
(``parity.lockstep_judge``). Prints, per model:

- ``base use``: the worst ``(err - eps*max|before|) / (rtol * M)`` (the budget without
  the seed term: > 1 would be a false alarm without it);
- ``seed need``: the worst ``(err - eps*max|before| - rtol*M) / (eps * kappa * M)``, the
  SEED_ROUNDINGS the step needs (<= 0: none);
- ``seed only``: the worst ``(err - eps*max|before|) / (eps * kappa * M)``, what the seed
  term alone would need (its own measured constant, without ``rtol``);
- the worst step of each, with its loss-gradient condition ``kappa``.

A script, not a test: ~10 s per model and seed (README, "Verdicts").
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from parity import lockstep_judge, runner  # noqa: E402


def record_entries(sink: list) -> None:
    """Patch ``Judge.record`` (the entries a step is judged on: after a re-sync of a
    max-pool/ReLU decision rounding took differently, the re-synced step's) to append
    one tuple per weight/moment entry to ``sink``."""
    original = lockstep_judge.Judge.record

    def record(self, entries, where):
        original(self, entries, where)
        for e in entries:
            if e.allowance <= 0 or not np.isfinite(e.use):
                continue
            b = float(np.max(np.abs(np.asarray(e.before, np.float64)), initial=0.0))
            err = e.use * e.allowance
            sink.append((e.layer, e.quantity, err, self.budgets.eps * b, e.scale,
                         self.budgets.rtol(e.quantity), self.budgets.eps, e.kappa))  # fmt: skip

    lockstep_judge.Judge.record = record


def summarize(rows: list) -> dict:
    a = np.array([r[2:] for r in rows], np.float64)
    err, rounding, scale, rtol, eps, kappa = a.T
    excess = err - rounding
    with np.errstate(divide="ignore", invalid="ignore"):
        base = np.where(scale > 0, excess / (rtol * scale), 0.0)
        need = np.where(scale > 0, (excess - rtol * scale) / (eps * kappa * scale), 0.0)
        alone = np.where(scale > 0, excess / (eps * kappa * scale), 0.0)
    out = {}
    for name, values in (("base use", base), ("seed need", need), ("seed only", alone)):
        i = int(np.argmax(values))
        out[name] = (float(values[i]), rows[i][0], rows[i][1], float(kappa[i]))
    out["kappa max"] = float(kappa.max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds, from --start")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--models", default="zhou,two-conv,chw,chw-relu")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    args = parser.parse_args()
    training = runner.TrainingOptions(epochs=3)
    if args.optimizer == "adam":
        training = runner.TrainingOptions(epochs=3, optimizer="adam", learning_rate=0.001,
                                          batch_size=32)  # fmt: skip
    sink: list = []
    record_entries(sink)
    for model in args.models.split(","):
        worst: dict = {}
        for seed in range(args.start, args.start + args.seeds):
            sink.clear()
            config = runner.RunConfig(models=(model,), dtypes=(args.dtype,), seed=seed,
                                      training=training, checks=("forward",))  # fmt: skip
            runner.run_dtype(config, args.dtype, runner.load_batches(config))
            for key, value in summarize(sink).items():
                if key == "kappa max":
                    worst[key] = max(worst.get(key, 0.0), value)
                elif key not in worst or value[0] > worst[key][0]:
                    worst[key] = (*value, seed)
        print(f"{model} {args.dtype} {args.optimizer} seeds {args.start}-"
              f"{args.start + args.seeds - 1}: kappa max {worst['kappa max']:.3g}")  # fmt: skip
        for key in ("base use", "seed need", "seed only"):
            value, layer, quantity, kappa, seed = worst[key]
            print(f"  {key:9s} {value:10.3g}  ({layer}/{quantity}, kappa {kappa:.3g}, seed {seed})")


if __name__ == "__main__":
    main()
