"""The training loop over a ``HarnessModel``, on a schedule the caller supplies.

The caller passes one index array per epoch (``orders``), so the scratch model and
its Keras twin see exactly the same batches: epoch ``e`` takes ``orders[e]`` in
consecutive slices of ``batch_size`` (the last one may be shorter). Each step
records the loss and the number of correct predictions of the forward pass BEFORE
that step's update (what Keras's ``train_on_batch`` returns). An epoch's mean loss
is weighted by batch size, like Keras's loss tracker (``Mean`` with
``sample_weight = batch size``); its accuracy is correct / images.

Epochs and steps count from 0. Results are plain dataclasses holding numpy values;
``columns()`` gives dicts of equal-length arrays ready for ``pandas.DataFrame``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from scratch.layer_base import invalid_argument, positive_int
from scratch.losses import check_labels, count_correct
from scratch.optim import SGD
from scratch.protocol import Capability


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step: where it was, which examples, and its pre-update metrics."""

    epoch: int
    step: int  # within the epoch
    global_step: int  # across epochs
    indices: np.ndarray  # the batch's row indices into x
    loss: float  # mean cross-entropy of the batch before the update
    n_correct: int  # correct predictions of the batch before the update

    @property
    def batch_size(self) -> int:
        return int(self.indices.size)


@dataclass(frozen=True)
class EpochSummary:
    """One epoch: batch-size-weighted mean loss and accuracy over its steps."""

    epoch: int
    mean_loss: float
    accuracy: float
    n_images: int
    n_steps: int


@dataclass
class TrainHistory:
    """Every step and every epoch of a ``train`` call."""

    steps: list[StepRecord] = field(default_factory=list)
    epochs: list[EpochSummary] = field(default_factory=list)

    def step_columns(self) -> dict[str, np.ndarray]:
        """Per-step columns (``indices`` omitted; ``batch_size`` instead)."""
        names = ("epoch", "step", "global_step", "batch_size", "loss", "n_correct")
        return {name: np.array([getattr(s, name) for s in self.steps]) for name in names}

    def epoch_columns(self) -> dict[str, np.ndarray]:
        """Per-epoch columns."""
        names = ("epoch", "mean_loss", "accuracy", "n_images", "n_steps")
        return {name: np.array([getattr(e, name) for e in self.epochs]) for name in names}


ProgressCallback = Callable[[StepRecord, int], None]  # (record, steps in this epoch)


def train(
    model,
    x: np.ndarray,
    labels: np.ndarray,
    optimizer,
    *,
    epochs: int,
    batch_size: int,
    orders: Sequence[np.ndarray],
    progress: ProgressCallback | None = None,
    fast_path: bool = True,
) -> TrainHistory:
    """Train ``model`` in place on ``x`` (already preprocessed) and integer ``labels``.

    Parameters
    ----------
    model : HarnessModel
    x : numpy.ndarray
        ``(N, ...)`` model inputs in the model's dtype.
    labels : numpy.ndarray
        ``(N,)`` integer classes.
    optimizer : scratch.optim.SGD or scratch.optim.Adam (anything with ``update``)
    epochs, batch_size : int
    orders : sequence of ``epochs`` integer index arrays into ``x``
    progress : callable (StepRecord, steps_in_epoch) -> None, optional
    fast_path : bool, default True
        Use ``model.train_step(x, labels, lr)`` when the model declares
        ``Capability.TRAIN_STEP`` and the optimizer is plain ``SGD`` (no momentum): the
        same arithmetic, fewer passes. Otherwise every step is ``gradients_and_probabilities``
        then ``optimizer.update``.
    """
    epochs, batch_size = positive_int("epochs", epochs), positive_int("batch_size", batch_size)
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise invalid_argument("x", "a non-empty batch of model inputs", f"<shape {x.shape}>")
    # The class count from the description, not from a forward pass: a training-mode
    # forward would move batch norm's moving statistics and draw a dropout mask.
    labels = check_labels(
        labels, len(x), model.spec.keras_shape(model.layer_names[-1], "output")[-1]
    )
    orders = _check_orders(orders, epochs, len(x))
    step = _step_function(model, optimizer, fast_path)
    history = TrainHistory()
    for epoch, order in enumerate(orders):
        batches = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
        for k, batch in enumerate(batches):
            loss, correct = step(x[batch], labels[batch])
            record = StepRecord(epoch, k, len(history.steps), batch.copy(), loss, correct)
            history.steps.append(record)
            if progress is not None:
                progress(record, len(batches))
        history.epochs.append(_summary(epoch, history.steps[-len(batches) :]))
    return history


def _check_orders(orders, epochs: int, n: int) -> list[np.ndarray]:
    if len(orders) != epochs:
        raise invalid_argument(
            "orders", f"one index array per epoch ({epochs})", f"<{len(orders)} arrays>"
        )
    checked = []
    for epoch, order in enumerate(orders):
        order = np.asarray(order)
        if order.ndim != 1 or order.dtype.kind not in "iu" or order.size == 0:
            raise invalid_argument(
                "orders", "non-empty 1-D integer index arrays", f"orders[{epoch}] {order!r}"
            )
        if order.min() < 0 or order.max() >= n:
            raise invalid_argument(
                "orders",
                f"indices in [0, {n})",
                f"orders[{epoch}] with values in [{order.min()}, {order.max()}]",
            )
        checked.append(order.astype(np.int64, copy=False))
    return checked


def _step_function(model, optimizer, fast_path: bool):
    plain_sgd = isinstance(optimizer, SGD) and optimizer.momentum == 0  # train_step: w -= lr g
    if fast_path and plain_sgd and model.provides(Capability.TRAIN_STEP):

        def fast(xb, yb):
            loss, correct = model.train_step(xb, yb, optimizer.learning_rate)
            optimizer.iterations += 1
            return float(loss), int(correct)

        return fast

    def general(xb, yb):
        loss, grads, probs = model.gradients_and_probabilities(xb, yb)
        optimizer.update(model.params(), grads)
        return float(loss), count_correct(probs, yb)

    return general


def _summary(epoch: int, steps: list[StepRecord]) -> EpochSummary:
    sizes = np.array([s.batch_size for s in steps], dtype=np.float64)
    losses = np.array([s.loss for s in steps], dtype=np.float64)
    n_images = int(sizes.sum())
    mean_loss = float((losses * sizes).sum() / n_images)
    accuracy = sum(s.n_correct for s in steps) / n_images
    return EpochSummary(epoch, mean_loss, float(accuracy), n_images, len(steps))
