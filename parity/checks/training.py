"""The training-curve check: scratch and Keras trained side by side, step by step.

The scratch model trains with ``scratch.train.train`` (``parity.lockstep.train_scratch``);
the twin trains on the same schedule (``parity.checks.training_config``) along each
Keras path: ``epoch`` (the default), ``fit`` and ``tape`` free-running
(``reference.training``), ``lockstep`` re-synced to scratch before every step
(``parity.lockstep``). The tables and verdicts are built by
``parity.checks.training_tables``.

The work runs in the dtype's own process (``reference.backend.run_in_dtype_process``):
Keras floatx must be set before any Keras object exists.

A run ends early at the first non-finite loss or weight (every step before it is kept):
a scratch one ends every path; a Keras one ends that path. An exception raised by the
scratch model ends the run too and becomes an error record naming it and its line.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from parity.checks.training_config import (
    DEFAULT_KERAS_PATHS,
    LOCKSTEP,
    Pools,
    TrainingConfig,
    epoch_orders,
    pools_from,
)
from parity.checks.training_tables import CurveResult, assemble
from parity.lockstep import copy_weights
from parity.progress import ProgressEvent, phase


def training_check(
    model_name: str,
    dtype: str,
    data,
    *,
    optimizer: str = "sgd",
    learning_rate: float = 0.005,
    batch_size: int = 1,
    epochs: int = 3,
    train_size: int = 1000,
    test_size: int = 1000,
    seed: int = 0,
    keras_paths: tuple[str, ...] = DEFAULT_KERAS_PATHS,
    lockstep: bool = True,
    progress: Callable[[ProgressEvent], None] | None = None,
    model_hooks: tuple = (),
    in_process: bool = False,
) -> CurveResult:
    """Train scratch and Keras side by side and compare them step by step.

    Parameters
    ----------
    model_name : str
        A name of ``scratch.models`` (``zhou``, ``two-conv``, ``chw``, ``chw-relu``).
    dtype : float32 or float64
    data : parity.data.Mnist (anything with ``train_images``/``train_labels``/
        ``test_images``/``test_labels``)
        The first ``train_size`` training and ``test_size`` test images are used.
    optimizer, learning_rate, batch_size, epochs, train_size, test_size, seed
        The schedule (defaults: the blog's SGD 0.005, batch 1, 3 epochs, 1,000/1,000).
    keras_paths : subset of ("epoch", "fit", "tape")
        The free-running Keras paths (default: ``epoch``, bit-identical to ``fit``).
    lockstep : bool
        Also train the twin in lockstep (the verdict in float32).
    progress : callable(ProgressEvent), optional
        Called in the dtype's process with each phase's steps (tqdm bars on stderr:
        ``parity.progress.print_progress``); must be picklable unless ``in_process``.
    model_hooks : tuple of picklable ``hook(model)``
        Applied to every freshly built scratch model (how tests plant bugs).
    in_process : bool
        Run here (this process must be, or become, configured for ``dtype``).
    """
    config = TrainingConfig(
        model_name, dtype, optimizer, learning_rate, batch_size, epochs, train_size,
        test_size, seed, tuple(keras_paths), lockstep,
    )  # fmt: skip
    pools = pools_from(data, config)
    if in_process:
        from reference import backend

        backend.configure(dtype, seed)
        return run_training(config, pools, progress, tuple(model_hooks))
    from reference.backend import run_in_dtype_process

    return run_in_dtype_process(dtype, run_training, config, pools, progress, tuple(model_hooks))


def run_many(jobs) -> list[CurveResult]:
    """Several checks in this process, one after another: ``jobs`` is a list of
    ``(config, pools, hooks)`` of this process's dtype (tests share one process)."""
    return [run_training(config, pools, None, tuple(hooks)) for config, pools, hooks in jobs]


def run_training(config: TrainingConfig, pools: Pools, progress=None, hooks=()) -> CurveResult:
    """The whole check in this process (configured for ``config.dtype``)."""
    from parity import lockstep
    from reference import backend
    from scratch.models import build

    model = build(config.model, seed=config.seed, dtype=config.dtype)
    if model.spec.masked() and config.keras_paths:
        raise ValueError(
            f"Invalid value for argument `keras_paths`. Expected () for model "
            f"`{config.model}`: its dropout masks are the harness's, which only lockstep can "
            f"give Keras (runner.TrainingOptions.for_model). Received {config.keras_paths!r}."
        )
    for hook in hooks:
        hook(model)
    initial = lockstep.copy_weights(model.params())
    x_train, y_train = model.preprocess(pools.train_images), pools.train_labels
    x_test, y_test = model.preprocess(pools.test_images), pools.test_labels
    orders = epoch_orders(config.seed, config.epochs, config.train_size)
    twins = {path: _twin_at(model, initial, config.dtype) for path in config.paths}
    lock = _lockstep(config, model, twins.get(LOCKSTEP))

    name = "scratch + lockstep" if lock else "scratch"
    scratch = lockstep.train_scratch(
        model, _scratch_optimizer(config), x_train, y_train, orders, config.batch_size,
        lockstep=lock, evaluate=lambda m: _scratch_test(m, x_test, y_test),
        progress=phase(progress, _description(config, name), config.total_steps),
        masks=_step_masks(model, config.seed),
    )  # fmt: skip
    steps = len(scratch.losses)
    timings = {"scratch": scratch.seconds / max(steps, 1)}
    keras_runs = {}
    done = _truncated(orders, steps, config.batch_size)
    for path in config.keras_paths if steps else ():
        model.set_params(initial)
        keras_runs[path], seconds = _train_keras(path, twins[path], model, x_train, y_train,
                                                 done, config, progress)  # fmt: skip
        timings[path] = seconds / steps
    lock_run = lock.finish() if lock is not None else None
    if lock_run is not None:
        keras_runs[LOCKSTEP] = _lockstep_run(lock_run, config, lock.stepper)
        timings[LOCKSTEP] = lock_run.seconds / max(len(lock_run.losses), 1)
    model.set_params(scratch.epoch_weights[-1])
    keras_eval = _evaluate_keras_epochs(model, keras_runs, x_test, y_test)
    result = assemble(config, pools, orders, scratch, keras_runs, keras_eval, timings,
                      lock_run)  # fmt: skip
    result.first_divergence = _first_divergence(config, result, lock, model)
    if not result.first_divergence.empty:
        from parity.diagnosis.first_step import annotate

        result.comparisons = annotate(result.comparisons, result.first_divergence)
    result.environment = backend.environment()
    return result


def _lockstep(config: TrainingConfig, model, keras_model):
    from parity.lockstep import Lockstep
    from reference.lockstep_step import LockstepStepper

    if keras_model is None:
        return None
    from parity import modes

    if modes.modal(model):  # the re-sync's forward passes (probes) in training mode too
        modes.set_training(model, keras_model, True)
    stepper = LockstepStepper(keras_model, model, optimizer=config.optimizer,
                              learning_rate=config.learning_rate)  # fmt: skip
    return Lockstep(stepper, model, config.dtype, config.optimizer)


def _first_divergence(config: TrainingConfig, result, lock, model):
    """Lockstep's first step over budget, diagnosed (``parity.diagnosis.first_step``),
    when the check failed or ``config.diagnose``; an empty table otherwise."""
    import pandas as pd

    from parity.diagnosis import first_step

    empty = pd.DataFrame(columns=first_step.COLUMNS)
    if lock is None or not lock.judge.steps or (result.passed and not config.diagnose):
        return empty
    if lock.first_over is None:
        failing = "; ".join(f"{c.layer}/{c.quantity} ({path})" for path, _, c in result.comparisons
                            if not c.passed)  # fmt: skip
        rows = [first_step.none_row(lock.judge, config.optimizer, failing)]
    else:
        rows = first_step.diagnose(lock.first_over, model, lock.stepper, config.optimizer,
                                   config.learning_rate, lock.judge.adam_rule)  # fmt: skip
    rows = first_step.locate(rows, result.training, config.model, config.dtype)
    return pd.DataFrame(rows, columns=first_step.COLUMNS)


def _lockstep_run(run, config: TrainingConfig, stepper):
    """The Keras side of lockstep as a ``reference.training.TrainingRun``."""
    from reference.training import TrainingRun

    correct = np.concatenate(run.correct) if run.correct else np.zeros(0, bool)
    return TrainingRun(
        path=LOCKSTEP, optimizer=config.optimizer,
        learning_rate=stepper.optimizer.learning_rate.numpy(), batch_size=config.batch_size,
        losses=np.array(run.losses, dtype=config.dtype), correct=correct,
        steps_per_epoch=[], weights=run.epoch_weights[-1] if run.epoch_weights else {},
        epoch_weights=run.epoch_weights,
    )  # fmt: skip


def _truncated(orders, steps: int, batch_size: int) -> list[np.ndarray]:
    """The first ``steps`` batches of ``orders`` (whole epochs, then part of the next)."""
    out = []
    for order in orders:
        if steps <= 0:
            break
        take = min(steps, -(-order.size // batch_size))
        out.append(order[: take * batch_size])
        steps -= take
    return out


def _twin_at(model, weights, dtype):
    from reference.twin import twin

    model.set_params(weights)
    return twin(model, dtype)


def _scratch_optimizer(config: TrainingConfig):
    from reference.optimizers import scratch_optimizer

    return scratch_optimizer(config.optimizer, config.learning_rate)


def _step_masks(model, seed: int):
    """``masks(step, batch)``: the harness's dropout masks of each training step
    (``parity.modes``), or None for a model without dropout."""
    from parity import modes

    if not (modes.modal(model) and model.spec.masked()):
        return None
    return lambda step, batch: modes.draw(model.spec, batch, seed, 2, step)


def _scratch_test(model, x_test, y_test) -> tuple[float, float]:
    """Scratch test loss (mean cross-entropy of its probabilities) and accuracy, in
    inference mode for a model with batch norm or dropout (as Keras evaluates)."""
    from parity import modes

    def probabilities():
        return np.concatenate([model.probabilities(x_test[i : i + 500])
                               for i in range(0, len(x_test), 500)])  # fmt: skip

    if modes.modal(model):
        with modes.inference(model):
            probs = probabilities()
    else:
        probs = probabilities()
    picked = probs[np.arange(len(y_test)), y_test].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # a diverged run: inf/NaN is data
        loss = float(-np.log(picked).mean())
    return loss, float((probs.argmax(axis=1) == y_test).mean())


def _train_keras(path, keras_model, model, x, y, orders, config, progress):
    from reference import training

    report = phase(progress, _description(config, f"keras {path}"), config.total_steps)

    def during(done: int) -> None:  # the bar ends after the path ends
        if done < config.total_steps:
            report(done)

    t0 = time.perf_counter()
    run = training.train(
        path, keras_model, model, x, y, orders, batch_size=config.batch_size,
        optimizer=config.optimizer, learning_rate=config.learning_rate, progress=during,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    report(config.total_steps)
    return run, seconds


def _description(config: TrainingConfig, name: str) -> str:
    """A training phase's progress description: ``[training zhou float64] scratch``."""
    return f"[training {config.model} {config.dtype}] {name}"


def _evaluate_keras_epochs(model, keras_runs, x_test, y_test) -> dict[str, list]:
    """Keras test loss and accuracy after every epoch of every path.

    The Keras-trained weights of each epoch are loaded into one evaluation twin; the loss
    is Keras's categorical cross-entropy on its output (from the logits, unclipped).
    """
    from reference import layout as layout_module
    from reference.probes import loss_function, one_hot
    from reference.twin import copy_into_keras, twin

    keep = copy_weights(model.params())
    evaluator = twin(model, np.dtype(model.dtype).name)
    layout = layout_module.layout_for(model)
    x_keras = layout.input_to_keras(x_test)
    y_hot = one_hot(y_test, 10, x_keras.dtype)
    loss_fn = loss_function()
    out = {}
    for path, run in keras_runs.items():
        out[path] = []
        for weights in run.epoch_weights:
            model.set_params(weights)
            copy_into_keras(evaluator, model, layout)
            probs = evaluator(x_keras, training=False)
            loss = float(np.asarray(loss_fn(y_hot, probs)))
            accuracy = float((np.asarray(probs).argmax(axis=1) == y_test).mean())
            out[path].append((loss, accuracy))
    model.set_params(keep)
    return out
