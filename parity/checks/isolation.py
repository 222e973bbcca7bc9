"""Isolation: each layer judged alone, its Keras counterpart fed the scratch side's input.

End-to-end rows (forward, gradients) show where numbers differ, and a wrong layer makes
every row downstream of it differ too. Here each scratch layer's Keras counterpart
(``reference.probes.isolated``) gets the scratch side's OWN input to that layer and its
own upstream gradient (the next layer's input gradient; for the last layer, Keras's
loss on the labels), so the inputs are bit-identical and a FAIL is made by that layer:

- ``output``: the layer's forward output (forward budget);
- ``input`` and each weight: the layer's backward pass, d/d input and d/d weight for the
  same upstream gradient (gradients budget).

A layer that passes here but fails end-to-end inherits its difference from upstream.
Max-pool routing is judged exactly here too (no rounding can flip a window).
"""

from __future__ import annotations

from parity import tolerances
from parity.checks.common import Context
from parity.compare import compare, missing, not_provided

CHECK = "isolation"


def expected(model) -> list[tuple[str, str]]:
    """Per layer: ``output``, then ``input`` and its weights (kernel, bias) gradients."""
    params = model.params()
    names = model.layer_names
    return [(layer, q) for layer in names for q in ("output", "input", *params.get(layer, {}))]


def isolation_rows(ctx: Context) -> list[dict]:
    rows = []
    for layer in ctx.model.layer_names:
        rows += [ctx.row(CHECK, record) for record in layer_records(ctx, layer).values()]
    return rows


def layer_records(ctx: Context, layer: str, *, layout=None, backward: bool = True) -> dict:
    """``{quantity: Comparison}`` of one scratch layer judged alone: ``output``, then (with
    ``backward``) ``input`` and each weight. ``layout`` (a ``reference.layout.Layout``,
    default the model's) converts between the two sides; the layout diagnosis passes a
    candidate one, with the twin's weights set through it."""
    from reference import probes

    names = list(ctx.model.layer_names)
    i = names.index(layer)
    weights = tuple(ctx.model.params().get(layer, {}))
    outputs = ctx.outputs("scratch")
    _, grads = ctx.grads("scratch")
    absent = dict(ctx.model.not_provided())  # known once the scratch gradients were taken
    last = i == len(names) - 1
    x = ctx.x() if i == 0 else outputs[names[i - 1]]
    upstream = None if last else grads.get(names[i + 1], {}).get("input")
    if not last and upstream is None:  # nothing to feed the backward pass
        reason = f"no upstream gradient: `{names[i + 1]}` returned no input gradient"
        absent.update({(layer, q): reason for q in ("input", *weights)})
    labels = ctx.labels if last else None
    if not backward:
        upstream = labels = None
    output, theirs = probes.isolated(ctx.twin, ctx.model, layer, x, upstream, labels,
                                     layout=layout)  # fmt: skip
    theirs = {"output": output, **theirs}
    ours = {"output": outputs[layer], **grads.get(layer, {})}
    quantities = ("output", "input", *weights) if backward else ("output",)
    return {q: _record(ctx, layer, q, ours.get(q), theirs.get(q), absent.get((layer, q)))
            for q in quantities}  # fmt: skip


def _record(ctx: Context, layer: str, quantity: str, ours, theirs, reason):
    budget = "forward" if quantity == "output" else "gradients"
    tol = tolerances.get(budget, ctx.dtype, ctx.model.spec)
    limits = dict(atol=tol.atol, rtol=tol.rtol)
    if reason is not None and (ours is None or theirs is None):
        return not_provided(layer, quantity, reason, **limits)
    if ours is None or theirs is None:
        return missing(layer, quantity, "scratch" if ours is None else "keras", **limits)
    return compare(ours, theirs, layer=layer, quantity=quantity, expected_dtype=ctx.dtype,
                   **limits)  # fmt: skip
