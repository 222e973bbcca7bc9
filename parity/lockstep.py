"""Lockstep training: every step, scratch and Keras start from the SAME weights and state.

Free-running training compares two trajectories that each feed on their own rounding:
in float32 a 1-ulp difference is amplified step after step (two-conv drifts past 1e-4 in
its per-step loss after ~1,600 correct steps). Lockstep removes the amplification. Before
step ``k``, the twin is re-synced to the scratch model: the scratch weights and the
scratch optimizer's state (iterations; for Adam the moments ``m`` and ``v``) are written
into the twin's variables and its Keras optimizer's slots. Then both sides take ONE step
on the same batch: scratch through its own training code (``scratch.train.train``, the
run the free-running paths compare against), Keras through its own optimizer
(``reference.lockstep_step.LockstepStepper``). What is compared, per step:

- the loss before the update (scratch vs Keras on identical weights);
- every weight after the update (scratch's own update vs Keras's optimizer applied to
  the same starting weights), norm-wise relative;
- the optimizer state after the update: ``iterations`` exactly and, for Adam, each
  weight's ``m`` and ``v``. The state has to be compared as well as re-synced: a scratch
  Adam that steps right but stores a wrong moment would pass on the weights forever,
  since the twin is handed that moment back before every step.

Each budget is a per-step rounding budget (``parity.tolerances``, ``LOCKSTEP_*``):
nothing can be amplified from one step to the next.

A non-finite loss, weight or state value on either side ends lockstep at that step
(every step before it is kept); a value non-finite on one side only is a failure at that
step whose message names the side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parity import tolerances
from parity.lockstep_judge import (
    ADAM_RULE,
    DECAYS,
    RMSPROP_RULE,
    Budgets,
    Entry,
    Judge,
    nonfinite_sides,
    quantity_kind,
    seed_condition,
)
from parity.lockstep_state import ITERATIONS, Snapshot, copy_weights, quantities, scratch_state

__all__ = ["ITERATIONS", "Budgets", "Entry", "Judge", "Lockstep", "LockstepRun", "ScratchRun",
           "Snapshot", "StepCase", "copy_weights", "decision_nudges", "nonfinite_sides",
           "quantities", "scratch_state", "seed_condition", "train_scratch"]  # fmt: skip


# -- decisions rounding took differently ----------------------------------------------------


def decision_nudges(scratch_out: dict, keras_out: dict, layers, tol_rtol: float, layout):
    """What to add to the twin's decision-layer inputs so it decides as scratch did.

    ``scratch_out``/``keras_out``: every layer's output (scratch layout) on the step's
    batch at the weights before the step; ``layers``: ``(layer, kind)`` from
    :func:`decision_layers`; ``layout`` (``reference.layout``) takes pool inputs to NHWC,
    where the windows are the Keras layer's pool size and strides. A max-pool window is
    ambiguous when the sides disagree on
    WHICH of its elements are maximal (bit-exact, each on its own input) and every such
    candidate is within ``tol_rtol * max|input|`` (the forward budget) of the maximum on
    both sides: rounding, not a rule, chose where the gradient goes (a float32 near-tie,
    CPU-dependent, DESIGN.md). A ReLU input is ambiguous when the sides disagree on its
    sign and it is that close to zero on both. The nudge copies scratch's values into
    the twin there (a change within rounding): the twin then sees scratch's ties and
    signs. An implementation that routes exact ties by another rule (the blog's all-ties
    rule, the last maximum) is not helped: both sides already agree on the values.

    Returns ``({layer: nudge, scratch layout of the layer's input}, description)``.
    """
    from parity.checks.ties import scatter, windows

    nudges, found = {}, []
    names = list(scratch_out)
    for layer, kind, pool in layers:
        previous = names[names.index(layer) - 1]  # the layer's input: the previous output
        a = np.asarray(scratch_out[previous], np.float64)
        b = np.asarray(keras_out[previous], np.float64)
        tol = tol_rtol * float(np.max(np.abs(b), initial=0.0))
        if kind == "max-pool":
            a_k, b_k = (layout.to_keras(layer, "input", v) for v in (a, b))
            wa, wb = (windows(v, pool.size, pool.strides) for v in (a_k, b_k))
            k = wa.shape[-1]
            mask = _ambiguous_windows(wa.reshape(-1, k), wb.reshape(-1, k), tol)
            where_k = scatter(mask.reshape(wa.shape), a_k.shape, pool.size, pool.strides)
            where = layout.from_keras(layer, "input", where_k)
            count = int(np.count_nonzero(mask.any(axis=1)))
        else:
            where = ((a > 0) != (b > 0)) & (np.abs(a) <= tol) & (np.abs(b) <= tol)
            count = int(np.count_nonzero(where))
        if count:
            dtype = np.asarray(scratch_out[previous]).dtype
            nudges[layer] = np.where(where, a - b, 0.0).astype(dtype)
            found.append(f"{count} {layer} {'window' if kind == 'max-pool' else 'input'}(s)")
    return nudges, ", ".join(found)


def _ambiguous_windows(wa: np.ndarray, wb: np.ndarray, tol: float) -> np.ndarray:
    """``(windows, k)`` mask of the candidates of every ambiguous window."""
    ma, mb = wa == wa.max(axis=1, keepdims=True), wb == wb.max(axis=1, keepdims=True)
    candidates = ma | mb

    def close(w):
        return ((w.max(axis=1, keepdims=True) - w <= tol) | ~candidates).all(axis=1)

    ambiguous = (ma != mb).any(axis=1) & close(wa) & close(wb)
    return candidates & ambiguous[:, None]


def decision_layers(model, keras_model) -> list[tuple]:
    """``(layer, kind, pool)`` of the layers whose backward pass depends on a discrete
    decision (max-pool: which element is the maximum, ``pool`` its ``ties.Pool``
    geometry; ReLU: the input's sign), found by the Keras twin's layer types."""
    from parity.checks.ties import pools
    from reference.probes import kinked_layers

    by_layer = {p.layer: p for p in pools(model, keras_model)}
    first = model.layer_names[0]  # takes the batch itself: no decision to re-sync
    later = [layer for layer, _ in kinked_layers(keras_model, model) if layer != first]
    return [(layer, "max-pool", by_layer[layer]) if layer in by_layer else (layer, "relu", None)
            for layer in later]  # fmt: skip


# -- the run ------------------------------------------------------------------------------


@dataclass
class LockstepRun:
    """Everything a lockstep run measured; ``ended`` says why it stopped early, if it did."""

    losses: list = field(default_factory=list)  # Keras's loss per step
    correct: list = field(default_factory=list)  # Keras's correct flags per step
    weight_use: list = field(default_factory=list)  # per step: worst weight's budget use
    state_use: list = field(default_factory=list)  # the same over the optimizer's slots
    resynced: list = field(default_factory=list)  # per step: "" or the decisions re-synced
    epoch_weights: list = field(default_factory=list)  # Keras weights after each epoch
    scratch_epoch_weights: list = field(default_factory=list)  # scratch, same points
    ended: str = ""  # "" or "epoch e step s (global step g): <what> went non-finite"
    comparisons: list = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class StepCase:
    """One lockstep step kept for a diagnosis (``parity.diagnosis.first_step``): the
    scratch snapshots before and after it, Keras's after it, the batch (preprocessed
    ``x``, integer ``labels``) and the judged entries. ``global_step`` counts from 1."""

    global_step: int
    where: str
    before: Snapshot
    after: Snapshot
    keras: Snapshot
    x: np.ndarray
    labels: np.ndarray
    entries: list
    masks: dict | None = None  # the step's dropout masks (Keras layout)


MAX_FAILING_PROBES = 20  # a step over budget after this many: no more re-sync attempts


class Lockstep:
    """Drives the Keras side of lockstep training, one scratch step at a time.

    Call :meth:`step` after every scratch step with the snapshot taken before it and
    the one taken after it: the twin takes its step from ``before`` and both outcomes
    are measured. A later diagnosis can call it from any snapshot of a scratch run.

    A step over budget is looked at once more: if the two forward passes at ``before``
    took a max-pool or ReLU decision differently within rounding
    (:func:`decision_nudges`), the twin takes the step again with scratch's values at
    those elements, and that step is judged (the messages list such steps). A real bug
    stays over budget; after ``MAX_FAILING_PROBES`` such steps no more are looked at.
    """

    def __init__(self, stepper, model, dtype: str, optimizer: str):
        self.stepper, self.model = stepper, model
        self.slots = stepper.slot_names  # the optimizer's slots, synced and compared
        rule, rms_rule, keras_optimizer = None, None, stepper.optimizer
        lr = float(keras_optimizer.learning_rate.numpy())
        if optimizer in ADAM_RULE:  # Adam's update judged after what m, v explain
            rule = (lr, float(keras_optimizer.beta_1), float(keras_optimizer.beta_2),
                    float(keras_optimizer.epsilon))  # fmt: skip
        if optimizer in RMSPROP_RULE and not keras_optimizer.momentum:  # what |g| in v explains
            rms_rule = (lr, float(keras_optimizer.rho), float(keras_optimizer.epsilon))
        self.judge = Judge(dtype, Budgets.of(dtype, optimizer, model.spec), self.slots, rule,
                           rms_rule, decays=DECAYS.get(optimizer, {}))  # fmt: skip
        self.forward_rtol = tolerances.get("forward", dtype, model.spec).rtol
        self.decisions = decision_layers(model, stepper.keras_model)
        self.failing_probes = 0
        self.run = LockstepRun()
        self.last: tuple[Snapshot, Snapshot] | None = None  # (scratch, keras) after a step
        self.masks = None  # the current step's dropout masks (Keras layout), or None
        self.first_over: StepCase | None = None  # the first step over budget, kept whole
        self.epoch_steps = 0  # steps taken in the current epoch

    @property
    def active(self) -> bool:
        return not self.run.ended

    def step(self, before: Snapshot, after: Snapshot, x, labels, where: str, masks=None):
        """One Keras step from ``before`` on ``(x, labels)``, measured against ``after``;
        ``masks``: the step's dropout masks (Keras layout), the ones scratch's step used."""
        import time

        t0 = time.perf_counter()
        self.masks = masks
        out = self.stepper(before.weights, before.state, x, labels, masks=masks)
        keras = Snapshot(out.weights, out.state)
        kappa = seed_condition(out.probabilities, labels, self.judge.budgets.eps)
        entries = self.judge.measure(before, after, keras, kappa)
        resynced = ""
        if any(e.use > 1.0 and not e.note for e in entries):
            keras, entries, resynced = self._resync(before, after, x, labels, keras, entries,
                                                    kappa)  # fmt: skip
        if resynced:
            self.judge.resynced.append((where, resynced))
        self.judge.record(entries, where)
        if self.first_over is None and any(e.use > 1.0 for e in entries):
            self.first_over = StepCase(len(self.run.losses) + 1, where, before, after, keras,
                                       x, labels, entries, masks)  # fmt: skip
        self.run.seconds += time.perf_counter() - t0
        self.run.losses.append(out.loss)
        self.run.correct.append(out.correct)
        self.run.weight_use.append(_worst(entries, "weights"))
        self.run.state_use.append(_worst(entries, "state") if self.slots else np.nan)
        self.run.resynced.append(resynced)
        self.last, self.epoch_steps = (after, keras), self.epoch_steps + 1
        nonfinite = "; ".join(e.note for e in entries if e.note)
        if not np.isfinite(out.loss):
            nonfinite = "; ".join(filter(None, [f"keras loss {out.loss!r}", nonfinite]))
        if nonfinite:
            self.run.ended = f"{where}: {nonfinite} went non-finite"
        return out

    def _resync(self, before, after, x, labels, keras, entries, kappa):
        """The step again with the twin deciding as scratch did, if rounding made them
        decide differently; kept when it is within budget."""
        if not self.decisions or self.failing_probes >= MAX_FAILING_PROBES:
            return keras, entries, ""
        self.model.restore(before.weights)  # scratch's forward pass at `before`
        try:
            mine = self.model.forward(x)
        finally:
            self.model.restore(after.weights)  # the weights and moving statistics after
        theirs = self.stepper.forward(before.weights, x)
        nudges, found = decision_nudges(mine, theirs, self.decisions, self.forward_rtol,
                                        self.stepper.layout)  # fmt: skip
        if nudges:
            out = self.stepper(before.weights, before.state, x, labels, nudges=nudges,
                               masks=self.masks)  # fmt: skip
            again = Snapshot(out.weights, out.state)
            retry = self.judge.measure(before, after, again, kappa)
            if all(e.use <= 1.0 for e in retry):
                return again, retry, f"re-synced {found}"
        self.failing_probes += 1
        return keras, entries, ""

    def end_epoch(self) -> None:
        """Keep both sides' weights after this epoch's last lockstep step (if it took any)."""
        if self.epoch_steps:
            scratch, keras = self.last
            self.run.scratch_epoch_weights.append(scratch.weights)
            self.run.epoch_weights.append(keras.weights)
        self.epoch_steps = 0

    def finish(self) -> LockstepRun:
        self.run.comparisons = self.judge.comparisons() if self.judge.steps else []
        return self.run


def _worst(entries: list[Entry], kind: str) -> float:
    """The largest budget use of ``weights`` or of the ``state`` (the optimizer's slots)."""
    uses = [e.use for e in entries if quantity_kind(e.quantity) != "iterations"
            and (quantity_kind(e.quantity) == "weights") == (kind == "weights")]  # fmt: skip
    return max(uses, default=0.0)


# -- the scratch run, with lockstep after each step ----------------------------------------


class _Stop(Exception):
    """Raised from the step callback to end scratch training (a non-finite value)."""


@dataclass
class ScratchRun:
    """The scratch side of a training check, up to where it ended.

    ``losses``/``correct``: per step, before the update; ``epoch_weights``/``tests``: after
    each epoch, and at the step where the run ended if it ended early. ``ended`` says why
    it ended early: a non-finite loss or weight, or an exception (kept in ``error``; the
    weights are then those of the last completed epoch or partial epoch, possibly part way
    through the failing step).
    """

    losses: list = field(default_factory=list)
    correct: list = field(default_factory=list)
    epoch_weights: list = field(default_factory=list)
    tests: list = field(default_factory=list)
    ended: str = ""
    error: BaseException | None = None
    seconds: float = 0.0  # in scratch code only (training steps)


def where(epoch: int, step: int, global_step: int) -> str:
    return f"epoch {epoch} step {step} (global step {global_step})"


def train_scratch(model, optimizer, x, labels, orders, batch_size: int, *, lockstep=None,
                  evaluate=None, progress=None, masks=None) -> ScratchRun:  # fmt: skip
    """Scratch training over ``orders`` (``scratch.train.train``, one call per epoch),
    with the lockstep Keras step after every scratch step when ``lockstep`` is given.

    Never raises for what the scratch model does: an exception ends the run and is kept
    in ``ScratchRun.error``; a non-finite loss or weight ends it after that step.
    ``evaluate(model)`` gives the test loss and accuracy after each epoch.
    ``masks(global step from 0, batch size)``: that step's dropout masks (Keras layout),
    given to the scratch model before the step and to lockstep's Keras step with it.
    """
    import time

    from parity import modes

    run = ScratchRun()
    clock = {"outside": 0.0}
    before = [Snapshot.take(model, optimizer) if lockstep is not None else None]
    epoch = 0
    sizes = [len(order[i : i + batch_size]) for order in orders
             for i in range(0, order.size, batch_size)]  # fmt: skip
    current = [None]

    def inject(step: int) -> None:
        if masks is not None and step < len(sizes):
            current[0] = modes.inject(model, masks(step, sizes[step]))  # the masks used

    inject(0)

    def on_step(record, _steps_in_epoch):
        t0 = time.perf_counter()
        run.losses.append(float(record.loss))
        run.correct.append(int(record.n_correct))
        g = len(run.losses)
        here = where(epoch, record.step + 1, g)
        bad = _scratch_nonfinite(record.loss, model.params())
        if lockstep is not None and lockstep.active:
            after = Snapshot.take(model, optimizer)
            lockstep.step(before[0], after, x[record.indices], labels[record.indices], here,
                          masks=current[0])  # fmt: skip
            before[0] = after
        inject(g)  # the next step's masks (g steps done, counted from 0)
        if progress is not None:
            progress(g)
        clock["outside"] += time.perf_counter() - t0
        if bad:
            run.ended = f"{here}: scratch {bad} went non-finite"
            raise _Stop

    from scratch.train import train

    t_start = time.perf_counter()
    for epoch, order in enumerate(orders, start=1):  # on_step reads `epoch`
        try:
            train(model, x, labels, optimizer, epochs=1, batch_size=batch_size,
                  orders=[order], progress=on_step)  # fmt: skip
        except _Stop:
            pass
        except Exception as error:  # the scratch model's own code raised
            g = len(run.losses) + 1
            step = g - sum(-(-o.size // batch_size) for o in orders[: epoch - 1])
            run.error = error
            run.ended = f"{where(epoch, step, g)}: scratch raised {type(error).__name__}"
        _close_epoch(run, model, lockstep, evaluate)
        if run.ended:
            break
    run.seconds = time.perf_counter() - t_start - clock["outside"]
    return run


def _close_epoch(run: ScratchRun, model, lockstep, evaluate) -> None:
    run.epoch_weights.append(copy_weights(model.params()))
    if lockstep is not None:
        lockstep.end_epoch()
    nan = (float("nan"), float("nan"))
    if evaluate is None or run.ended:  # after a non-finite value or an exception: no test
        run.tests.append(nan)
        return
    try:
        run.tests.append(evaluate(model))
    except Exception as error:  # the scratch forward pass raised on the test images
        run.tests.append(nan)
        run.error, run.ended = error, f"test after epoch {len(run.epoch_weights)}: scratch raised"


def _scratch_nonfinite(loss, params) -> str:
    """What of the scratch loss and weights is not finite (``""`` if all is)."""
    bad = [] if np.isfinite(loss) else [f"loss {loss!r}"]
    bad += [f"{layer}/{weight}" for layer, weights in params.items()
            for weight, array in weights.items() if not np.isfinite(array).all()]  # fmt: skip
    return ", ".join(bad)
