"""The training check's schedule, its validated configuration and its budgets.

Both sides start from the same weights (the scratch model built from ``seed``; each
Keras twin gets a copy of them) and see the same images in the same order: epoch ``e``
(1-based) visits the training pool in the order
``np.random.default_rng([seed, SHUFFLE_STREAM, e]).permutation(train_size)``, cut into
consecutive batches of ``batch_size`` (the last may be shorter, as in ``fit``).

Keras paths: ``epoch`` (a whole epoch of Keras's own step inside one ``tf.function``,
bit-identical to ``fit``; the default), ``fit`` (the path users take) and ``tape`` (one
compiled step per batch) run free (``reference.training``), each from the initial
weights, never looking at scratch; ``lockstep`` (``parity.lockstep``) is
re-synced to the scratch weights and optimizer state before every step. Lockstep is
judged in every dtype, the free-running paths in float64 only (``judged``): float32
free-running curves drift chaotically and are measured but not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from parity import tolerances
from reference.optimizers import NAMES, kind_of

KERAS_PATHS = ("epoch", "fit", "tape")  # the free-running Keras paths (reference.training)
DEFAULT_KERAS_PATHS = ("epoch",)  # the fastest, bit-identical to fit (reference.tf_backend)
LOCKSTEP = "lockstep"  # the Keras path re-synced to scratch before every step
FREE_RUNNING_JUDGED = ("float64",)  # dtypes whose free-running curves are a verdict
OPTIMIZERS = NAMES  # reference.optimizers: sgd, momentum, nesterov, rmsprop, adam, adamw
SHUFFLE_STREAM = 7  # keeps the epoch orders apart from every other use of the seed

# -- budgets: parity.tolerances (training section), measured on this code -----------------
# Free-running (float64 only): per-step loss |scratch - keras| at every step, absolute
# (losses are O(1)); weights norm-wise max|scratch - keras| / max|keras| per weight, after
# the last epoch. Lockstep (both dtypes): the same quantities, per step (parity.lockstep).
STEP_LOSS_ATOL = {"float64": tolerances.get("training-loss", "float64").atol}
RMSPROP_STEP_LOSS_ATOL = {"float64": tolerances.get("training-loss-rmsprop", "float64").atol}
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
    if path == LOCKSTEP:
        return LOCKSTEP_LOSS_ATOL[config.dtype]
    free = RMSPROP_STEP_LOSS_ATOL if config.optimizer == "rmsprop" else STEP_LOSS_ATOL
    return free[config.dtype]


def weight_rtol(config: TrainingConfig) -> float:
    """The free-running weights budget: Adam's own for the optimizers that divide by a
    running RMS (RMSprop, Adam, AdamW: they amplify cancelling gradients), else SGD's."""
    table = ADAM_WEIGHT_RTOL if kind_of(config.optimizer).normalised else WEIGHT_RTOL
    return table[config.dtype]


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
    keras_paths: tuple[str, ...] = DEFAULT_KERAS_PATHS  # free-running paths
    lockstep: bool = True
    # lockstep's first divergence (parity.diagnosis.first_step): on a failing check
    # always; with `diagnose` on a passing one too (its closest step, a `none` row)
    diagnose: bool = False

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
        if not isinstance(self.diagnose, bool):
            raise ValueError(f"Invalid value for argument `diagnose`. Expected a bool. "
                             f"Received diagnose={self.diagnose!r}.")  # fmt: skip
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
            keras_paths=list(self.keras_paths), lockstep=self.lockstep, diagnose=self.diagnose,
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
