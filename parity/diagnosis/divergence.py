"""Where two loss curves part: the first step whose difference passes each threshold.

``divergence.csv`` (``DIVERGENCE_COLUMNS``): for each Keras path and each threshold of
``DIVERGENCE_LADDER`` (and the path's verdict threshold, if it is judged), the first
step whose ``|scratch loss - Keras loss|`` exceeds it, or none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DIVERGENCE_LADDER = (1e-15, 1e-13, 1e-11, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1)
DIVERGENCE_COLUMNS = [
    "model", "dtype", "keras_path", "threshold", "verdict_threshold", "exceeded", "epoch",
    "step", "global_step", "example", "label", "scratch_loss", "keras_loss", "abs_diff",
]  # fmt: skip


def first_exceeding(training: pd.DataFrame, keras_path: str, threshold: float) -> dict | None:
    """The first row of ``keras_path`` whose ``abs_diff`` exceeds ``threshold`` (NaN counts)."""
    rows = training[training["keras_path"] == keras_path]
    diff = rows["abs_diff"].to_numpy()
    bad = np.flatnonzero(~(diff <= threshold))
    if bad.size == 0:
        return None
    return rows.iloc[int(bad[0])].to_dict()


def where(row: dict) -> str:
    """Where a training row is, and both losses: for messages."""
    return (
        f"epoch {row['epoch']} step {row['step']} (global step {row['global_step']}, "
        f"example {row['example']}, label {row['label']}): scratch {row['scratch_loss']!r}, "
        f"keras {row['keras_loss']!r}, |diff| {row['abs_diff']:.3e}"
    )


def divergence_rows(config, path, frame, verdict: float | None) -> list[dict]:
    """The ladder's rows of one Keras path's ``frame`` (``verdict``: its budget, or None
    when the path is not judged)."""
    rows = []
    for threshold in sorted({*DIVERGENCE_LADDER} | ({verdict} if verdict else set())):
        first = first_exceeding(frame, path, threshold)
        row = dict(model=config.model, dtype=config.dtype, keras_path=path,
                   threshold=threshold, verdict_threshold=threshold == verdict,
                   exceeded=first is not None)  # fmt: skip
        if first is not None:
            row.update({k: first[k] for k in DIVERGENCE_COLUMNS[6:]})
        rows.append(row)
    return rows
