"""Training-curve parity: scratch and Keras trained side by side, step by step.

Both sides start from the same weights (the scratch model built from ``seed``; each
Keras twin gets a copy of them) and see the same images in the same order: epoch ``e``
(1-based) visits the training pool in the order
``np.random.default_rng([seed, SHUFFLE_STREAM, e]).permutation(train_size)``, cut into
consecutive batches of ``batch_size`` (the last may be shorter, as in ``fit``). The
scratch model trains with ``scratch.train.train``. The twin trains three ways (Keras
paths):

- ``fit`` and ``tape`` run free: ``fit``, or a ``tf.GradientTape`` loop
  (``reference.training``), each from the initial weights, never looking at scratch;
- ``lockstep`` (``parity.lockstep``): before every step the twin is re-synced to the
  scratch weights and optimizer state, then takes one step with Keras's optimizer.

Every step's loss is the batch's mean cross-entropy before that step's update.

The work runs in the dtype's own process (``reference.backend.run_in_dtype_process``):
Keras floatx must be set before any Keras object exists.

Tables (one run, one model, one dtype; ``CurveResult``):

- ``training``: one row per step and Keras path (``TRAINING_COLUMNS``). ``example`` is
  the training-pool index of the step's image; for batches larger than one it is the
  batch's FIRST image, and ``label`` is that image's label (``batch_size`` says how many
  images the step had; ``scratch_correct``/``keras_correct`` count correct predictions
  in the batch). Lockstep rows also say how much of its per-step budget the step's
  worst weight update and Adam moment used (``update_budget_use``,
  ``state_budget_use``; over 1 fails) and which decisions had to be re-synced
  (``resynced``, see ``parity.lockstep.Lockstep``).
- ``epochs``: one row per epoch and Keras path (``EPOCH_COLUMNS`` plus one
  ``weight_rel_diff_<layer>`` column per layer with weights: the norm-wise
  ``max|scratch-keras| / max|keras|`` over that layer's weights after the epoch, the
  worst of its weights).
- ``divergence``: for each Keras path and each threshold of ``DIVERGENCE_LADDER`` (and
  the path's verdict threshold, if it is judged), the first step whose
  ``|scratch loss - Keras loss|`` exceeds it, or none.

Verdicts (``comparisons``, all through ``parity.compare``). Lockstep, in every dtype:
the per-step losses, and every weight (and Adam's moments and the iteration count) after
every step, worst step reported, against per-step rounding budgets. Free-running, in
float64 only: the per-step losses (``|scratch - keras| <= atol`` at every step, the
first offending step named) and every weight after the last epoch. float32 free-running
curves drift chaotically (two-conv's per-step loss passes 1e-4 after ~1,600 correct
steps), so they are measured and written (``training``, ``epochs``, ``divergence``,
plots) but not judged (``judged``).

A run ends early at the first non-finite loss or weight (every step before it is kept):
a scratch one ends every path; a Keras one ends that path. An exception raised by the
scratch model ends the run too and becomes an error record naming it and its line.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from parity import tolerances
from parity.compare import Comparison, compare, error
from parity.lockstep import copy_weights

KERAS_PATHS = ("fit", "tape")  # the free-running Keras paths
LOCKSTEP = "lockstep"  # the Keras path re-synced to scratch before every step
FREE_RUNNING_JUDGED = ("float64",)  # dtypes whose free-running curves are a verdict
OPTIMIZERS = ("sgd", "adam")
SHUFFLE_STREAM = 7  # keeps the epoch orders apart from every other use of the seed
DIVERGENCE_LADDER = (1e-15, 1e-13, 1e-11, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1)
PROGRESS_EVERY_SECONDS = 5.0  # at most one progress line this often (plus phase ends)
BLOG_EVERY = 100  # the blog prints every 100 steps

# -- budgets: parity.tolerances (training section), measured on this code -----------------
# Free-running (float64 only): per-step loss |scratch - keras| at every step, absolute
# (losses are O(1)); weights norm-wise max|scratch - keras| / max|keras| per weight, after
# the last epoch. Lockstep (both dtypes): the same quantities, per step (parity.lockstep).
STEP_LOSS_ATOL = {"float64": tolerances.get("training-loss", "float64").atol}
WEIGHT_RTOL = {"float64": tolerances.get("training-weights", "float64").rtol}
ADAM_WEIGHT_RTOL = {"float64": tolerances.get("training-weights-adam", "float64").rtol}
LOCKSTEP_LOSS_ATOL = {d: tolerances.get("lockstep-loss", d).atol for d in ("float64", "float32")}


def judged(config: TrainingConfig, path: str) -> bool:
    """Whether ``path``'s curves are a verdict: lockstep always, free-running in float64."""
    return path == LOCKSTEP or config.dtype in FREE_RUNNING_JUDGED


def loss_atol(config: TrainingConfig, path: str) -> float | None:
    """The per-step loss budget of ``path`` (None: not judged)."""
    if not judged(config, path):
        return None
    return (LOCKSTEP_LOSS_ATOL if path == LOCKSTEP else STEP_LOSS_ATOL)[config.dtype]


def weight_rtol(config: TrainingConfig) -> float:
    """The free-running weights budget: Adam's own (it amplifies cancelling gradients)."""
    table = ADAM_WEIGHT_RTOL if config.optimizer == "adam" else WEIGHT_RTOL
    return table[config.dtype]


TRAINING_COLUMNS = [
    "model", "dtype", "optimizer", "keras_path", "epoch", "step", "global_step", "example",
    "label", "batch_size", "scratch_loss", "keras_loss", "abs_diff", "rel_diff",
    "scratch_correct", "keras_correct", "update_budget_use", "state_budget_use", "resynced",
]  # fmt: skip
EPOCH_COLUMNS = [
    "model", "dtype", "optimizer", "keras_path", "epoch", "steps", "images",
    "scratch_train_loss", "keras_train_loss", "scratch_train_accuracy", "keras_train_accuracy",
    "scratch_test_loss", "keras_test_loss", "scratch_test_accuracy", "keras_test_accuracy",
    "max_step_abs_diff", "weight_rel_diff_max",
]  # fmt: skip
DIVERGENCE_COLUMNS = [
    "model", "dtype", "keras_path", "threshold", "verdict_threshold", "exceeded", "epoch",
    "step", "global_step", "example", "label", "scratch_loss", "keras_loss", "abs_diff",
]  # fmt: skip


# -- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingConfig:
    """What one training check depends on; validated on construction."""

    model: str
    dtype: str
    optimizer: str = "sgd"
    learning_rate: float = 0.005
    batch_size: int = 1
    epochs: int = 3
    train_size: int = 1000
    test_size: int = 1000
    seed: int = 0
    keras_paths: tuple[str, ...] = KERAS_PATHS  # free-running paths
    lockstep: bool = True

    def __post_init__(self):
        _check_choice("dtype", self.dtype, ("float32", "float64"))
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("batch_size", "epochs", "train_size", "test_size"):
            _check_positive_int(name, getattr(self, name))
        _check_positive_int("seed", self.seed, minimum=0)
        lr = self.learning_rate
        if (
            isinstance(lr, bool)
            or not isinstance(lr, (int, float))
            or not (math.isfinite(lr) and lr > 0)
        ):
            raise ValueError(
                "Invalid value for argument `learning_rate`. Expected a finite, strictly "
                f"positive float. Received learning_rate={lr!r}."
            )
        paths = tuple(self.keras_paths)
        if any(p not in KERAS_PATHS for p in paths) or not (paths or self.lockstep):
            raise ValueError(
                f"Invalid value for argument `keras_paths`. Expected a subset of "
                f"{KERAS_PATHS}, non-empty when lockstep=False. Received "
                f"keras_paths={self.keras_paths!r}."
            )

    @property
    def paths(self) -> tuple[str, ...]:
        """Every Keras path this check trains: the free-running ones, then lockstep."""
        return (*self.keras_paths, LOCKSTEP) if self.lockstep else tuple(self.keras_paths)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.train_size // self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def describe(self) -> dict:
        return dict(
            model=self.model, dtype=self.dtype, optimizer=self.optimizer,
            learning_rate=self.learning_rate, batch_size=self.batch_size, epochs=self.epochs,
            train_size=self.train_size, test_size=self.test_size, seed=self.seed,
            keras_paths=list(self.keras_paths), lockstep=self.lockstep,
            shuffle=f"default_rng([seed, {SHUFFLE_STREAM}, epoch])",
        )  # fmt: skip


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected one of {tuple(choices)}. "
            f"Received {name}={value!r}."
        )


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        rule = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected {rule}. Received {name}={value!r}."
        )


def epoch_orders(seed: int, epochs: int, train_size: int) -> list[np.ndarray]:
    """One fresh permutation of the training pool per epoch, shared by every side."""
    return [
        np.random.default_rng([seed, SHUFFLE_STREAM, epoch]).permutation(train_size)
        for epoch in range(1, epochs + 1)
    ]


# -- progress -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressEvent:
    """Where a long run is: ``done`` of ``total`` steps of one phase, and time spent."""

    model: str
    dtype: str
    phase: str  # scratch, keras fit, keras tape, evaluation
    done: int
    total: int
    elapsed: float  # seconds in this phase

    @property
    def rate(self) -> float:
        """Steps per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else float("nan")

    @property
    def remaining(self) -> float:
        """Estimated seconds left in this phase."""
        return (self.total - self.done) / self.rate if self.done else float("nan")

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"[training {self.model} {self.dtype}] {self.phase}: {self.done}/{self.total} steps "
            f"({pct:.0f}%), {self.rate:.0f} steps/s, {_duration(self.elapsed)} elapsed, "
            f"{_duration(self.remaining)} left"
        )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def print_progress(event: ProgressEvent) -> None:
    """The CLI's progress callback: one line on stderr (picklable: module level)."""
    print(event.line(), file=sys.stderr, flush=True)


class _Throttle:
    """Calls ``progress`` at most every ``PROGRESS_EVERY_SECONDS``, and at the end."""

    def __init__(self, progress, config: TrainingConfig, phase: str, total: int):
        self.progress, self.config, self.phase, self.total = progress, config, phase, total
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if self.progress is None:
            return
        if done < self.total and now - self.last < PROGRESS_EVERY_SECONDS:
            return
        self.last = now
        self.progress(
            ProgressEvent(
                self.config.model, self.config.dtype, self.phase, done, self.total,
                now - self.start,
            )
        )  # fmt: skip


# -- result -------------------------------------------------------------------------------


@dataclass
class CurveResult:
    """Everything one training check measured (one model, one dtype)."""

    config: TrainingConfig
    training: pd.DataFrame
    epochs: pd.DataFrame
    divergence: pd.DataFrame
    comparisons: list[tuple[str, str, Comparison]]  # (keras_path, state, comparison)
    seconds_per_step: dict[str, float]  # scratch, fit, tape
    environment: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for _, _, c in self.comparisons)

    def failures(self) -> list[str]:
        return [f"{path}: {c.message}" for path, _, c in self.comparisons if not c.passed]

    def comparison_rows(self) -> list[dict]:
        """One row per comparison, as the other checks write them (check ``training``)."""
        return [
            dict(check="training", model=self.config.model, dtype=self.config.dtype,
                 state=state, keras_path=path, **c.as_row())
            for path, state, c in self.comparisons
        ]  # fmt: skip

    def summary_rows(self) -> list[dict]:
        """Rows for summary.csv (the runner's SUMMARY_COLUMNS), one per comparison.

        Per-step losses and lockstep updates are judged absolutely (``error_kind``
        ``max abs``; a lockstep update's allowance scales with its step, see
        ``parity.lockstep.Budgets``), weights norm-wise relative.
        """
        rows = []
        for path, state, c in self.comparisons:
            loss = _absolute(c)  # per-step losses, lockstep updates: an absolute budget
            rows.append(dict(
                check="training", model=self.config.model, dtype=self.config.dtype,
                layer=c.layer, quantity=f"{c.quantity} ({path})",
                worst_error=c.max_abs_error if loss else c.rel_error,
                error_kind="max abs" if loss else "norm-wise rel",
                atol=c.atol, rtol=c.rtol, status=c.status, rows=1,
                failed_rows=int(c.status != "PASS"),
                worst_state=state, worst_sides=f"{c.actual_side}-{c.desired_side}",
                worst_index=c.worst_index, message=c.message,
            ))  # fmt: skip
        return rows

    def first_exceeding(self, keras_path: str, threshold: float) -> dict | None:
        """The first step of ``keras_path`` whose |loss difference| exceeds ``threshold``."""
        return first_exceeding(self.training, keras_path, threshold)


def _absolute(c: Comparison) -> bool:
    """Is ``c`` judged on an absolute budget (``max abs`` in summary.csv)?"""
    return c.layer == "loss" or (c.rtol == 0 and c.atol > 0)


# -- the check ----------------------------------------------------------------------------


def training_check(
    model_name: str,
    dtype: str,
    data,
    *,
    optimizer: str = "sgd",
    learning_rate: float = 0.005,
    batch_size: int = 1,
    epochs: int = 3,
    train_size: int = 1000,
    test_size: int = 1000,
    seed: int = 0,
    keras_paths: tuple[str, ...] = KERAS_PATHS,
    lockstep: bool = True,
    progress: Callable[[ProgressEvent], None] | None = None,
    model_hooks: tuple = (),
    in_process: bool = False,
) -> CurveResult:
    """Train scratch and Keras side by side and compare them step by step.

    Parameters
    ----------
    model_name : str
        A name of ``scratch.models`` (``zhou``, ``two-conv``, ``chw``, ``chw-relu``).
    dtype : float32 or float64
    data : parity.data.Mnist (anything with ``train_images``/``train_labels``/
        ``test_images``/``test_labels``)
        The first ``train_size`` training and ``test_size`` test images are used.
    optimizer, learning_rate, batch_size, epochs, train_size, test_size, seed
        The schedule (defaults: the blog's SGD 0.005, batch 1, 3 epochs, 1,000/1,000).
    keras_paths : subset of ("fit", "tape")
        The free-running Keras paths.
    lockstep : bool
        Also train the twin in lockstep (the verdict in float32).
    progress : callable(ProgressEvent), optional
        Called in the dtype's process: must be picklable (``print_progress``) unless
        ``in_process``.
    model_hooks : tuple of picklable ``hook(model)``
        Applied to every freshly built scratch model (how tests plant bugs).
    in_process : bool
        Run here (this process must be, or become, configured for ``dtype``).
    """
    config = TrainingConfig(
        model_name, dtype, optimizer, learning_rate, batch_size, epochs, train_size,
        test_size, seed, tuple(keras_paths), lockstep,
    )  # fmt: skip
    pools = pools_from(data, config)
    if in_process:
        from reference import backend

        backend.configure(dtype, seed)
        return run_training(config, pools, progress, tuple(model_hooks))
    from reference.backend import run_in_dtype_process

    return run_in_dtype_process(dtype, run_training, config, pools, progress, tuple(model_hooks))


def run_many(jobs) -> list[CurveResult]:
    """Several checks in this process, one after another: ``jobs`` is a list of
    ``(config, pools, hooks)`` of this process's dtype (tests share one process)."""
    return [run_training(config, pools, None, tuple(hooks)) for config, pools, hooks in jobs]


@dataclass(frozen=True)
class Pools:
    """The images one check trains and tests on (uint8) and their labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def pools_from(data, config: TrainingConfig) -> Pools:
    """The first ``train_size`` / ``test_size`` images of ``data``'s pools (checked)."""
    for part, size in (("train", config.train_size), ("test", config.test_size)):
        available = len(getattr(data, f"{part}_images"))
        if size > available:
            raise ValueError(
                f"Invalid value for argument `{part}_size`. Expected at most {available} "
                f"(the {part} pool of {getattr(data, 'source', 'the data')}). "
                f"Received {part}_size={size}."
            )
    return Pools(
        np.asarray(data.train_images[: config.train_size]),
        np.asarray(data.train_labels[: config.train_size]),
        np.asarray(data.test_images[: config.test_size]),
        np.asarray(data.test_labels[: config.test_size]),
        str(getattr(data, "source", "")),
    )


def run_training(config: TrainingConfig, pools: Pools, progress=None, hooks=()) -> CurveResult:
    """The whole check in this process (configured for ``config.dtype``)."""
    from parity import lockstep
    from reference import backend
    from scratch.models import build

    model = build(config.model, seed=config.seed, dtype=config.dtype)
    for hook in hooks:
        hook(model)
    initial = lockstep.copy_weights(model.params())
    x_train, y_train = model.preprocess(pools.train_images), pools.train_labels
    x_test, y_test = model.preprocess(pools.test_images), pools.test_labels
    orders = epoch_orders(config.seed, config.epochs, config.train_size)
    twins = {path: _twin_at(model, initial, config.dtype) for path in config.paths}
    lock = _lockstep(config, model, twins.get(LOCKSTEP))

    phase = "scratch + lockstep" if lock else "scratch"
    scratch = lockstep.train_scratch(
        model, _scratch_optimizer(config), x_train, y_train, orders, config.batch_size,
        lockstep=lock, evaluate=lambda m: _scratch_test(m, x_test, y_test),
        progress=_Throttle(progress, config, phase, config.total_steps),
    )  # fmt: skip
    steps = len(scratch.losses)
    timings = {"scratch": scratch.seconds / max(steps, 1)}
    keras_runs = {}
    done = _truncated(orders, steps, config.batch_size)
    for path in config.keras_paths if steps else ():
        model.set_params(initial)
        keras_runs[path], seconds = _train_keras(path, twins[path], model, x_train, y_train,
                                                 done, config, progress)  # fmt: skip
        timings[path] = seconds / steps
    lock_run = lock.finish() if lock is not None else None
    if lock_run is not None:
        keras_runs[LOCKSTEP] = _lockstep_run(lock_run, config, lock.stepper)
        timings[LOCKSTEP] = lock_run.seconds / max(len(lock_run.losses), 1)
    model.set_params(scratch.epoch_weights[-1])
    keras_eval = _evaluate_keras_epochs(model, keras_runs, x_test, y_test)
    result = assemble(config, pools, orders, scratch, keras_runs, keras_eval, timings,
                      lock_run)  # fmt: skip
    result.environment = backend.environment()
    return result


def _lockstep(config: TrainingConfig, model, keras_model):
    from parity.lockstep import Lockstep
    from reference.training import LockstepStepper

    if keras_model is None:
        return None
    stepper = LockstepStepper(keras_model, model, optimizer=config.optimizer,
                              learning_rate=config.learning_rate)  # fmt: skip
    return Lockstep(stepper, model, config.dtype, config.optimizer)


def _lockstep_run(run, config: TrainingConfig, stepper):
    """The Keras side of lockstep as a ``reference.training.TrainingRun``."""
    from reference.training import TrainingRun

    correct = np.concatenate(run.correct) if run.correct else np.zeros(0, bool)
    return TrainingRun(
        path=LOCKSTEP, optimizer=config.optimizer,
        learning_rate=stepper.optimizer.learning_rate.numpy(), batch_size=config.batch_size,
        losses=np.array(run.losses, dtype=config.dtype), correct=correct,
        steps_per_epoch=[], weights=run.epoch_weights[-1] if run.epoch_weights else {},
        epoch_weights=run.epoch_weights,
    )  # fmt: skip


def _truncated(orders, steps: int, batch_size: int) -> list[np.ndarray]:
    """The first ``steps`` batches of ``orders`` (whole epochs, then part of the next)."""
    out = []
    for order in orders:
        if steps <= 0:
            break
        take = min(steps, -(-order.size // batch_size))
        out.append(order[: take * batch_size])
        steps -= take
    return out


def _twin_at(model, weights, dtype):
    from reference.twin import twin

    model.set_params(weights)
    return twin(model, dtype)


def _scratch_optimizer(config: TrainingConfig):
    from scratch.optim import SGD, Adam

    if config.optimizer == "sgd":
        return SGD(config.learning_rate)
    return Adam(config.learning_rate)


def _scratch_test(model, x_test, y_test) -> tuple[float, float]:
    """Scratch test loss (mean cross-entropy of its probabilities) and accuracy."""
    probs = np.concatenate([model.probabilities(x_test[i : i + 500])
                            for i in range(0, len(x_test), 500)])  # fmt: skip
    picked = probs[np.arange(len(y_test)), y_test].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # a diverged run: inf/NaN is data
        loss = float(-np.log(picked).mean())
    return loss, float((probs.argmax(axis=1) == y_test).mean())


def _train_keras(path, keras_model, model, x, y, orders, config, progress):
    from reference import training

    throttle = _Throttle(progress, config, f"keras {path}", config.total_steps)
    t0 = time.perf_counter()
    run = training.train(
        path, keras_model, model, x, y, orders, batch_size=config.batch_size,
        optimizer=config.optimizer, learning_rate=config.learning_rate,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    throttle(config.total_steps)
    return run, seconds


def _evaluate_keras_epochs(model, keras_runs, x_test, y_test) -> dict[str, list]:
    """Keras test loss and accuracy after every epoch of every path.

    The Keras-trained weights of each epoch are loaded into one evaluation twin; the loss
    is Keras's categorical cross-entropy on its output (from the logits, unclipped).
    """
    from reference import layout as layout_module
    from reference.probes import loss_function, one_hot
    from reference.twin import copy_into_keras, twin

    keep = copy_weights(model.params())
    evaluator = twin(model, np.dtype(model.dtype).name)
    layout = layout_module.layout_for(model)
    x_keras = layout.input_to_keras(x_test)
    y_hot = one_hot(y_test, 10, x_keras.dtype)
    loss_fn = loss_function()
    out = {}
    for path, run in keras_runs.items():
        out[path] = []
        for weights in run.epoch_weights:
            model.set_params(weights)
            copy_into_keras(evaluator, model, layout)
            probs = evaluator(x_keras, training=False)
            loss = float(np.asarray(loss_fn(y_hot, probs)))
            accuracy = float((np.asarray(probs).argmax(axis=1) == y_test).mean())
            out[path].append((loss, accuracy))
    model.set_params(keep)
    return out


# -- tables and verdicts ------------------------------------------------------------------


def assemble(config, pools, orders, scratch, keras_runs, keras_eval, timings,
             lock_run=None) -> CurveResult:  # fmt: skip
    """Build the tables and the comparisons from what both sides recorded.

    ``scratch``: a ``parity.lockstep.ScratchRun``; ``keras_runs``: a
    ``reference.training.TrainingRun`` per Keras path; ``lock_run``: the
    ``parity.lockstep.LockstepRun`` when lockstep ran.
    """
    step_info = _step_info(orders, config.batch_size, pools.train_labels)
    frames, epoch_rows, comparisons, divergence = [], [], [], []
    for path, run in keras_runs.items():
        lock = lock_run if path == LOCKSTEP else None
        frame = _training_frame(config, path, step_info, scratch, run, lock)
        frames.append(frame)
        mine = lock.scratch_epoch_weights if lock else scratch.epoch_weights
        weight_cmps = _weight_comparisons(config, path, mine, run.epoch_weights)
        if judged(config, path):
            comparisons += _verdicts(config, path, frame, scratch, weight_cmps, lock)
        tests, keras_tests = _tests(scratch, keras_eval[path], lock, len(weight_cmps))
        epoch_rows += _epoch_rows(config, path, frame, tests, keras_tests, weight_cmps)
        divergence += _divergence_rows(config, path, frame)
    if scratch.error is not None:
        comparisons.append(("scratch", "scratch", _scratch_error(scratch)))
    return CurveResult(
        config=config,
        training=pd.concat(frames, ignore_index=True)[TRAINING_COLUMNS],
        epochs=pd.DataFrame(epoch_rows),
        divergence=pd.DataFrame(divergence, columns=DIVERGENCE_COLUMNS),
        comparisons=comparisons,
        seconds_per_step=timings,
    )


def _verdicts(config, path, frame, scratch, weight_cmps, lock) -> list[tuple]:
    """The records of one judged path: its per-step losses, then its weights."""
    out = []
    if len(frame):
        out.append((path, path, _loss_comparison(config, path, frame)))
    if lock is not None:
        out += [(path, "lockstep, every step", c) for c in lock.comparisons]
    elif weight_cmps and scratch.error is None:  # after an exception, weights are partial
        out += [(path, f"{path}, after epoch {len(weight_cmps)}", c) for c in weight_cmps[-1]]
    return out


def _tests(scratch, keras_tests, lock, epochs: int) -> tuple[list, list]:
    """Test loss/accuracy per epoch of a path; NaN for an epoch lockstep did not finish
    (it ended before scratch did: the two sides' weights are from different steps)."""
    tests, keras_tests = list(scratch.tests[:epochs]), list(keras_tests)
    if lock is not None and lock.ended and epochs:
        tests[-1] = keras_tests[-1] = (float("nan"), float("nan"))
    return tests, keras_tests


def _step_info(orders, batch_size: int, labels: np.ndarray) -> pd.DataFrame:
    rows = []
    for epoch, order in enumerate(orders, start=1):
        for step, start in enumerate(range(0, order.size, batch_size), start=1):
            batch = order[start : start + batch_size]
            rows.append((epoch, step, int(batch[0]), int(labels[batch[0]]), batch.size))
    info = pd.DataFrame(rows, columns=["epoch", "step", "example", "label", "batch_size"])
    info.insert(2, "global_step", np.arange(1, len(info) + 1))
    return info


def _training_frame(config, path, info, scratch, run, lock=None) -> pd.DataFrame:
    """One row per step ``path`` took (up to where it ended)."""
    steps = run.losses.size
    if steps > len(scratch.losses):
        raise RuntimeError(f"Keras {path} recorded {steps} steps, scratch {len(scratch.losses)}.")
    frame = info.iloc[:steps].copy()
    keras_loss = run.losses.astype(np.float64)
    scratch_loss = np.array(scratch.losses[:steps], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.abs(scratch_loss - keras_loss)
        rel = np.where(diff == 0, 0.0, diff / np.abs(keras_loss))
    bounds = np.cumsum(np.r_[0, frame["batch_size"].to_numpy()])
    flags = run.correct.astype(np.int64)
    keras_correct = np.add.reduceat(flags, bounds[:-1]) if steps else np.zeros(0, np.int64)
    nan = np.full(steps, np.nan)
    return frame.assign(
        model=config.model, dtype=config.dtype, optimizer=config.optimizer, keras_path=path,
        scratch_loss=scratch_loss, keras_loss=keras_loss, abs_diff=diff, rel_diff=rel,
        scratch_correct=np.array(scratch.correct[:steps], dtype=np.int64),
        keras_correct=keras_correct,
        update_budget_use=np.array(lock.weight_use, dtype=np.float64) if lock else nan,
        state_budget_use=np.array(lock.state_use, dtype=np.float64) if lock else nan,
        resynced=lock.resynced if lock else "",
    )  # fmt: skip


def first_exceeding(training: pd.DataFrame, keras_path: str, threshold: float) -> dict | None:
    """The first row of ``keras_path`` whose ``abs_diff`` exceeds ``threshold`` (NaN counts)."""
    rows = training[training["keras_path"] == keras_path]
    diff = rows["abs_diff"].to_numpy()
    bad = np.flatnonzero(~(diff <= threshold))
    if bad.size == 0:
        return None
    return rows.iloc[int(bad[0])].to_dict()


def _where(row: dict) -> str:
    return (
        f"epoch {row['epoch']} step {row['step']} (global step {row['global_step']}, "
        f"example {row['example']}, label {row['label']}): scratch {row['scratch_loss']!r}, "
        f"keras {row['keras_loss']!r}, |diff| {row['abs_diff']:.3e}"
    )


def _loss_comparison(config, path, frame) -> Comparison:
    """Per-step losses of ``path`` up to the first non-finite one (the check ends there)."""
    from parity.lockstep import nonfinite_sides

    atol = loss_atol(config, path)
    mine = frame["scratch_loss"].to_numpy().astype(config.dtype)  # exact: float64 of dtype
    theirs = frame["keras_loss"].to_numpy().astype(config.dtype)
    bad = np.flatnonzero(~(np.isfinite(mine) & np.isfinite(theirs)))
    end = int(bad[0]) + 1 if bad.size else mine.size
    c = compare(mine[:end], theirs[:end], layer="loss", quantity="per-step loss",
                atol=atol, rtol=0.0, expected_dtype=config.dtype)  # fmt: skip
    notes = []
    first = first_exceeding(frame.iloc[: end - 1], path, atol) if end > 1 else None
    if first is not None:
        notes.append(f"first step with |scratch-keras| > {atol:.1e}: {_where(first)}")
    if bad.size:
        row = frame.iloc[end - 1].to_dict()
        side = nonfinite_sides(mine[end - 1], theirs[end - 1])
        notes.append(f"{side} loss went non-finite at {_where(row)}; the check ends there")
    if not notes:
        return c
    return dataclasses.replace(c, message=". ".join(notes) + ". " + c.message)


def _weight_comparisons(config, path, scratch_epochs, keras_epochs) -> list[list[Comparison]]:
    """Per epoch, one comparison per weight (scratch layout, Keras as reference).

    Only the free-running paths' last epoch is a verdict (its budget here); lockstep's
    verdict is per step (``parity.lockstep``) and the rest only fills ``epochs``.
    """
    verdict = path != LOCKSTEP and judged(config, path)
    rtol = weight_rtol(config) if verdict else 0.0
    out = []
    for epoch, (mine, theirs) in enumerate(zip(scratch_epochs, keras_epochs, strict=True), start=1):
        # Rounding accumulates per step in proportion to the weights being updated, not to
        # a weight's final size: a bias whose updates cancel ends small (chw-relu seed 3:
        # conv bias max 7.5e-4 after 1 epoch, 2.2e-17 apart = 2.9e-14 of itself, 1,500
        # ulps in 2 x 1,000 roundings). So the budget scales with the model's largest
        # weight (atol = rtol * that); a 1% error in any layer's update is still ~1e-5.
        model_max = max(float(np.max(np.abs(w), initial=0.0))
                        for weights in theirs.values() for w in weights.values())  # fmt: skip
        out.append([
            _with_epoch(compare(array, theirs[layer][weight], layer=layer, quantity=weight,
                                atol=rtol * model_max, rtol=rtol,
                                expected_dtype=config.dtype), epoch)
            for layer, weights in mine.items() for weight, array in weights.items()
        ])  # fmt: skip
    return out


def _with_epoch(c: Comparison, epoch: int) -> Comparison:
    return dataclasses.replace(c, message=f"weights after epoch {epoch}: {c.message}")


def _epoch_rows(config, path, frame, tests, keras_tests, weight_cmps) -> list[dict]:
    rows = []
    for e, (cmps, s_test, k_test) in enumerate(
        zip(weight_cmps, tests, keras_tests, strict=True), start=1
    ):
        part = frame[frame["epoch"] == e]
        sizes = part["batch_size"].to_numpy()
        images = int(sizes.sum())
        row = dict(
            model=config.model, dtype=config.dtype, optimizer=config.optimizer, keras_path=path,
            epoch=e, steps=len(part), images=images,
            scratch_train_loss=float((part["scratch_loss"] * sizes).sum() / images),
            keras_train_loss=float((part["keras_loss"] * sizes).sum() / images),
            scratch_train_accuracy=float(part["scratch_correct"].sum() / images),
            keras_train_accuracy=float(part["keras_correct"].sum() / images),
            scratch_test_loss=s_test[0], keras_test_loss=k_test[0],
            scratch_test_accuracy=s_test[1], keras_test_accuracy=k_test[1],
            max_step_abs_diff=float(part["abs_diff"].max()),
            weight_rel_diff_max=max(c.rel_error for c in cmps),
        )  # fmt: skip
        for c in cmps:
            key = f"weight_rel_diff_{c.layer}"
            row[key] = max(row.get(key, 0.0), c.rel_error)
        rows.append(row)
    return rows


def _divergence_rows(config, path, frame) -> list[dict]:
    verdict = loss_atol(config, path)  # None: this path is not judged
    rows = []
    for threshold in sorted({*DIVERGENCE_LADDER} | ({verdict} if verdict else set())):
        first = first_exceeding(frame, path, threshold)
        row = dict(model=config.model, dtype=config.dtype, keras_path=path,
                   threshold=threshold, verdict_threshold=threshold == verdict,
                   exceeded=first is not None)  # fmt: skip
        if first is not None:
            row.update({k: first[k] for k in DIVERGENCE_COLUMNS[6:]})
        rows.append(row)
    return rows


# -- exceptions raised by the scratch model -----------------------------------------------


def _scratch_error(scratch) -> Comparison:
    """The error record of a scratch run that raised (where, the exception, its line)."""
    record = error("scratch", "training step", scratch.error)
    kept = f"{len(scratch.losses)} steps before it are kept and compared"
    return dataclasses.replace(record, message=f"{scratch.ended} ({kept}): {record.message}")


def blog_printout(result: CurveResult, every: int = BLOG_EVERY) -> list[str]:
    """The blog's training log for the scratch side, from the recorded steps.

    ``--- Epoch 1 ---`` per epoch, then every ``every`` steps
    ``[Step 100] Past 100 steps: Average Loss 2.302 | Accuracy: 12%`` (average of the
    step losses, percent of images correct), then the test loss and accuracy.
    """
    frame = result.training
    longest = frame["keras_path"].value_counts().idxmax()  # scratch losses are in every path
    frame = frame[frame["keras_path"] == longest]
    lines = [f"== {result.config.model} {result.config.dtype} (scratch) =="]
    for epoch, part in frame.groupby("epoch", sort=True):
        lines.append(f"--- Epoch {epoch} ---")
        for start in range(0, len(part) - every + 1, every):
            block = part.iloc[start : start + every]
            accuracy = 100.0 * block["scratch_correct"].sum() / block["batch_size"].sum()
            lines.append(
                f"[Step {start + every}] Past {every} steps: Average Loss "
                f"{block['scratch_loss'].mean():.3f} | Accuracy: {accuracy:.0f}%"
            )
    last = result.epochs[result.epochs["epoch"] == result.epochs["epoch"].max()].iloc[0]
    lines += [
        "--- Testing the CNN ---",
        f"Test Loss: {last['scratch_test_loss']}",
        f"Test Accuracy: {last['scratch_test_accuracy']}",
    ]
    return lines


# -- files --------------------------------------------------------------------------------


def write_outputs(results: list[CurveResult], folder) -> list:
    """Write training.csv, epochs.csv, divergence.csv and the plots into ``folder``.

    For ``reports.py``: call it on the temporary run folder before the rename. Returns the
    paths written. Rows are sorted by model, dtype (run order), Keras path, step.
    """
    from pathlib import Path

    from parity.plots import write_training_plots

    folder = Path(folder)
    if not results:
        return []
    written = []
    for name, attribute in (("training", "training"), ("epochs", "epochs"),
                            ("divergence", "divergence")):  # fmt: skip
        frame = pd.concat([getattr(r, attribute) for r in results], ignore_index=True)
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False, float_format="%.17g")
        written.append(path)
    training = pd.concat([r.training for r in results], ignore_index=True)
    # the red line: float64's free-running budget; float32's lockstep one (its verdict)
    thresholds = {**LOCKSTEP_LOSS_ATOL, **STEP_LOSS_ATOL}
    written += write_training_plots(training, folder, thresholds=thresholds)
    return written
