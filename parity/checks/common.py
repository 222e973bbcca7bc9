"""What every check shares: the context it runs in, weight states, losses, rows."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from parity.compare import Comparison
from reference.layout import layout_for  # numpy only: no TensorFlow here

LARGE_LOGITS = "large-logits"  # ``random`` with the logits shifted past exp's overflow
# Weights the checks run at; ``large-logits`` runs the forward outputs and the loss only
# (``parity.checks.large_logits``).
STATES = ("initial", "trained", "random", LARGE_LOGITS)
TRAIN_STEPS = 300  # SGD steps (batch 1) before the "trained" state: blog-like, ~85% acc
TRAIN_LEARNING_RATE = 0.005  # the blog's SGD learning rate
RANDOM_BIAS_STD = 0.1  # O(1) state: biases ~ N(0, 0.1); kernels ~ N(0, 1/fan_in)


@dataclass
class Context:
    """One model in one dtype: the scratch model, its images and labels, and a twin.

    ``twin`` is rebuilt by :func:`set_state` whenever the scratch weights change.
    """

    name: str
    dtype: str
    model: object  # scratch.protocol.HarnessModel
    images: np.ndarray  # (N, 28, 28) uint8, the check batch
    labels: np.ndarray  # (N,) int64
    seed: int
    twin: object = None
    state: str = ""
    cache: dict = field(default_factory=dict)
    progress: object = None  # callable(parity.progress.ProgressEvent) of long checks, or None
    masks: dict = field(default_factory=dict)  # the check batch's dropout masks (Keras layout)
    saved_state: dict = field(default_factory=dict)  # moving statistics when the twin was set

    def set_twin(self, twin, state: str) -> None:
        """New weights: the twin that holds them, and a fresh cache.

        A model with training and inference modes (``parity.modes``) is put in training
        mode on both sides, with the check batch's dropout masks drawn (per state, from
        the seed) and given to both; its moving statistics at this point are kept for the
        inference-mode forward rows (every training-mode pass moves them)."""
        from parity import modes

        self.twin, self.state = twin, state
        self.cache.clear()
        if modes.modal(self.model):
            key = STATES.index(state) if state in STATES else len(STATES)
            self.masks = modes.draw(self.model.spec, len(self.images), self.seed, 0, key)
            modes.set_training(self.model, twin, True)
            modes.inject(self.model, self.masks, twin)
            self.saved_state = {k: {n: a.copy() for n, a in v.items()}
                                for k, v in self.model.state().items()}  # fmt: skip

    def inference_outputs(self, side: str) -> dict:
        """Every layer's output in inference mode, ``side`` scratch or keras (cached): both
        sides' moving statistics set to those of :meth:`set_twin` first."""
        return self._cached(("inference", side), lambda: self._inference(side))

    def _inference(self, side: str) -> dict:
        from parity import modes

        self.model.set_state(self.saved_state)
        if side == "keras":
            from reference.twin import copy_into_keras

            copy_into_keras(self.twin, self.model)
        with modes.inference(self.model, self.twin):
            return self._forward(side)

    def x(self) -> np.ndarray:
        return self.model.preprocess(self.images)

    def outputs(self, side: str) -> dict:
        """Every layer's output on the check batch, ``side`` scratch or keras (cached)."""
        return self._cached(("forward", side), lambda: self._forward(side))

    def grads(self, side: str) -> tuple[float, dict]:
        """``(loss, grads)`` on the check batch, ``side`` scratch or keras (cached)."""
        return self._cached(("gradients", side), lambda: self._gradients(side))

    def _cached(self, key, compute):
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def _forward(self, side: str) -> dict:
        if side == "scratch":
            return self.model.forward(self.x())
        from reference import probes

        return probes.forward(self.twin, self.model, self.x())

    def _gradients(self, side: str):
        if side == "scratch":
            return self.model.gradients(self.x(), self.labels)
        from reference import probes

        anchors = self.outputs("scratch")  # kinks decided on the scratch side (probes)
        return probes.gradients(self.twin, self.model, self.x(), self.labels, anchors)

    def row(self, check: str, record: Comparison, **extra) -> dict:
        """A report row: who, where, then the comparison's fields."""
        return dict(
            check=check, model=self.name, dtype=self.dtype, state=self.state,
            **record.as_row(), **extra,
        )  # fmt: skip


ROW_KEYS = ("check", "model", "dtype", "state")  # Context.row's leading columns


def row_columns(*extra: str) -> list[str]:
    """The columns of a table of :meth:`Context.row` rows: ``ROW_KEYS``, the
    :class:`~parity.compare.Comparison` fields, then ``extra`` (a check's own columns).
    A table without rows (derivations.csv of a float32-only run) is written with them."""
    return [*ROW_KEYS, *(f.name for f in dataclasses.fields(Comparison)), *extra]


def progress(message: str) -> None:
    """A progress line on stderr (the child processes inherit it)."""
    print(f"[parity {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def one_hot(labels: np.ndarray, dtype) -> np.ndarray:
    return np.eye(10, dtype=dtype)[labels]


def per_example_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Categorical cross-entropy of each example, from probabilities ``(N, 10)``."""
    picked = probabilities[np.arange(len(labels)), labels]
    return -np.log(picked.astype(np.float64))


def mean_loss(model, x: np.ndarray, labels: np.ndarray) -> float:
    """Mean categorical cross-entropy of ``model`` on the batch (the scratch forward)."""
    return float(per_example_loss(model.probabilities(x), labels).mean())


def train_scratch(model, images, labels, seed: int, steps: int = TRAIN_STEPS,
                  progress=None, description: str = "trained weights") -> None:  # fmt: skip
    """``steps`` SGD steps on a seeded order (the blog's schedule), each of the network's
    training batch (``spec.Network.training_batch``: 1 for the blog's, 32 with batch norm;
    the order repeats when ``steps x batch`` exceeds the images). A model with dropout
    gets a fresh harness mask per step (``parity.modes``). ``progress``: a callback
    (``parity.progress``) shown one bar, ``description``, over the steps (a user's loop-style
    code can take minutes), or None."""
    from parity import modes
    from parity.progress import phase
    from scratch.optim import SGD

    optimizer = SGD(TRAIN_LEARNING_RATE)
    batch = model.spec.training_batch
    rng = np.random.default_rng([seed, 1])
    repeats = -(-steps * batch // len(images))
    order = np.concatenate([rng.permutation(len(images)) for _ in range(repeats)])
    report = phase(progress, description, steps)
    for step in range(steps):
        rows = order[step * batch : (step + 1) * batch]
        x = model.preprocess(images[rows])
        if modes.modal(model):
            modes.inject(model, modes.draw(model.spec, len(rows), seed, 1, step))
        _, grads = model.gradients(x, labels[rows])
        optimizer.update(model.params(), grads)
        report(step + 1)


def keras_fan_in(shape: tuple) -> int:
    """Inputs per output unit of a Keras kernel: every axis but the last (the outputs).

    Conv ``(kh, kw, C, F)`` -> ``kh*kw*C``; dense ``(in, out)`` -> ``in``.
    """
    return int(np.prod(shape[:-1]))


def randomize(model, seed: int) -> None:
    """O(1) weights: the blog's init is nearly flat, so a layout bug hides in it.

    Drawn in Keras layout (``reference.layout``, numpy only), so every family gets the
    same distribution per Keras weight, then converted to the model's native layout.
    """
    layout = layout_for(model)
    rng = np.random.default_rng([seed, 2])
    values = {}
    for layer, weights in model.params().items():
        values[layer] = {}
        for name, array in weights.items():
            shape = layout.to_keras(layer, name, array).shape
            if len(shape) == 1:
                new = rng.normal(0.0, RANDOM_BIAS_STD, shape)
            else:
                new = rng.normal(0.0, 1.0 / np.sqrt(keras_fan_in(shape)), shape)
            values[layer][name] = layout.from_keras(layer, name, new.astype(array.dtype))
    model.set_params(values)
