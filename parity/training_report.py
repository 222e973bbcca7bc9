"""The training check's files and printout: training.csv, epochs.csv, divergence.csv,
the plots (``parity.plots``), and the blog's training log (``--blog-printout``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from parity.checks.training_config import loss_atol
from parity.checks.training_tables import CurveResult

BLOG_EVERY = 100  # the blog prints every 100 steps


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


def first_divergence(results: list[CurveResult]) -> pd.DataFrame:
    """Every check's lockstep first-divergence rows (``first_divergence.csv``)."""
    from parity.diagnosis.first_step import COLUMNS

    frames = [r.first_divergence for r in results if not r.first_divergence.empty]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def format_first_divergence(results: list[CurveResult]) -> str:
    """Lines under the summary table: per model, dtype, layer and kind, where lockstep
    first diverged and why, then the fix; empty when there is nothing to say."""
    frame = first_divergence(results)
    if frame.empty:
        return ""
    lines = ["", "first divergence (lockstep training):"]
    keys = ["model", "dtype", "layer", "kind"]
    for _, part in frame.groupby(keys, sort=False):
        row = part.iloc[0]
        where = (f"epoch {row['epoch']} step {row['step']} (global step {row['global_step']}, "
                 f"example {row['example']}, label {row['label']})")  # fmt: skip
        weights = ", ".join(part["quantity"])
        lines.append(f"  {row['model']} {row['dtype']} {row['layer']} ({weights}) at {where}: "
                     f"{row['evidence']}.")  # fmt: skip
        if row["advice"] != "-":
            lines.append(f"    fix: {row['advice']}.")
    return "\n".join(lines)


def write_outputs(results: list[CurveResult], folder) -> list:
    """Write training.csv, epochs.csv, divergence.csv, first_divergence.csv and the plots
    into ``folder``.

    For ``reports.py``: call it on the temporary run folder before the rename. Returns the
    paths written. Rows are sorted by model, dtype (run order), Keras path, step.
    """
    from parity.plots import write_training_plots  # matplotlib: only when writing

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
    path = folder / "first_divergence.csv"
    first_divergence(results).to_csv(path, index=False, float_format="%.17g")
    written.append(path)
    training = pd.concat([r.training for r in results], ignore_index=True)
    # the red line on each path where it is judged, at its own budget (None: measured only)
    budgets = {(r.config.model, r.config.dtype, path): loss_atol(r.config, path)
               for r in results for path in r.training["keras_path"].unique()}  # fmt: skip
    written += write_training_plots(training, folder, budgets=budgets)
    return written
