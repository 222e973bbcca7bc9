"""Training-curve parity: scratch and Keras trained side by side, step by step.

Both sides start from the same weights (the scratch model built from ``seed``; each
Keras twin gets a copy of them) and see the same images in the same order: epoch ``e``
(1-based) visits the training pool in the order
``np.random.default_rng([seed, SHUFFLE_STREAM, e]).permutation(train_size)``, cut into
consecutive batches of ``batch_size`` (the last may be shorter, as in ``fit``). The
scratch model trains with ``scratch.train.train``; the twin trains twice, once with
``fit`` and once with a ``tf.GradientTape`` loop (``reference.training``), each from the
initial weights. Every step's loss is the batch's mean cross-entropy before that
step's update, on both sides.

The work runs in the dtype's own process (``reference.backend.run_in_dtype_process``):
Keras floatx must be set before any Keras object exists.

Tables (one run, one model, one dtype; ``CurveResult``):

- ``training``: one row per step and Keras path (``TRAINING_COLUMNS``). ``example`` is
  the training-pool index of the step's image; for batches larger than one it is the
  batch's FIRST image, and ``label`` is that image's label (``batch_size`` says how many
  images the step had; ``scratch_correct``/``keras_correct`` count correct predictions
  in the batch).
- ``epochs``: one row per epoch and Keras path (``EPOCH_COLUMNS`` plus one
  ``weight_rel_diff_<layer>`` column per layer with weights: the norm-wise
  ``max|scratch-keras| / max|keras|`` over that layer's weights after the epoch, the
  worst of its weights).
- ``divergence``: for each Keras path and each threshold of ``DIVERGENCE_LADDER`` (and
  the verdict threshold), the first step whose ``|scratch loss - Keras loss|`` exceeds
  it, or none.

Verdicts (``comparisons``, all through ``parity.compare``): per Keras path, the
per-step losses (``|scratch - keras| <= atol`` at every step, the first offending step
named in the message) and every weight after the last epoch (norm-wise relative).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from parity import tolerances
from parity.compare import Comparison, compare

KERAS_PATHS = ("fit", "tape")
OPTIMIZERS = ("sgd", "adam")
SHUFFLE_STREAM = 7  # keeps the epoch orders apart from every other use of the seed
DIVERGENCE_LADDER = (1e-15, 1e-13, 1e-11, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1)
PROGRESS_EVERY_SECONDS = 5.0  # at most one progress line this often (plus phase ends)
BLOG_EVERY = 100  # the blog prints every 100 steps

# -- budgets: parity.tolerances (training section), measured on this code -----------------
# Per-step loss: |scratch - keras| at every step, absolute (losses are O(1)).
# Weights: norm-wise max|scratch - keras| / max|keras| per weight, after the last epoch.
# float32 drifts chaotically (first > 1e-7 at step 2, > 1e-5 at step 1,175): its budgets
# hold for runs of the measured length; a full-MNIST float32 run may exceed them.
STEP_LOSS_ATOL = {d: tolerances.get("training-loss", d).atol for d in ("float64", "float32")}
WEIGHT_RTOL = {d: tolerances.get("training-weights", d).rtol for d in ("float64", "float32")}
ADAM_WEIGHT_RTOL = {
    d: tolerances.get("training-weights-adam", d).rtol for d in ("float64", "float32")
}


def weight_rtol(config: TrainingConfig) -> float:
    """The weights budget: Adam's own (it amplifies cancelling gradients), else SGD's."""
    table = ADAM_WEIGHT_RTOL if config.optimizer == "adam" else WEIGHT_RTOL
    return table[config.dtype]


TRAINING_COLUMNS = [
    "model", "dtype", "optimizer", "keras_path", "epoch", "step", "global_step", "example",
    "label", "batch_size", "scratch_loss", "keras_loss", "abs_diff", "rel_diff",
    "scratch_correct", "keras_correct",
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
    keras_paths: tuple[str, ...] = KERAS_PATHS

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
        if not paths or any(p not in KERAS_PATHS for p in paths):
            raise ValueError(
                f"Invalid value for argument `keras_paths`. Expected a non-empty subset of "
                f"{KERAS_PATHS}. Received keras_paths={self.keras_paths!r}."
            )

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
            keras_paths=list(self.keras_paths),
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

        Per-step losses are judged absolutely (``error_kind`` ``max abs``), weights
        norm-wise relative.
        """
        rows = []
        for path, state, c in self.comparisons:
            loss = c.layer == "loss"
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
        test_size, seed, tuple(keras_paths),
    )  # fmt: skip
    pools = pools_from(data, config)
    if in_process:
        from reference import backend

        backend.configure(dtype, seed)
        return run_training(config, pools, progress, tuple(model_hooks))
    from reference.backend import run_in_dtype_process

    return run_in_dtype_process(dtype, run_training, config, pools, progress, tuple(model_hooks))


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
    from reference import backend
    from scratch.models import build

    model = build(config.model, seed=config.seed, dtype=config.dtype)
    for hook in hooks:
        hook(model)
    initial = _copy_tree(model.params())
    x_train, y_train = model.preprocess(pools.train_images), pools.train_labels
    x_test, y_test = model.preprocess(pools.test_images), pools.test_labels
    orders = epoch_orders(config.seed, config.epochs, config.train_size)
    twins = {path: _twin_at(model, initial, config.dtype) for path in config.keras_paths}

    scratch, scratch_seconds = _train_scratch(model, x_train, y_train, x_test, y_test,
                                              orders, config, progress)  # fmt: skip
    timings = {"scratch": scratch_seconds / config.total_steps}
    keras_runs = {}
    for path in config.keras_paths:
        model.set_params(initial)
        keras_runs[path], seconds = _train_keras(path, twins[path], model, x_train, y_train,
                                                 orders, config, progress)  # fmt: skip
        timings[path] = seconds / config.total_steps
    model.set_params(scratch["epoch_weights"][-1])
    keras_eval = _evaluate_keras_epochs(model, keras_runs, x_test, y_test)
    result = assemble(config, pools, orders, scratch, keras_runs, keras_eval, timings)
    result.environment = backend.environment()
    return result


def _copy_tree(tree) -> dict:
    return {layer: {k: np.array(v, copy=True) for k, v in w.items()} for layer, w in tree.items()}


def _twin_at(model, weights, dtype):
    from reference.twin import twin

    model.set_params(weights)
    return twin(model, dtype)


def _train_scratch(model, x, y, x_test, y_test, orders, config, progress):
    """Scratch training, one epoch per ``train`` call (weights and test after each)."""
    from scratch.train import train

    optimizer = _scratch_optimizer(config)
    throttle = _Throttle(progress, config, "scratch", config.total_steps)
    steps, epoch_weights, tests, seconds = [], [], [], 0.0
    for order in orders:
        done = len(steps)
        t0 = time.perf_counter()

        def report(record, _steps, d=done):
            throttle(d + record.step + 1)

        history = train(model, x, y, optimizer, epochs=1, batch_size=config.batch_size,
                        orders=[order], progress=report)  # fmt: skip
        seconds += time.perf_counter() - t0
        steps += [(float(s.loss), int(s.n_correct)) for s in history.steps]
        epoch_weights.append(_copy_tree(model.params()))
        tests.append(_scratch_test(model, x_test, y_test))
    losses = np.array([s[0] for s in steps], dtype=config.dtype)
    correct = np.array([s[1] for s in steps], dtype=np.int64)
    return dict(losses=losses, correct=correct, epoch_weights=epoch_weights, tests=tests), seconds


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
    return float(-np.log(picked).mean()), float((probs.argmax(axis=1) == y_test).mean())


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

    keep = _copy_tree(model.params())
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


def assemble(config, pools, orders, scratch, keras_runs, keras_eval, timings) -> CurveResult:
    """Build the tables and the comparisons from what both sides recorded."""
    step_info = _step_info(orders, config.batch_size, pools.train_labels)
    frames, epoch_rows, comparisons, divergence = [], [], [], []
    for path, run in keras_runs.items():
        frame = _training_frame(config, path, step_info, scratch, run)
        frames.append(frame)
        comparisons.append((path, path, _loss_comparison(config, frame, scratch, run)))
        weight_cmps = _weight_comparisons(config, scratch["epoch_weights"], run.epoch_weights)
        last = weight_cmps[-1]
        comparisons += [(path, f"{path}, after epoch {config.epochs}", c) for c in last]
        epoch_rows += _epoch_rows(config, path, frame, scratch, keras_eval[path], weight_cmps)
        divergence += _divergence_rows(config, path, frame)
    return CurveResult(
        config=config,
        training=pd.concat(frames, ignore_index=True)[TRAINING_COLUMNS],
        epochs=pd.DataFrame(epoch_rows),
        divergence=pd.DataFrame(divergence, columns=DIVERGENCE_COLUMNS),
        comparisons=comparisons,
        seconds_per_step=timings,
    )


def _step_info(orders, batch_size: int, labels: np.ndarray) -> pd.DataFrame:
    rows = []
    for epoch, order in enumerate(orders, start=1):
        for step, start in enumerate(range(0, order.size, batch_size), start=1):
            batch = order[start : start + batch_size]
            rows.append((epoch, step, int(batch[0]), int(labels[batch[0]]), batch.size))
    info = pd.DataFrame(rows, columns=["epoch", "step", "example", "label", "batch_size"])
    info.insert(2, "global_step", np.arange(1, len(info) + 1))
    return info


def _training_frame(config, path, info, scratch, run) -> pd.DataFrame:
    if run.losses.shape != scratch["losses"].shape:
        raise RuntimeError(
            f"Keras {path} recorded {run.losses.size} steps, scratch {scratch['losses'].size}."
        )
    frame = info.copy()
    keras_loss = run.losses.astype(np.float64)
    scratch_loss = scratch["losses"].astype(np.float64)
    diff = np.abs(scratch_loss - keras_loss)
    bounds = np.cumsum(np.r_[0, info["batch_size"].to_numpy()])
    keras_correct = np.add.reduceat(run.correct.astype(np.int64), bounds[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(keras_loss))
    frame = frame.assign(
        model=config.model, dtype=config.dtype, optimizer=config.optimizer, keras_path=path,
        scratch_loss=scratch_loss, keras_loss=keras_loss, abs_diff=diff, rel_diff=rel,
        scratch_correct=scratch["correct"], keras_correct=keras_correct,
    )  # fmt: skip
    return frame


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


def _loss_comparison(config, frame, scratch, run) -> Comparison:
    atol = STEP_LOSS_ATOL[config.dtype]
    c = compare(scratch["losses"], run.losses, layer="loss", quantity="per-step loss",
                atol=atol, rtol=0.0, expected_dtype=config.dtype)  # fmt: skip
    first = first_exceeding(frame, frame["keras_path"].iloc[0], atol)
    if first is None:
        return c
    prefix = f"first step with |scratch-keras| > {atol:.1e}: {_where(first)}. "
    return Comparison(**{**c.as_row(), "message": prefix + c.message})


def _weight_comparisons(config, scratch_epochs, keras_epochs) -> list[list[Comparison]]:
    """Per epoch, one comparison per weight (scratch layout, Keras as reference)."""
    rtol = weight_rtol(config)
    out = []
    for epoch, (mine, theirs) in enumerate(zip(scratch_epochs, keras_epochs, strict=True), start=1):
        out.append([
            _with_epoch(compare(array, theirs[layer][weight], layer=layer, quantity=weight,
                                atol=0.0, rtol=rtol, expected_dtype=config.dtype), epoch)
            for layer, weights in mine.items() for weight, array in weights.items()
        ])  # fmt: skip
    return out


def _with_epoch(c: Comparison, epoch: int) -> Comparison:
    return Comparison(**{**c.as_row(), "message": f"weights after epoch {epoch}: {c.message}"})


def _epoch_rows(config, path, frame, scratch, keras_tests, weight_cmps) -> list[dict]:
    rows = []
    for e, (cmps, s_test, k_test) in enumerate(
        zip(weight_cmps, scratch["tests"], keras_tests, strict=True), start=1
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
    verdict = STEP_LOSS_ATOL[config.dtype]
    rows = []
    for threshold in sorted({*DIVERGENCE_LADDER, verdict}):
        first = first_exceeding(frame, path, threshold)
        row = dict(model=config.model, dtype=config.dtype, keras_path=path,
                   threshold=threshold, verdict_threshold=threshold == verdict,
                   exceeded=first is not None)  # fmt: skip
        if first is not None:
            row.update({k: first[k] for k in DIVERGENCE_COLUMNS[6:]})
        rows.append(row)
    return rows


# -- the blog's console printout ----------------------------------------------------------


def blog_printout(result: CurveResult, every: int = BLOG_EVERY) -> list[str]:
    """The blog's training log for the scratch side, from the recorded steps.

    ``--- Epoch 1 ---`` per epoch, then every ``every`` steps
    ``[Step 100] Past 100 steps: Average Loss 2.302 | Accuracy: 12%`` (average of the
    step losses, percent of images correct), then the test loss and accuracy.
    """
    frame = result.training
    frame = frame[frame["keras_path"] == frame["keras_path"].iloc[0]]
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
    written += write_training_plots(training, folder, thresholds=STEP_LOSS_ATOL)
    return written
