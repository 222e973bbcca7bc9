"""The first divergence of lockstep training: its step, its layer, and which kind it is.

Lockstep (``parity.lockstep``) starts every Keras step from the scratch weights, so the
first step whose update is over budget is where the two implementations part, with
nothing inherited from earlier steps. That step is looked at again
(:func:`diagnose`), at its ``before`` weights and on its batch:

1. Both sides' gradients: scratch's ``model.gradients(x, labels)`` against Keras's
   (``reference.probes.gradients``, kinks decided on scratch's forward pass), every
   weight and every layer input, under the gradient checks' budget
   (``parity.tolerances``, ``gradients``).
2. If a gradient differs, the kind is ``gradient``. Walking back from the loss, the
   first layer whose gradients differ is where the difference enters (``origin``). When
   that layer's own weight gradients agree and only its input gradient differs
   (everything upstream inherits it) and the layer is a Dense whose input-gradient
   difference is ``c * dy @ dK^T`` (its kernel moved along its own gradient before
   ``dx = dy @ K^T`` was taken: the blog's ``Softmax.backprop`` updating first), the kind
   is ``input-gradient-after-update``.
3. If the gradients agree, the update rule differs. With ``d = after - before`` per
   weight, the named rules are predictions of scratch's update from Keras's, each tested
   against the step's own lockstep allowance (``Entry.allowance``): ``update-sign``
   (``d_s = -d_k``), ``learning-rate-twice`` (``d_s = lr * d_k``), ``never-updated``
   (``d_s = 0``), with Adam only ``adam-epsilon-inside-sqrt`` (scratch's own moments
   through ``alpha * m / sqrt(v + eps)``) and with RMSprop only
   ``rmsprop-epsilon-outside-sqrt`` (scratch's own velocity through ``lr g / (sqrt(v) +
   eps)``, ``g`` from Keras's step). Exactly one must fit to be named; otherwise
   ``update-rule`` (or ``update-rounding`` when the update is Keras's to within 1e-3 of
   its size) with the least-squares ratio ``<d_s, d_k> / <d_k, d_k>``. The optimizer's
   slots or the iteration count over budget while the gradients agree: ``optimizer-state``.

Rows (``first_divergence.csv``, ``COLUMNS``; reports/README.md): one per quantity over
budget at the first such step; with ``--diagnose`` a run with none gets one ``none`` row
naming its closest step.
"""

from __future__ import annotations

import numpy as np

from parity import tolerances
from parity.compare import compare
from parity.lockstep_judge import MOVING, nonfinite_sides, quantity_kind
from parity.lockstep_state import ITERATIONS
from reference.optimizers import kind_of

COLUMNS = [
    "model", "dtype", "optimizer", "epoch", "step", "global_step", "example", "label",
    "layer", "quantity", "budget_use", "kind", "origin", "gradient_rel_diff", "update_ratio",
    "evidence", "advice",
]  # fmt: skip
SAME_RULE = 1e-3  # |ratio - 1| below this, with the gradients agreeing: rounding, not a rule

# kind: (what it is, in words; the fix). {origin}, {layer}, {weight}, {optimizer} filled in.
KINDS = {
    "gradient": (
        "the gradient differs",
        "fix the backward pass of `{origin}`: the gradients rows name the quantity; a layer "
        "right at the first step and wrong later keeps state between calls (a gradient "
        "buffer never reset)",
    ),
    "input-gradient-after-update": (
        "the update comes before the input gradient",
        "in `{origin}`, compute the input gradient from the weights before the step, then "
        "update them (the blog: d_L_d_inputs = weights @ d_L_d_t before weights -= ...)",
    ),
    "update-sign": (
        "the update's sign is flipped",
        "step against the gradient, w -= lr * dL/dw; the update adds it (gradient ascent)",
    ),
    "learning-rate-twice": (
        "the learning rate is applied twice",
        "multiply the gradient by the learning rate once (w -= lr * g, g the gradient itself)",
    ),
    "never-updated": (
        "the weight is never updated",
        "update `{layer}/{weight}` too: every weight the loss depends on takes a step",
    ),
    "adam-epsilon-inside-sqrt": (
        "Adam's epsilon is inside the square root",
        "add epsilon outside the root, m_hat / (sqrt(v_hat) + eps), as Keras's Adam",
    ),
    "rmsprop-epsilon-outside-sqrt": (
        "RMSprop's epsilon is outside the square root",
        "divide by sqrt(v + eps), epsilon inside the root, as Keras's RMSprop; "
        "cs231n's rmsprop divides by sqrt(v) + eps",
    ),
    "update-rule": (
        "the update differs while the gradients agree",
        "compare the update of `{layer}/{weight}` with {optimizer}'s rule (keras/src/optimizers)",
    ),
    "update-rounding": (
        "the update is Keras's within rounding beyond the per-step budget",
        "no rule differs: a summation-order difference larger than the budget assumes",
    ),
    "moving-average": (
        "the moving statistics differ after the step while the gradients agree",
        "update `{layer}/{weight}` as Keras's BatchNormalization does: moving = momentum * "
        "moving + (1 - momentum) * batch statistic, with the biased batch variance "
        "(momentum weighs the OLD value)",
    ),
    "optimizer-state": (
        "the optimizer's state differs while the gradients agree",
        "update {optimizer}'s slots as keras/src/optimizers does (Adam: m = beta_1 m + "
        "(1 - beta_1) g, v = beta_2 v + (1 - beta_2) g^2; SGD momentum: m = mu m - lr g; "
        "RMSprop: v = rho v + (1 - rho) g^2), one iteration per step",
    ),
    "not-diagnosed": ("the gradients at that step could not be compared", "see the error"),
    "none": ("no lockstep step is over its budget", "-"),
}


# -- the diagnosis of one step ------------------------------------------------------------


def diagnose(case, model, stepper, optimizer: str, learning_rate: float,
             adam_rule=None) -> list[dict]:  # fmt: skip
    """The rows of ``case`` (a ``parity.lockstep.StepCase``, the first step over budget).

    ``model``: the scratch model (its weights are set to ``case.before`` and restored);
    ``stepper``: the run's ``reference.lockstep_step.LockstepStepper`` (its twin gets
    ``case.before``); ``adam_rule``: Adam's ``(learning_rate, beta_1, beta_2, epsilon)``
    (``parity.lockstep.Judge.adam_rule``) or None. Rows lack ``model``, ``dtype``,
    ``epoch``, ``step``, ``example``, ``label``: :func:`locate` and the caller add them.
    """
    over = [e for e in case.entries if e.use > 1.0]
    try:  # a diagnosis never ends the check: the code under test may raise here
        verdicts = _gradient_verdicts(case, model, stepper)
        origin, how = _origin(model, verdicts, stepper.layout)
    except Exception as error:
        what = f"{type(error).__name__}: {error}"
        return [_row(case, e, optimizer, "not-diagnosed", "", np.nan, np.nan, what) for e in over]
    rows = []
    for entry in over:
        weight = entry.quantity.split(" ")[0]
        grad = verdicts.get((entry.layer, weight))
        rel = grad[0].rel_error if grad is not None else np.nan
        ratio = _ratio(entry) if quantity_kind(entry.quantity) == "weights" else np.nan
        if origin is not None:
            kind, evidence = how
        elif quantity_kind(entry.quantity) == MOVING:  # batch norm's state, no optimizer's
            kind, evidence = "moving-average", _moving_evidence(entry)
        elif entry.quantity == ITERATIONS[1] or quantity_kind(entry.quantity) != "weights":
            kind, evidence = "optimizer-state", _state_evidence(entry)
        else:
            gradient = None if grad is None else grad[1]  # scratch's, at `before`
            kind, evidence = _update_rule(entry, learning_rate, ratio, adam_rule, case,
                                          (optimizer, gradient))  # fmt: skip
        rows.append(_row(case, entry, optimizer, kind, origin or "", rel, ratio, evidence))
    return rows


def _row(case, entry, optimizer, kind, origin, rel, ratio, evidence) -> dict:
    weight = entry.quantity.split(" ")[0]
    what, advice = KINDS[kind]
    advice = advice.format(
        origin=origin,
        layer=entry.layer,
        weight=weight,
        optimizer=kind_of(optimizer).keras_class,
    )
    return dict(optimizer=optimizer, global_step=case.global_step, layer=entry.layer,
                quantity=entry.quantity, budget_use=float(entry.use), kind=kind, origin=origin,
                gradient_rel_diff=float(rel), update_ratio=float(ratio),
                evidence=f"{what}: {evidence}", advice=advice)  # fmt: skip


def _gradient_verdicts(case, model, stepper) -> dict:
    """``{(layer, quantity): (Comparison, scratch's, Keras's)}``: the gradients at
    ``case.before`` on ``case.x`` (scratch layout; the keys both sides have)."""
    from parity import modes
    from reference import probes

    dtype = np.dtype(model.dtype).name
    keep = model.snapshot()  # weights and moving statistics
    if modes.modal(model):  # training mode on both sides, the step's dropout masks
        modes.set_training(model, stepper.keras_model, True)
        if case.masks is not None:
            modes.inject(model, case.masks, stepper.keras_model)
    model.restore(case.before.weights)
    try:
        _, ours = model.gradients(case.x, case.labels)
        model.restore(case.before.weights)
        anchors = model.forward(case.x)  # the kinks decided on scratch's side (probes)
    finally:
        model.restore(keep)
    stepper.forward(case.before.weights, case.x)  # assigns `before` to the twin
    _, theirs = probes.gradients(stepper.keras_model, model, case.x, case.labels, anchors)
    tol = tolerances.get("gradients", dtype, model.spec)
    out = {}
    for layer, quantities in theirs.items():
        for q, b in quantities.items():
            a = ours.get(layer, {}).get(q)
            if a is not None:
                c = compare(a, b, layer=layer, quantity=q, atol=tol.atol, rtol=tol.rtol)
                out[(layer, q)] = (c, np.asarray(a, np.float64), np.asarray(b, np.float64))
    return out


def _origin(model, verdicts: dict, layout) -> tuple[str | None, tuple]:
    """Walking back from the loss, the first layer whose gradients differ, and
    ``(kind, evidence)`` for it; ``(None, ())`` when every gradient agrees."""
    params = model.params()
    names = list(model.layer_names)
    for position in range(len(names) - 1, -1, -1):
        layer = names[position]
        mine = {q: v for (name, q), v in verdicts.items() if name == layer}
        bad = [q for q, (c, _, _) in mine.items() if not c.passed]
        if not bad:
            continue
        listing = ", ".join(f"{layer}/{q} {_how_far(*mine[q])}" for q in bad)
        text = f"walking back from the loss, the gradients first differ at {listing} (norm-wise)"
        weights = [q for q in params.get(layer, {}) if q in mine]
        if bad != ["input"] or not weights:
            return layer, ("gradient", text)
        text += (
            f", while {layer}'s own gradients ({', '.join(weights)}) agree: every "
            f"gradient upstream of {layer} inherits its input gradient"
        )
        c = _moved_kernel(model, layer, names, verdicts, layout)
        if c is None:
            return layer, ("gradient", text)
        return layer, ("input-gradient-after-update", text + (
            f"; the difference is exactly dy @ ({c:.4g} x dK)^T: {layer}'s input gradient "
            f"was taken from its kernel already moved by {c:.4g} x its gradient, a step of "
            f"learning rate {-c:.4g}"))  # fmt: skip
    return None, ()


def _how_far(check, mine, theirs) -> str:
    """``0.42`` (norm-wise), or ``non-finite (scratch)`` when a side is not finite."""
    sides = nonfinite_sides(mine, theirs)
    return f"non-finite ({sides})" if sides else f"{check.rel_error:.3g}"


def _moved_kernel(model, layer: str, names: list, verdicts: dict, layout) -> float | None:
    """``c`` when the scratch input gradient of Dense ``layer`` is Keras's plus
    ``c * dy @ dK^T`` within the gradient budget (``dy`` the gradient of its output, ``dK``
    of its kernel, Keras layout ``(in, out)``: ``dx = dy @ K^T``); else None."""
    spec = getattr(model, "spec", None)
    following = names.index(layer) + 1
    if spec is None or spec.layer(layer).kind != "Dense" or following == len(names):
        return None
    nxt = names[following]
    if (layer, "kernel") not in verdicts or (nxt, "input") not in verdicts:
        return None
    check, mine, theirs = verdicts[(layer, "input")]
    mine, theirs = (np.asarray(layout.to_keras(layer, "input", a), np.float64)
                    for a in (mine, theirs))  # fmt: skip
    kernel = layout.to_keras(layer, "kernel", verdicts[(layer, "kernel")][2])
    upstream = layout.to_keras(nxt, "input", verdicts[(nxt, "input")][2])
    n = len(theirs)
    basis = np.reshape(upstream, (n, -1)) @ np.asarray(kernel, np.float64).T
    diff = (mine - theirs).reshape(n, -1)
    norm = float(np.sum(basis * basis))
    if norm == 0.0:
        return None
    c = float(np.sum(diff * basis) / norm)
    predicted = theirs.reshape(n, -1) + c * basis  # scratch's input gradient, if so
    residual = float(np.max(np.abs(diff - c * basis), initial=0.0))
    # the gradient budget relative to the value predicted: its rounding scales with it
    # (zhou float32: the moved kernel's input gradient is 174x Keras's)
    budget = check.atol + check.rtol * float(np.max(np.abs(predicted), initial=0.0))
    return c if residual <= budget and c != 0.0 else None


# -- the update rule, when the gradients agree ---------------------------------------------


def _updates(entry) -> tuple[np.ndarray, np.ndarray]:
    before = np.asarray(entry.before, np.float64)
    return (np.asarray(entry.mine, np.float64) - before,
            np.asarray(entry.theirs, np.float64) - before)  # fmt: skip


def _ratio(entry) -> float:
    """Least squares ``c`` in ``d_scratch = c * d_keras`` (NaN when Keras did not move)."""
    mine, theirs = _updates(entry)
    norm = float(np.sum(theirs * theirs))
    return float(np.sum(mine * theirs) / norm) if norm > 0 else float("nan")


def _update_rule(entry, learning_rate, ratio, adam_rule, case,
                 step=("sgd", None)) -> tuple[str, str]:  # fmt: skip
    """``step``: ``(optimizer name, scratch's gradient of the weight at before or None)``."""
    mine, theirs = _updates(entry)
    candidates = {"update-sign": -theirs, "learning-rate-twice": learning_rate * theirs,
                  "never-updated": np.zeros_like(theirs)}  # fmt: skip
    if adam_rule is not None:
        candidates["adam-epsilon-inside-sqrt"] = _adam_inside_sqrt(entry, case, adam_rule)
    optimizer, gradient = step
    if optimizer == "rmsprop" and gradient is not None:
        epsilon = kind_of(optimizer).options["epsilon"]
        candidates["rmsprop-epsilon-outside-sqrt"] = _rmsprop_outside_sqrt(
            entry, case, gradient, learning_rate, epsilon)  # fmt: skip
    slack = 0.0 if entry.explained is None else entry.explained
    fits = {name: float(np.max(np.maximum(np.abs(mine - p) - slack, 0.0), initial=0.0))
            for name, p in candidates.items() if p is not None}  # fmt: skip
    named = [name for name, residual in fits.items() if residual <= entry.allowance]
    size = float(np.max(np.abs(theirs), initial=0.0))
    numbers = (f"{entry.layer}/{entry.quantity}'s gradient agrees with Keras's; scratch's "
               f"update is {ratio:.4g} x Keras's (least squares; max|d_keras| {size:.3e}, "
               f"step allowance {entry.allowance:.2e})")  # fmt: skip
    if len(named) == 1:
        kind = named[0]
        return kind, numbers + f"; {_RULE_WORDS[kind]} fits within the allowance ({fits[kind]:.2e})"
    off = float(np.max(np.abs(mine - theirs), initial=0.0)) / size if size > 0 else np.inf
    if abs(ratio - 1.0) < SAME_RULE and off < SAME_RULE:
        return "update-rounding", numbers + f"; it differs by {off:.1e} of its size"
    also = f"; rules that fit equally: {', '.join(named)}" if named else ""
    return "update-rule", numbers + also


_RULE_WORDS = {
    "update-sign": "d_scratch = -d_keras",
    "learning-rate-twice": "d_scratch = lr * d_keras",
    "never-updated": "d_scratch = 0 where d_keras is not",
    "adam-epsilon-inside-sqrt": "alpha * m / sqrt(v + eps) from scratch's own moments",
    "rmsprop-epsilon-outside-sqrt": "lr * g / (sqrt(v) + eps) from scratch's own velocity",
}


def _adam_inside_sqrt(entry, case, adam_rule) -> np.ndarray | None:
    """Scratch's update if its Adam divided by ``sqrt(v + eps)``, from its own moments
    after the step (``scratch.optim.Adam``: ``alpha = lr sqrt(1 - b2^t) / (1 - b1^t)``,
    the powers of float32-rounded betas as Keras takes them)."""
    from scratch.optim import keras_beta_power

    lr, beta_1, beta_2, epsilon = adam_rule
    state = case.after.state
    m = state.slots.get("momentum", {}).get(entry.layer, {}).get(entry.quantity)
    v = state.slots.get("velocity", {}).get(entry.layer, {}).get(entry.quantity)
    if m is None or v is None:
        return None
    t = int(state.iterations)
    alpha = lr * np.sqrt(1 - keras_beta_power(beta_2, t)) / (1 - keras_beta_power(beta_1, t))
    m, v = np.asarray(m, np.float64), np.asarray(v, np.float64)
    return -(m * alpha) / np.sqrt(v + epsilon)


def _moving_evidence(entry) -> str:
    mine, theirs = _updates(entry)
    return (f"{entry.layer}/{entry.quantity} after the step: scratch moved it by "
            f"{float(np.max(np.abs(mine), initial=0.0)):.3e}, keras by "
            f"{float(np.max(np.abs(theirs), initial=0.0)):.3e} (max|scratch - keras| "
            f"{float(np.max(np.abs(mine - theirs), initial=0.0)):.3e}, step allowance "
            f"{entry.allowance:.2e}); the gradients agree")  # fmt: skip


def _rmsprop_outside_sqrt(entry, case, gradient, learning_rate, epsilon) -> np.ndarray | None:
    """Scratch's update if its RMSprop divided by ``sqrt(v) + eps`` (cs231n's form): its
    own gradient at ``before`` and its own velocity after the step, ``-lr g / (sqrt(v) +
    eps)`` (Keras: ``/ sqrt(v + eps)``, keras/src/optimizers/rmsprop.py)."""
    tree = case.after.state.slots.get("velocity") or {}
    v = tree.get(entry.layer, {}).get(entry.quantity)
    if v is None:
        return None
    return -(learning_rate * gradient) / (np.sqrt(np.asarray(v, np.float64)) + epsilon)


def _state_evidence(entry) -> str:
    if entry.quantity == ITERATIONS[1]:
        return f"iterations: scratch {int(entry.mine)}, keras {int(entry.theirs)} after the step"
    mine, theirs = _updates(entry)
    return (f"{entry.layer}/{entry.quantity} after the step: max|scratch - keras| "
            f"{float(np.max(np.abs(mine - theirs), initial=0.0)):.3e} while the weight's "
            f"gradient agrees (step allowance {entry.allowance:.2e})")  # fmt: skip


# -- rows for a run, in place -------------------------------------------------------------


def none_row(judge, optimizer: str, failing: str = "") -> dict:
    """The ``none`` row of a run with no step over budget: its closest step and weight;
    ``failing`` names what failed instead (a loss, a free-running path), if anything."""
    tracks = [(t.worst[0], t.worst[1]) for t in judge.tracks.values() if t.worst is not None]
    entry, where = max(tracks, key=lambda pair: pair[0].use)
    what, advice = KINDS["none"]
    return dict(optimizer=optimizer, global_step=int(where.rsplit(" ", 1)[-1].rstrip(")")),
                layer=entry.layer, quantity=entry.quantity, budget_use=float(entry.use),
                kind="none", origin="", gradient_rel_diff=np.nan, update_ratio=np.nan,
                evidence=f"{what}: the closest is {entry.layer}/{entry.quantity} at {where}, "
                         f"{entry.use:.2g} of its budget{failing and '; what fails: ' + failing}",
                advice=advice)  # fmt: skip


def annotate(comparisons: list[tuple], frame) -> list[tuple]:
    """``(path, state, Comparison)`` records with each lockstep record of a quantity in
    ``frame`` (this module's rows) told its first divergence, ahead of its message (so
    summary.csv and a failing pytest say why, not only where)."""
    import dataclasses

    said = {(r["layer"], r["quantity"]): r for r in frame.to_dict("records") if r["kind"] != "none"}
    out = []
    for path, state, c in comparisons:
        row = said.get((c.layer, c.quantity.removesuffix(" update")))
        if path == "lockstep" and row is not None:
            note = (f"first divergence at global step {row['global_step']}, {row['kind']}: "
                    f"{row['evidence']}; fix: {row['advice']}")  # fmt: skip
            c = dataclasses.replace(c, message=f"{note}. {c.message}")
        out.append((path, state, c))
    return out


def locate(rows: list[dict], training, model: str, dtype: str) -> list[dict]:
    """``rows`` with model, dtype and where the step is (epoch, step, example, label),
    read from the lockstep rows of the run's ``training`` table."""
    steps = training[training["keras_path"] == "lockstep"].set_index("global_step")
    out = []
    for row in rows:
        at = steps.loc[row["global_step"]]
        out.append({**row, "model": model, "dtype": dtype, "epoch": int(at["epoch"]),
                    "step": int(at["step"]), "example": int(at["example"]),
                    "label": int(at["label"])})  # fmt: skip
    return out
