"""Layout diagnosis: which layout mistake makes a failing layer pass, named in words.

When a forward, gradient or isolation row FAILs at a layer with weights, that layer is
judged alone (``parity.checks.isolation.layer_records``: its Keras counterpart fed the
scratch side's own input and upstream gradient). If it fails there too, the failure is
made by the layer (not inherited), and each candidate of the network description
(``spec.candidates``: kernel flips, axis permutations, a reshape where a transpose was
needed, flatten orders, channel order, a shifted batch) is tried on it, singles first,
then pairs of two families:

- the candidate's records are appended to the weight's layout (``Layout.with_transforms``)
  and the twin's weights are set through that layout, so Keras's layer computes with the
  kernel the scratch layer is hypothesised to use; gradients come back through the
  inverse records. The direction makes "your layer computes X" true: Keras's layer with
  the transformed kernel reproduces what the scratch layer computes (a true convolution
  is Keras's cross-correlation with the kernel flipped); the twin's weights are restored
  bit for bit afterwards;
- an input candidate transforms the batch the Keras layer is fed (its output only is
  judged: a shifted batch has no inverse for the input gradient).

A candidate explains the failure when the layer's output then passes within the normal
forward budget (``parity.tolerances``); the gradients that failed alone are judged again
under it and reported, passing or not (a forward that flips the kernel while its backward
does not leaves the kernel gradient wrong: a second mistake, named as such). Only a
failing output is searched: a weight layout that changed a passing output would break it.

Runs at O(1) random weights only (:data:`STATE`): the blog's near-flat initial weights
hide a wrong dense row order. Adds nothing to a run where nothing fails.

Rows (diagnosis.csv): ``layer, signature="layout", transform`` (the candidate's name),
``evidence`` (the sentence, the records and the errors before and after), ``advice``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from parity.checks.common import Context
from parity.checks.isolation import layer_records
from parity.compare import FAIL, PASS
from spec import candidates as C

STATE = "random"  # O(1) weights (parity.checks.common.randomize)
SIGNATURE = "layout"
CHECKED = ("forward", "gradients", "isolation")  # a FAIL here at a layer triggers the search


def failing_layers(rows: dict, state: str) -> set[str]:
    """Layers with a FAIL row of :data:`CHECKED` at ``state`` (``rows``: table -> rows)."""
    return {r["layer"] for t in CHECKED for r in rows.get(t, ())
            if r["state"] == state and r["status"] == FAIL}  # fmt: skip


def layout_rows(ctx: Context, failing: set[str]) -> list[dict]:
    """One row per candidate that makes a failing weighted layer pass alone (all the
    passing candidates of the fewest mistakes: singles, else pairs); none at other states
    than :data:`STATE` or when nothing fails."""
    if ctx.state != STATE:
        return []
    from reference.layout import layout_for

    layout, params = layout_for(ctx.model), ctx.model.params()
    rows = []
    for layer in ctx.model.layer_names:
        if layer not in failing or not params.get(layer):
            continue
        before = layer_records(ctx, layer)
        if before["output"].status != FAIL:
            continue  # alone it passes (inherited), or only a gradient fails
        judged = [q for q, r in before.items() if r.status == FAIL]
        for enumerate_ in (C.candidates, C.pairs):
            found = [(c, after) for c in enumerate_(ctx.model.spec, layer)
                     if (after := _try(ctx, layout, layer, c, judged)) is not None]  # fmt: skip
            if found:
                rows += [_row(ctx, layer, c, before, after) for c, after in found]
                break
    return rows


def _try(ctx: Context, layout, layer: str, candidate, judged: list[str]):
    """The records of the ``judged`` quantities with ``candidate`` applied, or None if the
    output still fails: forward only first (cheap), then the backward pass for the
    gradients that failed alone (reported, passing or not: a second mistake may remain)."""
    changed = layout
    for weight, records in candidate.weights:
        changed = changed.with_transforms(layer, weight, layout.rule(layer, weight).transforms
                                          + records)  # fmt: skip
    if candidate.input:
        rule = layout.rule(layer, "input")
        changed = changed.with_transforms(layer, "input", rule.transforms + candidate.input)
        judged = ["output"]  # the shift has no inverse for the input gradient
    with _twin_weights(ctx, changed, layer, [w for w, _ in candidate.weights]):
        after = layer_records(ctx, layer, layout=changed, backward=False)
        if after["output"].status != PASS:
            return None
        if judged != ["output"]:
            after = layer_records(ctx, layer, layout=changed)
    return {q: after[q] for q in judged}


@contextmanager
def _twin_weights(ctx: Context, layout, layer: str, weights: list[str]):
    """The twin's variables of ``layer``'s ``weights`` set through ``layout``, restored
    (bit for bit) on exit."""
    from reference.twin import keras_weight_variables

    variables = keras_weight_variables(ctx.twin)
    params = ctx.model.params()[layer]
    saved = []
    try:
        for weight in weights:
            k_layer, k_weight = layout.keras_key(layer, weight)
            variable = variables[k_layer][k_weight]
            saved.append((variable, np.array(variable.numpy())))
            value = layout.to_keras(layer, weight, params[weight])
            variable.assign(value.astype(saved[-1][1].dtype, copy=False))
        yield
    finally:
        for variable, value in reversed(saved):
            variable.assign(value)


def _row(ctx: Context, layer: str, candidate, before: dict, after: dict) -> dict:
    errors = ", ".join(f"{q} {before[q].rel_error:.3g} -> {r.rel_error:.3g}"
                       for q, r in after.items())  # fmt: skip
    records = "; ".join(
        [f"{w}: {', '.join(map(repr, rs))}" for w, rs in candidate.weights]
        + ([f"input: {', '.join(map(repr, candidate.input))}"] if candidate.input else [])
    )  # fmt: skip
    still = [q for q, r in after.items() if r.status != PASS]
    remaining = (f"; {', '.join(still)} still differ{'s' if len(still) == 1 else ''}: a "
                 "second mistake, in the backward pass" if still else "")  # fmt: skip
    evidence = (f"{candidate.sentence} (alone, your layer matches Keras's layer given "
                f"{records}: {errors}, norm-wise relative{remaining})")  # fmt: skip
    return dict(model=ctx.name, dtype=ctx.dtype, state=ctx.state, layer=layer,
                signature=SIGNATURE, transform=candidate.name, evidence=evidence,
                advice=candidate.advice)  # fmt: skip
