"""Signatures of well-known backprop mistakes, named in words when their pattern is seen.

A signature is not a verdict (the checks already FAIL these bugs); it says why and what
to change. Each reads the scratch side only, at the weights of the current state:

- ``accumulating-gradients``: two calls of ``gradients`` on the same batch disagree,
  and the second minus the first is Keras's gradient: each call ADDS the new gradient to
  a buffer that is never reset.
- ``pool-mass-not-conserved``: in a max pool with non-overlapping windows, the input
  gradient of a window must sum to the window's upstream gradient (one maximum gets
  it). Sums of k times the upstream in windows with k tied maxima: the gradient is
  copied to every tied maximum (the blog's ``MaxPool2.backprop``).
- ``ties-to-last-maximum``: mass conserved, but in tied windows the gradient sits on the
  LAST maximum in row-major order, where TensorFlow routes it to the first.
- ``gradient-sign-flipped``: a layer's weight gradients are Keras's with the opposite
  sign (within the gradient budget): for an API whose gradients are read from its update
  (the blog's ``backprop(d, learn_rate)``), the update is written ``+=``, gradient ascent.
- ``softmax-overflow`` (the ``large-logits`` state only, ``parity.checks.large_logits``:
  every image's largest logit >= 800 in float64, >= 100 in float32): the scratch logits
  are finite but its probabilities, its loss or its gradients are not (or its code raised
  an overflow), while Keras's are finite: ``exp(z)`` taken without subtracting the row
  maximum, which overflows past 709.78 (float64) and 88.72 (float32). At that state no
  other signature is read (its weights are ``random``'s but one bias).

Rows: ``model, dtype, state, layer, signature, evidence, advice`` (diagnosis.csv).
"""

from __future__ import annotations

import numpy as np

from parity import tolerances
from parity.checks import large_logits
from parity.checks.common import Context
from parity.checks.ties import pools, windows

MASS_RATIO_NOISE = 1e-6  # a window's |sum(dx) / dy - 1| above this is not rounding (float32 ulps)


def signature_rows(ctx: Context) -> list[dict]:
    """Every signature seen in ``ctx``'s model at its current weights."""
    if ctx.state == large_logits.STATE:
        found = _softmax_overflow(ctx)
    else:
        found = _accumulation(ctx) + _pool_routing(ctx) + _sign_flipped(ctx)
    return [dict(model=ctx.name, dtype=ctx.dtype, state=ctx.state, **row) for row in found]


def _softmax_overflow(ctx: Context) -> list[dict]:
    logits = large_logits.logits_layer(ctx.model)
    softmax = ctx.model.layer_names[-1]
    peak = float(np.max(ctx.outputs("keras")[logits]))
    try:
        ours = ctx.outputs("scratch")
        loss, grads = ctx.grads("scratch")
    except Exception as exc:  # the checks' rows already carry it as an ERROR
        if not large_logits.overflowed(exc):
            return []
        seen = f"your code raised {type(exc).__name__}: {exc}"
    else:
        if not np.isfinite(ours[logits]).all():
            return []  # non-finite before the softmax: not its exponentials
        bad = ~np.isfinite(ours[softmax]).reshape(len(ours[softmax]), -1).all(axis=1)
        keras_loss, keras_grads = ctx.grads("keras")
        broken = [key for key in _non_finite(grads) if key not in _non_finite(keras_grads)]
        if bad.any():
            seen = (f"{int(bad.sum())} of {bad.size} images' probabilities are inf or nan "
                    "(Keras's are finite)")  # fmt: skip
        elif not np.isfinite(loss) and np.isfinite(keras_loss):
            seen = f"the loss is {float(loss)} (Keras's {float(keras_loss):.3g})"
        elif broken:
            seen = (f"the gradients of {', '.join(broken)} are inf or nan: the "
                    "backward pass takes exp of the logits again, unshifted")  # fmt: skip
        else:
            return []
    return [dict(layer=softmax, signature="softmax-overflow",
                 evidence=f"the exponentials overflow at logits of {peak:.0f}: {seen}",
                 advice="subtract the row maximum before exp (softmax is shift-invariant: "
                        "exp(z - max z) / sum(exp(z - max z)) is the same softmax with every "
                        "exponent <= 0); for the loss, log(sum(exp(z))) = max z + "
                        "log(sum(exp(z - max z)))")]  # fmt: skip


def _non_finite(grads) -> list[str]:
    """``layer/quantity`` of every gradient holding an inf or a nan."""
    return [f"{layer}/{quantity}" for layer, quantities in grads.items()
            for quantity, array in quantities.items()
            if array is not None and not np.isfinite(array).all()]  # fmt: skip


def _accumulation(ctx: Context) -> list[dict]:
    model = ctx.model
    _, first = model.gradients(ctx.x(), ctx.labels)
    first = {k: {q: np.array(a) for q, a in v.items()} for k, v in first.items()}
    _, second = model.gradients(ctx.x(), ctx.labels)
    _, keras = ctx.grads("keras")
    tol = tolerances.get("gradients", ctx.dtype, ctx.model.spec)
    rows = []
    for layer, quantities in first.items():
        for quantity, a in quantities.items():
            b, k = second.get(layer, {}).get(quantity), keras.get(layer, {}).get(quantity)
            if b is None or k is None or _close(b, a, tol.rtol, np.abs(a).max()):
                continue
            # rounding of a running sum scales with the sum, not with one gradient
            if _close(b - a, k, tol.rtol, np.abs(b).max()):
                rows.append(dict(
                    layer=layer, signature="accumulating-gradients",
                    evidence=f"{quantity}: a second call on the same batch returned the first "
                             f"plus Keras's gradient (max|first| = {np.abs(a).max():.3g}, "
                             f"max|gradient| = {np.abs(k).max():.3g})",
                    advice="each call adds to a gradient buffer that is never reset: zero "
                           "it (or assign, not +=) at the start of backward"))  # fmt: skip
    return rows


def _sign_flipped(ctx: Context) -> list[dict]:
    """One row per layer whose every weight gradient is Keras's negated (a zero gradient
    says nothing and is skipped)."""
    (_, ours), (_, keras) = ctx.grads("scratch"), ctx.grads("keras")
    rtol = tolerances.get("gradients", ctx.dtype, ctx.model.spec).rtol
    rows = []
    for layer, quantities in ours.items():
        flipped, other = [], False
        for quantity, a in quantities.items():
            k = keras.get(layer, {}).get(quantity)
            if quantity == "input" or a is None or k is None or not np.abs(k).max() > 0:
                continue
            scale = float(np.abs(k).max())
            if _close(-np.asarray(a, np.float64), k, rtol, scale) and not _close(a, k, rtol, scale):
                flipped.append(quantity)
            else:
                other = True
        if flipped and not other:
            rows.append(dict(
                layer=layer, signature="gradient-sign-flipped",
                evidence=f"{', '.join(flipped)}: your gradient is Keras's with the opposite "
                         "sign (max|yours + Keras's| within the gradient budget)",
                advice="where the gradient is read from your update (the blog API's "
                       "backprop(d_L_d_out, learn_rate) updates in place), the update adds "
                       "it: write w -= learn_rate * dL/dw, not += (gradient ascent); "
                       "otherwise, the sign of your derivation"))  # fmt: skip
    return rows


def _close(a, b, rtol: float, scale: float) -> bool:
    return bool(np.abs(np.asarray(a, np.float64) - b).max() <= rtol * max(scale, 1e-300))


def _pool_routing(ctx: Context) -> list[dict]:
    from reference.layout import layout_for

    layout = layout_for(ctx.model)
    outputs, (_, grads) = ctx.outputs("scratch"), ctx.grads("scratch")
    rows = []
    for pool in pools(ctx.model, ctx.twin):
        dx, dy = grads.get(pool.layer, {}).get("input"), grads.get(pool.following, {}).get("input")
        if dx is None or dy is None or pool.size != pool.strides:
            continue  # overlapping windows share pixels: no per-window mass to read
        x = ctx.x() if pool.previous is None else outputs[pool.previous]
        x, dx = (layout.to_keras(pool.layer, "input", a) for a in (x, dx))
        dy = layout.to_keras(pool.following, "input", dy)
        rows += _window_signatures(pool.layer, windows(x, pool.size, pool.strides),
                                   windows(dx, pool.size, pool.strides), dy)  # fmt: skip
    return rows


def _window_signatures(layer: str, x_win, dx_win, dy) -> list[dict]:
    """``x_win``/``dx_win`` ``(N, OH, OW, C, p*q)``, ``dy`` ``(N, OH, OW, C)``; windows with
    a zero upstream gradient say nothing and are skipped."""
    live = dy != 0
    ties = (x_win == x_win.max(axis=-1, keepdims=True)).sum(axis=-1)
    ratio = np.where(live, dx_win.sum(axis=-1) / np.where(live, dy, 1), 1.0)
    off = live & (np.abs(ratio - 1) > MASS_RATIO_NOISE)
    if off.any():
        copied = off & (np.abs(ratio - ties) <= MASS_RATIO_NOISE * ties)
        share = copied.sum() / off.sum()
        evidence = (f"in {int(off.sum())} of {int(live.sum())} windows the input gradient sums "
                    f"to {np.median(ratio[off]):.3g}x the upstream (median); {share:.0%} of "
                    f"them sum to k x the upstream, k their number of tied maxima")  # fmt: skip
        advice = ("the gradient is copied to every tied maximum (the blog's rule): route it "
                  "to one maximum, the first in row-major order (TensorFlow's rule)"
                  if share > 0.9 else "the max pool's backward does not conserve gradient mass: "
                  "each window's upstream gradient must go to exactly one input")  # fmt: skip
        return [dict(layer=layer, signature="pool-mass-not-conserved", evidence=evidence,
                     advice=advice)]  # fmt: skip
    tied = live & (ties > 1)
    if not tied.any():
        return []
    is_max = x_win == x_win.max(axis=-1, keepdims=True)
    cells = np.arange(x_win.shape[-1])
    first = np.where(is_max, cells, cells.size).min(axis=-1)
    last = np.where(is_max, cells, -1).max(axis=-1)
    routed = np.abs(dx_win).argmax(axis=-1)
    on_last = tied & (routed == last) & (routed != first)
    if on_last.sum() < 0.9 * tied.sum():
        return []
    return [dict(layer=layer, signature="ties-to-last-maximum",
                 evidence=f"{int(on_last.sum())} of {int(tied.sum())} tied windows route their "
                          "gradient to the last maximum in row-major order",
                 advice="route a tied window's gradient to its FIRST maximum in row-major "
                        "order (TensorFlow's rule; np.argmax returns the first)")]  # fmt: skip
