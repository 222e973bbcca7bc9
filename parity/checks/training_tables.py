"""The training check's tables and verdicts, built from what both sides recorded.

Every step's loss is the batch's mean cross-entropy before that step's update.

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
first offending step named) and every weight after the last epoch (``judged``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from parity.checks.training_config import LOCKSTEP, TrainingConfig, judged, loss_atol, weight_rtol
from parity.compare import Comparison, compare, error
from parity.diagnosis.divergence import DIVERGENCE_COLUMNS, divergence_rows, first_exceeding, where

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


# -- result -------------------------------------------------------------------------------


@dataclass
class CurveResult:
    """Everything one training check measured (one model, one dtype)."""

    config: TrainingConfig
    training: pd.DataFrame
    epochs: pd.DataFrame
    divergence: pd.DataFrame
    comparisons: list[tuple[str, str, Comparison]]  # (keras_path, state, comparison)
    seconds_per_step: dict[str, float]  # scratch and each Keras path
    environment: dict = field(default_factory=dict)
    # lockstep's first divergence (parity.diagnosis.first_step.COLUMNS); empty when none
    first_divergence: pd.DataFrame = field(default_factory=pd.DataFrame)

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
        divergence += divergence_rows(config, path, frame, loss_atol(config, path))
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
        notes.append(f"first step with |scratch-keras| > {atol:.1e}: {where(first)}")
    if bad.size:
        row = frame.iloc[end - 1].to_dict()
        side = nonfinite_sides(mine[end - 1], theirs[end - 1])
        notes.append(f"{side} loss went non-finite at {where(row)}; the check ends there")
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


def _scratch_error(scratch) -> Comparison:
    """The error record of a scratch run that raised (where, the exception, its line)."""
    record = error("scratch", "training step", scratch.error)
    kept = f"{len(scratch.losses)} steps before it are kept and compared"
    return dataclasses.replace(record, message=f"{scratch.ended} ({kept}): {record.message}")
