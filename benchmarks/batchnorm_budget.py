"""What the batch-norm network's budgets must cover on correct code: the measurement
behind ``parity.tolerances``' ``*_BATCHNORM_*`` constants.

    .venv/bin/python benchmarks/batchnorm_budget.py --dtype float64 [--seeds 10]
        [--optimizer sgd,adam] [--training-only] [--model cs231n-3layer-chw]

For ``cs231n-3layer`` (spec.networks.CS231N_3LAYER; ``--model``: or its channels-first
twin ``cs231n-3layer-chw``) and each seed, in this process (one
dtype): every static check of ``parity run`` at the four weight states (forward in
training and inference mode, gradients, isolation, derivations in float64), then one
epoch of lockstep training over 1,000 images at batch 32 with each ``--optimizer``
(``reference.optimizers``' names; default plain SGD and Adam): SGD at 0.01, every other at
the rate ``parity run`` gives it on this network (``default_learning_rate``: the network's
own, e.g. momentum and Nesterov 0.01, else the optimizer table's). Prints the worst
norm-wise relative error per check and quantity kind, and for lockstep the worst rtol each
kind of update needs, ``(err - eps*max|before|) / M`` less the seed term
(``parity.lockstep_judge``), beside the budget in force and its margin: the numbers a
budget is set from. Rows are measured whatever their verdict (the budgets under test do
not filter them; ``--probe-rtol`` looks at smaller errors for a decision rounding took
differently, as ``parity.lockstep`` does above a budget).

A script, not a test: about 2 minutes per seed and dtype on 2 shared cores.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from parity import lockstep_judge, runner, tolerances  # noqa: E402
from reference.optimizers import NAMES  # noqa: E402

MODEL = "cs231n-3layer"
RATES = {"sgd": 0.01}  # the budgets' SGD runs (the table's 0.005 is the blog's); else None


def schedule(optimizer: str) -> runner.TrainingOptions:
    """One epoch at batch 32 with ``optimizer``; learning rate None: the one ``parity run``
    gives it on this network (``runner.TrainingOptions.for_model``)."""
    return runner.TrainingOptions(optimizer=optimizer, learning_rate=RATES.get(optimizer),
                                  batch_size=32, epochs=1)  # fmt: skip


def probe_below(rtol: float) -> None:
    """Patch ``Budgets.of``: the weight and slot budgets at most ``rtol``, so that every step
    above it is looked at for a max-pool/ReLU decision rounding took differently (and
    re-synced: ``parity.lockstep``) before its error is recorded."""
    import dataclasses

    original = lockstep_judge.Budgets.of.__func__

    def of(cls, dtype, optimizer, network=None):
        b = original(cls, dtype, optimizer, network)
        return dataclasses.replace(b, weight_rtol=min(b.weight_rtol, rtol),
                                   state_rtol=min(b.state_rtol, rtol))  # fmt: skip

    lockstep_judge.Budgets.of = classmethod(of)


def budget_in_force(dtype: str, optimizer: str, quantity: str) -> float:
    """The rtol ``parity run`` judges ``quantity``'s updates by on this network."""
    from spec.networks import NETWORKS

    weights, state = lockstep_judge.BUDGET_KEYS[optimizer]
    kind = lockstep_judge.quantity_kind(quantity)
    if kind == lockstep_judge.MOVING:
        return tolerances.get("lockstep-moving-statistics", dtype).rtol
    check = weights if kind == "weights" else state
    return tolerances.get(check, dtype, NETWORKS[MODEL]).rtol


def record_needs(sink: dict) -> None:
    """Patch ``Judge.record``: ``sink[(optimizer kind, quantity kind)]`` keeps the worst
    base rtol a lockstep entry needs, with where it was."""
    original = lockstep_judge.Judge.record

    def record(self, entries, where):
        original(self, entries, where)
        for e in entries:
            if e.allowance <= 0 or not np.isfinite(e.use) or e.scale <= 0:
                continue
            kind = lockstep_judge.quantity_kind(e.quantity)
            b = float(np.max(np.abs(np.asarray(e.before, np.float64)), initial=0.0))
            excess = e.use * e.allowance - self.budgets.eps * b
            seed = self.budgets.update_rtol(e.quantity, e.kappa) - self.budgets.rtol(e.quantity)
            need = (excess - seed * e.scale) / e.scale
            key = (sink["optimizer"], kind)
            if need > sink.get(key, (-np.inf,))[0]:
                budget = budget_in_force(sink["dtype"], sink["optimizer"], e.quantity)
                sink[key] = (
                    need,
                    f"seed {sink['seed']} {e.layer}/{e.quantity} {where} "
                    f"(budget {budget:.3g}: x{budget / max(need, 1e-300):.3g})",
                )

    lockstep_judge.Judge.record = record


def static_rows(dtype: str, seed: int) -> list[dict]:
    config = runner.RunConfig(models=(MODEL,), dtypes=(dtype,), seed=seed,
                              checks=tuple(runner.CHECKS))  # fmt: skip
    part = runner.run_dtype(config, dtype, runner.load_batches(config))
    return [r for table in runner.CHECKS for r in part["rows"].get(table, [])]


def kind_of(row: dict) -> str:
    quantity = row["quantity"]
    if row["check"] == "derivations":
        return f"derivations {row.get('actual_side')}-{row.get('desired_side')}"
    if quantity.startswith("output"):
        return f"{row['check']} {quantity}"
    return f"{row['check']} {'input' if quantity == 'input' else 'weights'}"


def main() -> None:
    global MODEL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--model", default=MODEL, choices=("cs231n-3layer", "cs231n-3layer-chw"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument(
        "--optimizer",
        default="sgd,adam",
        help=f"comma-separated, of {', '.join(NAMES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--training-only",
        action="store_true",
        help="lockstep only (the static checks' numbers need no re-run)",
    )
    parser.add_argument(
        "--probe-rtol", type=float, default=None,
        help="look at every lockstep step above this rtol for a decision rounding took "
        "differently (the budgets' float32 measurements used 1e-4)",
    )  # fmt: skip
    args = parser.parse_args()
    MODEL = args.model  # the functions above read it (a script: one model per run)
    optimizers = args.optimizer.split(",")
    if any(name not in NAMES for name in optimizers):
        parser.error(f"--optimizer: expected names of {NAMES}. Received {args.optimizer!r}.")
    from reference import backend

    backend.configure(args.dtype, args.start)
    worst: dict = {}
    needs: dict = {"dtype": args.dtype}
    record_needs(needs)
    if args.probe_rtol is not None:
        probe_below(args.probe_rtol)
    for seed in range(args.start, args.start + args.seeds):
        t0 = time.perf_counter()
        for row in [] if args.training_only else static_rows(args.dtype, seed):
            rel = row.get("rel_error")
            if rel is None or not np.isfinite(rel):
                continue
            key = kind_of(row)
            if rel > worst.get(key, (-1.0,))[0]:
                worst[key] = (rel, f"seed {seed} {row['state']} {row['layer']}/{row['quantity']}")
        for name in optimizers:
            options = schedule(name)
            needs.update(optimizer=name, seed=seed)
            lr = options.for_model(MODEL, args.dtype, seed).learning_rate
            needs[("rates", name)] = (lr, "learning rate")
            config = runner.RunConfig(models=(MODEL,), dtypes=(args.dtype,), seed=seed,
                                      states=(), training=options)  # fmt: skip
            part = runner.run_dtype(config, args.dtype, runner.load_batches(config))
            for curve in part["curves"]:
                for path, _, c in curve.comparisons:
                    if c.quantity.startswith("per-step loss"):
                        key = (name, f"{path} loss (abs)")
                        if c.max_abs_error > needs.get(key, (-1.0,))[0]:
                            needs[key] = (c.max_abs_error, f"seed {seed}")
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}",
              flush=True)  # fmt: skip
    print(f"\n{MODEL} {args.dtype}, seeds {args.start}-{args.start + args.seeds - 1}")
    for key, (value, where) in sorted(worst.items()):
        print(f"  {key:45s} {value:10.3g}  {where}")
    for key, value in sorted((k, v) for k, v in needs.items() if isinstance(k, tuple)):
        print(f"  lockstep {key[0]:8s} {key[1]:30s} {value[0]:10.3g}  {value[1]}")
    print(f"  (current gradients budget: {tolerances.get('gradients', args.dtype).rtol:g})")


if __name__ == "__main__":
    main()
