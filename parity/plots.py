"""The report's pictures (matplotlib, Agg backend, PNG).

From the rows of ``training.csv``, two figures per model and dtype:

- ``training_loss_<model>_<dtype>.png``: the scratch and Keras loss curves over steps,
  each the mean of consecutive blocks of ``window`` steps (100, as the blog prints);
- ``training_diff_<model>_<dtype>.png``: the per-step ``|scratch - Keras|`` loss
  difference on a log scale, one panel per Keras path: every step as a faint point, the
  running maximum over ``ENVELOPE_WINDOW`` steps as a line, epochs labelled, the budget
  in red on the paths that are judged. An exact zero cannot sit on a log axis: such steps
  are counted in the legend and never drawn.

And, for a failing activation or input gradient, ``plot_heatmap``: its
``|scratch - keras|`` map over (H, W) (the image and channel from ``parity.heatmaps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SMOOTH_WINDOW = 100  # steps per point of the smoothed loss curve (the blog's printout)
# Steps per running maximum of the difference plot: over a 3,000-step run, ~60 windows
# trace the top of the per-step noise without hiding a trend within an epoch.
ENVELOPE_WINDOW = 50
PATH_STYLES = {"epoch": "-", "fit": "-.", "tape": "--"}
PATH_COLORS = {"epoch": "tab:blue", "fit": "tab:orange", "tape": "tab:green",
               "lockstep": "tab:purple"}  # fmt: skip


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
    """1-based step number over all epochs (``step`` restarts at 1 every epoch): the
    ``global_step`` column where the rows have it."""
    if "global_step" in rows.columns:
        return rows["global_step"].to_numpy()
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
    _label_epochs(ax, first)
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss, mean of each {window} steps")
    ax.set_title(_title(rows, "training loss"), pad=14)
    ax.legend()
    return _save(fig, path)


@dataclass(frozen=True)
class DiffSeries:
    """One Keras path's per-step ``|scratch loss - keras loss|``, ready for a log axis.

    ``steps``/``values``: the finite, nonzero differences and their global steps (an exact
    zero has no place on a log axis: counted in ``zeros``, never drawn); ``envelope``: the
    running maximum over the trailing ``window`` steps, at every step where it is positive
    (``envelope_steps``); ``worst_step``/``worst``: the largest finite difference (0, 0.0
    if none); ``nonfinite``: steps where either loss was NaN or inf.
    """

    steps: np.ndarray
    values: np.ndarray
    envelope_steps: np.ndarray
    envelope: np.ndarray
    total: int
    zeros: int
    nonfinite: int
    worst_step: int
    worst: float


def difference_series(part: pd.DataFrame, window: int = ENVELOPE_WINDOW) -> DiffSeries:
    """:class:`DiffSeries` of the rows of one model, dtype and Keras path."""
    part = part.sort_values(["epoch", "step"])
    steps = _global_step(part)
    diff = part["abs_diff"].to_numpy(dtype=np.float64)
    finite = np.isfinite(diff)
    shown = finite & (diff > 0)
    # NaN (not finite) is skipped by the rolling max; a window of zeros gives 0: not drawn
    envelope = pd.Series(np.where(finite, diff, np.nan)).rolling(window, min_periods=1).max()
    envelope = envelope.to_numpy()
    positive = envelope > 0
    worst_at = int(np.argmax(np.where(finite, diff, -1.0))) if finite.any() else -1
    return DiffSeries(
        steps=steps[shown], values=diff[shown],
        envelope_steps=steps[positive], envelope=envelope[positive],
        total=len(diff), zeros=int(np.count_nonzero(diff == 0)),
        nonfinite=int(np.count_nonzero(~finite)),
        worst_step=int(steps[worst_at]) if worst_at >= 0 else 0,
        worst=float(diff[worst_at]) if worst_at >= 0 else 0.0,
    )  # fmt: skip


def plot_differences(
    rows: pd.DataFrame, path: Path, *, budgets: dict[str, float | None] | None = None,
    window: int = ENVELOPE_WINDOW,
) -> Path:  # fmt: skip
    """Per-step ``|scratch loss - Keras loss|`` of one model and dtype, one panel per Keras
    path (log scale): each step as a faint point, the running maximum over ``window``
    steps as a line, the largest difference marked, epochs labelled, and the path's
    budget in red where the path is judged (``budgets[keras_path]``; None or absent: not
    judged, said in the panel). Exactly equal steps are counted in the legend, not drawn.
    """
    paths = sorted(rows["keras_path"].unique())
    fig, axes = plt.subplots(len(paths), 1, sharex=True, squeeze=False, dpi=100,
                             figsize=(12, 1.0 + 2.8 * len(paths)))  # fmt: skip
    for ax, keras_path in zip(axes[:, 0], paths, strict=True):
        part = rows[rows["keras_path"] == keras_path]
        budget = (budgets or {}).get(keras_path)
        _draw_differences(ax, difference_series(part, window), keras_path, budget, window)
        _label_epochs(ax, part)
    axes[-1, 0].set_xlabel("step (all epochs)")
    axes[0, 0].set_title(_title(rows, "per-step |scratch loss - keras loss|"), pad=14)
    return _save(fig, path)


def _draw_differences(ax, s: DiffSeries, keras_path: str, budget, window: int) -> None:
    color = PATH_COLORS.get(keras_path, "tab:gray")
    equal = f"{s.zeros} of {s.total} steps exactly equal (not drawn)"
    if s.nonfinite:
        equal += f"; {s.nonfinite} not finite"
    ax.scatter(s.steps, s.values, s=3, lw=0, color=color, alpha=0.3, label=f"each step; {equal}")
    ax.plot(s.envelope_steps, s.envelope, color=color, lw=1.4,
            label=f"running max over {window} steps")  # fmt: skip
    if s.worst > 0:
        ax.plot([s.worst_step], [s.worst], "v", color="black", ms=6,
                label=f"largest {s.worst:.2e} at step {s.worst_step}")  # fmt: skip
    if budget is not None:
        ax.axhline(budget, color="red", lw=1.2, label=f"budget {budget:.1e} (judged here)")
    else:
        ax.text(0.99, 0.04, "not judged on this path: measured only", ha="right",
                transform=ax.transAxes, fontsize=8, color="dimgray")  # fmt: skip
    levels = [v for v in (*s.values, *([budget] if budget else [])) if v > 0]
    low, high = (min(levels) / 5, max(levels) * 20) if levels else (1e-17, 1e-1)
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    ax.set_ylabel(f"keras path `{keras_path}`", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the data


def plot_heatmap(diff: np.ndarray, path: Path, *, title: str, peak: tuple[int, int]) -> Path:
    """``diff`` ``(H, W)`` (``|scratch - keras|`` of one image and channel) as a heatmap,
    linear colour scale; NaN (a non-finite side) drawn cyan; ``peak`` ``(row, col)`` boxed."""
    diff = np.asarray(diff, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    cmap = plt.get_cmap("magma").with_extremes(bad="cyan")
    finite = np.isfinite(diff)
    top = float(diff[finite].max()) if finite.any() else 1.0
    image = ax.imshow(np.ma.masked_invalid(diff), cmap=cmap, interpolation="nearest",
                      vmin=0.0, vmax=top if top > 0 else 1.0)  # fmt: skip
    ax.plot([peak[1]], [peak[0]], "s", mfc="none", mec="lime", ms=10, mew=1.5)
    fig.colorbar(image, ax=ax, label="|scratch - keras|")
    ax.set_xlabel("column (W)")
    ax.set_ylabel("row (H)")
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


def write_training_plots(
    training: pd.DataFrame, folder: Path, budgets: dict[tuple, float | None] | None = None
) -> list[Path]:
    """Both figures for every (model, dtype) in ``training``; returns the files written.

    ``budgets`` maps ``(model, dtype, keras_path)`` to that path's per-step loss budget,
    None where the path is not judged (drawn in red where there is one).
    """
    folder = Path(folder)
    written = []
    for (model, dtype), rows in training.groupby(["model", "dtype"], sort=True):
        stem = f"{model}_{dtype}"
        limits = {p: (budgets or {}).get((model, dtype, p)) for p in rows["keras_path"].unique()}
        written.append(plot_losses(rows, folder / f"training_loss_{stem}.png"))
        written.append(plot_differences(rows, folder / f"training_diff_{stem}.png", budgets=limits))
    return written


def _label_epochs(ax, rows: pd.DataFrame) -> None:
    """A dotted line between epochs and ``epoch e`` over each epoch's span of steps; the
    x axis widened to every epoch's steps (a smoothed curve may have one point only)."""
    steps = pd.Series(_global_step(rows), index=rows.index)
    spans = steps.groupby(rows["epoch"]).agg(["min", "max"])
    left, right = ax.get_xlim()
    ax.set_xlim(min(left, spans["min"].min() - 0.5), max(right, spans["max"].max() + 0.5))
    for epoch, (first, last) in spans.iterrows():
        if epoch < spans.index.max():
            ax.axvline(last + 0.5, color="grey", lw=0.8, ls=":")
        ax.text((first + last) / 2, 1.01, f"epoch {epoch}", ha="center", va="bottom",
                fontsize=8, color="dimgray", transform=ax.get_xaxis_transform())  # fmt: skip


def _title(rows: pd.DataFrame, what: str) -> str:
    first = rows.iloc[0]
    return f"{first['model']} {first['dtype']}: {what}"


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
