"""Train the twin on a given schedule, three ways, with exact per-step losses.

- ``train_epoch``: a whole epoch of Keras's own training step inside one
  ``tf.function`` (``reference.tf_backend.epoch_function``): the fastest path, and
  bit-identical to ``fit`` (weights and per-step losses; proven in a test);
- ``train_fit``: ``model.fit(batch_size=..., shuffle=False, epochs=1)`` once per epoch,
  the path users take. Keras 3's ``logs["loss"]`` in ``on_train_batch_end`` is the
  epoch's running mean, so the step's loss is read another way: the compiled loss is a
  ``CategoricalCrossentropy`` that also assigns the value it returns (the very number
  ``fit`` differentiates) and the batch's correct flags to ``tf.Variable``s, which a
  callback reads after every batch (``steps_per_execution=1``). No de-averaging.
- ``train_tape``: a ``tf.GradientTape`` step inside a ``tf.function``, called per batch.

All take the scratch model's preprocessed inputs (native layout) and integer labels,
one index array per epoch (``orders``, as ``scratch.train.train``), train the twin in
place, and return a :class:`TrainingRun` whose weights are in scratch layout.

Optimizers (``make_optimizer``): every name of ``reference.optimizers.OPTIMIZERS`` (SGD,
SGD with momentum or Nesterov momentum, RMSprop, Adam, AdamW, with that table's
hyper-parameters), built in the configured floatx so the learning rate is a value of that
dtype (float64: exactly 0.005, not the 0.004999999888 of a float32 build or of
``tf.cast(0.005, tf.float64)``); checked after building.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reference import layout as layout_module
from reference.backend import check_dtype
from reference.layout import Tree
from reference.optimizers import NAMES, keras_optimizer
from reference.probes import one_hot

OPTIMIZERS = NAMES  # reference.optimizers: the one table of optimizers
PATHS = ("epoch", "fit", "tape")
EPOCH_CHUNK_STEPS = 5000  # steps per call of the epoch function (progress between calls)


@dataclass
class TrainingRun:
    """What one training run of the twin produced.

    ``losses[k]``: mean loss of global step ``k``'s batch before its update;
    ``correct``: per example in training order, whether that step's forward pass
    predicted it; ``epoch_weights[e]``: weights after epoch ``e`` (scratch layout).
    """

    path: str
    optimizer: str
    learning_rate: np.floating  # read back from the optimizer's variable
    batch_size: int
    losses: np.ndarray
    correct: np.ndarray
    steps_per_epoch: list[int]
    weights: Tree
    epoch_weights: list[Tree] = field(default_factory=list)


def make_optimizer(name: str, learning_rate: float, dtype: str):
    """The Keras optimizer ``name`` (``reference.optimizers``) whose learning-rate variable
    holds ``learning_rate`` in ``dtype``; ValueError for an unknown name."""
    dtype = check_dtype(dtype)
    optimizer = keras_optimizer(name, learning_rate)
    variable = optimizer.learning_rate
    expected = np.dtype(dtype).type(learning_rate)
    if variable.dtype != dtype or variable.numpy() != expected:
        raise RuntimeError(
            f"Keras {name} learning rate is {variable.numpy()!r} ({variable.dtype}), expected "
            f"{expected!r} ({dtype}): was this process configured for {dtype} "
            "(reference.backend.configure) before any Keras object existed?"
        )
    return optimizer


def train_fit(
    keras_model, model, x, labels, orders, *, batch_size=1, optimizer="sgd", learning_rate=0.005,
    progress=None,
) -> TrainingRun:  # fmt: skip
    """Train ``keras_model`` in place with ``fit``, one ``fit`` call per epoch.

    ``x``: the scratch model's preprocessed inputs ``(N, ...)``; ``labels``: ``(N,)``
    integers; ``orders``: one index array per epoch (batches are consecutive slices);
    ``progress(steps done)``, optional, is called after every step.
    """
    import keras

    from reference.tf_backend import recording_variables

    setup = _setup(keras_model, model, x, labels, orders, batch_size, optimizer, learning_rate)
    loss_var, correct_var = recording_variables(setup.dtype)
    keras_model.compile(
        optimizer=setup.optimizer,
        loss=_recording_class()(loss_var, correct_var),
        steps_per_execution=1,
        jit_compile=False,
        run_eagerly=False,
    )
    losses, correct, epoch_weights, steps = [], [], [], []

    class Recorder(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(loss_var.numpy())
            correct.append(correct_var.numpy())
            if progress is not None:
                progress(len(losses))

    for order in setup.orders:
        before = len(losses)
        keras_model.fit(
            setup.x[order],
            setup.y[order],
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[Recorder()],
        )
        steps.append(_check_steps(len(losses) - before, order.size, batch_size, "fit"))
        epoch_weights.append(_scratch_weights(keras_model, model))
    return setup.result("fit", losses, correct, steps, epoch_weights)


def train_tape(
    keras_model, model, x, labels, orders, *, batch_size=1, optimizer="sgd", learning_rate=0.005,
    progress=None,
) -> TrainingRun:  # fmt: skip
    """Train ``keras_model`` in place with a ``tf.GradientTape`` step in a ``tf.function``
    called per batch; ``progress(steps done)`` after every step."""
    from reference.probes import loss_function
    from reference.tf_backend import tape_step

    setup = _setup(keras_model, model, x, labels, orders, batch_size, optimizer, learning_rate)
    setup.optimizer.build(keras_model.trainable_variables)
    step = tape_step(keras_model, setup.optimizer, loss_function())
    losses, correct, epoch_weights, steps = [], [], [], []
    for order in setup.orders:
        count = 0
        for start in range(0, order.size, batch_size):
            batch = order[start : start + batch_size]
            loss, flags = step(setup.x[batch], setup.y[batch])
            losses.append(loss)
            correct.append(flags)
            count += 1
            if progress is not None:
                progress(len(losses))
        steps.append(count)
        epoch_weights.append(_scratch_weights(keras_model, model))
    return setup.result("tape", losses, correct, steps, epoch_weights)


def train_epoch(
    keras_model, model, x, labels, orders, *, batch_size=1, optimizer="sgd", learning_rate=0.005,
    chunk_steps=EPOCH_CHUNK_STEPS, progress=None,
) -> TrainingRun:  # fmt: skip
    """Train ``keras_model`` in place, many steps per ``tf.function`` call: each epoch in
    chunks of ``chunk_steps`` steps (one chunk per epoch of up to 5,000 steps).

    Bit-identical to ``train_fit`` (``reference.tf_backend``); ``progress(steps done)``
    is called after every chunk.
    """
    from reference.probes import loss_function
    from reference.tf_backend import epoch_function

    setup = _setup(keras_model, model, x, labels, orders, batch_size, optimizer, learning_rate)
    chunk = _positive_steps(chunk_steps) * setup.batch_size  # examples per call
    setup.optimizer.build(keras_model.trainable_variables)
    run = epoch_function(keras_model, setup.optimizer, loss_function(), setup.x, setup.y,
                         setup.batch_size)  # fmt: skip
    losses, correct, epoch_weights, steps = [], [], [], []
    for order in setup.orders:
        before = len(losses)
        for start in range(0, order.size, chunk):
            chunk_losses, chunk_correct = run(order[start : start + chunk])
            losses.extend(chunk_losses)
            correct.append(chunk_correct)
            if progress is not None:
                progress(len(losses))
        steps.append(_check_steps(len(losses) - before, order.size, batch_size, "epoch"))
        epoch_weights.append(_scratch_weights(keras_model, model))
    return setup.result("epoch", losses, correct, steps, epoch_weights)


def _positive_steps(value) -> int:
    """``value`` if it is a positive int, else ValueError naming ``chunk_steps``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            "Invalid value for argument `chunk_steps`. Expected a positive int. "
            f"Received chunk_steps={value!r}."
        )
    return int(value)


def train(path: str, keras_model, model, x, labels, orders, **kwargs) -> TrainingRun:
    """``train_epoch`` (``path="epoch"``), ``train_fit`` (``"fit"``) or ``train_tape``
    (``"tape"``); ``kwargs`` are theirs."""
    functions = {"epoch": train_epoch, "fit": train_fit, "tape": train_tape}
    if path not in functions:
        raise ValueError(
            f"Invalid value for argument `path`. Expected one of {PATHS}. Received path={path!r}."
        )
    return functions[path](keras_model, model, x, labels, orders, **kwargs)


# -- helpers --------------------------------------------------------------------------


_RECORDING_CLASS = []


def _recording_class():
    """``CategoricalCrossentropy`` that stores each call's value and correct flags."""
    if _RECORDING_CLASS:
        return _RECORDING_CLASS[0]
    import keras
    from keras import ops

    class RecordingCrossentropy(keras.losses.CategoricalCrossentropy):
        def __init__(self, loss_var, correct_var):
            super().__init__(name="categorical_crossentropy")
            self._loss_var, self._correct_var = loss_var, correct_var

        def __call__(self, y_true, y_pred, sample_weight=None):
            value = super().__call__(y_true, y_pred, sample_weight=sample_weight)
            self._loss_var.assign(value)
            self._correct_var.assign(
                ops.equal(ops.argmax(y_pred, axis=-1), ops.argmax(y_true, axis=-1))
            )
            return value

    _RECORDING_CLASS.append(RecordingCrossentropy)
    return RecordingCrossentropy


@dataclass
class _Setup:
    dtype: str
    x: np.ndarray  # Keras layout, all examples
    y: np.ndarray  # one-hot
    orders: list
    optimizer: object
    optimizer_name: str
    batch_size: int
    keras_model: object
    model: object

    def result(self, path, losses, correct, steps, epoch_weights) -> TrainingRun:
        return TrainingRun(
            path=path,
            optimizer=self.optimizer_name,
            learning_rate=self.optimizer.learning_rate.numpy(),
            batch_size=self.batch_size,
            losses=np.array(losses, dtype=self.dtype),
            correct=np.concatenate(correct) if correct else np.zeros(0, bool),
            steps_per_epoch=steps,
            weights=epoch_weights[-1] if epoch_weights else {},
            epoch_weights=epoch_weights,
        )


def _setup(keras_model, model, x, labels, orders, batch_size, optimizer, learning_rate):
    import keras

    dtype = check_dtype(keras.config.floatx())
    if np.dtype(model.dtype).name != dtype:
        raise ValueError(
            f"Training the twin of `{model.name}` ({np.dtype(model.dtype).name}) in a "
            f"process whose Keras floatx is {dtype}: one process per dtype."
        )
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(
            "Invalid value for argument `batch_size`. Expected a positive int. "
            f"Received batch_size={batch_size!r}."
        )
    layout = layout_module.layout_for(model)
    x_keras = layout.input_to_keras(np.asarray(x))
    if x_keras.dtype != dtype:
        raise ValueError(
            f"Invalid value for argument `x`. Expected {dtype} inputs (the model's "
            f"preprocess). Received dtype {x_keras.dtype}."
        )
    units = int(keras_model.output_shape[-1])
    y = one_hot(labels, units, dtype)
    if len(y) != len(x_keras):
        raise ValueError(
            f"Invalid value for argument `labels`. Expected {len(x_keras)} labels (one per "
            f"example of x). Received {len(y)}."
        )
    return _Setup(
        dtype,
        x_keras,
        y,
        _check_orders(orders, len(x_keras)),
        make_optimizer(optimizer, learning_rate, dtype),
        optimizer,
        int(batch_size),
        keras_model,
        model,
    )


def _check_orders(orders: Sequence, n: int) -> list[np.ndarray]:
    checked = []
    for epoch, order in enumerate(orders):
        order = np.asarray(order)
        if order.ndim != 1 or order.dtype.kind not in "iu" or order.size == 0:
            raise ValueError(
                "Invalid value for argument `orders`. Expected non-empty 1-D integer index "
                f"arrays, one per epoch. Received orders[{epoch}] with shape {order.shape} "
                f"and dtype {order.dtype}."
            )
        if order.min() < 0 or order.max() >= n:
            raise ValueError(
                f"Invalid value for argument `orders`. Expected indices in [0, {n}). "
                f"Received orders[{epoch}] with values in [{order.min()}, {order.max()}]."
            )
        checked.append(order.astype(np.int64))
    if not checked:
        raise ValueError("Invalid value for argument `orders`. Expected at least one epoch.")
    return checked


def _check_steps(count: int, n: int, batch_size: int, path: str) -> int:
    expected = -(-n // batch_size)
    if count != expected:
        raise RuntimeError(
            f"{path}: recorded {count} steps for an epoch of {n} examples at batch size "
            f"{batch_size}, expected {expected} (steps_per_execution must be 1)."
        )
    return count


def _scratch_weights(keras_model, model) -> Tree:
    from reference.twin import keras_weights

    layout = layout_module.layout_for(model)
    return layout.weights_from_keras(keras_weights(keras_model), model.params())
