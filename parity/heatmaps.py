"""Where a failing activation differs: the |scratch - keras| map of its worst image and
channel, for a heatmap (``parity.plots.plot_heatmap``) in the report folder.

Two halves, because the arrays live in the dtype's child process and the report folder
is written by the parent:

- :func:`collect` runs in the child, after a weight state's forward and gradient checks:
  for each of their ``FAIL`` rows (values stage) of a quantity with a spatial map (a
  layer's ``output``, or the gradient of its ``input``, whose Keras array is
  ``(N, H, W, C)``) it keeps only the ``(H, W)`` map of the worst image and channel: a
  :class:`Heatmap`, small and picklable;
- :func:`write_heatmaps` runs in the parent on the temporary report folder: one PNG per
  failing summary row that has a map, from the weight state the summary row names
  (``worst_state``), so the picture shows the numbers the row reports.

Arrays are compared in Keras's layout (``reference.layout``: a channels-first family's
``(N, C, H, W)`` is transposed first), so "channel" always means Keras's last axis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parity.compare import FAIL

SPATIAL = {"forward": "output", "gradients": "input"}  # check -> quantity with a map
KEY = ("check", "model", "dtype", "layer", "quantity")  # joins a Heatmap to a summary row


@dataclass(frozen=True)
class Heatmap:
    """The ``|scratch - keras|`` map of one image and channel of one failing row.

    ``diff`` is ``(H, W)`` float64 (NaN where either side is not finite); ``image`` indexes
    the check batch, ``channel`` Keras's channel axis; ``peak`` is ``(row, column)`` of the
    largest difference; ``max_abs`` its value (``inf`` if any element is not finite).
    """

    check: str
    model: str
    dtype: str
    state: str
    layer: str
    quantity: str
    image: int
    channel: int
    peak: tuple[int, int]
    max_abs: float
    diff: np.ndarray

    def key(self) -> tuple:
        return tuple(getattr(self, name) for name in KEY)

    def title(self) -> str:
        """Which run, layer, quantity, image and channel, and the maximum."""
        what = "output" if self.check == "forward" else f"gradient of the {self.quantity}"
        return (
            f"{self.model} {self.dtype}, {self.state} weights\n"
            f"{self.check} {self.layer}/{self.quantity} ({what})\n"
            f"image {self.image} of the check batch, channel {self.channel}\n"
            f"max |scratch - keras| = {self.max_abs:.3e} at (row, col) {self.peak}"
        )

    def file_name(self) -> str:
        return file_name(*self.key())


def file_name(check: str, model: str, dtype: str, layer: str, quantity: str) -> str:
    """``heatmap_<check>_<model>_<dtype>_<layer>_<quantity>.png``, each name made safe for
    a file (any run of characters other than letters, digits, ``_.-`` becomes ``-``)."""
    parts = (check, model, dtype, layer, quantity)
    return "heatmap_" + "_".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", str(p)) for p in parts) + ".png"


def worst_map(actual: np.ndarray, desired: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The image and channel holding the largest ``|actual - desired|``, and its map.

    Parameters
    ----------
    actual, desired : ndarray, shape (N, H, W, C)
        Both sides in Keras's NHWC layout, any float dtype (compared in float64).

    Returns
    -------
    (image, channel, diff) : diff ``(H, W)`` float64, NaN where either side is not finite.
    A non-finite element counts as the largest difference (it never passes); ties go to
    the first ``(image, channel)`` in row-major order.

    Raises
    ------
    ValueError
        The shapes differ or are not 4-D.
    """
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"Invalid value for arguments `actual`, `desired`. Expected two arrays of one "
            f"shape (N, H, W, C). Received shapes {a.shape} and {b.shape}."
        )
    diff = np.abs(a - b)  # NaN where either side is NaN or both are the same infinity
    score = np.where(np.isfinite(diff), diff, np.inf).max(axis=(1, 2))  # (N, C)
    image, channel = np.unravel_index(int(np.argmax(score)), score.shape)
    plane = diff[image, :, :, channel]
    return int(image), int(channel), np.where(np.isfinite(plane), plane, np.nan)


def heatmap_of(row: dict, actual, desired) -> Heatmap:
    """A :class:`Heatmap` for the check row ``row`` (its check, model, dtype, state, layer,
    quantity) from both sides' arrays, ``(N, H, W, C)`` Keras layout."""
    image, channel, diff = worst_map(actual, desired)
    finite = np.isfinite(diff)
    peak_flat = int(np.argmax(np.where(finite, diff, np.inf)))
    peak = tuple(int(i) for i in np.unravel_index(peak_flat, diff.shape))
    max_abs = float(diff.flat[peak_flat]) if finite.all() else float("inf")
    return Heatmap(**{k: row[k] for k in (*KEY, "state")}, image=image, channel=channel,
                   peak=peak, max_abs=max_abs, diff=diff)  # fmt: skip


def collect(ctx, rows: list[dict]) -> list[Heatmap]:
    """The heatmaps of this weight state's failing spatial rows among ``rows``.

    ``ctx``: the ``parity.checks.common.Context`` the rows were computed in (its cached
    arrays are read; no code under test runs again: a values-stage row means both sides'
    arrays were computed). ``rows``: forward and gradients rows (any states and models;
    only ``ctx``'s are used).
    """
    wanted = [row for row in rows if _wanted(row, ctx)]
    if not wanted:
        return []
    from reference.layout import layout_for

    layout = layout_for(ctx.model)
    out = []
    for row in wanted:
        layer, quantity = row["layer"], row["quantity"]
        if len(layout.rule(layer, quantity).keras_shape) != 4:
            continue  # no spatial map: a dense layer's input, the probabilities
        a, b = (layout.to_keras(layer, quantity, _array(ctx, row, side))
                for side in ("scratch", "keras"))  # fmt: skip
        out.append(heatmap_of(row, a, b))
    return out


def _wanted(row: dict, ctx) -> bool:
    return (
        row["status"] == FAIL and row["stage"] == "values"
        and SPATIAL.get(row["check"]) == row["quantity"]
        and (row["model"], row["dtype"], row["state"]) == (ctx.name, ctx.dtype, ctx.state)
    )  # fmt: skip


def _array(ctx, row: dict, side: str) -> np.ndarray:
    if row["check"] == "forward":
        return ctx.outputs(side)[row["layer"]]
    return ctx.grads(side)[1][row["layer"]][row["quantity"]]


def pick(heatmaps: list[Heatmap], summary) -> list[Heatmap]:
    """One heatmap per ``FAIL`` summary row that has any: the one of the row's
    ``worst_state``, else the one with the largest ``max_abs``. Summary order."""
    if summary is None or summary.empty or "status" not in summary.columns:
        return []
    by_key: dict[tuple, list[Heatmap]] = {}
    for h in heatmaps:
        by_key.setdefault(h.key(), []).append(h)
    chosen = []
    for row in summary[summary["status"] == FAIL].to_dict("records"):
        found = by_key.get(tuple(row[k] for k in KEY), [])
        same_state = [h for h in found if h.state == row.get("worst_state")]
        if same_state or found:
            chosen.append(max(same_state or found, key=lambda h: h.max_abs))
    return chosen


def write_heatmaps(heatmaps: list[Heatmap], summary, folder) -> list[Path]:
    """Draw :func:`pick`'s heatmaps into ``folder``; returns the PNG paths written."""
    chosen = pick(heatmaps, summary)
    if not chosen:
        return []
    from parity.plots import plot_heatmap  # matplotlib: only when there is a picture

    return [
        plot_heatmap(h.diff, Path(folder) / h.file_name(), title=h.title(), peak=h.peak)
        for h in chosen
    ]
