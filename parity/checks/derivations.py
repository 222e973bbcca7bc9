"""Derivations: each hand derivation vs central finite differences, three ways.

For every quantity, three rows: scratch vs FD, Keras vs FD, scratch vs Keras, so a
report shows which side disagrees with the math. float64 only (FD needs it).

Where the finite differences are taken (the function differentiated):
- weights (conv filter, dense kernel and bias): the scratch forward pass, each weight
  perturbed in place and restored bit-exactly; real images.
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
per-example losses, so an ``(N, ...)`` tensor costs 2 x (positions) evaluations.
"""

from __future__ import annotations

import numpy as np

from parity import tolerances
from parity.checks.common import Context, mean_loss, per_example_loss
from parity.checks.ties import near_maxima, pools
from parity.compare import INCONCLUSIVE, PASS, compare, missing, not_provided

CHECK = "derivations"
EPS = 1e-5  # central step: measured best of 1e-6..1e-4 (round-off ulp(loss)/EPS dominates below)
JITTER = 1e-2  # uniform +-JITTER on preprocessed inputs: near-ties stay >> EPS apart
KINK_JUMP = 1e-4  # |fwd - bwd| / max|fd| marking an exact kink (smooth: EPS*|f''| / max|fd|)
KINK_SHARE = 0.5  # a point is judged only if FD's own consistency errors stay below this
# share of the derivations budget (atol + rtol * max|fd|): otherwise FD cannot vouch for it.
KINK_NOISE_ULPS = 2  # round-off allowance of the consistency tests, in ulp(loss) / EPS:
# measured |C(EPS) - C(2 EPS)| on smooth points <= 1 ulp(loss) / EPS (4.4e-11; chw and
# chw-relu trained, seed 1). Without it, round-off of a gradient of scale ~1e-5 reads as
# kinks.
FD_MAX_POINTS = 256  # weight arrays larger than this are FD'd at a seeded sample
STATES = ("trained", "random")  # not "initial": the flat inits put FD at its round-off floor
IMAGES = 4  # derivation batch: the first IMAGES images of the check batch
CHUNK_BYTES = 64 * 2**20  # memory per batched FD evaluation
# A comparison against FD judges only the points FD can differentiate (kinks and near
# ties are left out by design). Below this fraction of its points judged, a row is
# INCONCLUSIVE, never a PASS: a check whose points were almost all excluded judges
# nothing. Measured on correct code (benchmarks/false_alarms.py, 4 models x 20 seeds,
# float64): lowest 0.125, chw-relu's conv bias at trained weights (1 of 8 biases: a
# bias step moves every pre-activation of its channel, and one of 4 x 676 near 0 is a
# ReLU kink); its pool input 0.218 (seed 10: dead channels make whole windows of zeros
# tie, and the 4,720 points left still judge the derivation); zhou 0.92. A layer-wide
# bug moves most points, so a tenth shows it. In 40 more seeds with training (README,
# "Verdicts") two random-state first-conv biases kinked at every point (two-conv seed 39,
# chw-relu seed 46): INCONCLUSIVE, as it should be; FD judged nothing there.
FD_COVERAGE_FLOOR = 0.10
PAIRS = (("scratch", "fd"), ("keras", "fd"), ("scratch", "keras"))


def expected(model) -> list[tuple[str, str]]:
    """Weights of every layer, then the inputs of the first, pooling and softmax layers."""
    names = model.layer_names
    pairs = [(layer, w) for layer in names for w in model.params().get(layer, {})]
    inputs = [names[0], *model.spec.pools(), names[-1]]
    return pairs + [(layer, "input") for layer in dict.fromkeys(inputs)]


def derivation_rows(ctx: Context) -> list[dict]:
    from reference import probes

    if ctx.dtype != "float64":
        return []
    model, labels = ctx.model, ctx.labels[:IMAGES]
    real = model.preprocess(ctx.images[:IMAGES])
    rng = np.random.default_rng([ctx.seed, 3])
    jittered = real + rng.uniform(-JITTER, JITTER, real.shape).astype(real.dtype)
    ours = {"real": model.gradients(real, labels)[1], "jit": model.gradients(jittered, labels)[1]}
    theirs = {
        # kinks anchored on the scratch side, as in the gradients check (probes.gradients)
        "real": probes.gradients(ctx.twin, model, real, labels, model.forward(real))[1],
        "jit": probes.gradients(ctx.twin, model, jittered, labels, model.forward(jittered))[1],
    }
    rows = []
    absent = model.not_provided()  # found while the scratch gradients were taken
    for layer, quantity in expected(model):
        if (layer, quantity) in absent:
            rows += _not_provided_rows(ctx, layer, quantity, absent[(layer, quantity)])
            continue
        which = "jit" if quantity == "input" else "real"
        x = jittered if which == "jit" else real
        fd, mask, note, fraction = _finite_difference(ctx, layer, quantity, x, labels)
        a = ours[which].get(layer, {}).get(quantity)
        b = theirs[which].get(layer, {}).get(quantity)
        rows += _three_way(ctx, layer, quantity, a, b, (fd, mask, note, fraction))
    return rows


def _three_way(ctx, layer, quantity, ours, theirs, finite_difference) -> list[dict]:
    fd, mask, note, fraction = finite_difference
    fd_tol = tolerances.get(CHECK, ctx.dtype)
    pair_tol = tolerances.get("gradients", ctx.dtype)
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


def _finite_difference(ctx, layer, quantity, x, labels):
    """FD of the mean loss w.r.t. ``layer``'s ``quantity``: ``(fd, mask, note, fraction)``,
    ``fraction`` the share of the FD'd points that are judged (not kinks, not near ties)."""
    model = ctx.model
    if quantity != "input":
        return _fd_weight(ctx, model.params()[layer][quantity], x, labels)
    names = model.layer_names
    if layer == names[0]:

        def tail(batch):
            return per_example_loss(model.probabilities(batch), _tiled(labels, batch))

        return _fd_activation(tail, x)
    outputs = model.forward(x)
    h = outputs[names[names.index(layer) - 1]]
    if layer == names[-1]:
        return _fd_activation(lambda z: _softmax_cross_entropy(z, labels), h)
    return _fd_activation(_keras_tail(ctx, layer, labels), h, exclude=_near_ties(ctx, layer, h))


def _near_ties(ctx: Context, layer: str, h: np.ndarray) -> np.ndarray:
    """Pool-input points within 4 EPS of a tie: a +-2 EPS step swaps the maxima. The
    windows are the Keras layer's pool size and strides; ``h`` is in scratch layout."""
    from reference.layout import layout_for

    lay = layout_for(ctx.model)
    pool = next(p for p in pools(ctx.model, ctx.twin) if p.layer == layer)
    near = near_maxima(lay.to_keras(layer, "input", h), pool.size, pool.strides, gap=4 * EPS)
    return lay.from_keras(layer, "input", near)


def _fd_weight(ctx, live: np.ndarray, x, labels):
    """FD of the mean loss w.r.t. the live weight array, at every (or a seeded sample of)
    index; kinks (a ReLU at exactly 0 on real images) are detected as for activations."""
    size = live.size
    if size <= FD_MAX_POINTS:
        idx = np.arange(size)
    else:
        rng = np.random.default_rng([ctx.seed, 4, size])
        idx = np.sort(rng.choice(size, FD_MAX_POINTS, replace=False))
    base = mean_loss(ctx.model, x, labels)
    losses = np.zeros((4, len(idx)))
    for j, i in enumerate(idx):
        value = live.flat[i]
        for row, k in enumerate((1, -1, 2, -2)):
            live.flat[i] = value + k * EPS
            losses[row, j] = mean_loss(ctx.model, x, labels)
        live.flat[i] = value  # bit-exact restore
    central, kinks = _classify(losses, base)
    fd = np.zeros(live.shape, dtype=np.float64)
    fd.flat[idx] = central
    mask = np.zeros(live.shape, dtype=bool)
    mask.flat[idx[~kinks]] = True
    note = "all" if size <= FD_MAX_POINTS else f"{FD_MAX_POINTS} of {size} (seeded)"
    if kinks.any():
        note += f" but {int(kinks.sum())} kinks"
    return fd, (None if mask.all() else mask), note, 1.0 - float(kinks.mean())


def _classify(losses: np.ndarray, base) -> tuple[np.ndarray, np.ndarray]:
    """Losses at +EPS, -EPS, +2EPS, -2EPS (``(4, ...)``) and at 0 -> ``(central, kinks)``.

    FD is one-sided at a kink, so kinks get FD 0 and are left out of the comparison. With
    ``C(h)`` the central difference and ``J(h) = |f(h) - 2 f(0) + f(-h)| / h``, a point is
    a kink where (a) the forward and backward differences disagree grossly (``J(EPS)``,
    a ReLU at exactly 0), or where FD's own consistency fails by more than a share of
    the budget: (b) ``C(EPS)`` vs ``C(2 EPS)``, or (c) ``J(2 EPS)`` vs ``2 J(EPS)`` (equal
    for a smooth function up to EPS^3). For a kink at distance ``d < EPS`` the error of
    ``C(EPS)`` is ``D (EPS - d) / (2 EPS)`` (``D`` the jump in slope), (b) reads
    ``D d / (4 EPS)`` and (c) ``D |3 d - 2 EPS| / (2 EPS)``: the larger of the two is
    at least 0.7 times that error for every ``d``, so a point left in cannot carry a
    kink error much above ``KINK_SHARE`` of the budget (the seed-18 zhou input pixel
    whose undetected kink gave 9.5e-7 relative is caught by (c)).
    """
    tol = tolerances.get(CHECK, "float64")
    c1 = (losses[0] - losses[1]) / (2 * EPS)
    c2 = (losses[2] - losses[3]) / (4 * EPS)
    j1 = np.abs(losses[0] - 2 * base + losses[1]) / EPS
    j2 = np.abs(losses[2] - 2 * base + losses[3]) / (2 * EPS)
    scale = np.abs(c1).max(initial=0.0)
    ulp = np.spacing(np.abs(base).max(initial=0.0)) / EPS
    allow = KINK_SHARE * (tol.atol + tol.rtol * scale) + KINK_NOISE_ULPS * ulp
    kinks = (
        (j1 > KINK_JUMP * scale + allow)
        | (np.abs(c1 - c2) > allow)
        | (np.abs(j2 - 2 * j1) > allow + 4 * KINK_NOISE_ULPS * ulp)  # j2 - 2 j1: 5 ulp noise
    )
    return np.where(kinks, 0.0, c1), kinks


def _fd_activation(tail, h: np.ndarray, exclude: np.ndarray | None = None):
    """d mean(tail(h)) / dh by central differences, one position in all examples at once.

    ``tail`` maps a batch ``(B, ...)`` to per-example losses ``(B,)``. Returns
    ``(fd, mask, note, fraction judged)``; kinks (:func:`_classify`) and the points of
    ``exclude`` (tied max-pool maxima) are left out (``mask`` False) and counted.
    """
    n, per = h.shape[0], h[0].size
    flat = h.reshape(n, per)
    base = np.asarray(tail(h), dtype=np.float64)  # (N,)
    losses = np.zeros((4, per, n))
    chunk = max(1, CHUNK_BYTES // (4 * n * per * 8))
    for start in range(0, per, chunk):
        p = min(chunk, per - start)
        steps = np.zeros((p, per), dtype=h.dtype)
        steps[np.arange(p), start + np.arange(p)] = EPS
        shifted = [flat[None] + k * steps[:, None] for k in (1, -1, 2, -2)]  # (P, N, per)
        batch = np.concatenate(shifted).reshape((4 * p * n,) + h.shape[1:])
        losses[:, start : start + p] = np.asarray(tail(batch), np.float64).reshape(4, p, n)
    central, kinks = _classify(losses.transpose(0, 2, 1), base[:, None])  # (N, per) each
    if exclude is not None:
        kinks |= exclude.reshape(n, per)
        central[kinks] = 0.0
    note = "all" if not kinks.any() else f"all but {int(kinks.sum())} kinks of {kinks.size}"
    mask = None if not kinks.any() else ~kinks.reshape(h.shape)
    return (central / n).reshape(h.shape), mask, note, 1.0 - float(kinks.mean())


def _softmax_cross_entropy(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example ``-log softmax(z)[y]`` from logits, in float64."""
    y = _tiled(labels, z)
    z = z.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(z)), y]


def _keras_tail(ctx: Context, layer: str, labels: np.ndarray):
    """The twin's layers from ``layer`` on, as a per-example loss of a scratch-layout batch."""
    from reference.layout import layout_for

    lay = layout_for(ctx.model)
    k_layer, _ = lay.keras_key(layer, "input")
    layers = [lyr for lyr in ctx.twin.layers if type(lyr).__name__ != "InputLayer"]
    start = [lyr.name for lyr in layers].index(k_layer)

    def tail(batch: np.ndarray) -> np.ndarray:
        h = lay.to_keras(layer, "input", batch)
        for lyr in layers[start:]:
            h = lyr(h)
        return per_example_loss(np.asarray(h), _tiled(labels, batch))

    return tail


def _tiled(labels: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Labels for a batch of stacked copies ``(copies * N, ...)`` of the N examples."""
    return np.tile(labels, len(batch) // len(labels))
