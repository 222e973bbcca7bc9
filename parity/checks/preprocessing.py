"""Preprocessing check: a factory's own ``preprocess`` against its description's reference.

A factory (``parity check PATH:FUNCTION``, ``scratch.user_factory``) may supply the user's
preprocessing, raw ``(N, H, W)`` uint8 images -> model inputs. It is judged here, once per
model and dtype (the factory is called in each dtype's process, its ``preprocess`` must
return that dtype), on the run's raw MNIST check batch, against the description's
documented reference ``image / divisor + offset`` (``spec.Preprocess``, in the model's
native layout and dtype: ``model.preprocess``), within the dtype's budget
(``parity.tolerances``: PREPROCESSING_FLOAT64, PREPROCESSING_FLOAT32). One row,
``preprocessing/input`` (the network's input as preprocessing makes it). Every other
check feeds the reference to both sides, so a preprocessing fault is reported here and
nowhere else. A factory that supplies no ``preprocess`` gets the row NOT_PROVIDED, saying
that the documented preprocessing is assumed.

A FAIL gets a plain-words hint when the values show one of two well-known mistakes:

- centring done in uint8 before converting (``images - 128``): the subtraction wraps
  around, so the background (pixel 0) comes out in the top half of the range where the
  reference is at its bottom;
- images left in [0, 255]: the values span ``divisor`` times the reference's range.
"""

from __future__ import annotations

import numpy as np

from parity import tolerances
from parity.checks.common import Context
from parity.compare import FAIL, compare, not_provided

CHECK = "preprocessing"
LAYER, QUANTITY = "preprocessing", "input"
STATE = "-"  # no weights are involved
UNSCALED_RATIO = 10.0  # range ratio above which the images were not divided (255 when so)


def expected(model) -> list[tuple[str, str]]:
    """One key when the model is a factory's (it has ``user_preprocess``, None when the
    factory supplied none), else none: the blog and cs231n APIs' preprocessing is the
    seed's, not the user's code."""
    return [(LAYER, QUANTITY)] if hasattr(model, "user_preprocess") else []


def preprocessing_rows(ctx: Context) -> list[dict]:
    """The row of :func:`expected`, in ``ctx.dtype``: NOT_PROVIDED when the factory gave
    no ``preprocess``, else the user's against the reference."""
    if not hasattr(ctx.model, "user_preprocess"):
        return []
    tol = tolerances.get(CHECK, ctx.dtype)
    user = ctx.model.user_preprocess
    if user is None:
        record = not_provided(LAYER, QUANTITY, assumed(ctx.model.spec.preprocess),
                              atol=tol.atol, rtol=tol.rtol, actual_side="user",
                              desired_side="reference")  # fmt: skip
        return [ctx.row(CHECK, record)]
    raw = np.asarray(ctx.images)
    reference = ctx.model.preprocess(raw)
    ours = np.asarray(user(raw.copy()))  # a copy: the check batch stays raw
    record = compare(ours, reference, layer=LAYER, quantity=QUANTITY, atol=tol.atol,
                     rtol=tol.rtol, actual_side="user", desired_side="reference",
                     expected_dtype=ctx.dtype)  # fmt: skip
    if record.status == FAIL and record.stage == "values":
        hint = diagnose(raw, ours, reference)
        if hint:
            record = record.with_status(FAIL, f"{record.message} {hint}")
    return [ctx.row(CHECK, record)]


def assumed(scaling) -> str:
    """The NOT_PROVIDED reason: the documented preprocessing (``spec.Preprocess``) is
    assumed, and how to have the user's own judged."""
    sign = "+" if scaling.offset >= 0 else "-"
    offset = f" {sign} {abs(scaling.offset):g}" if scaling.offset else ""
    return (f"the factory's Subject supplies no `preprocess`, so the description's documented "
            f"preprocessing, image / {scaling.divisor:g}{offset}, is assumed to be yours (every "
            "check feeds it to both sides); return `preprocess` in the Subject to have your "
            "own judged against it.")  # fmt: skip


def diagnose(raw: np.ndarray, ours: np.ndarray, reference: np.ndarray) -> str:
    """A plain-words hint for ``ours`` vs ``reference`` (same shape) of the uint8 images
    ``raw`` ``(N, H, W)``, or ``""`` when the values match neither mistake."""
    ours, reference = ours.astype(np.float64), reference.astype(np.float64)
    low, high = float(reference.min()), float(reference.max())
    span = high - low
    if span > 0 and np.ptp(ours) > UNSCALED_RATIO * span:
        return (f"Hint: the values run from {ours.min():g} to {ours.max():g} where the "
                f"reference's stay within [{low:g}, {high:g}]: the images look left in "
                "[0, 255]; divide by 255 (as float) as the reference does.")  # fmt: skip
    dark = (raw == 0).reshape(-1)  # MNIST's background; one channel: ours has raw's size
    if span > 0 and dark.any() and ours.size == dark.size:
        at_zero = float(np.median(ours.reshape(-1)[dark]))
        if at_zero > low + span / 2:
            return (f"Hint: the background (pixel 0) comes out at {at_zero:g}, in the top "
                    f"half of the range, where the reference gives {low:g}: centring done "
                    "in uint8 wraps around (0 - 128 is 128 in uint8); convert the images to "
                    "float before subtracting.")  # fmt: skip
    return ""
