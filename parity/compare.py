"""The one comparison behind every check: shape, then dtype, then values.

``compare(actual, desired, ...)`` returns a :class:`Comparison` record. ``desired`` is
the reference side (Keras, or finite differences); its largest magnitude scales the
norm-wise relative error and the pass rule::

    passed = max|a - b| <= atol + rtol * max|ref|        (and every value finite)

The elementwise relative error is recorded, never the verdict: tiny reference elements
make it explode on correct code (DESIGN.md, "Errors and tolerances").

Every record carries a ``status`` (README, "Exit status"):

- ``PASS``: the values agree within the budget;
- ``FAIL``: they differ beyond it (or a shape, a dtype, a key differs);
- ``ERROR``: the code under test raised; the message names the exception and where;
- ``NOT_PROVIDED``: the implementation does not produce the quantity by design (a first
  layer that returns no input gradient);
- ``INCONCLUSIVE``: too little was left to judge (a coverage floor was not met).

:func:`exit_code` turns statuses into the command's exit code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

STAGES = ("missing", "shape", "dtype", "values", "error", "not provided", "coverage",
          "in place")  # fmt: skip
PASS, FAIL, ERROR, NOT_PROVIDED, INCONCLUSIVE = (
    "PASS", "FAIL", "ERROR", "NOT_PROVIDED", "INCONCLUSIVE",
)  # fmt: skip
STATUSES = (ERROR, FAIL, INCONCLUSIVE, PASS, NOT_PROVIDED)  # worst first
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


def worst_status(statuses) -> str:
    """The worst of ``statuses`` in the order of :data:`STATUSES` (``PASS`` if none)."""
    present = set(statuses)
    return next((s for s in STATUSES if s in present), PASS)


def is_failure(status: str) -> bool:
    """``FAIL``, ``ERROR`` and ``INCONCLUSIVE`` fail a run; ``PASS``, ``NOT_PROVIDED`` do not."""
    return status in (FAIL, ERROR, INCONCLUSIVE)


def exit_code(statuses) -> int:
    """3 if any ``ERROR``; else 1 if any ``FAIL`` or ``INCONCLUSIVE``; else 0.

    ``NOT_PROVIDED`` alone exits 0: the quantity does not exist by design.
    """
    present = set(statuses)
    if ERROR in present:
        return EXIT_ERROR
    return EXIT_FAIL if present & {FAIL, INCONCLUSIVE} else EXIT_PASS


@dataclass(frozen=True)
class Comparison:
    """What one comparison measured; one row of a report.

    ``stage`` is where it stopped: ``shape`` or ``dtype`` (a mismatch, values not
    compared) or ``values``. Index fields are ``-1`` / ``""`` when no element exists.
    """

    layer: str
    quantity: str
    actual_side: str
    desired_side: str
    stage: str
    status: str  # PASS, FAIL, ERROR, NOT_PROVIDED or INCONCLUSIVE
    max_abs_error: float
    rel_error: float  # norm-wise: max|a-b| / max|ref|
    max_elem_rel_error: float  # max over elements of |a-b| / |ref| (inf where ref == 0 != a)
    ref_max_abs: float
    worst_flat_index: int
    worst_index: str  # e.g. "(0, 12, 3, 7)"
    actual_at_worst: float
    desired_at_worst: float
    atol: float
    rtol: float
    shape: str
    array_dtype: str
    message: str

    @property
    def passed(self) -> bool:
        """Nothing wrong was found: ``PASS`` or ``NOT_PROVIDED``."""
        return self.status in (PASS, NOT_PROVIDED)

    def as_row(self) -> dict:
        return dataclasses.asdict(self)

    def with_status(self, status: str, message: str) -> Comparison:
        """This record with another status and message (the measured fields kept)."""
        return dataclasses.replace(self, status=status, message=message)


def compare(
    actual,
    desired,
    *,
    layer: str,
    quantity: str,
    atol: float,
    rtol: float,
    actual_side: str = "scratch",
    desired_side: str = "keras",
    expected_dtype=None,
) -> Comparison:
    """Compare ``actual`` against the reference ``desired``.

    Parameters
    ----------
    actual, desired : array_like
        Same shape and dtype; ``desired`` is the reference side.
    layer, quantity : str
        Names that go into the record and every message.
    atol, rtol : float
        Pass rule ``max|a-b| <= atol + rtol * max|desired|``.
    actual_side, desired_side : str
        Side labels (``scratch``, ``keras``, ``fd``).
    expected_dtype : dtype, optional
        When given, both sides must have it (a twin silently running in float32
        fails here instead of passing a loose comparison).
    """
    a, b = np.asarray(actual), np.asarray(desired)
    base = _base(layer, quantity, atol, rtol, actual_side, desired_side)
    where = f"layer `{layer}` quantity `{quantity}`"
    if a.shape != b.shape:
        return _mismatch(
            base,
            "shape",
            f"{a.shape} vs {b.shape}",
            b.dtype,
            f"shape: {where}: {actual_side} has shape {a.shape}, {desired_side} has "
            f"shape {b.shape}; values not compared.",
        )
    dtype_error = _dtype_error(a, b, expected_dtype, actual_side, desired_side)
    if dtype_error:
        return _mismatch(base, "dtype", str(a.shape), b.dtype, f"dtype: {where}: {dtype_error}")
    return _compare_values(a, b, base, where)


def missing(layer: str, quantity: str, side: str, *, atol, rtol, actual_side="scratch",
            desired_side="keras") -> Comparison:  # fmt: skip
    """A failed record for a quantity that one side does not produce (never a skip)."""
    base = _base(layer, quantity, atol, rtol, actual_side, desired_side)
    message = f"missing: layer `{layer}` quantity `{quantity}`: {side} does not produce it."
    return _mismatch(base, "missing", "", "", message)


def _base(layer, quantity, atol, rtol, actual_side, desired_side) -> dict:
    """The fields every record starts from: who, where, and the budget."""
    return dict(layer=layer, quantity=quantity, actual_side=actual_side,
                desired_side=desired_side, atol=float(atol), rtol=float(rtol))  # fmt: skip


def _dtype_error(a, b, expected_dtype, actual_side, desired_side) -> str:
    if a.dtype != b.dtype:
        return (
            f"{actual_side} has dtype {a.dtype}, {desired_side} has dtype {b.dtype}; "
            "values not compared."
        )
    if expected_dtype is not None and a.dtype != np.dtype(expected_dtype):
        return (
            f"expected dtype {np.dtype(expected_dtype)} on both sides, received "
            f"{a.dtype}; values not compared."
        )
    return ""


def not_provided(layer: str, quantity: str, reason: str, *, atol=0.0, rtol=0.0,
                 actual_side="scratch", desired_side="keras") -> Comparison:  # fmt: skip
    """A ``NOT_PROVIDED`` record: the implementation does not produce it by design."""
    base = _base(layer, quantity, atol, rtol, actual_side, desired_side)
    message = f"not provided: layer `{layer}` quantity `{quantity}`: {reason}"
    return _mismatch(base, "not provided", "", "", message, status=NOT_PROVIDED)


def modified_in_place(layer: str, quantity: str, message: str, *, atol=0.0, rtol=0.0,
                      actual_side="scratch", desired_side="keras") -> Comparison:  # fmt: skip
    """A ``FAIL`` record: the code under test wrote into an array its caller passed it.

    A FAIL, not an ERROR: nothing raised, and the behaviour differs from the reference's
    (a Keras layer never writes into its input); the values it computed are judged by the
    other rows, which compare copies taken before the call.
    """
    base = _base(layer, quantity, atol, rtol, actual_side, desired_side)
    return _mismatch(base, "in place", "", "", f"in place: {message}")


def error(layer: str, quantity: str, exc: BaseException, *, atol=0.0, rtol=0.0,
          actual_side="scratch", desired_side="keras") -> Comparison:  # fmt: skip
    """An ``ERROR`` record: computing ``quantity`` raised ``exc`` (type, message, where)."""
    base = _base(layer, quantity, atol, rtol, actual_side, desired_side)
    message = f"error: layer `{layer}` quantity `{quantity}`: {describe_exception(exc)}"
    return _mismatch(base, "error", "", "", message, status=ERROR)


HARNESS_PACKAGES = ("parity", "reference")  # frames here are the harness, not code under test


def describe_exception(exc: BaseException) -> str:
    """``Type: message (at file:line in function)``, the line being the innermost frame of
    the code under test: not the harness (:data:`HARNESS_PACKAGES`), not a library in
    site-packages (a ``np.log`` warning raised inside numpy is placed at its caller). An
    exception that carries a ``location`` (``scratch.user_api.ApiError``: an adapter found
    the user's method broke its API after it returned) is placed there instead."""
    import os
    import traceback

    location = getattr(exc, "location", "")
    if location:
        return f"{type(exc).__name__}: {exc} (at {location})"
    frames = traceback.extract_tb(exc.__traceback__)
    harness = tuple(os.sep + p + os.sep for p in HARNESS_PACKAGES)

    def own(frame) -> bool:
        path = frame.filename
        return "site-packages" not in path and not any(h in path for h in harness)

    users = [f for f in frames if own(f)]
    where = users[-1] if users else (frames[-1] if frames else None)
    at = f" (at {where.filename}:{where.lineno} in {where.name})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def shape_mismatch(layer: str, quantity: str, actual: tuple, expected: tuple, message: str,
                   *, atol=0.0, rtol=0.0, actual_side="scratch",
                   desired_side="spec") -> Comparison:  # fmt: skip
    """A FAIL at the shape stage found before any comparison could run: the code under
    test made an array of shape ``actual`` where its description says ``expected``."""
    base = _base(layer, quantity, atol, rtol, actual_side, desired_side)
    return _mismatch(
        base, "shape", f"{tuple(actual)} vs {tuple(expected)}", "", f"shape: {message}"
    )


def raised(exc: BaseException, layer: str = "-", quantity: str = "-") -> Comparison:
    """The record of an exception during a check: a FAIL when it carries a
    ``shape_mismatch`` (``scratch.cs231n_api.OutputShapeError``), else an ERROR."""
    found = getattr(exc, "shape_mismatch", None)
    return shape_mismatch(**found) if found else error(layer, quantity, exc)


def _mismatch(base: dict, stage: str, shape: str, dtype, message: str,
              status: str = FAIL) -> Comparison:  # fmt: skip
    nan = float("nan")
    return Comparison(
        **base,
        stage=stage,
        status=status,
        max_abs_error=nan,
        rel_error=nan,
        max_elem_rel_error=nan,
        ref_max_abs=nan,
        worst_flat_index=-1,
        worst_index="",
        actual_at_worst=nan,
        desired_at_worst=nan,
        shape=shape,
        array_dtype=str(dtype),
        message=message,
    )


def _compare_values(a: np.ndarray, b: np.ndarray, base: dict, where: str) -> Comparison:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    finite = np.isfinite(a64) & np.isfinite(b64)
    ref_max = float(np.max(np.abs(b64), initial=0.0, where=np.isfinite(b64)))
    if a.size == 0:
        flat, max_abs = -1, 0.0
    elif not finite.all():
        flat = int(np.flatnonzero(~finite)[0])  # the first non-finite element is the worst
        max_abs = float("nan")
    else:
        flat = int(np.argmax(diff))
        max_abs = float(diff.flat[flat])
    with np.errstate(divide="ignore", invalid="ignore"):
        elem_rel = np.where(diff == 0, 0.0, diff / np.abs(b64))
    max_elem = float(np.max(elem_rel, initial=0.0)) if finite.all() else float("nan")
    rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else float("inf"))
    limit = base["atol"] + base["rtol"] * ref_max
    passed = bool(finite.all() and max_abs <= limit)
    index = np.unravel_index(flat, a.shape) if flat >= 0 else ()
    index_text = str(tuple(int(i) for i in index)) if flat >= 0 else ""
    a_w = float(a64.flat[flat]) if flat >= 0 else float("nan")
    b_w = float(b64.flat[flat]) if flat >= 0 else float("nan")
    side_a, side_b = base["actual_side"], base["desired_side"]
    if not finite.all():
        message = (
            f"values: {where}: non-finite value at index {index_text}: "
            f"{side_a}={a_w!r}, {side_b}={b_w!r}; NaN/inf never passes."
        )
    else:
        verdict = "within" if passed else "exceeds"
        message = (
            f"values: {where}: max|{side_a}-{side_b}|={max_abs:.3e} {verdict} "
            f"atol + rtol*max|{side_b}| = {base['atol']:.1e} + {base['rtol']:.1e}*"
            f"{ref_max:.3e} = {limit:.3e} (rel {rel:.3e}); worst at index {index_text}: "
            f"{side_a}={a_w!r}, {side_b}={b_w!r}."
        )
    return Comparison(
        **base,
        stage="values",
        status=PASS if passed else FAIL,
        max_abs_error=max_abs,
        rel_error=float(rel),
        max_elem_rel_error=max_elem,
        ref_max_abs=ref_max,
        worst_flat_index=flat,
        worst_index=index_text,
        actual_at_worst=a_w,
        desired_at_worst=b_w,
        shape=str(a.shape),
        array_dtype=str(a.dtype),
        message=message,
    )
