"""The ``large-logits`` weight state, where a softmax without max subtraction overflows.

Construction, from the ``random`` state (O(1) weights, :func:`parity.checks.common.randomize`):
the twin's logits ``z`` ``(N, 10)`` at those weights are read (Keras's, not the code under
test's), then every bias of the logits layer (the Dense just before the final Softmax) is
raised by one constant::

    c = ceil(OVERFLOW_LOGIT[dtype] - min_n max_k z[n, k])

so that every image's largest logit is at least 800 in float64 and 100 in float32, and each
image is labelled with its argmax class.

Why those thresholds: ``exp(x)`` overflows to inf above ln(largest finite number), ln(1.798e308)
= 709.78 in float64 and ln(3.403e38) = 88.72 in float32 (IEEE 754 binary64, binary32; numpy
``np.finfo(dtype).max``). An unshifted ``exp(z) / sum(exp(z))`` then gives inf / inf = nan,
and an unshifted ``log(sum(exp(z)))`` gives inf. 800 and 100 clear those limits by e^90 and
e^11 while keeping every logit in one binade, [512, 1024) and [64, 128), so the rounding
the logits carry is one ulp there: 1.1e-13 and 7.6e-6.

Why a shift and not a scale: softmax is shift-invariant, so correct code gives the
``random`` state's probabilities, up to the one rounding of the bias add on each side, and
with argmax labels the loss stays finite and O(1) (at most ln 10). Scaling the layer's
kernel and bias instead multiplies the logits' summation rounding by the scale (about 270
from O(3) logits in float64), and an image whose two largest logits nearly tie moves by
p(1 - p) times that: measured 8.9e-14 in float64 (zhou, seeds 0-4) and 1.14e-5 in float32
(chw), against 2.0e-14 and 1.2e-6 for the shift over 7 models x seeds 0-19 (absolute, in
the probabilities). The shift's probabilities are ``random``'s, flat at O(1) weights (the
batch's largest is about 0.2), so even its rounding is 86% (float64) and 65% (float32) of
the forward rtol relative to them; hence the state's own budget ``forward-large-logits``
(``parity.tolerances``): the forward rtol plus an atol of 2.6 ulps of the logits.

What runs here: every layer's output (``forward``) on that budget, and the gradients
check (the loss and every gradient) on its usual budget: dL/dz = (p - onehot) / N carries the
probabilities' rounding divided by N, 2.7e-14 of the gradients' rtol 1e-13 at worst in
float64 (chw conv2d/input) and 1.0e-5 of 2e-5 in float32 (lenet5's conv2d/bias, whose sum
cancels as at ``random``), 7 models x seeds 0-19. The gradients catch a backward pass that
takes ``exp`` of the logits again, unshifted (the blog's ``Softmax.backprop`` does), when the
forward pass is shifted. Not isolation, ties or derivations: the weights are ``random``'s
but one bias, and those checks run there. The signature ``softmax-overflow``
(``parity.diagnosis.signatures``) names what a non-finite value here means. NumPy's
overflow warnings are silenced while the state's checks run (:func:`quiet`): the state
provokes overflow on purpose and reports it as a FAIL.
"""

from __future__ import annotations

import math

import numpy as np

from parity.checks import common, forward, gradients
from parity.checks.common import Context

STATE = common.LARGE_LOGITS
# Every image's largest logit is at least this (module docstring): exp overflows past
# 709.78 (float64) and 88.72 (float32).
OVERFLOW_LOGIT = {"float64": 800.0, "float32": 100.0}
BUDGET = "forward-large-logits"  # parity.tolerances: the forward rows of this state


def logits_layer(model) -> str:
    """The name of the layer whose output is the logits: the one before the final Softmax.

    Raises ValueError when that layer is not a Dense with a bias (the construction raises
    that bias).
    """
    layers = [layer for layer in model.spec.layers if not layer.folded]
    last = layers[-2] if len(layers) > 1 else None
    if last is None or last.kind != "Dense" or "bias" not in model.params().get(last.name, {}):
        raise ValueError(
            f"Network `{model.spec.name}`: the large-logits state raises the bias of the Dense "
            "layer before the final Softmax. Received "
            f"{'no such layer' if last is None else last.label + ' without a bias'}."
        )
    return last.name


def shift_bias(model, logits: np.ndarray) -> np.ndarray:
    """Raise the logits layer's bias so every image's largest logit is at least
    ``OVERFLOW_LOGIT[dtype]``; returns each image's argmax class ``(N,)`` int64.

    ``logits`` ``(N, K)``: the logits at the model's current weights (the twin's, in
    ``parity run``). Every class gets the same shift ``c`` (module docstring), an integer,
    so the probabilities do not change.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or not np.isfinite(z).all():
        raise ValueError(
            "Invalid value for argument `logits`. Expected a finite (N, classes) array. "
            f"Received shape {z.shape} with {int(np.size(z) - np.isfinite(z).sum())} non-finite."
        )
    bias = model.params()[logits_layer(model)]["bias"]
    shift = math.ceil(OVERFLOW_LOGIT[np.dtype(bias.dtype).name] - z.max(axis=1).min())
    bias += bias.dtype.type(max(shift, 0))
    return z.argmax(axis=1).astype(np.int64)


def set_weights(ctx: Context, keras_model, seed: int) -> None:
    """The state on ``ctx.model``: ``random``'s weights, the bias shifted from the twin's
    logits (``keras_model`` receives ``random``'s weights first); ``ctx.labels`` becomes
    each image's argmax class."""
    from reference import probes
    from reference.twin import copy_into_keras

    common.randomize(ctx.model, seed)
    copy_into_keras(keras_model, ctx.model)
    logits = probes.forward(keras_model, ctx.model, ctx.x())[logits_layer(ctx.model)]
    ctx.labels = shift_bias(ctx.model, logits)


def quiet():
    """NumPy's overflow, invalid and divide warnings off: the state provokes them."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def forward_rows(ctx: Context) -> list[dict]:
    """The forward check on the state's budget."""
    with quiet():
        return forward.forward_rows(ctx, budget=BUDGET)


def gradient_rows(ctx: Context) -> list[dict]:
    """The gradients check (the loss, every gradient) on its usual budget."""
    with quiet():
        return gradients.gradient_rows(ctx)


def overflowed(exc: BaseException) -> bool:
    """``exc`` says a floating-point overflow: ``math.exp``'s OverflowError, NumPy's
    FloatingPointError (``np.seterr(over="raise")``) or its RuntimeWarning made an error."""
    if isinstance(exc, OverflowError):
        return True
    return isinstance(exc, (FloatingPointError, RuntimeWarning)) and "overflow" in str(exc)
