"""Training-curve plots (matplotlib, Agg backend, PNG) for a run folder.

Two figures per model and dtype, both drawn from the rows of ``training.csv``:

- ``training_loss_<model>_<dtype>.png``: the scratch and Keras loss curves over steps,
  each the mean of consecutive blocks of ``window`` steps (100, as the blog prints);
- ``training_diff_<model>_<dtype>.png``: the per-step ``|scratch - Keras|`` loss
  difference on a log scale, one line per Keras path, with the verdict threshold.

An exact zero cannot sit on a log axis; zeros are drawn at ``ZERO_FLOOR`` and the
legend says so.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SMOOTH_WINDOW = 100  # steps per point of the smoothed loss curve (the blog's printout)
ZERO_FLOOR = 1e-18  # where an exact zero difference is drawn on the log axis
PATH_STYLES = {"epoch": "-", "fit": "-.", "tape": "--"}


def block_means(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of consecutive blocks of ``window`` values (the last may be shorter).

    Returns ``(ends, means)``: the 1-based step number closing each block and its mean.
    """
    values = np.asarray(values, dtype=np.float64)
    starts = np.arange(0, values.size, window)
    sums = np.add.reduceat(values, starts) if values.size else np.array([])
    counts = np.diff(np.append(starts, values.size))
    ends = starts + counts
    return ends, sums / np.maximum(counts, 1)


def _global_step(rows: pd.DataFrame) -> np.ndarray:
    """1-based step number over all epochs (``step`` restarts at 1 every epoch)."""
    per_epoch = int(rows["step"].max())
    return (rows["epoch"].to_numpy() - 1) * per_epoch + rows["step"].to_numpy()


def plot_losses(rows: pd.DataFrame, path: Path, *, window: int = SMOOTH_WINDOW) -> Path:
    """Smoothed scratch and Keras loss curves of one model and dtype."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    paths = sorted(rows["keras_path"].unique())
    first = rows[rows["keras_path"] == paths[0]].sort_values(["epoch", "step"])
    ends, scratch = block_means(first["scratch_loss"].to_numpy(), window)
    ax.plot(ends, scratch, color="black", lw=2.5, alpha=0.6, label="scratch")
    for keras_path in paths:
        part = rows[rows["keras_path"] == keras_path].sort_values(["epoch", "step"])
        ends, keras = block_means(part["keras_loss"].to_numpy(), window)
        style = PATH_STYLES.get(keras_path, ":")
        ax.plot(ends, keras, ls=style, lw=1.2, label=f"keras ({keras_path})")
    _epoch_lines(ax, first)
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss, mean of each {window} steps")
    ax.set_title(_title(rows, "training loss"))
    ax.legend()
    return _save(fig, path)


def plot_differences(rows: pd.DataFrame, path: Path, *, threshold: float | None = None) -> Path:
    """Per-step ``|scratch loss - Keras loss|`` on a log scale, one line per Keras path."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for keras_path in sorted(rows["keras_path"].unique()):
        part = rows[rows["keras_path"] == keras_path].sort_values(["epoch", "step"])
        diff = part["abs_diff"].to_numpy(dtype=np.float64)
        zeros = int(np.count_nonzero(diff == 0))
        label = f"keras ({keras_path}); {zeros} exact zeros drawn at {ZERO_FLOOR:g}"
        style = PATH_STYLES.get(keras_path, ":")
        ax.plot(_global_step(part), np.maximum(diff, ZERO_FLOOR), ls=style, lw=0.6, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="red", lw=1, label=f"verdict threshold {threshold:.1e}")
    _epoch_lines(ax, rows)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("|scratch loss - keras loss|")
    ax.set_title(_title(rows, "per-step loss difference"))
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_training_plots(
    training: pd.DataFrame, folder: Path, thresholds: dict[str, float] | None = None
) -> list[Path]:
    """Both figures for every (model, dtype) in ``training``; returns the files written.

    ``thresholds`` maps a dtype name to its per-step loss threshold (drawn in red).
    """
    folder = Path(folder)
    written = []
    for (model, dtype), rows in training.groupby(["model", "dtype"], sort=True):
        stem = f"{model}_{dtype}"
        limit = (thresholds or {}).get(dtype)
        written.append(plot_losses(rows, folder / f"training_loss_{stem}.png"))
        written.append(
            plot_differences(rows, folder / f"training_diff_{stem}.png", threshold=limit)
        )
    return written


def _epoch_lines(ax, rows: pd.DataFrame) -> None:
    per_epoch = int(rows["step"].max())
    for epoch in range(1, int(rows["epoch"].max())):
        ax.axvline(epoch * per_epoch, color="grey", lw=0.5, ls=":")


def _title(rows: pd.DataFrame, what: str) -> str:
    first = rows.iloc[0]
    return f"{first['model']} {first['dtype']}: {what}"


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
