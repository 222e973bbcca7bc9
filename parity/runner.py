"""Run the checks: one process per dtype (Keras floatx is fixed per process), gathered
into pandas DataFrames.

``run(config)`` loads the data and picks the batches in this process, then runs
``run_dtype`` for each dtype in its own spawned process via
``reference.backend.run_in_dtype_process`` (dtypes in parallel, one per core).
``in_process=True`` runs in this process instead (one dtype only; for debugging and
for tests that monkeypatch scratch code). ``model_hooks`` are picklable callables
``hook(model)`` applied to every freshly built scratch model, in the child too: the
way a test plants a bug (see ``parity.plant``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from parity import start_up
from parity.checks import (
    common,
    derivations,
    forward,
    gradients,
    isolation,
    large_logits,
    modal,
    sweep,
    ties,
)
from parity.checks import preprocessing as preprocessing_check
from parity.checks import training as training_curves
from parity.checks.common import Context, progress, row_columns
from parity.checks.training_config import DEFAULT_KERAS_PATHS, TrainingConfig, pools_from
from parity.compare import EXIT_FAIL, EXIT_PASS, error, exit_code, raised
from parity.progress import print_progress
from parity.summary import SUMMARY_COLUMNS, in_run_order, summarize
from reference.optimizers import default_learning_rate

CHECKS = ("forward", "gradients", "isolation", "derivations", "ties")
SWEEP = "sweep"  # a user's layers alone at other settings (parity.checks.sweep): user code only
PREPROCESSING = "preprocessing"  # a factory's own preprocessing (parity.checks.preprocessing)
MODAL = "modal"  # a cs231n file's batch norm and dropout alone (parity.checks.modal)
USER_TABLES = (SWEEP, PREPROCESSING, MODAL)  # written only where they have rows: user code only
TABLES = ("forward", "gradients", "isolation", "derivations", "ties", *USER_TABLES)
# a table's columns when no row reached it (else row_columns()): a float32-only run has no
# derivations rows, and its derivations.csv still opens with pandas
EMPTY_COLUMNS = {"derivations": derivations.COLUMNS, "ties": ties.COLUMNS}
DIAGNOSIS = "diagnosis"  # signatures of well-known mistakes (parity.diagnosis): words, no verdict
# transform: the layout candidate's name (parity.diagnosis.layout rows only)
DIAGNOSIS_COLUMNS = ["model", "dtype", "state", "layer", "signature", "transform", "evidence",
                     "advice"]  # fmt: skip
HEATMAPS = "heatmaps"  # not a table: parity.heatmaps.Heatmap records for the pictures
DEFAULT_IMAGES = 32
DEFAULT_MODELS = ("zhou",)
DEFAULT_DTYPES = ("float64", "float32")
DEFAULT_SEED = 0


@dataclass(frozen=True)
class TrainingOptions:
    """The training-curve schedule (``parity.checks.training``); the blog's by default."""

    optimizer: str = "sgd"
    learning_rate: float | None = 0.005  # None: the network's own, else the optimizer's
    batch_size: int | None = 1  # None: the network's own (spec.Network.training_batch)
    epochs: int = 3
    train_size: int = 1000
    test_size: int = 1000
    keras_paths: tuple[str, ...] = DEFAULT_KERAS_PATHS
    diagnose: bool = False  # lockstep's first divergence on a passing check too

    def for_model(self, model: str, dtype: str, seed: int) -> TrainingConfig:
        """The schedule of ``model``: ``batch_size`` None (the command line's default) is its
        network's training batch (1, or 32 with batch norm); ``learning_rate`` None (the
        command line's default) is its network's rate for the optimizer, else the
        optimizer's (``reference.optimizers.default_learning_rate``); a network with dropout trains
        in lockstep only (the free-running Keras paths draw their own masks inside a compiled
        step: the harness cannot give them its masks, so their curves would differ)."""
        options = asdict(self)
        network = _network_of(model)
        if options["batch_size"] is None:
            options["batch_size"] = network.training_batch if network is not None else 1
        if options["learning_rate"] is None:
            options["learning_rate"] = default_learning_rate(self.optimizer, network)
        if network is not None and network.masked():
            options["keras_paths"] = ()
        return TrainingConfig(model, dtype, seed=seed, **options)


def _network_of(model: str):
    """The description of a shipped model (``spec.networks``) or of a user's code registered
    in this process (the one its adapter runs: a cs231n file with batch-norm and dropout
    classes runs in ``cs231n-3layer-chw``), else None."""
    from scratch.models import build, registered_user_code
    from spec.networks import NETWORKS

    if model in NETWORKS:
        return NETWORKS[model]
    return build(model).spec if registered_user_code(model) else None


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on (recorded in environment.json)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    dtypes: tuple[str, ...] = DEFAULT_DTYPES
    seed: int = DEFAULT_SEED
    images: int = DEFAULT_IMAGES
    data: str | None = None
    checks: tuple[str, ...] = (*CHECKS, DIAGNOSIS, *USER_TABLES)
    states: tuple[str, ...] = common.STATES
    train_steps: int = common.TRAIN_STEPS
    model_hooks: tuple = ()
    training: TrainingOptions | None = None  # None: no training-curve check
    # A user's own code (scratch.user_code.UserCode, picklable), registered under its name
    # in every process that builds models (``parity check``); its name is in ``models``.
    user_code: tuple = ()

    def describe(self) -> dict:
        return dict(
            models=list(self.models), dtypes=list(self.dtypes), seed=self.seed,
            images=self.images, data=self.data, checks=list(self.checks),
            states=list(self.states), train_steps=self.train_steps,
            train_learning_rate=common.TRAIN_LEARNING_RATE,
            derivation_images=derivations.IMAGES, fd_eps=derivations.EPS,
            fd_jitter=derivations.JITTER, fd_max_points=derivations.FD_MAX_POINTS,
            model_hooks=[repr(h) for h in self.model_hooks],
            training=None if self.training is None else self._training(),
            user_code=[asdict(code) for code in self.user_code],
        )  # fmt: skip

    def _training(self) -> dict:
        """The schedule, with each model's learning rate as resolved (``learning_rate``
        None: the network's own or the optimizer's, ``TrainingOptions.for_model``). This
        run's user code is registered first: a user's network is that code's, never one a
        process registered under the same name before."""
        from scratch.models import register_user_code

        for code in self.user_code:
            register_user_code(code)
        rates = {m: self.training.for_model(m, self.dtypes[0], self.seed).learning_rate
                 for m in self.models}  # fmt: skip
        return {**asdict(self.training), "learning_rate_of_model": rates}


@dataclass(frozen=True)
class Batches:
    """The images every dtype process uses: a check batch and a training pool."""

    images: np.ndarray
    labels: np.ndarray
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


@dataclass
class Results:
    tables: dict[str, pd.DataFrame]
    curves: list = field(default_factory=list)  # a CurveResult per model, dtype (training)
    heatmaps: list = field(default_factory=list)  # parity.heatmaps.Heatmap of failing maps
    environment: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def summary(self) -> pd.DataFrame:
        return self.tables["summary"]

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_PASS

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 a FAIL or INCONCLUSIVE row, 3 an ERROR row (compare.exit_code)."""
        return exit_code(self.summary["status"]) if len(self.summary) else EXIT_FAIL


def load_batches(config: RunConfig) -> Batches:
    """Real MNIST: a seeded check batch from the test pool, the train pool for training."""
    from parity.data import load_mnist

    data = load_mnist(config.data)
    rng = np.random.default_rng([config.seed, 0])
    pick = np.sort(rng.choice(len(data.test_images), config.images, replace=False))
    return Batches(
        data.test_images[pick], data.test_labels[pick],
        data.train_images, data.train_labels, data.test_images, data.test_labels,
        data.source,
    )  # fmt: skip


def run(config: RunConfig, *, in_process: bool = False, batches: Batches | None = None):
    """Run every check of ``config``; returns :class:`Results` (never raises on a FAIL)."""
    start = time.perf_counter()
    batches = batches or load_batches(config)
    if in_process:
        if len(config.dtypes) != 1:
            raise ValueError("in_process=True runs one dtype (Keras floatx is per process).")
        from reference import backend

        backend.configure(config.dtypes[0], config.seed)
        parts = [run_dtype(config, config.dtypes[0], batches)]
    else:
        parts = _run_children(config, batches)
    results = gather(parts)
    results.environment = dict(
        args=config.describe(), data_source=batches.source,
        per_dtype={p["dtype"]: p["environment"] for p in parts},
    )  # fmt: skip
    results.seconds = time.perf_counter() - start
    return results


def _run_children(config: RunConfig, batches: Batches) -> list[dict]:
    from reference.backend import run_in_dtype_process

    workers = len(config.dtypes)
    with (tempfile.TemporaryDirectory(prefix="parity-start-") as signals,
          concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool):  # fmt: skip
        ready = {dtype: Path(signals) / dtype for dtype in config.dtypes}
        started = time.perf_counter()
        progress(f"starting one process per dtype ({', '.join(config.dtypes)}): importing "
                 "TensorFlow, typically 6-19 s")  # fmt: skip
        job = functools.partial(run_dtype, started=time.time())  # ready lines count from here
        futures = [
            pool.submit(run_in_dtype_process, d, job, config, d, batches, ready=ready[d])
            for d in config.dtypes
        ]
        start_up.wait(list(ready.values()), futures, started, progress)
        return [f.result() for f in futures]


def run_dtype(config: RunConfig, dtype: str, batches: Batches, ready: Path | None = None,
              started: float | None = None) -> dict:  # fmt: skip
    """Every check for every model in one dtype (runs inside the dtype's process, which
    ``reference.backend`` configured, TensorFlow imported, before this call). ``ready``:
    a file created first thing, the parent's sign that the start-up is over; ``started``:
    the parent's ``time.time()`` when it started this process (for the ready line)."""
    from reference import backend
    from scratch.models import register_user_code

    if ready is not None:
        ready.touch()
    if started is not None:
        progress(f"{dtype}: TensorFlow imported, process ready after "
                 f"{time.time() - started:.1f} s")  # fmt: skip

    for code in config.user_code:
        register_user_code(code)
    rows = {table: [] for table in TABLES}
    for name in config.models:
        for table, new in run_model(config, name, dtype, batches).items():
            rows.setdefault(table, []).extend(new)
    results = []
    for name in config.models if config.training is not None else ():
        try:
            results.append(run_training(config, name, dtype, batches))
        except Exception as exc:  # the code under test raised while training: an ERROR row
            record = error("-", "training", exc)
            rows.setdefault("errors", []).append(
                dict(check="training", model=name, dtype=dtype, state="-", **record.as_row())
            )
    return dict(dtype=dtype, rows=rows, curves=results, environment=backend.environment())


def run_training(config: RunConfig, name: str, dtype: str, batches: Batches):
    """The training-curve check of one model in this (the dtype's) process."""
    training = config.training.for_model(name, dtype, config.seed)
    pools = pools_from(batches, training)
    return training_curves.run_training(training, pools, print_progress, config.model_hooks)


def run_model(config: RunConfig, name: str, dtype: str, batches: Batches) -> dict:
    """Every check of one model in this (the dtype's) process, at every weight state.

    An exception raised by the code under test never ends the run: it becomes an
    ``ERROR`` row (``parity.compare.error``: type, message, file:line) of the check that
    raised, and the other checks and states still run.
    """
    from reference.twin import copy_into_keras, twin
    from scratch.models import build

    rows = {table: [] for table in (*TABLES, DIAGNOSIS, "errors")}
    ctx = Context(name, dtype, None, batches.images, batches.labels, config.seed,
                  progress=print_progress)  # fmt: skip
    try:
        ctx.model = build(name, seed=config.seed, dtype=dtype)
        for hook in config.model_hooks:
            hook(ctx.model)
        keras_model = twin(ctx.model, dtype)  # one build per model and dtype
    except Exception as exc:
        rows["errors"].append(ctx.row(SETUP, error("-", "model and twin", exc)))
        return rows
    for state in config.states:
        t0 = time.perf_counter()
        ctx.state = state
        try:
            _set_weights(ctx, state, config, batches, keras_model)
            copy_into_keras(keras_model, ctx.model)
        except Exception as exc:
            rows["errors"].append(ctx.row(SETUP, raised(exc, "-", f"{state} weights")))
            continue
        ctx.set_twin(keras_model, state)
        _run_state(ctx, config, rows)
        progress(f"{name} {dtype} {state}: checks done in {time.perf_counter() - t0:.1f} s")
    if SWEEP in config.checks:
        rows[SWEEP] += _sweep(ctx, config)
    if MODAL in config.checks:
        rows[MODAL] += _modal(ctx, config)
    if PREPROCESSING in config.checks:
        ctx.state = preprocessing_check.STATE
        rows[PREPROCESSING] += _guarded(ctx, PREPROCESSING, preprocessing_check.preprocessing_rows)
    return rows


def _sweep(ctx: Context, config: RunConfig) -> list[dict]:
    """The sweep of a user's code whose API has one (``parity.checks.sweep``: cs231n), in
    the float64 process; nothing for the harness's own models or another dtype."""
    code = next((c for c in config.user_code if c.name == ctx.name), None)
    if code is None or code.api not in SWEEPS or ctx.dtype != sweep.DTYPE:
        return []
    from scratch.user_code import load

    ctx.state = "random"
    try:
        return SWEEPS[code.api](load(code), ctx.name, config.seed)
    except Exception as exc:  # outside any one setting (drawing them, loading the code)
        return [ctx.row(SWEEP, error("-", "-", exc))]


SWEEPS = {"cs231n": sweep.sweep_rows}  # API -> its sweep (the blog's classes take none)


def _modal(ctx: Context, config: RunConfig) -> list[dict]:
    """A cs231n file's batch-norm and dropout classes, each alone (``parity.checks.modal``),
    in every dtype; nothing for other code or a file without such classes."""
    code = next((c for c in config.user_code if c.name == ctx.name), None)
    if code is None or code.api != "cs231n":
        return []
    from scratch.user_code import load

    ctx.state = "random"
    try:
        return modal.modal_rows(load(code), ctx.name, config.seed, ctx.dtype)
    except Exception as exc:  # outside any one layer (loading the code)
        return [ctx.row(MODAL, error("-", "-", exc))]


SETUP = "setup"  # the check name of an ERROR raised before any check ran


def _set_weights(ctx: Context, state: str, config: RunConfig, batches: Batches,
                 keras_model) -> None:  # fmt: skip
    """``ctx.model``'s weights and ``ctx.labels`` for ``state`` (the twin gets the weights
    afterwards; ``large-logits`` reads its logits from ``keras_model`` first)."""
    ctx.labels = batches.labels
    if state == large_logits.STATE:
        large_logits.set_weights(ctx, keras_model, config.seed)
    elif state == "trained":
        common.train_scratch(ctx.model, batches.train_images, batches.train_labels,
                             config.seed, config.train_steps, ctx.progress,
                             f"[{ctx.name} {ctx.dtype}] trained weights: SGD")  # fmt: skip
    elif state == "random":
        common.randomize(ctx.model, config.seed)


def _run_state(ctx: Context, config: RunConfig, rows: dict) -> None:
    if ctx.state == large_logits.STATE:  # forward and gradients only
        if "forward" in config.checks:
            rows["forward"] += _guarded(ctx, "forward", large_logits.forward_rows)
        if "gradients" in config.checks:
            rows["gradients"] += _guarded(ctx, "gradients", large_logits.gradient_rows)
        if DIAGNOSIS in config.checks:
            with large_logits.quiet():
                _diagnose(ctx, rows)
        return
    if "forward" in config.checks:
        rows["forward"] += _guarded(ctx, "forward", forward.forward_rows)
    if "gradients" in config.checks:
        rows["gradients"] += _guarded(ctx, "gradients", gradients.gradient_rows)
    from parity import heatmaps  # the |scratch - keras| map of each failing spatial row

    rows.setdefault(HEATMAPS, []).extend(heatmaps.collect(ctx, rows["forward"] + rows["gradients"]))
    if "isolation" in config.checks:
        rows["isolation"] += _guarded(ctx, "isolation", isolation.isolation_rows)
    if "ties" in config.checks:
        rows["ties"] += _guarded(ctx, "ties", ties.tie_rows)
    if (
        "derivations" in config.checks
        and ctx.state in derivations.STATES
        and (
            ctx.dtype == "float64"  # finite differences need it
        )
    ):
        rows["derivations"] += _guarded(ctx, "derivations", derivations.derivation_rows)
    if DIAGNOSIS in config.checks:
        _diagnose(ctx, rows)


def _diagnose(ctx: Context, rows: dict) -> None:
    """Signatures at every state; the layout search where a weighted layer failed."""
    from parity.diagnosis import layout
    from parity.diagnosis.signatures import signature_rows

    progress(f"{ctx.name} {ctx.dtype} {ctx.state}: {DIAGNOSIS}")  # one phase, one line
    found = _guarded(ctx, DIAGNOSIS, signature_rows, announce=False)
    failing = layout.failing_layers(rows, ctx.state)
    if failing and ctx.state == layout.STATE:  # nothing fails: nothing to search
        found += _guarded(ctx, DIAGNOSIS, lambda c: layout.layout_rows(c, failing),
                          announce=False)  # fmt: skip
    rows[DIAGNOSIS] += [r for r in found if "signature" in r]
    rows["errors"] += [r for r in found if "signature" not in r]  # it raised: an ERROR row


def _guarded(ctx: Context, check: str, rows_of, announce: bool = True):
    """``rows_of(ctx)``, or one ``ERROR`` row if it raised. A progress line first unless
    ``announce`` is False (the caller printed it): with a user's loop-style code one check
    can take a minute."""
    if announce:
        progress(f"{ctx.name} {ctx.dtype} {ctx.state}: {check}")
    try:
        return rows_of(ctx)
    except Exception as exc:
        return [ctx.row(check, raised(exc))]


def expected_keys(name: str, dtype: str, checks=CHECKS) -> list[tuple[str, str, str]]:
    """``(check, layer, quantity)`` every run of ``name`` in ``dtype`` must report."""
    from scratch.models import build

    model = build(name, seed=0, dtype=dtype)
    modules = dict(forward=forward, gradients=gradients, isolation=isolation,
                   derivations=derivations, ties=ties)  # fmt: skip
    keys = []
    for check in checks:
        if check == "derivations" and dtype != "float64":
            continue
        keys += [(check, layer, q) for layer, q in modules[check].expected(model)]
    return keys


def gather(parts: list[dict]) -> Results:
    """Rows of every dtype -> sorted DataFrames and the summary (one row per key)."""
    merged: dict[str, list] = {}
    for part in parts:
        for table, rows in part["rows"].items():
            merged.setdefault(table, []).extend(rows)
    # sweep.csv only where a sweep ran (a user's cs231n code): `parity run`'s folder is unchanged
    tables = {t: in_run_order(pd.DataFrame(merged[t]) if merged.get(t)
                              else pd.DataFrame(columns=EMPTY_COLUMNS.get(t, row_columns())))
              for t in TABLES if t not in USER_TABLES or merged.get(t)}  # fmt: skip
    tables[DIAGNOSIS] = in_run_order(
        pd.DataFrame(merged.get(DIAGNOSIS, []), columns=DIAGNOSIS_COLUMNS)
    )
    checked = ("errors", "forward", "gradients", "isolation", "derivations", "ties",
               *USER_TABLES)  # fmt: skip
    comparison_rows = [row for t in checked for row in merged.get(t, [])]
    results = [r for part in parts for r in part.get("curves", [])]
    training_rows = [row for r in results for row in r.summary_rows()]
    tables["summary"] = pd.concat(
        [frame for frame in (summarize(pd.DataFrame(comparison_rows)),
                             pd.DataFrame(training_rows, columns=SUMMARY_COLUMNS)) if len(frame)]
        or [pd.DataFrame(columns=SUMMARY_COLUMNS)],
        ignore_index=True,
    )  # fmt: skip
    return Results(tables, curves=results, heatmaps=merged.get(HEATMAPS, []))
