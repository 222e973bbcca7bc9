"""Derivations: each hand derivation vs central finite differences, three ways.

For every quantity, three rows: scratch vs FD, Keras vs FD, scratch vs Keras, so a
report shows which side disagrees with the math. float64 only (FD needs it).

Where the finite differences are taken (the function differentiated):
- weights (conv filter, dense kernel and bias): the scratch forward pass, each weight
  perturbed in place and restored bit-exactly; real images. Each example's loss is
  differenced on its own and compared with that example's gradient (a batch of one on
  both sides), so a kink in one image's loss (a ReLU input or a max-pool near-tie that
  the weight moves) leaves the point judged in the others: a first-layer weight moves
  every pre-activation of its channel in every image, and over a whole batch nearly
  every point kinks somewhere (chw-odd seed 3, trained: 4% of the first conv's kernel
  points judged on the batch's mean loss, 52% per example). A model with a layer that
  couples the examples (``spec.Network.coupled``: training-mode batch statistics) is
  differenced on the batch's mean loss instead, one group of all examples.
  Arrays larger than ``FD_MAX_POINTS`` are sampled at a seeded set of indices.
- the first layer's input (conv input gradient): the scratch forward pass.
- the softmax input (the blog's softmax Jacobian, i.e. the gradient w.r.t. the
  logits): cross-entropy of softmax written out in numpy here.
- a pooling layer's input (max-pool routing): the twin's layers from that pooling
  layer on (no scratch API runs half a network); both backward passes are still
  independent of it.
Input gradients use tie-free inputs: real images plus a seeded uniform jitter of
``JITTER`` (a tied max-pool window is a kink where FD is one-sided).
Activation FD perturbs one position in every example at once and reads the
per-example losses, many positions per call, so an ``(N, ...)`` tensor costs
4 x (positions) example evaluations in a few batched calls. A weight of a later layer
is FD'd from that layer's input on where the model can run from it (``loss_from``).
The engine (steps, kink classifier) is ``parity.finite_diff``.

Batch norm and dropout (``parity.modes``): the derivations run in training mode, the
mode whose gradients the other checks compare, with the dropout masks of the check
batch's first ``IMAGES`` rows on both sides. Perturbing one position in every example at
once and reading each example's own loss assumes the examples are independent; in
training mode a batch-norm layer's output depends on the whole batch (its statistics), and
a dropout mask is tied to its row in the batch, so the batched per-example engine would
compute something else (stacked copies are one large batch with other statistics and no
mask of that size). For such a model every layer input upstream of the last coupled or
masked layer is differentiated point by point, the MEAN loss of the whole unchanged batch
at each perturbed point (one element of one example moved), at a seeded sample of
``FD_MAX_POINTS`` points; the softmax input (after every such layer) keeps the batched
engine. Weights were always point by point on the whole batch.
"""

from __future__ import annotations

import functools

import numpy as np

from parity import finite_diff, tolerances
from parity.checks.common import Context, mean_loss, per_example_loss, row_columns
from parity.checks.ties import near_maxima, pools
from parity.compare import INCONCLUSIVE, PASS, compare, missing, not_provided
from parity.finite_diff import EPS  # the central step (recorded in environment.json)
from parity.progress import phase
from scratch.protocol import Capability

CHECK = "derivations"
COLUMNS = row_columns("fd_points", "evaluated_fraction")  # derivations.csv
JITTER = 1e-2  # uniform +-JITTER on preprocessed inputs: near-ties stay >> EPS apart
FD_MAX_POINTS = 256  # weight arrays larger than this are FD'd at a seeded sample
STATES = ("trained", "random")  # not "initial": the flat inits put FD at its round-off floor
IMAGES = 4  # derivation batch: the first IMAGES images of the check batch
# A comparison against FD judges only the points FD can differentiate (kinks and near
# ties are left out by design). Below this fraction of its points judged, a row is
# INCONCLUSIVE, never a PASS: a check whose points were almost all excluded judges
# nothing. Measured on correct code (benchmarks/false_alarms.py, 4 models x 20 seeds,
# float64): lowest 0.125, chw-relu's conv bias at trained weights (1 of 8 biases: a
# bias step moves every pre-activation of its channel, and one of 4 x 676 near 0 is a
# ReLU kink); its pool input 0.218 (seed 10: dead channels make whole windows of zeros
# tie, and the 4,720 points left still judge the derivation); zhou 0.92. A layer-wide
# bug moves most points, so a tenth shows it. In 40 more seeds with training (README,
# "Verdicts") two first-conv biases kinked at every point: INCONCLUSIVE, as it should be;
# FD judged nothing there. two-conv seed 39, random state: the first ReLU's inputs are all
# >= 2.9e-4 from 0, the kink is downstream (a conv2d_1 pre-activation 1.4e-7 from 0 moves
# with the bias); chw-relu seed 46, trained state (not random): first-ReLU inputs within
# 4.8e-7..7.8e-6 of 0 in every channel.
FD_COVERAGE_FLOOR = 0.10
# Weight points that kink at EPS are classified again at EPS * RETRY_STEP. Measured on the
# two all-kink rows above: judged 0 -> 0.25 (two-conv conv2d bias, worst error 1.3e-10 of a
# 8.8e-9 budget) and 0 -> 0.625 (chw-relu conv2d bias, 8.8e-11 of 3.6e-10). Not smaller:
# round-off ulp(loss) / step grows as the step shrinks (EPS/100 gave 1.7e-9 on chw-relu,
# over its budget), and the budget's atol is EPS's round-off floor: a retry is used only where
# ulp(loss) / step stays within KINK_SHARE of the budget (chw-odd's conv kernels, gradients
# ~1e-5, came out 1.25e-10 off at EPS/4 against atol 1e-10: no retry there).
RETRY_STEP = 0.25
PAIRS = (("scratch", "fd"), ("keras", "fd"), ("scratch", "keras"))
TAIL_ULPS = 4  # a model's loss_from vs its full forward at the same weights: measured 0 ulp
# (4 models x trained/random, seed 0); a planted forward bug that moves the loss falls back
KERAS_CHUNK_BYTES = 32 * 2**20  # inputs per call of the twin's tail (fewer, larger TF calls)


def expected(model) -> list[tuple[str, str]]:
    """Weights of every layer, then the inputs of the first, pooling and softmax layers."""
    names = model.layer_names
    pairs = [(layer, w) for layer in names for w in model.params().get(layer, {})]
    inputs = [names[0], *model.spec.pools(), names[-1]]
    return pairs + [(layer, "input") for layer in dict.fromkeys(inputs)]


def derivation_rows(ctx: Context) -> list[dict]:
    from parity import modes

    if ctx.dtype != "float64":
        return []
    if not modes.modal(ctx.model):
        return _derivation_rows(ctx)
    modes.inject(ctx.model, modes.rows(ctx.masks, IMAGES), ctx.twin)
    try:
        return _derivation_rows(ctx)
    finally:  # the check batch's masks again, for every later check at this state
        modes.inject(ctx.model, ctx.masks, ctx.twin)


def _derivation_rows(ctx: Context) -> list[dict]:
    from reference import probes

    model, labels = ctx.model, ctx.labels[:IMAGES]
    real = model.preprocess(ctx.images[:IMAGES])
    rng = np.random.default_rng([ctx.seed, 3])
    jittered = real + rng.uniform(-JITTER, JITTER, real.shape).astype(real.dtype)
    groups = example_groups(model, len(labels))
    # inputs: the batch's gradients (activation FD is per example already); weights: each
    # group's own, stacked on a leading axis. Kinks anchored on the scratch side, as in the
    # gradients check (probes.gradients).
    ours = {"jit": model.gradients(jittered, labels)[1],
            "real": [model.gradients(real[g], labels[g])[1] for g in groups]}  # fmt: skip
    theirs = {
        "jit": probes.gradients(ctx.twin, model, jittered, labels, model.forward(jittered))[1],
        "real": [probes.gradients(ctx.twin, model, real[g], labels[g], model.forward(real[g]))[1]
                 for g in groups],
    }  # fmt: skip
    rows = []
    absent = model.not_provided()  # found while the scratch gradients were taken
    points = _points(model, real, [key for key in expected(model) if key not in absent])
    # Two phases: a weight point costs a forward pass per step, a layer-input position is
    # one of many in a batched call (~100x cheaper); one rate for both made the estimate
    # of the remaining time 10-20x too long.
    description = f"[derivations {ctx.name} {ctx.dtype} {ctx.state}] finite differences of"
    reports, done = {}, {}
    for kind in ("weights", "layer inputs"):
        total = sum(n for key, n in points.items() if _kind(key) == kind)
        reports[kind] = phase(ctx.progress, f"{description} {kind}", total, unit="point")
        done[kind] = 0
    for layer, quantity in expected(model):
        if (layer, quantity) in absent:
            rows += _not_provided_rows(ctx, layer, quantity, absent[(layer, quantity)])
            continue
        which = "jit" if quantity == "input" else "real"
        x = jittered if which == "jit" else real
        kind = _kind((layer, quantity))
        report = reports[kind]
        report(done[kind])
        on_point = functools.partial(_offset, report, done[kind])  # points within a weight
        fd, mask, note, fraction = _finite_difference(
            ctx, layer, quantity, x, labels, groups, on_point
        )
        a, b = (_side(side[which], layer, quantity) for side in (ours, theirs))
        rows += _three_way(ctx, layer, quantity, a, b, (fd, mask, note, fraction))
        done[kind] += points[(layer, quantity)]
        if quantity == "input":  # a weight's points were reported one by one (on_point)
            report(done[kind])
    return rows


def _kind(key: tuple[str, str]) -> str:
    return "layer inputs" if key[1] == "input" else "weights"


def _offset(report, base: int, done: int) -> None:
    report(base + done)


def example_groups(model, n: int) -> list[np.ndarray]:
    """The example indices whose loss the weight derivations difference as one function:
    each example alone, or all ``n`` together where a layer couples them
    (``spec.Network.coupled``: one example's loss depends on the others')."""
    if model.spec.coupled():
        return [np.arange(n)]
    return [np.arange(i, i + 1) for i in range(n)]


def _side(gradients, layer: str, quantity: str):
    """One side's gradient of ``layer``'s ``quantity``: from a tree, or stacked over the
    example groups' trees (``(groups,) + shape``); None where any tree lacks it."""
    if isinstance(gradients, dict):
        return gradients.get(layer, {}).get(quantity)
    found = [tree.get(layer, {}).get(quantity) for tree in gradients]
    return None if any(g is None for g in found) else np.stack([np.asarray(g) for g in found])


def _points(model, x: np.ndarray, keys) -> dict[tuple[str, str], int]:
    """Points finite differences evaluate per ``(layer, quantity)`` of ``keys``: a weight's
    elements (at most ``FD_MAX_POINTS``), an input's positions in every example of ``x``."""
    names, params = model.layer_names, model.params()
    outputs = model.forward(x) if any(q == "input" for _, q in keys) else {}
    counts = {}
    for layer, quantity in keys:
        if quantity != "input":
            counts[(layer, quantity)] = min(params[layer][quantity].size, FD_MAX_POINTS)
        else:
            i = names.index(layer)
            size = int(np.size(outputs[names[i - 1]] if i else x))
            counts[(layer, quantity)] = min(size, FD_MAX_POINTS) if _coupled(model, layer) else size
    return counts


def _coupled(model, layer: str) -> bool:
    """Whether the loss, seen from ``layer``'s input, couples the batch's examples: a
    batch-norm or dropout layer (training mode) at or after ``layer`` (``parity.modes``)."""
    from parity import modes

    if not modes.modal(model):
        return False
    names = model.layer_names
    after = set(names[names.index(layer) :])
    return any(name in after for name in model.spec.modal())


def _three_way(ctx, layer, quantity, ours, theirs, finite_difference) -> list[dict]:
    fd, mask, note, fraction = finite_difference
    fd_tol = tolerances.get(CHECK, ctx.dtype)
    pair_tol = tolerances.get("gradients", ctx.dtype, ctx.model.spec)
    values = {"scratch": ours, "keras": theirs, "fd": fd}
    rows = []
    for left, right in PAIRS:
        tol = fd_tol if right == "fd" else pair_tol
        limits = dict(atol=tol.atol, rtol=tol.rtol, actual_side=left, desired_side=right)
        a, b = values[left], values[right]
        if a is None or b is None:
            record = missing(layer, quantity, left if a is None else right, **limits)
        else:
            a, b = np.asarray(a), np.asarray(b)
            if right == "fd" and mask is not None and a.shape == mask.shape:
                a = np.where(mask, a, 0).astype(a.dtype)  # compare the sampled points only
            record = compare(a, b, layer=layer, quantity=quantity, **limits)
            if right == "fd":
                record = _coverage(record, fraction)
        rows.append(ctx.row(CHECK, record, fd_points=note, evaluated_fraction=fraction))
    return rows


def _not_provided_rows(ctx, layer, quantity, reason) -> list[dict]:
    """NOT_PROVIDED rows for the pairs with the scratch side (no finite differences)."""
    rows = []
    for left, right in (pair for pair in PAIRS if pair[0] == "scratch"):
        tol = tolerances.get(CHECK if right == "fd" else "gradients", ctx.dtype)
        record = not_provided(layer, quantity, reason, atol=tol.atol, rtol=tol.rtol,
                              actual_side=left, desired_side=right)  # fmt: skip
        rows.append(ctx.row(CHECK, record, fd_points="-", evaluated_fraction=float("nan")))
    return rows


def _coverage(record, fraction: float):
    """A PASS on fewer than FD_COVERAGE_FLOOR of the points becomes INCONCLUSIVE."""
    if record.status != PASS or fraction >= FD_COVERAGE_FLOOR:
        return record
    return record.with_status(INCONCLUSIVE, (
        f"coverage: layer `{record.layer}` quantity `{record.quantity}`: finite differences "
        f"judged {fraction:.1%} of the points, below the floor {FD_COVERAGE_FLOOR:.0%} "
        f"(the rest are kinks or near max-pool ties); {record.message}"))  # fmt: skip


def _finite_difference(ctx, layer, quantity, x, labels, groups, on_point=None):
    """FD of the loss w.r.t. ``layer``'s ``quantity``: ``(fd, mask, note, fraction)``,
    ``fraction`` the share of the FD'd points that are judged (not kinks, not near ties).
    A weight's FD is per example group (``groups``, :func:`example_groups`):
    ``(len(groups),) + weight shape``; an input's is the mean loss's, ``x.shape``.
    ``on_point(points done)``: progress within a weight (one forward pass per step)."""
    model = ctx.model
    if quantity != "input":
        live = model.params()[layer][quantity]
        return _fd_weight(ctx, live, _weight_loss(model, layer, x, labels, groups), on_point)
    if _coupled(model, layer):
        return _fd_coupled_input(ctx, layer, x, labels, on_point)
    names = model.layer_names
    if layer == names[0]:

        def tail(batch):
            return per_example_loss(model.probabilities(batch), _tiled(labels, batch))

        return _activation_result(finite_diff.per_example(tail, x))
    outputs = model.forward(x)
    h = outputs[names[names.index(layer) - 1]]
    if layer == names[-1]:
        return _activation_result(
            finite_diff.per_example(lambda z: _softmax_cross_entropy(z, labels), h)
        )
    # A pooling layer: FD of the twin's layers from it on, in Keras layout (a permutation
    # of the scratch array: the same points, mapped back once at the end).
    from reference.layout import layout_for

    lay = layout_for(model)
    h_keras = lay.to_keras(layer, "input", h)
    tail, near = _keras_tail(ctx, layer, labels), _near_ties(ctx, layer, h_keras)
    diff = finite_diff.per_example(tail, h_keras, exclude=near, chunk_bytes=KERAS_CHUNK_BYTES)
    back = finite_diff.Differences(
        lay.from_keras(layer, "input", diff.values), lay.from_keras(layer, "input", diff.kinks)
    )
    return _activation_result(back)


def _fd_coupled_input(ctx: Context, layer: str, x, labels, on_point=None):
    """FD of the whole batch's mean loss w.r.t. ``layer``'s input, one element of one
    example at a time (the examples are coupled: module docstring), at a seeded sample
    of ``FD_MAX_POINTS`` points, through the scratch forward pass from ``layer`` on (the
    whole pass for the first layer, else ``loss_from``: CapabilityError without it).
    Points within 4 EPS of a max-pool tie are left out as kinks."""
    from reference.layout import layout_for

    model, names = ctx.model, ctx.model.layer_names
    first = layer == names[0]
    h = np.array(x if first else model.forward(x)[names[names.index(layer) - 1]])

    def loss() -> float:
        return mean_loss(model, h, labels) if first else float(model.loss_from(layer, h, labels))

    near = np.zeros(h.shape, bool)
    if layer in {p.layer for p in pools(model, ctx.twin)}:
        lay = layout_for(model)
        near = lay.from_keras(
            layer, "input", _near_ties(ctx, layer, lay.to_keras(layer, "input", h))
        )
    rng = np.random.default_rng([ctx.seed, 5, h.size])
    idx = np.sort(rng.choice(h.size, min(FD_MAX_POINTS, h.size), replace=False))
    diff = finite_diff.pointwise(loss, h, idx, on_point=on_point)
    kinks = diff.kinks | near.flat[idx]
    fd = np.zeros(h.shape, np.float64)
    fd.flat[idx] = np.where(kinks, 0.0, diff.values)
    mask = np.zeros(h.shape, bool)
    mask.flat[idx[~kinks]] = True
    note = f"{idx.size} of {h.size} (seeded, one example at a time)"
    if kinks.any():
        note += f" but {int(kinks.sum())} kinks"
    return fd, mask, note, 1.0 - float(kinks.mean())


def _near_ties(ctx: Context, layer: str, h_keras: np.ndarray) -> np.ndarray:
    """Pool-input points within 4 EPS of a tie: a +-2 EPS step swaps the maxima. The
    windows are the Keras layer's pool size and strides; ``h_keras`` in Keras layout."""
    pool = next(p for p in pools(ctx.model, ctx.twin) if p.layer == layer)
    return near_maxima(h_keras, pool.size, pool.strides, gap=4 * EPS)


def _weight_loss(model, layer: str, x, labels, groups):
    """Each group's mean loss as a function of ``layer``'s live weights: ``() ->
    (len(groups),)`` float64 (``groups``: :func:`example_groups`).

    Nothing before ``layer`` reads its weights, so where the model can run from a layer's
    input (``Capability.LOSS_FROM``) that input is computed once and each evaluation runs
    ``layer`` onward, one call per group: the same function, fewer layers. Taken only
    where it gives the full forward pass's losses at the unperturbed weights to
    ``TAIL_ULPS`` (it does bit for bit on every shipped model); otherwise, and for the
    first layer or a model without ``loss_from``, the full forward pass (one call).
    """

    def full() -> np.ndarray:
        each = per_example_loss(model.probabilities(x), labels)
        return np.array([each[g].mean() for g in groups])

    names = model.layer_names
    if not model.provides(Capability.LOSS_FROM) or layer == names[0]:
        return full
    h = np.array(model.forward(x)[names[names.index(layer) - 1]], copy=True)

    def tail() -> np.ndarray:
        return np.array([float(model.loss_from(layer, h[g], labels[g])) for g in groups])

    base = full()
    return tail if np.all(np.abs(tail() - base) <= TAIL_ULPS * np.spacing(base)) else full


def _fd_weight(ctx, live: np.ndarray, loss, on_point=None):
    """FD of ``loss()`` (``(groups,)`` losses) w.r.t. the live weight array, at every (or a
    seeded sample of) index: ``fd`` ``(groups,) + live.shape``; kinks (a ReLU input or a
    max-pool near-tie within the step) are classified per point and group."""
    size = live.size
    if size <= FD_MAX_POINTS:
        idx = np.arange(size)
    else:
        rng = np.random.default_rng([ctx.seed, 4, size])
        idx = np.sort(rng.choice(size, FD_MAX_POINTS, replace=False))
    diff = finite_diff.pointwise(loss, live, idx, on_point=on_point)  # (points, groups)
    diff = _retry_kinks(diff, loss, live, idx)
    groups = diff.values.shape[1]
    fd = np.zeros((groups, size), dtype=np.float64)
    fd[:, idx] = diff.values.T
    mask = np.zeros((groups, size), dtype=bool)
    mask[:, idx] = ~diff.kinks.T
    note = "all" if size <= FD_MAX_POINTS else f"{FD_MAX_POINTS} of {size} (seeded)"
    note += f" x {groups} examples" if groups > 1 else " (batch mean)"
    if diff.kinks.any():
        note += f" but {int(diff.kinks.sum())} kinks of {diff.kinks.size}"
    shape = (groups,) + live.shape
    mask = None if mask.all() else mask.reshape(shape)
    return fd.reshape(shape), mask, note, diff.judged_fraction


def _retry_kinks(diff: finite_diff.Differences, loss, live, idx) -> finite_diff.Differences:
    """Classify the points that kinked at ``EPS`` again at ``EPS * RETRY_STEP``: a kink
    within 2 EPS (a ReLU input near 0 that a bias step moves) is often farther than twice
    the smaller step. The same classifier judges them at that step; those still kinked
    stay out. Only where the smaller step's round-off, ulp(loss) / step, stays within
    FD's share of the budget (``KINK_SHARE``): the budget's atol is EPS's round-off floor,
    and chw-odd's conv kernel gradients (~1e-5) were judged 1.25e-10 off at EPS/4."""
    again = np.flatnonzero(diff.kinks.any(axis=1))  # points kinked in some group
    if again.size == 0:
        return diff
    step = finite_diff.EPS * RETRY_STEP
    retry = finite_diff.pointwise(loss, live, idx[again], eps=step)
    tol = tolerances.get(CHECK, "float64")
    scale = max(np.abs(diff.values).max(), np.abs(retry.values).max())
    round_off = np.spacing(np.abs(loss()).max()) / step
    if round_off > finite_diff.KINK_SHARE * (tol.atol + tol.rtol * scale):
        return diff  # the smaller step's round-off would take more than FD's share of it
    values, kinks = diff.values.copy(), diff.kinks.copy()
    was = kinks[again]  # only the (point, group) pairs that kinked take the retry's result
    values[again] = np.where(was, retry.values, values[again])
    kinks[again] = was & retry.kinks
    return finite_diff.Differences(values, kinks)


def _activation_result(diff: finite_diff.Differences):
    """``(fd, mask, note, fraction)`` of an activation's classified differences."""
    kinks = diff.kinks
    note = "all" if not kinks.any() else f"all but {int(kinks.sum())} kinks of {kinks.size}"
    mask = None if not kinks.any() else ~kinks
    return diff.values, mask, note, diff.judged_fraction


def _softmax_cross_entropy(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example ``-log softmax(z)[y]`` from logits, in float64."""
    y = _tiled(labels, z)
    z = z.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(z)), y]


def _keras_tail(ctx: Context, layer: str, labels: np.ndarray):
    """The twin's layers from ``layer`` on, as a per-example loss of a Keras-layout batch."""
    from reference.layout import layout_for

    k_layer, _ = layout_for(ctx.model).keras_key(layer, "input")
    layers = [lyr for lyr in ctx.twin.layers if type(lyr).__name__ != "InputLayer"]
    start = [lyr.name for lyr in layers].index(k_layer)

    def tail(batch: np.ndarray) -> np.ndarray:
        h = batch
        for lyr in layers[start:]:
            h = lyr(h)
        return per_example_loss(np.asarray(h), _tiled(labels, batch))

    return tail


def _tiled(labels: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Labels for a batch of stacked copies ``(copies * N, ...)`` of the N examples."""
    return np.tile(labels, len(batch) // len(labels))
