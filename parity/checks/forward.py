"""Forward check: every layer's output (the last is the probabilities), scratch vs twin."""

from __future__ import annotations

from parity import tolerances
from parity.checks.common import Context
from parity.compare import compare, missing

CHECK = "forward"


def expected(model) -> list[tuple[str, str]]:
    """The ``(layer, quantity)`` pairs this check compares for ``model``."""
    return [(layer, "output") for layer in model.layer_names]


def forward_rows(ctx: Context, budget: str = CHECK) -> list[dict]:
    """One row per layer output; ``budget`` names the tolerance (``parity.tolerances``)."""
    ours, theirs = ctx.outputs("scratch"), ctx.outputs("keras")
    tol = tolerances.get(budget, ctx.dtype)
    rows = []
    for layer, quantity in expected(ctx.model):
        limits = dict(atol=tol.atol, rtol=tol.rtol)
        if layer not in ours or layer not in theirs:
            side = "scratch" if layer not in ours else "keras"
            record = missing(layer, quantity, side, **limits)
        else:
            record = compare(ours[layer], theirs[layer], layer=layer, quantity=quantity,
                             expected_dtype=ctx.dtype, **limits)  # fmt: skip
        rows.append(ctx.row(CHECK, record))
    return rows
