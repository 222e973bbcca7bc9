"""Gradient check: the loss, every weight's and every layer input's gradient, vs twin."""

from __future__ import annotations

import numpy as np

from parity import tolerances
from parity.checks.common import Context
from parity.compare import compare, missing, modified_in_place, not_provided

CHECK = "gradients"
LOSS = ("loss", "value")  # the mean cross-entropy itself, as a (layer, quantity) row
# A call that wrote into its argument (model.modified_inputs(), found while the scratch
# gradients were taken): forward's x or backward's dout, a row of its own.
IN_PLACE = {"forward": "input in place", "backward": "dout in place"}


def expected(model) -> list[tuple[str, str]]:
    """``loss/value``, then per layer its weights (kernel, bias) and ``input``."""
    params = model.params()
    pairs = [LOSS]
    for layer in model.layer_names:
        pairs += [(layer, weight) for weight in params.get(layer, {})]
        pairs.append((layer, "input"))
    return pairs


def gradient_rows(ctx: Context) -> list[dict]:
    our_loss, ours = ctx.grads("scratch")
    their_loss, theirs = ctx.grads("keras")
    # The loss as each side returned it: a float64 loss from a float32 model is a dtype FAIL.
    ours = {**ours, LOSS[0]: {LOSS[1]: np.asarray(our_loss)}}
    theirs = {**theirs, LOSS[0]: {LOSS[1]: np.asarray(their_loss)}}
    tol = tolerances.get(CHECK, ctx.dtype, ctx.model.spec)
    limits = dict(atol=tol.atol, rtol=tol.rtol)
    rows = []
    absent = ctx.model.not_provided()  # found while the scratch gradients were taken
    for layer, quantity in _all_pairs(ctx.model, ours, theirs):
        a = ours.get(layer, {}).get(quantity)
        b = theirs.get(layer, {}).get(quantity)
        if a is None and (layer, quantity) in absent:
            record = not_provided(layer, quantity, absent[(layer, quantity)], **limits)
        elif a is None or b is None:
            record = missing(layer, quantity, "scratch" if a is None else "keras", **limits)
        else:
            record = compare(a, b, layer=layer, quantity=quantity, expected_dtype=ctx.dtype,
                             **limits)  # fmt: skip
        rows.append(ctx.row(CHECK, record))
    for (layer, call), message in ctx.model.modified_inputs().items():
        record = modified_in_place(layer, IN_PLACE[call], message, **limits)
        rows.append(ctx.row(CHECK, record))
    return rows


def _all_pairs(model, ours, theirs) -> list[tuple[str, str]]:
    """Expected pairs first, then any extra key either side produced (it must match too)."""
    pairs = expected(model)
    for tree in (ours, theirs):
        for layer, quantities in tree.items():
            pairs += [(layer, q) for q in quantities if (layer, q) not in pairs]
    return pairs
