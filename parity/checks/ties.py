"""Max-pool ties: tied windows per side (bit-exact, counted separately) and routing.

A window ties when its maximum occurs more than once, compared bit for bit on that
side's own pool input (oneDNN may make a window tie on one side only). Routing: the
pool layer's input gradient must be nonzero at exactly the same positions on both
sides; a window where the positions differ is a routing mismatch (the blog's rule
sends the gradient to every tied maximum, TensorFlow to the first in row-major order).
"""

from __future__ import annotations

import numpy as np

from parity.checks.common import Context
from parity.compare import Comparison

CHECK = "ties"
QUANTITY = "routing"


def pool_layers(model) -> list[str]:
    return [name for name in model.layer_names if name.startswith("max_pooling2d")]


def expected(model) -> list[tuple[str, str]]:
    return [(layer, QUANTITY) for layer in pool_layers(model)]


def _blocking(inp_shape: tuple, out_shape: tuple):
    """How ``(N, ...)`` pool input splits into windows: pooled axes are those that shrink.

    Returns ``(crop, split, perm, k)``: crop the input, reshape to ``split`` (each pooled
    axis as ``(out, size)``), transpose by ``perm`` (window axes last), ``k`` = window size.
    """
    ndim = len(inp_shape)
    axes = [i for i in range(1, ndim) if inp_shape[i] != out_shape[i]]
    sizes = {i: inp_shape[i] // out_shape[i] for i in axes}
    crop = tuple(slice(0, out_shape[i] * sizes[i]) if i in axes else slice(None)
                 for i in range(ndim))  # fmt: skip
    split, kept, window_axes = [], [], []
    for i in range(ndim):
        if i in axes:
            kept.append(len(split))
            window_axes.append(len(split) + 1)
            split += [out_shape[i], sizes[i]]
        else:
            kept.append(len(split))
            split.append(inp_shape[i])
    return crop, split, kept + window_axes, int(np.prod([sizes[i] for i in axes]))


def windows(inp: np.ndarray, out_shape: tuple) -> np.ndarray:
    """``(N, ...)`` pool input -> ``(windows, k)``, windows in pool-output order."""
    crop, split, perm, k = _blocking(inp.shape, out_shape)
    return inp[crop].reshape(split).transpose(perm).reshape(-1, k)


def unwindow(win: np.ndarray, inp_shape: tuple, out_shape: tuple) -> np.ndarray:
    """Inverse of :func:`windows`; elements outside every window (cropped) are 0."""
    crop, split, perm, _ = _blocking(inp_shape, out_shape)
    blocks = win.reshape([split[p] for p in perm]).transpose(np.argsort(perm))
    full = np.zeros(inp_shape, dtype=win.dtype)
    full[crop] = blocks.reshape(full[crop].shape)
    return full


def tied_maxima(inp: np.ndarray, out_shape: tuple, gap: float = 0.0) -> np.ndarray:
    """Mask of ``inp``'s shape: elements within ``gap`` of their window's maximum, in
    windows where more than one element is.

    These are max-pool kinks (``gap`` 0) or points a finite-difference step of up to
    ``gap`` can push across one: FD there is one-sided.
    """
    win = windows(inp, out_shape)
    is_max = win >= win.max(axis=1, keepdims=True) - gap
    return unwindow(is_max & (is_max.sum(axis=1, keepdims=True) > 1), inp.shape, out_shape)


def tied(win: np.ndarray) -> np.ndarray:
    """Per window: does its maximum occur more than once (bit-exact ==)?"""
    return (win == win.max(axis=1, keepdims=True)).sum(axis=1) > 1


def tie_rows(ctx: Context) -> tuple[list[dict], list[dict]]:
    """``(summary-style rows, ties.csv rows)`` for every pooling layer."""
    names = ctx.model.layer_names
    rows, details = [], []
    for layer in pool_layers(ctx.model):
        prev = names[names.index(layer) - 1]
        out_shape = ctx.outputs("scratch")[layer].shape
        per_side = {}
        for side in ("scratch", "keras"):
            inp = np.asarray(ctx.outputs(side)[prev])
            grad = np.asarray(ctx.grads(side)[1][layer]["input"])
            per_side[side] = (tied(windows(inp, out_shape)), windows(grad, out_shape) != 0)
        detail = _detail(ctx, layer, per_side)
        details.append(detail)
        rows.append(ctx.row(CHECK, _record(layer, detail)))
    return rows, details


def _detail(ctx, layer, per_side) -> dict:
    (tie_s, nz_s), (tie_k, nz_k) = per_side["scratch"], per_side["keras"]
    mismatch = (nz_s != nz_k).any(axis=1)
    first = int(np.flatnonzero(mismatch)[0]) if mismatch.any() else -1
    return dict(
        model=ctx.name, dtype=ctx.dtype, state=ctx.state, layer=layer,
        windows=int(len(tie_s)),
        tied_scratch=int(tie_s.sum()), tied_keras=int(tie_k.sum()),
        tied_one_side_only=int((tie_s != tie_k).sum()),
        multi_routed_scratch=int((nz_s.sum(axis=1) > 1).sum()),
        multi_routed_keras=int((nz_k.sum(axis=1) > 1).sum()),
        routing_mismatches=int(mismatch.sum()), first_mismatch_window=first,
        passed=bool(not mismatch.any()),
    )  # fmt: skip


def _record(layer: str, d: dict) -> Comparison:
    count = d["routing_mismatches"]
    message = (
        f"routing: layer `{layer}`: {count} of {d['windows']} windows route the input "
        f"gradient to different positions (first window {d['first_mismatch_window']}); "
        f"tied windows scratch={d['tied_scratch']}, keras={d['tied_keras']}."
    )
    nan = float("nan")
    return Comparison(
        layer=layer, quantity=QUANTITY, actual_side="scratch", desired_side="keras",
        stage="values", passed=d["passed"], max_abs_error=float(count), rel_error=nan,
        max_elem_rel_error=nan, ref_max_abs=nan,
        worst_flat_index=d["first_mismatch_window"], worst_index="",
        actual_at_worst=nan, desired_at_worst=nan, atol=0.0, rtol=0.0,
        shape=str(d["windows"]), array_dtype=d["dtype"], message=message,
    )  # fmt: skip
