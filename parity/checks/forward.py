"""Forward check: every layer's output (the last is the probabilities), scratch vs twin."""

from __future__ import annotations

from parity import tolerances
from parity.checks.common import Context
from parity.compare import compare, missing

CHECK = "forward"
INFERENCE = "output (inference)"  # a modal model's outputs in inference mode (moving stats)


def expected(model) -> list[tuple[str, str]]:
    """The ``(layer, quantity)`` pairs this check compares for ``model``: every layer's
    output (in training mode for a model with batch norm or dropout), then for such a
    model every layer's ``output (inference)``."""
    from parity import modes

    pairs = [(layer, "output") for layer in model.layer_names]
    if modes.modal(model):
        pairs += [(layer, INFERENCE) for layer in model.layer_names]
    return pairs


def forward_rows(ctx: Context, budget: str = CHECK) -> list[dict]:
    """One row per layer output; ``budget`` names the tolerance (``parity.tolerances``)."""
    pairs = expected(ctx.model)
    rows = _rows(ctx, budget, [p for p in pairs if p[1] == "output"], ctx.outputs)
    inference = [p for p in pairs if p[1] == INFERENCE]
    if inference:
        rows += _rows(ctx, budget, inference, ctx.inference_outputs)
    return rows


def _rows(ctx: Context, budget: str, pairs, outputs) -> list[dict]:
    ours, theirs = outputs("scratch"), outputs("keras")
    tol = tolerances.get(budget, ctx.dtype, ctx.model.spec)
    rows = []
    for layer, quantity in pairs:
        limits = dict(atol=tol.atol, rtol=tol.rtol)
        if layer not in ours or layer not in theirs:
            side = "scratch" if layer not in ours else "keras"
            record = missing(layer, quantity, side, **limits)
        else:
            record = compare(ours[layer], theirs[layer], layer=layer, quantity=quantity,
                             expected_dtype=ctx.dtype, **limits)  # fmt: skip
        rows.append(ctx.row(CHECK, record))
    return rows
