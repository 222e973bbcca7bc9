"""What the lockstep update budget must cover on correct code: the measurement behind
``parity.tolerances.LOCKSTEP_SEED_ROUNDINGS`` and ``LOCKSTEP_WEIGHTS_*``.

    .venv/bin/python benchmarks/lockstep_budget.py [--seeds 10] [--dtype float32]
        [--models zhou,two-conv,chw,chw-relu] [--optimizer sgd] [--batch-size N] [--epochs 3]

Runs the training check's lockstep (``--epochs``, default 3, x 1,000 images at the
optimizer's default learning rate, ``reference.optimizers``: the blog's schedule for
``sgd``; batch 1 for the SGD family, 32 for RMSprop, Adam and AdamW unless
``--batch-size`` says otherwise) on the shipped, correct code and records, for every
step and every weight (and every slot of the optimizer: momentum, velocity), what the budget
``eps * max|before| + (rtol + SEED_ROUNDINGS * eps * kappa) * M`` is made of
(``parity.lockstep_judge``). Prints, per model:

- ``base use``: the worst ``(err - eps*max|before|) / (rtol * M)`` (the budget without
  the seed term: > 1 would be a false alarm without it);
- ``seed need``: the worst ``(err - eps*max|before| - rtol*M) / (eps * kappa * M)``, the
  SEED_ROUNDINGS the step needs (<= 0: none);
- ``seed only``: the worst ``(err - eps*max|before|) / (eps * kappa * M)``, what the seed
  term alone would need (its own measured constant, without ``rtol``);
- the worst step of each, with its loss-gradient condition ``kappa``;
- ``free loss`` / ``free weights``: the free-running ``epoch`` path's worst per-step loss
  difference and worst norm-wise weights error after the last epoch (the float64 budgets
  ``TRAINING_LOSS_*``, ``TRAINING_WEIGHTS_*``);
- ``weights rel`` / ``state rel``: the worst ``(err - eps*max|before|) / M`` of the weight
  updates, resp. of the slots: the measured error the ``rtol`` of ``LOCKSTEP_WEIGHTS_*``,
  resp. ``LOCKSTEP_*_STATE_*`` covers (what ``parity.tolerances`` writes as ``measured``);
- ``weights need`` / ``state need``: the same less the seed term
  ``seed_roundings * eps * kappa`` (the optimizer's ``LOCKSTEP_SEED_ROUNDINGS*``): what
  ``rtol`` must cover beside it (RMSprop at batch 1: its step does not shrink with a
  gradient that rounding dominates, so its worst ``rel`` is at steps where ``kappa`` is
  1e5-1e7 and the seed term covers it);
- ``weights seed`` / ``state seed``: ``seed need`` of the weight updates, resp. the slots;
- ``state need by change``: ``state need`` with ``M`` the step's largest change of the
  slot, the scale before ``parity.lockstep_judge.DECAYS`` (RMSprop's velocity: now its
  largest new term), for comparison.

A script, not a test: ~10 s per model and seed (README, "Verdicts").
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from parity import lockstep_judge, runner  # noqa: E402
from reference.optimizers import NAMES, OPTIMIZERS  # noqa: E402


def record_entries(sink: list) -> None:
    """Patch ``Judge.record`` (the entries a step is judged on: after a re-sync of a
    max-pool/ReLU decision rounding took differently, the re-synced step's) to append
    one tuple per weight/moment entry to ``sink``."""
    original = lockstep_judge.Judge.record

    def record(self, entries, where):
        original(self, entries, where)
        changes: dict = {}  # per kind, the step's largest change (the scale before DECAYS)
        for e in entries:
            if e.allowance > 0 and np.isfinite(e.use):
                kind = lockstep_judge.quantity_kind(e.quantity)
                change = np.abs(np.asarray(e.theirs, np.float64) - np.asarray(e.before))
                changes[kind] = max(changes.get(kind, 0.0), float(np.max(change, initial=0.0)))
        for e in entries:
            if e.allowance <= 0 or not np.isfinite(e.use):
                continue
            b = float(np.max(np.abs(np.asarray(e.before, np.float64)), initial=0.0))
            err = e.use * e.allowance
            weights = lockstep_judge.quantity_kind(e.quantity) == "weights"
            sink.append((e.layer, e.quantity, err, self.budgets.eps * b, e.scale,
                         self.budgets.rtol(e.quantity), self.budgets.eps, e.kappa,
                         float(weights), self.budgets.seed_roundings,
                         changes[lockstep_judge.quantity_kind(e.quantity)]))  # fmt: skip

    lockstep_judge.Judge.record = record


def summarize(rows: list) -> dict:
    a = np.array([r[2:] for r in rows], np.float64)
    err, rounding, scale, rtol, eps, kappa, weights, seed_roundings, change = a.T
    excess = err - rounding
    with np.errstate(divide="ignore", invalid="ignore"):
        base = np.where(scale > 0, excess / (rtol * scale), 0.0)
        need = np.where(scale > 0, (excess - rtol * scale) / (eps * kappa * scale), 0.0)
        alone = np.where(scale > 0, excess / (eps * kappa * scale), 0.0)
        rel = np.where(scale > 0, excess / scale, 0.0)
        seed = seed_roundings * eps * kappa
        rest = rel - seed  # what rtol must cover beside the seed term
        by_change = np.where(change > 0, excess / change, 0.0) - seed  # the old scale's need
    out = {}
    for name, values in (("base use", base), ("seed need", need), ("seed only", alone),
                         ("weights rel", np.where(weights > 0, rel, 0.0)),
                         ("state rel", np.where(weights > 0, 0.0, rel)),
                         ("weights need", np.where(weights > 0, rest, -np.inf)),
                         ("state need", np.where(weights > 0, -np.inf, rest)),
                         ("weights seed", np.where(weights > 0, need, -np.inf)),
                         ("state seed", np.where(weights > 0, -np.inf, need)),
                         ("state need by change", np.where(weights > 0, -np.inf, by_change)),
                         ):  # fmt: skip
        i = int(np.argmax(values))
        out[name] = (float(values[i]), rows[i][0], rows[i][1], float(kappa[i]))
    out["kappa max"] = float(kappa.max())
    return out


def free_running(curves) -> dict:
    """The free-running ``epoch`` path's worst per-step loss difference (absolute) and
    worst weights after the last epoch (norm-wise relative), whether judged or not."""
    out: dict = {}
    for curve in curves:
        for path, _, c in curve.comparisons:
            if path == "lockstep" or c.stage != "values":
                continue
            key, value = (("free loss", c.max_abs_error) if c.layer == "loss"
                          else ("free weights", c.rel_error))  # fmt: skip
            if key not in out or value > out[key][0]:
                out[key] = (float(value), f"{c.layer}/{c.quantity}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds, from --start")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--models", default="zhou,two-conv,chw,chw-relu")
    parser.add_argument("--optimizer", default="sgd", choices=NAMES)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    kind = OPTIMIZERS[args.optimizer]
    batch_size = args.batch_size or (32 if kind.normalised else 1)
    training = runner.TrainingOptions(epochs=args.epochs, optimizer=kind.name,
                                      learning_rate=kind.learning_rate,
                                      batch_size=batch_size)  # fmt: skip
    from reference import backend

    backend.configure(args.dtype)  # Keras floatx before any Keras object (DESIGN.md)
    sink: list = []
    record_entries(sink)
    for model in args.models.split(","):
        worst: dict = {}
        for seed in range(args.start, args.start + args.seeds):
            sink.clear()
            config = runner.RunConfig(models=(model,), dtypes=(args.dtype,), seed=seed,
                                      training=training, checks=("forward",))  # fmt: skip
            result = runner.run_dtype(config, args.dtype, runner.load_batches(config))
            free = free_running(result["curves"])
            for key, value in free.items():
                if key not in worst or value[0] > worst[key][0]:
                    worst[key] = (*value, seed)
            for key, value in summarize(sink).items():
                if key == "kappa max":
                    worst[key] = max(worst.get(key, 0.0), value)
                elif key not in worst or value[0] > worst[key][0]:
                    worst[key] = (*value, seed)
        print(f"{model} {args.dtype} {args.optimizer} batch {batch_size} seeds {args.start}-"
              f"{args.start + args.seeds - 1}: kappa max {worst['kappa max']:.3g}")  # fmt: skip
        for key in (
            "base use",
            "seed need",
            "seed only",
            "weights rel",
            "state rel",
            "weights need",
            "state need",
            "state need by change",
        ):
            value, layer, quantity, kappa, seed = worst[key]
            print(f"  {key:9s} {value:10.3g}  ({layer}/{quantity}, kappa {kappa:.3g}, seed {seed})")
        for key in ("free loss", "free weights"):
            if key in worst:
                value, where, seed = worst[key]
                print(f"  {key:9s} {value:10.3g}  ({where}, seed {seed})")


if __name__ == "__main__":
    main()
