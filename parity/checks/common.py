"""What every check shares: the context it runs in, weight states, losses, rows."""

from __future__ import annotations

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

    def set_twin(self, twin, state: str) -> None:
        """New weights: the twin that holds them, and a fresh cache."""
        self.twin, self.state = twin, state
        self.cache.clear()

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


def train_scratch(model, images, labels, seed: int, steps: int = TRAIN_STEPS) -> None:
    """``steps`` SGD steps, batch size 1, on a seeded order (the blog's schedule)."""
    from scratch.optim import SGD

    optimizer = SGD(TRAIN_LEARNING_RATE)
    order = np.random.default_rng([seed, 1]).permutation(len(images))[:steps]
    for i in order:
        x = model.preprocess(images[i : i + 1])
        _, grads = model.gradients(x, labels[i : i + 1])
        optimizer.update(model.params(), grads)


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
