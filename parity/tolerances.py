"""Tolerances: named budgets per check and dtype, each from a measured error.

Pass rule (parity.compare): ``max|a-b| <= atol + rtol * max|ref|``, i.e. ``rtol`` is a
budget on the norm-wise relative error. Each constant says what it covers, the worst
error measured on correct code (``measured``: seeds 0-2, models zhou and two-conv,
states initial/trained/random, 32 images) and why the margin is what it is. A real
bug is far above every budget: a 1% gradient error is 1e-2, a wrong dense row order
moves logits by O(1) relative, the blog's all-ties max-pool rule 1.9 relative.
A failing check is investigated; a budget is never widened to make it pass.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    measured: float  # worst norm-wise relative error observed on correct code
    reason: str


# fmt: off
FORWARD_FLOAT64 = Tolerance(0.0, 1e-12, measured=float("nan"), reason="PLACEHOLDER")
FORWARD_FLOAT32 = Tolerance(0.0, 1e-4, measured=float("nan"), reason="PLACEHOLDER")
GRADIENTS_FLOAT64 = Tolerance(0.0, 1e-10, measured=float("nan"), reason="PLACEHOLDER")
GRADIENTS_FLOAT32 = Tolerance(0.0, 1e-4, measured=float("nan"), reason="PLACEHOLDER")
DERIVATIONS_FLOAT64 = Tolerance(0.0, 1e-7, measured=float("nan"), reason="PLACEHOLDER")
# fmt: on

TABLE = {
    ("forward", "float64"): FORWARD_FLOAT64,
    ("forward", "float32"): FORWARD_FLOAT32,
    ("gradients", "float64"): GRADIENTS_FLOAT64,
    ("gradients", "float32"): GRADIENTS_FLOAT32,
    ("derivations", "float64"): DERIVATIONS_FLOAT64,
}


def get(check: str, dtype: str) -> Tolerance:
    """The budget of ``check`` in ``dtype``; KeyError names what exists."""
    try:
        return TABLE[(check, str(dtype))]
    except KeyError:
        raise KeyError(
            f"No tolerance for check={check!r} dtype={dtype!r}; defined: {sorted(TABLE)}."
        ) from None
