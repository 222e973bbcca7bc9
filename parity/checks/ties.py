"""Max-pool routing, judged in isolation, and the ties behind it counted.

Routing (the verdict): each pooling layer's backward pass is compared with Keras's pooling
layer fed the scratch side's OWN pool input and upstream gradient (``reference.probes.
layer_vjp``). The windows are then bit-identical on both sides, on any CPU and in both
dtypes, so TensorFlow's rule (a window's gradient goes to its first maximum in row-major
order) is judged exactly, ties included. An ordinary comparison (``parity.compare``) with
the gradients budget: for non-overlapping windows the routed values are copies, the
measured error is 0; overlapping windows (pool 3, stride 2) sum a few copies.

Counts (ties.csv, never the verdict): per side and bit-exact on that side's own forward
pass, the windows whose maximum occurs more than once; the windows that are ambiguous
(their two largest values within twice the largest elementwise difference between the two
sides' pool inputs, on either side: only there can rounding order the maxima differently,
see :func:`ambiguous`); the windows where the two sides' first maxima differ (rounding flipped
the routing of the end-to-end pass; ``reference.probes.gradients`` anchors that pass on
the scratch side's pool input, so end-to-end gradients compare strictly anyway); and the
windows whose routed positions differ in the isolated comparison.

Windows come from the network description's ``pool_size`` and ``strides`` (valid padding),
not from the ratio of input and output sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parity import tolerances
from parity.checks.common import Context, row_columns
from parity.compare import compare, missing

CHECK = "ties"
# ties.csv: the comparison, then counts()'s keys
COUNTS = ("pool_size", "strides", "windows", "tied_scratch", "tied_keras", "ambiguous",
          "rounding_flipped", "routing_mismatches", "first_mismatch_window")  # fmt: skip
COLUMNS = row_columns(*COUNTS)
QUANTITY = "routing"


@dataclass(frozen=True)
class Pool:
    """One max-pooling layer: its scratch name, its neighbours and its windows."""

    layer: str  # scratch layer name
    keras_layer: str
    previous: str | None  # scratch layer whose output is the pool input (None: the batch)
    following: str  # scratch layer whose input is the pool output
    size: tuple[int, int]
    strides: tuple[int, int]


def pool_layers(model) -> list[str]:
    """Names of the max-pooling layers, by kind, from the network description."""
    return list(model.spec.pools())


def expected(model) -> list[tuple[str, str]]:
    return [(layer, QUANTITY) for layer in pool_layers(model)]


def pools(model, keras_model) -> list[Pool]:
    """Every max-pooling layer of ``model``, geometry from its network description."""
    from reference.layout import layout_for

    layout, names = layout_for(model), list(model.layer_names)
    found = []
    for layer in pool_layers(model):
        i, described = names.index(layer), model.spec.layer(layer)
        previous = names[i - 1] if i else None
        found.append(Pool(layer, layout.keras_key(layer, "input")[0], previous, names[i + 1],
                          described.pool_size, described.strides))  # fmt: skip
    return found


def windows(x: np.ndarray, size: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """NHWC ``x`` -> ``(N, OH, OW, C, ph*pw)``: each valid window, row-major inside."""
    view = np.lib.stride_tricks.sliding_window_view(x, size, axis=(1, 2))
    view = view[:, :: strides[0], :: strides[1]]  # (N, OH, OW, C, ph, pw)
    return view.reshape(view.shape[:4] + (size[0] * size[1],))


def scatter(win_mask: np.ndarray, shape: tuple, size, strides) -> np.ndarray:
    """Inverse of :func:`windows` for masks: an input element is set when it is set in
    any window that holds it (windows may overlap). Loops over the ph*pw offsets only."""
    out = np.zeros(shape, dtype=bool)
    oh, ow = win_mask.shape[1:3]
    for k in range(size[0] * size[1]):
        i, j = divmod(k, size[1])
        rows = slice(i, i + strides[0] * (oh - 1) + 1, strides[0])
        cols = slice(j, j + strides[1] * (ow - 1) + 1, strides[1])
        out[:, rows, cols] |= win_mask[..., k]
    return out


def tied(win: np.ndarray) -> np.ndarray:
    """Per window: does its maximum occur more than once (bit-exact ==)?"""
    return (win == win.max(axis=-1, keepdims=True)).sum(axis=-1) > 1


def ambiguous(win: np.ndarray, gap: float) -> np.ndarray:
    """Per window: are its two largest values within ``gap`` of each other?

    With ``gap = 2 max|x_s - x_k|`` (the two sides' pool inputs) this is exactly the set of
    windows whose order rounding could change: if ``a - b > 2d`` on one side and each value
    moves by at most ``d``, ``a`` stays the larger on the other. A budget in ulps of the
    window maximum would not do: where a conv sum cancels, the window maximum is small and
    the two sides differ by up to 1.4e4 of its ulps (measured, float32, chw-relu seed 1).
    """
    top2 = np.partition(win, -2, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0] <= gap


def near_maxima(x: np.ndarray, size, strides, gap: float) -> np.ndarray:
    """Mask of NHWC ``x``: elements within ``gap`` of their window's maximum, in windows
    where more than one element is. A finite-difference step of up to ``gap`` can swap
    these (a max-pool kink): FD is one-sided there."""
    win = windows(x, size, strides)
    near = win >= win.max(axis=-1, keepdims=True) - gap
    return scatter(near & (near.sum(axis=-1, keepdims=True) > 1), x.shape, size, strides)


def tie_rows(ctx: Context) -> list[dict]:
    """One row per pooling layer (ties.csv): the isolated routing comparison, an ordinary
    ``parity.compare`` record like every other check's, then the window counts in their
    own columns (:func:`counts`), which explain it and are never judged."""
    from reference.layout import layout_for

    layout = layout_for(ctx.model)
    _, grads = ctx.grads("scratch")
    tol = tolerances.get("gradients", ctx.dtype)
    rows = []
    for pool in pools(ctx.model, ctx.twin):
        x_s, x_k = (_pool_input(ctx, layout, pool, side) for side in ("scratch", "keras"))
        ours = grads.get(pool.layer, {}).get("input")
        upstream = grads.get(pool.following, {}).get("input")
        if ours is None or upstream is None:
            record = missing(pool.layer, QUANTITY, "scratch", atol=tol.atol, rtol=tol.rtol)
            ours_k = theirs_k = None
        else:
            dy = layout.to_keras(pool.following, "input", upstream)
            ours_k = layout.to_keras(pool.layer, "input", ours)
            keras_layer = ctx.twin.get_layer(pool.keras_layer)
            record, theirs_k = routing(pool.layer, keras_layer, x_s, dy, ours_k, ctx.dtype)
        rows.append(ctx.row(CHECK, record, **counts(pool, x_s, x_k, ours_k, theirs_k)))
    return rows


def routing(layer: str, keras_layer, x, dy, ours, dtype):
    """Judge one pooling layer's backward pass in isolation: ``(record, Keras's dx)``.

    ``x`` is the scratch side's pool input ``(N, H, W, C)``, ``dy`` its upstream gradient
    ``(N, OH, OW, C)``, ``ours`` its input gradient ``(N, H, W, C)``, all NHWC (the row's
    worst index is NHWC); Keras's layer gets the same ``x`` and ``dy``, so the windows are
    bit-identical and rounding cannot move the routing. Budget: the gradients budget.
    """
    from reference import probes

    theirs = probes.layer_vjp(keras_layer, x, dy)
    tol = tolerances.get("gradients", dtype)
    record = compare(ours, theirs, layer=layer, quantity=QUANTITY, expected_dtype=dtype,
                     atol=tol.atol, rtol=tol.rtol)  # fmt: skip
    return record, theirs


def _pool_input(ctx: Context, layout, pool: Pool, side: str) -> np.ndarray:
    """The pool's input on ``side``'s own forward pass, Keras layout (NHWC)."""
    x = ctx.x() if pool.previous is None else ctx.outputs(side)[pool.previous]
    return layout.to_keras(pool.layer, "input", x)


def counts(pool: Pool, x_s, x_k, ours, theirs) -> dict:
    """The ties.csv columns of one pooling layer: its geometry and window counts (both
    sides' pool inputs ``x_s``, ``x_k`` and input gradients ``ours``, ``theirs``, NHWC;
    the gradients None when the scratch side has none)."""
    win_s, win_k = windows(x_s, pool.size, pool.strides), windows(x_k, pool.size, pool.strides)
    if ours is None:
        mismatched = np.zeros(win_s.shape[:4], dtype=bool)
    else:
        nonzero = [windows(g, pool.size, pool.strides) != 0 for g in (ours, theirs)]
        mismatched = (nonzero[0] != nonzero[1]).any(axis=-1)
    flipped = win_s.argmax(axis=-1) != win_k.argmax(axis=-1)
    gap = 2 * float(np.abs(x_s.astype(np.float64) - x_k).max(initial=0.0))
    first = int(np.flatnonzero(mismatched)[0]) if mismatched.any() else -1
    return dict(
        pool_size=f"{pool.size[0]}x{pool.size[1]}", strides=f"{pool.strides[0]}x{pool.strides[1]}",
        windows=int(mismatched.size),
        tied_scratch=int(tied(win_s).sum()), tied_keras=int(tied(win_k).sum()),
        ambiguous=int((ambiguous(win_s, gap) | ambiguous(win_k, gap)).sum()),
        rounding_flipped=int(flipped.sum()),
        routing_mismatches=int(mismatched.sum()), first_mismatch_window=first,
    )  # fmt: skip
