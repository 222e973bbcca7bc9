"""Argument checks of the channels-first family (``scratch.chw``, ``scratch.chw_loss``,
``scratch.chw_norm``): Keras-style messages naming the argument, the rule and the value
received; integers, weight scales, generators, finite casts to a layer's dtype, image
batches ``(N, C, H, W)`` or one image ``(C, H, W)``, and upstream gradients of the last
output's shape. numpy only.
"""

from __future__ import annotations

import numbers

import numpy as np


def _invalid(argument: str, rule: str, received: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `{argument}`. Expected {rule}. Received {received}."
    )


def _check_int(argument: str, value, minimum: int) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < minimum:
        rule = "a strictly positive integer" if minimum == 1 else "a non-negative integer"
        raise _invalid(argument, rule, f"{argument}={value!r}")
    return int(value)


def _check_scale(value) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value <= 0:
        raise _invalid(
            "weight_scale", "a finite, strictly positive number", f"weight_scale={value!r}"
        )
    return float(value)


def _rng(rng) -> np.random.Generator:
    """``None`` means seed 0 (reproducible by default), an int is a seed."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise _invalid("rng", "None, an integer seed or a numpy Generator", f"rng={rng!r}")


def _cast_finite(x, dtype: np.dtype, argument: str = "x") -> np.ndarray:
    """``x`` as an array of ``dtype``; non-finite values (also from a cast overflow) raise."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise _invalid(argument, "a numeric array", f"{argument}.dtype={x.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(dtype, copy=False)
    bad = np.size(x) - np.count_nonzero(np.isfinite(x))
    if bad:
        raise _invalid(
            argument,
            "finite values",
            f"{argument} with {bad} non-finite value(s) (nan or inf, after casting to {dtype})",
        )
    return x


def _as_image_batch(x, dtype: np.dtype) -> tuple[np.ndarray, bool]:
    """``(N, C, H, W)`` or one image ``(C, H, W)`` -> (batch, was_single)."""
    shape = np.shape(x)
    if len(shape) not in (3, 4):
        raise _invalid("x", "rank 3 (C, H, W) or rank 4 (N, C, H, W)", f"x.shape={shape}")
    x = _cast_finite(x, dtype)
    return (x[None], True) if x.ndim == 3 else (x, False)


def _check_dout(dout, expected_shape: tuple, dtype: np.dtype, layer: str) -> np.ndarray:
    if expected_shape is None:
        raise RuntimeError(f"{layer}.backward called before {layer}.forward.")
    dout = np.asarray(dout, dtype=dtype)
    if dout.shape != expected_shape:
        raise _invalid(
            "dout",
            f"the shape of {layer}'s last output {expected_shape}",
            f"dout.shape={dout.shape}",
        )
    return dout
