"""``parity selftest``: run the harness against every catalog bug, and the correct code.

For each :data:`parity.catalog.ENTRIES` bug and each dtype, the harness's own checks run
on a freshly built, hooked scratch model, state by state as ``parity run`` does
(``parity.runner._run_state``: forward, gradients, ties, then derivations in float64 at
the trained and random states), stopping at the first state where a check fails. A
catch counts only at the level of values: a comparison row with status ``FAIL`` at
stage ``values``; an exception, a shape, dtype or missing-key failure is "not caught".
Entries with a training run (``Entry.training``) get a short one
(``parity.checks.training.run_training``, one epoch over a few dozen images, the tape path
only) when their static checks pass; their static checks skip derivations (Keras's
gradients already judge them).

The false-alarm sweep runs the correct implementation (every registered model, plus the
catalog's correct variants such as chw through the pad=1 path) over ``seeds`` seeds in
both dtypes: the checks ``parity run`` runs by default, state by state (forward,
gradients, isolation, ties and the diagnosis at every weight state for every seed; forward,
gradients and the diagnosis only at ``large-logits``); derivations (float64) and the short
training runs for the first ``derivation_seeds`` / ``training_seeds`` seeds (finite
differences cost ~10 s per model and state). Any failing check on correct code is a false
alarm, and so is a diagnosis that raises (an ``ERROR`` row, as in ``parity run``).

Each dtype's work runs in one process (``reference.backend.run_in_dtype_process``), the
two dtypes in parallel. The command line (options, printing, exit codes) is
``parity.selftest_cli``.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field

import pandas as pd

from parity import catalog, runner
from parity.checks import common
from parity.compare import ERROR, FAIL, is_failure

# The false-alarm sweep runs what users run: the default checks of ``parity run`` (32
# images, every weight state, derivations in float64) over 20 seeds, every model, both
# dtypes, and the catalog's short training runs over 3 of those seeds.
DEFAULT_SEEDS = 20
DEFAULT_IMAGES = runner.DEFAULT_IMAGES
DEFAULT_DERIVATION_SEEDS = DEFAULT_SEEDS
DEFAULT_TRAINING_SEEDS = 3
ORDER = ("forward", "gradients", "isolation", "ties", "derivations", "training")

CATALOG_COLUMNS = [
    "kind", "bug", "model", "dtype", "description", "caught", "check", "state", "layer",
    "quantity", "error", "error_kind", "atol", "rtol", "checks_failed", "failed_keys", "raised",
    "seeds", "checks_run", "false_alarms", "seconds", "message",
]  # fmt: skip


@dataclass(frozen=True)
class Options:
    bugs: tuple[str, ...] = tuple(catalog.BY_NAME)
    models: tuple[str, ...] = ()  # the false-alarm sweep's models; () every registered one
    dtypes: tuple[str, ...] = runner.DEFAULT_DTYPES
    seeds: int = DEFAULT_SEEDS
    images: int = DEFAULT_IMAGES
    derivation_seeds: int = DEFAULT_DERIVATION_SEEDS
    training_seeds: int = DEFAULT_TRAINING_SEEDS
    data: str | None = None
    sweep: bool = True
    all_checks: bool = False  # every check at every state (derivations, training too)


@dataclass
class SelftestResult:
    catalog: pd.DataFrame
    false_alarms: pd.DataFrame  # every failing row on correct code (empty when none)
    seconds: float
    environment: dict = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:  # for parity.reports.write_report
        return {"catalog": self.catalog, "false_alarms": self.false_alarms}

    @property
    def passed(self) -> bool:
        bugs = self.catalog[self.catalog["kind"] == "bug"]
        correct = self.catalog[self.catalog["kind"] == "correct"]
        return bool((bugs["caught"] == "yes").all() and (correct["false_alarms"] == 0).all())


def run_selftest(options: Options = Options(), *, in_process: bool = False) -> SelftestResult:
    """Every bug of ``options.bugs`` and the false-alarm sweep; returns the catalog table."""
    start = time.perf_counter()
    if in_process:
        if len(options.dtypes) != 1:
            raise ValueError("in_process=True runs one dtype (Keras floatx is per process).")
        from reference import backend

        backend.configure(options.dtypes[0])
        parts = [run_dtype(options, options.dtypes[0])]
    else:
        from reference.backend import run_in_dtype_process

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(options.dtypes)) as pool:
            futures = [pool.submit(run_in_dtype_process, d, run_dtype, options, d)
                       for d in options.dtypes]  # fmt: skip
            parts = [f.result() for f in futures]
    rows = [r for part in parts for r in part["catalog"]]
    alarms = pd.DataFrame([r for part in parts for r in part["false_alarms"]],
                          columns=["seed", "variant", *runner.SUMMARY_COLUMNS])  # fmt: skip
    order = {name: i for i, name in enumerate(catalog.BY_NAME)}
    frame = pd.DataFrame(rows, columns=CATALOG_COLUMNS)
    frame = frame.sort_values(
        ["kind", "bug", "dtype"], kind="stable",
        key=lambda c: c.map(order).fillna(len(order)) if c.name == "bug" else c,
    ).reset_index(drop=True)  # fmt: skip
    return SelftestResult(
        catalog=frame, false_alarms=alarms, seconds=time.perf_counter() - start,
        environment=dict(options=_describe(options),
                         per_dtype={p["dtype"]: p["environment"] for p in parts}),
    )  # fmt: skip


def _describe(options: Options) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(options).items()}


def run_dtype(options: Options, dtype: str) -> dict:
    """Everything for one dtype (runs inside the dtype's process)."""
    from reference import backend

    batch = sweep_batches(options)
    rows, alarms = [], []
    for name in options.bugs:
        entry = catalog.BY_NAME[name]
        if dtype not in entry.dtypes:  # below this dtype's budgets by design (Entry.dtypes)
            continue
        common.progress(f"selftest {dtype}: bug {name}")
        rows.append(evaluate_bug(entry, dtype, batch(0), 0, options.all_checks, options.data))
    if options.sweep:
        for model, variant, hooks in _correct_targets(options.models):
            row, failing = sweep_correct(model, variant, hooks, dtype, options, batch)
            rows.append(row)
            alarms += failing
    return dict(dtype=dtype, catalog=rows, false_alarms=alarms, environment=backend.environment())


def sweep_batches(options: Options):
    """``batch(seed)``: the check batch of ``seed`` (``options.images`` images, as
    ``parity run --seed`` picks them), loaded once per seed."""
    batches = {}

    def batch(seed):
        if seed not in batches:
            config = runner.RunConfig(seed=seed, images=options.images, data=options.data)
            batches[seed] = runner.load_batches(config)
        return batches[seed]

    return batch


def _correct_targets(models: tuple[str, ...] = ()):
    """The sweep's ``(model, variant, hooks)``: every registered model and the catalog's
    correct variants, or those of ``models`` only."""
    from scratch.models import MODEL_NAMES

    targets = [(m, "", ()) for m in MODEL_NAMES] + list(catalog.CORRECT_VARIANTS)
    return [t for t in targets if not models or t[0] in models]


# -- one bug ------------------------------------------------------------------------------


def evaluate_bug(entry: catalog.Entry, dtype: str, batches, seed: int = 0,
                 all_checks: bool = False, data: str | None = None) -> dict:  # fmt: skip
    """Run the checks on ``entry``'s faulty model; one catalog row (never raises).

    Default: stop at the first weight state where a check fails; entries with a training
    run skip derivations, then train if nothing failed. ``all_checks``: every check at
    every state, and a short training run for every entry (``checks_failed`` then says
    which checks catch it on their own).
    """
    t0 = time.perf_counter()
    row = dict(kind="bug", bug=entry.name, model=entry.model, dtype=dtype,
               description=entry.description, seeds=1)  # fmt: skip
    skip = entry.training and not all_checks
    checks = ("forward", "gradients", "isolation", "ties") + (() if skip else ("derivations",))
    raised = [] if all_checks else None  # all_checks: a raising state is noted, not fatal
    try:
        rows, run = static_rows(entry.model, dtype, batches, seed, catalog.hooks_of(entry),
                                checks, not all_checks, raised)  # fmt: skip
        if (entry.training and not _failures(rows)) or all_checks:
            spec = entry.training or catalog.SGD_RUN
            try:
                rows += training_rows(entry.model, dtype, spec, seed, catalog.hooks_of(entry),
                                      data)  # fmt: skip
            except Exception as error:
                if raised is None:
                    raise
                raised.append(f"training: {type(error).__name__}: {error}")
            run += ["training"]
        raised = (raised or []) + [r["message"] for r in rows if r["status"] == ERROR]
        row.update(_verdict(rows), checks_run=";".join(dict.fromkeys(run)),
                   raised="; ".join(raised))  # fmt: skip
    except Exception as error:  # default mode: a raise is "not caught", and a finding
        text = f"{type(error).__name__}: {error}"
        row.update(caught="no", check="", raised=text, message=f"raised {text}")
    finally:
        catalog.restore_globals()
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _failures(rows: list[dict]) -> list[dict]:
    return [r for r in rows if is_failure(r["status"])]


def _verdict(rows: list[dict]) -> dict:
    caught = [r for r in rows if r["status"] == FAIL and r["stage"] == "values"]
    failed = _failures(rows)
    if not caught:
        first = failed[0] if failed else None
        message = (f"{first['stage']} failure only: {first['message']}" if first
                   else "every check passed")  # fmt: skip
        return dict(caught="no", check="", message=message)
    first = min(caught, key=lambda r: r["_position"])
    return dict(
        caught="yes", check=first["check"], state=first["state"], layer=first["layer"],
        quantity=first["quantity"], error=_error(first), error_kind=_error_kind(first),
        atol=first["atol"], rtol=first["rtol"],
        checks_failed=";".join(c for c in ORDER if any(r["check"] == c for r in caught)),
        failed_keys=";".join(dict.fromkeys(f"{r['check']}:{r['layer']}/{r['quantity']}"
                                           for r in caught)),  # fmt: skip
        message=first["message"],
    )  # fmt: skip


def _error(row: dict) -> float:
    if row["check"] == "training" and row["layer"] == "loss":
        return float(row["max_abs_error"])
    return float(row["rel_error"])


def _error_kind(row: dict) -> str:
    if row["check"] == "training" and row["layer"] == "loss":
        return "max abs (per-step loss)"
    return "norm-wise rel"


# -- the checks, as parity run runs them ---------------------------------------------------


def static_rows(model_name, dtype, batches, seed, hooks, checks, stop_at_failure,
                raised: list | None = None):  # fmt: skip
    """Rows of ``checks`` state by state (``parity.runner._run_state``); returns
    ``(rows, checks run)``. Each row gets ``_position`` (production order).

    With a ``raised`` list, an exception in one weight state is appended to it (as text)
    and the next state runs; without it, the exception propagates."""
    from parity.checks.common import Context
    from reference.twin import copy_into_keras, twin
    from scratch.models import build

    config = runner.RunConfig(models=(model_name,), dtypes=(dtype,), seed=seed,
                              images=len(batches.images), checks=tuple(checks))  # fmt: skip
    model = build(model_name, seed=seed, dtype=dtype)
    for hook in hooks:
        hook(model)
    ctx = Context(model_name, dtype, model, batches.images, batches.labels, seed)
    keras_model = twin(model, dtype)
    out, run = [], []
    for state in config.states:
        tables: dict = {t: [] for t in (*runner.TABLES, runner.DIAGNOSIS, "errors")}
        try:
            runner._set_weights(ctx, state, config, batches, keras_model)
            copy_into_keras(keras_model, model)
            ctx.set_twin(keras_model, state)
            runner._run_state(ctx, config, tables)
        except Exception as error:
            if raised is None:
                raise
            raised.append(f"state {state}: {type(error).__name__}: {error}")
            continue
        for table in ("errors", "forward", "gradients", "isolation", "ties", "derivations"):
            for r in tables.get(table, []):
                out.append({**r, "_position": len(out)})
        run += [c for c in ORDER if any(r["check"] == c for r in out)]
        if stop_at_failure and _failures(out):
            break
    return out, run


def training_rows(model_name, dtype, spec: catalog.Training, seed, hooks, data=None):
    """Comparison rows (check ``training``) of a short ``parity.checks.training`` run."""
    from parity.checks.training import run_training
    from parity.checks.training_config import pools_from
    from parity.data import load_mnist

    config = spec.for_model(model_name, dtype, seed)
    pools = pools_from(load_mnist(data), config)
    result = run_training(config, pools, None, tuple(hooks))
    rows = result.comparison_rows()
    return [{**r, "_position": 10_000 + i} for i, r in enumerate(rows)]


# -- the correct implementation -------------------------------------------------------------


def sweep_correct(model_name, variant, hooks, dtype, options: Options, batch,
                  judged: list | None = None):  # fmt: skip
    """Every check on correct code over ``options.seeds`` seeds: ``(row, failing rows)``.

    ``batch(seed)`` gives a seed's :class:`parity.runner.Batches` (:func:`sweep_batches`).
    With a ``judged`` list, every seed's summary rows (one per check, layer and quantity,
    ``seed`` and ``variant`` added; training quantities carry their Keras path) are appended
    to it: what the sweep judged, passing or not."""
    t0 = time.perf_counter()
    label = f"{model_name} ({variant})" if variant else model_name
    common.progress(f"selftest {dtype}: false-alarm sweep {label}, {options.seeds} seeds")
    total, failing, errors = 0, [], []
    runs = _training_specs(model_name)
    for seed in range(options.seeds):
        checks = ["forward", "gradients", "isolation", "ties", runner.DIAGNOSIS]
        if seed < options.derivation_seeds and dtype == "float64":
            checks.append("derivations")
        try:
            rows, _ = static_rows(model_name, dtype, batch(seed), seed, hooks, checks, False)
            if seed < options.training_seeds:
                for spec in runs:
                    rows += training_rows(model_name, dtype, spec, seed, hooks, options.data)
        except Exception as error:
            errors.append(f"seed {seed}: {type(error).__name__}: {error}")
            continue
        finally:
            catalog.restore_globals()
        summary = runner.summarize(pd.DataFrame(_without_position(rows)))
        total += len(summary)
        failed = summary[summary["status"].map(is_failure)]
        failing += [{**r, "seed": seed, "variant": variant} for r in failed.to_dict("records")]
        if judged is not None:
            judged += [{**r, "seed": seed, "variant": variant} for r in summary.to_dict("records")]
    row = dict(
        kind="correct", bug=f"(correct{': ' + variant if variant else ''})", model=model_name,
        dtype=dtype, description="the correct implementation: any failing check is a false alarm",
        seeds=options.seeds, checks_run=total, false_alarms=len(failing) + len(errors),
        seconds=round(time.perf_counter() - t0, 2),
        message="; ".join(errors + [f"seed {f['seed']}: {f['message']}" for f in failing[:3]]),
    )  # fmt: skip
    return row, failing


def sweep_target(model_name, variant, hooks, dtype, options: Options):
    """One target's sweep (:func:`sweep_correct`) in this process, configured for ``dtype``
    (e.g. through ``reference.backend.run_in_dtype_process``: every argument and the result
    picklable): ``(row, judged)``, ``judged`` the summary rows of every seed."""
    judged: list[dict] = []
    row, _ = sweep_correct(model_name, variant, hooks, dtype, options, sweep_batches(options),
                           judged)  # fmt: skip
    return row, judged


def _training_specs(model_name) -> list[catalog.Training]:
    """The short training runs the catalog uses on ``model_name`` (correct code must pass)."""
    specs = {e.training for e in catalog.ENTRIES if e.training and e.model == model_name}
    return sorted(specs, key=repr)


def _without_position(rows):
    out = []
    for r in rows:
        r = dict(r)
        r.pop("_position", None)
        if r["check"] == "training":
            r["quantity"] = f"{r['quantity']} ({r.get('keras_path', '')})"
        out.append(r)
    return out
