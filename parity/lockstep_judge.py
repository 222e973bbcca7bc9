"""Lockstep judging: the per-step budgets and the judge of one step's loss, weight
updates and optimizer state (``parity.lockstep`` drives the steps)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parity import tolerances
from parity.compare import Comparison, compare
from parity.lockstep_state import ITERATIONS, Snapshot, is_model_state, quantities
from reference.optimizers import OPTIMIZERS, SLOT_NAMES

# optimizer -> (its weight-update budget, its slots' budget) in parity.tolerances, each
# measured on that optimizer (benchmarks/lockstep_budget.py); AdamW's update is Adam's
# once its decay w * wd * lr (bit-identical on both sides) is taken, so it shares Adam's
BUDGET_KEYS = {
    "sgd": ("lockstep-weights", None),
    "momentum": ("lockstep-weights-momentum", "lockstep-momentum-state"),
    "nesterov": ("lockstep-weights-momentum", "lockstep-momentum-state"),
    "rmsprop": ("lockstep-weights-rmsprop", "lockstep-rmsprop-state"),
    "adam": ("lockstep-weights-adam", "lockstep-adam-state"),
    "adamw": ("lockstep-weights-adam", "lockstep-adam-state"),
}
# RMSprop's step does not shrink with a gradient that rounding dominates (a well-classified
# image at batch 1: v is older, larger gradients'), so the seed rounding reaches its update
# whole, element by element (parity.tolerances)
SEED_ROUNDINGS = {"rmsprop": tolerances.LOCKSTEP_SEED_ROUNDINGS_RMSPROP}
ADAM_RULE = ("adam", "adamw")  # updates alpha * m / (sqrt(v) + eps): Judge._explained applies
# updates lr g / sqrt(v + eps) with momentum 0 (reference.optimizers): Judge._rms_explained
RMSPROP_RULE = ("rmsprop",)
# RMSprop's gradient magnitude is read off v = rho v0 + (1 - rho) g^2 only where the new term
# v - rho v0 exceeds the rounding of that subtraction, eps (v + rho v0), by this factor: the
# magnitude is then known to 2^-17 of itself, and elsewhere (g^2 lost in v0) nothing is
# explained. A choice of precision, not a measured budget.
RECOVERY_MARGIN = 2.0**16
# optimizer -> {slot: decay}: a slot updated as s = decay * s + term is judged against the
# step's largest new term |s_after - decay * s_before| (Keras's side), not its change.
# RMSprop's velocity: the term is (1 - rho) g^2, and a gradient rounding dg moves it by
# 2 (1 - rho) |g| |dg| <= 2 (dg / G) (1 - rho) G^2, G the step's largest |g|: the term
# scale M = (1 - rho) G^2 bounds v's error by twice the gradient's error relative to the
# largest gradient, the quantity the weight budgets bound. v's change (1 - rho)(g^2 - v)
# cancels where g^2 ~ v (a steady state) and was a poor scale (parity.tolerances).
DECAYS = {"rmsprop": {"velocity": OPTIMIZERS["rmsprop"].options["rho"]}}

# -- budgets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budgets:
    """The per-step budgets of one lockstep run (``parity.tolerances``, ``LOCKSTEP_*``).

    A step's update ``d = after - before`` of one weight array passes when::

        max|d_scratch - d_keras| <= eps * max|before| + rtol * M

    ``eps * max|before|``: each side rounds ``before + d`` once (half an ulp of the largest
    value each; ``eps`` the dtype's machine epsilon). ``rtol * M`` (``rtol`` grown at
    ill-conditioned steps, :meth:`Budgets.update_rtol`): the rounding of the
    update itself, ``M`` being the step's largest update over EVERY weight array of the
    model (for Adam's moments: over every momentum, resp. velocity). Two measured reasons
    for this scale. Not the weights: an SGD step moves a weight by ``lr * g``, far less
    than the weight, so a weight-relative rule would lose a wrong gradient in the last
    digits. Not each array's own update: a gradient element is a sum of many terms and
    its rounding is relative to the terms, not to the sum; an array whose sums cancel at
    a step (chw-relu's 8 conv biases at well-classified images, ~1e-3 of the terms) has a
    relative error ~1,000x eps, the model's largest update does not cancel (at batch 1 the
    dense kernel's gradient is an outer product: one term per element).

    The loss's own gradient, ``p - y`` at the logits (softmax cross-entropy, one-hot
    ``y``), is computed with an absolute rounding error of a few ``eps * (p + y)``: at a
    well-classified example ``p[label] = 1 - 1e-4`` in float32, ``p[label] - 1`` is known to
    only ~1e-3 of itself, and every update of the step inherits that relative error, on
    each side independently (measured: chw-relu seed 20, step 1,757, loss 1.5e-4: 1.2e-3 of
    ``M``, where ``rtol`` allows 4e-4). :func:`seed_condition` is that ratio ``kappa``;
    the budget adds ``SEED_ROUNDINGS * eps * kappa`` to ``rtol``.

    Adam's weights: the update ``alpha * m / (sqrt(v) + eps)`` is judged after taking out
    what the moments' differences explain to first order (``Judge._explained``); the
    moments are judged on their own, so a wrong gradient still fails there, and a wrong
    update rule (epsilon inside the root, a missing bias correction) fails here.
    """

    loss_atol: float
    weight_rtol: float
    state_rtol: float  # the optimizer's slots (0 for plain SGD, which has none)
    eps: float
    seed_roundings: float = tolerances.LOCKSTEP_SEED_ROUNDINGS  # (RMSprop: its own)
    moving_rtol: float = 0.0  # batch norm's moving statistics (their own scale M)

    @classmethod
    def of(cls, dtype: str, optimizer: str, network=None) -> Budgets:
        """The budgets of ``optimizer`` (a name of ``reference.optimizers``) in ``dtype``;
        ``network`` (a ``spec.Network``) picks a batch-norm network's own where they exist
        (``tolerances.get``)."""
        weights, state = BUDGET_KEYS[optimizer]
        return cls(
            loss_atol=tolerances.get("lockstep-loss", dtype, network).atol,
            weight_rtol=tolerances.get(weights, dtype, network).rtol,
            state_rtol=tolerances.get(state, dtype, network).rtol if state else 0.0,
            eps=float(np.finfo(dtype).eps),
            seed_roundings=SEED_ROUNDINGS.get(optimizer, tolerances.LOCKSTEP_SEED_ROUNDINGS),
            moving_rtol=tolerances.get("lockstep-moving-statistics", dtype).rtol,
        )

    def rtol(self, quantity: str) -> float:
        kind = quantity_kind(quantity)
        if kind == "iterations":
            return 0.0
        if kind == MOVING:
            return self.moving_rtol
        return self.state_rtol if kind != "weights" else self.weight_rtol

    def update_rtol(self, quantity: str, kappa: float) -> float:
        """``rtol`` at a step whose loss gradient has condition ``kappa`` (>= 1):
        ``rtol + seed_roundings * eps * kappa`` (``parity.tolerances``,
        ``LOCKSTEP_SEED_ROUNDINGS*``); 0 for the iteration count (exact). The moving
        statistics come from the forward pass alone (the batch's mean and variance): no
        loss gradient in them, so no ``kappa`` term."""
        if quantity_kind(quantity) in ("iterations", MOVING):
            return self.rtol(quantity)
        return self.rtol(quantity) + self.seed_roundings * self.eps * kappa


def seed_condition(probabilities, labels, eps: float) -> float:
    """``kappa``: how much the rounding of the loss gradient at the logits can move it,
    relative to its size (>= 1), for softmax cross-entropy with one-hot labels.

    The gradient of the batch's summed loss at the logits is ``p - y`` per example; its
    rounding is ``~ eps * (p + y)`` per element (``p[label] - 1`` cancels), so::

        kappa = sum(p + y) / sum|p - y| = N / sum_n sum_{j != label_n} p_nj

    (each example's ``sum|p - y| = 2 (1 - p[label]) = 2 sum_{j != label} p_j``; the second
    form stays exact where ``p[label]`` rounds to 1). Capped at ``1 / eps``: a step whose
    gradient is below the dtype's resolution is judged to the order of its update only.

    ``probabilities``: ``(N, units)``, the twin's output at the step's starting weights;
    ``labels``: ``(N,)`` integers.
    """
    p = np.array(probabilities, np.float64)  # a copy: the labels' entries are zeroed
    p[np.arange(p.shape[0]), np.asarray(labels)] = 0.0
    others = float(p.sum())  # never 1 - p[label]: that is the cancellation measured here
    kappa = p.shape[0] / others if others > 0 else np.inf
    return float(min(max(kappa, 1.0), 1.0 / eps))


MOVING = "moving statistics"  # batch norm's moving_mean and moving_variance


def quantity_kind(quantity: str) -> str:
    """``weights``, a slot name (``momentum``, ``velocity``: ``reference.optimizers``),
    ``moving statistics`` or ``iterations``: what shares a scale ``M``."""
    if quantity == ITERATIONS[1]:
        return "iterations"
    if is_model_state(quantity):
        return MOVING
    return quantity.rsplit(" ", 1)[-1] if quantity.endswith(SLOT_NAMES) else "weights"


# -- per-step judging ---------------------------------------------------------------------


@dataclass
class Entry:
    """One quantity at one step: the share of its budget it used (``> 1``: over)."""

    layer: str
    quantity: str
    use: float  # max|d_s - d_k| / allowance; inf if not finite
    allowance: float  # eps * max|before| + rtol * M (0 for iterations: exact)
    scale: float  # M, the step's largest update of this kind
    kappa: float  # the step's loss-gradient condition (seed_condition)
    before: np.ndarray
    mine: np.ndarray  # scratch after the step
    theirs: np.ndarray  # keras after the step
    note: str = ""  # what went non-finite
    explained: np.ndarray | None = None  # Adam: update difference the moments explain


@dataclass
class _Track:
    """One quantity over the steps: its worst step and its first step over budget."""

    worst: tuple | None = None  # (entry, where)
    first_over: tuple | None = None


@dataclass
class Judge:
    """Measures lockstep steps (``measure``), keeps them (``record``) and turns them into
    verdict records (``comparisons``): per quantity its worst step."""

    dtype: str
    budgets: Budgets
    slots: tuple[str, ...] = ()  # the optimizer's slot names (reference.optimizers)
    adam_rule: tuple | None = None  # Adam's, AdamW's (learning_rate, beta_1, beta_2, epsilon)
    rmsprop_rule: tuple | None = None  # RMSprop's (learning_rate, rho, epsilon), momentum 0
    decays: dict = field(default_factory=dict)  # {slot: decay}: scaled by its new term (DECAYS)
    tracks: dict = field(default_factory=dict)  # (layer, quantity) -> _Track
    resynced: list = field(default_factory=list)  # (where, what) of re-synced steps
    steps: int = 0

    def measure(self, before: Snapshot, scratch: Snapshot, keras: Snapshot,
                kappa: float = 1.0) -> list[Entry]:  # fmt: skip
        """Every quantity of one step: scratch's and Keras's step from ``before``;
        ``kappa`` the step's loss-gradient condition (:func:`seed_condition`). A kind's
        scale ``M`` is its largest update on Keras's side, ``max|after - before|``, or for
        a slot of :attr:`decays` its largest new term ``max|after - decay * before|``."""
        rows = []  # (layer, quantity, before, mine, theirs, float64 copies or None)
        scales: dict = {}
        for (layer, quantity, b), (_, _, s), (_, _, k) in zip(
            quantities(before, self.slots), quantities(scratch, self.slots),
            quantities(keras, self.slots), strict=True,
        ):  # fmt: skip
            b = _zeros_if_none(b, s)  # an optimizer's slots start at zero, as in Keras
            arrays = None
            if quantity != ITERATIONS[1]:
                arrays = tuple(np.asarray(a, dtype=np.float64) for a in (b, s, k))
                if np.isfinite(arrays[2]).all():
                    kind = quantity_kind(quantity)
                    old = arrays[0] * self.decays.get(kind, 1.0)
                    step = float(np.max(np.abs(arrays[2] - old), initial=0.0))
                    scales[kind] = max(scales.get(kind, 0.0), step)
            rows.append((layer, quantity, b, s, k, arrays))
        explained = (self._explained(rows, keras.state.iterations) if self.adam_rule
                     else self._rms_explained(rows) if self.rmsprop_rule else {})  # fmt: skip
        return [self._entry(*row, scales.get(quantity_kind(row[1]), 0.0), kappa,
                            explained.get(row[:2])) for row in rows]  # fmt: skip

    def _explained(self, rows, t: int) -> dict:
        """Adam: per weight, the update difference its moments' differences explain.

        ``d = alpha * m / (sqrt(v) + eps)``: to first order a moment difference ``dm``,
        ``dv`` moves the update by ``|dd/dm| |dm| + |dd/dv| |dv|``. The moments are judged
        on their own; what is left of the update difference is Adam's update rule. This
        matters at step 1, where ``|dd/dg| = alpha * (1 - beta_1) / eps`` (316 x) for a
        gradient element that cancels to ~0: its summation-order rounding alone would
        move the update by up to 1e-2 of the largest one in float32.
        """
        lr, beta_1, beta_2, epsilon = self.adam_rule
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        moments = {(layer, quantity): arrays for layer, quantity, _, _, _, arrays in rows}
        out = {}
        for layer, quantity, *_ in rows:
            if quantity_kind(quantity) != "weights":
                continue
            m = moments.get((layer, f"{quantity} momentum"))
            v = moments.get((layer, f"{quantity} velocity"))
            if m is None or v is None:
                continue
            (_, m_s, m_k), (_, v_s, v_k) = m, v
            root = np.sqrt(np.maximum(v_k, 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                by_v = np.where(root > 0, alpha * np.abs(m_k) / (2 * root * (root + epsilon) ** 2),
                                0.0)  # fmt: skip
            out[(layer, quantity)] = (alpha / (root + epsilon)) * np.abs(m_s - m_k) + by_v * (
                np.abs(v_s - v_k)
            )
        return out

    def _rms_explained(self, rows) -> dict:
        """RMSprop: per weight, the update difference the two gradient magnitudes explain.

        Keras's increment is ``lr g / sqrt(v + eps)`` with ``v = rho v0 + (1 - rho) g^2``.
        Where ``v < eps`` a gradient element's rounding ``dg`` reaches the update with gain
        ``lr / sqrt(eps)``: measured on cs231n-3layer in float32 (seed 9, step 1, conv
        kernel), ``|g|`` 7.39e-4 against 7.34e-4 (1e-5 of the largest ``|g|``, a 21,632-term
        sum behind a batch norm) moved the update by 2.3e-3 of the largest update. ``v``
        holds each side's ``|g|``: ``|g| = sqrt((v - rho v0) / (1 - rho))``, so the part
        explained is ``|F_s - F_k|``, ``F = lr |g| / sqrt(v + eps)`` (Keras's map at each
        side's own ``|g|`` and ``v``, in float64), where that subtraction is well
        conditioned (``RECOVERY_MARGIN``; 0 elsewhere). ``v`` carries no sign: an update
        whose sign differs stays unexplained. ``v`` is judged on its own and the gradients
        by the gradients check; what is left here is RMSprop's update rule.
        """
        lr, rho, epsilon = self.rmsprop_rule
        slots = {(layer, quantity): arrays for layer, quantity, _, _, _, arrays in rows}
        out = {}
        for layer, quantity, *_ in rows:
            v = slots.get((layer, f"{quantity} velocity"))
            if quantity_kind(quantity) != "weights" or v is None:
                continue
            v0, *sides = v
            magnitude = []
            for v1 in sides:
                term = v1 - rho * v0  # (1 - rho) g^2
                trusted = term > RECOVERY_MARGIN * self.budgets.eps * (v1 + rho * v0)
                g = np.sqrt(np.where(trusted, term, 0.0) / (1 - rho))
                magnitude.append((trusted, lr * g / np.sqrt(np.maximum(v1, 0.0) + epsilon)))
            (ok_s, f_s), (ok_k, f_k) = magnitude
            out[(layer, quantity)] = np.where(ok_s & ok_k, np.abs(f_s - f_k), 0.0)
        return out

    def _entry(self, layer, quantity, before, mine, theirs, arrays, scale, kappa,
               explained=None) -> Entry:  # fmt: skip
        args = (layer, quantity)
        if arrays is None:  # the iteration count: exact
            use = 0.0 if int(mine) == int(theirs) else np.inf
            return Entry(*args, use, 0.0, 0.0, kappa, before, mine, theirs)
        b, s, k = arrays
        if not (np.isfinite(s).all() and np.isfinite(k).all()):
            note = f"{nonfinite_sides(s, k)} {layer}/{quantity}"
            return Entry(*args, np.inf, 0.0, scale, kappa, before, mine, theirs, note)
        allowance = self.budgets.eps * float(np.max(np.abs(b), initial=0.0))
        allowance += self.budgets.update_rtol(quantity, kappa) * scale
        diff = np.abs(s - k)  # = |d_s - d_k|: same `before`
        if explained is not None:
            diff = np.maximum(diff - explained, 0.0)
        err = float(np.max(diff, initial=0.0))
        use = err / allowance if allowance > 0 else (0.0 if err == 0 else np.inf)
        return Entry(*args, use, allowance, scale, kappa, before, mine, theirs, "", explained)

    def record(self, entries: list[Entry], where: str) -> None:
        self.steps += 1
        for entry in entries:
            track = self.tracks.setdefault((entry.layer, entry.quantity), _Track())
            if track.worst is None or entry.use > track.worst[0].use:
                track.worst = (entry, where)
            if track.first_over is None and entry.use > 1.0:
                track.first_over = (entry, where)

    def comparisons(self) -> list[Comparison]:
        """One record per quantity: its worst step; the message names the first step over
        budget (when one was) and the steps whose decisions were re-synced."""
        return [self._record(key, track) for key, track in self.tracks.items()]

    def _record(self, key, track: _Track) -> Comparison:
        (entry, where), (layer, quantity) = track.worst, key
        if quantity == ITERATIONS[1]:
            c = compare(entry.mine, entry.theirs, layer=layer, quantity=quantity, atol=0.0,
                        rtol=0.0, expected_dtype=np.int64)  # fmt: skip
        else:  # the allowance is absolute: it scales with the step's largest update
            c = compare(entry.mine, entry.theirs, layer=layer, quantity=f"{quantity} update",
                        atol=0.0, rtol=0.0, expected_dtype=self.dtype)  # fmt: skip
            if c.stage == "values":  # dtypes right: compare the updates (exact, in float64)
                mine, theirs = (np.asarray(a, np.float64) - entry.before
                                for a in (entry.mine, entry.theirs))  # fmt: skip
                if entry.explained is not None:  # Keras's update, moved by what m, v explain
                    theirs = theirs + np.clip(mine - theirs, -entry.explained, entry.explained)
                c = compare(mine, theirs, layer=layer, quantity=f"{quantity} update",
                            atol=entry.allowance, rtol=0.0)  # fmt: skip
        parts = []
        if track.first_over is not None and track.first_over[1] != where:
            first, first_where = track.first_over
            parts.append(f"first step over budget {first_where} ({first.use:.2g} x budget)")
        if entry.note:
            parts.append(f"{entry.note} went non-finite at {where}; lockstep ends there")
        else:
            parts.append(f"worst step {where} ({entry.use:.2g} x budget{self._rule(entry)})")
        if self.resynced:
            listed = ", ".join(w for w, _ in self.resynced[:3])
            more = f" and {len(self.resynced) - 3} more" if len(self.resynced) > 3 else ""
            parts.append(f"{len(self.resynced)} step(s) judged after re-syncing a max-pool/"
                         f"ReLU decision rounding took differently ({listed}{more})")  # fmt: skip
        return _with_message(c, f"lockstep, {'; '.join(parts)}: {c.message}")

    def _rule(self, entry: Entry) -> str:
        if entry.quantity == ITERATIONS[1]:
            return ""
        rtol, base = (self.budgets.update_rtol(entry.quantity, entry.kappa),
                      self.budgets.rtol(entry.quantity))  # fmt: skip
        seed = self.budgets.seed_roundings
        kind = quantity_kind(entry.quantity)
        of = (f"new term |after - {self.decays[kind]:g}*before|" if kind in self.decays
              else "update")  # fmt: skip
        rule = (f"; atol = eps*max|before| + rtol*M = {self.budgets.eps:.2e}*"
                f"{float(np.max(np.abs(np.asarray(entry.before, np.float64)), initial=0.0)):.3e}"
                f" + {rtol:.1e}*{entry.scale:.3e}, M the step's largest {kind} {of}")  # fmt: skip
        if quantity_kind(entry.quantity) != MOVING:
            rule += (f", rtol = {base:.1e} + {seed:g}*eps*kappa, kappa = {entry.kappa:.3g} "
                     "the loss gradient's condition")  # fmt: skip
        if entry.explained is not None:
            what = "m, v differences" if self.adam_rule else "gradient magnitudes in v"
            rule += (f"; keras's update moved by what the {what} explain (up to "
                     f"{float(np.max(entry.explained, initial=0.0)):.3e})")  # fmt: skip
        return rule


def _zeros_if_none(array, like) -> np.ndarray:
    return np.zeros(np.shape(like)) if array is None else np.asarray(array, np.float64)


def _with_message(c: Comparison, message: str) -> Comparison:
    import dataclasses

    return dataclasses.replace(c, message=message)


def nonfinite_sides(scratch_value, keras_value) -> str:
    """``"scratch"``, ``"keras"``, ``"scratch and keras"`` or ``""``: who is not finite."""
    sides = [side for side, v in (("scratch", scratch_value), ("keras", keras_value))
             if not np.isfinite(np.asarray(v, dtype=np.float64)).all()]  # fmt: skip
    return " and ".join(sides)
