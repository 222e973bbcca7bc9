"""summary.csv: one row per (check, model, dtype, layer, quantity), the worst of its
rows over the weight states (``SUMMARY_COLUMNS``, documented in reports/README.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from parity.compare import PASS, worst_status

__all__ = ["SUMMARY_COLUMNS", "SUMMARY_KEYS", "in_run_order", "summarize"]


def in_run_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Model, then dtype (in run order), then the deterministic order the checks wrote."""
    if frame.empty:
        return frame

    def first_seen(column: pd.Series) -> pd.Series:
        return column.map({v: i for i, v in enumerate(dict.fromkeys(column))})

    return frame.sort_values(["model", "dtype"], kind="stable", key=first_seen).reset_index(
        drop=True
    )


SUMMARY_KEYS = ["check", "model", "dtype", "layer", "quantity"]


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (check, model, dtype, layer, quantity): the worst of its rows."""
    if rows.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = in_run_order(rows).copy()
    rows["worst_error"] = rows["rel_error"]
    out = []
    for _, group in rows.groupby(SUMMARY_KEYS, sort=False):
        status = worst_status(group["status"])
        pick = group[group["status"] == status]
        worst = pick.loc[pick["worst_error"].fillna(np.inf).idxmax()]
        out.append(dict(
            **{k: worst[k] for k in SUMMARY_KEYS},
            worst_error=worst["worst_error"], error_kind="norm-wise rel",
            atol=worst["atol"], rtol=worst["rtol"], status=status,
            rows=len(group), failed_rows=int((group["status"] != PASS).sum()),
            worst_state=worst["state"],
            worst_sides=f"{worst['actual_side']}-{worst['desired_side']}",
            worst_index=worst["worst_index"], message=worst["message"],
        ))  # fmt: skip
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = [
    *SUMMARY_KEYS, "worst_error", "error_kind", "atol", "rtol", "status", "rows",
    "failed_rows", "worst_state", "worst_sides", "worst_index", "message",
]  # fmt: skip
