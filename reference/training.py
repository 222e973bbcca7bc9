"""Train the twin on a given schedule, three ways, with exact per-step losses.

- ``train_epoch``: a whole epoch of Keras's own training step inside one
  ``tf.function`` (``reference.tf_training.epoch_function``): the fastest path, and
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

Optimizers (``make_optimizer``): ``SGD(learning_rate)`` and ``Adam(learning_rate,
epsilon=1e-7)``, built in the configured floatx so the learning rate is a value of that
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
from reference.probes import one_hot

OPTIMIZERS = ("sgd", "adam")
ADAM_EPSILON = 1e-7  # Keras's default, and scratch.optim.Adam's
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
    """Keras ``SGD``/``Adam`` whose learning-rate variable holds ``learning_rate`` in ``dtype``."""
    import keras

    dtype = check_dtype(dtype)
    if name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    elif name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate, epsilon=ADAM_EPSILON)
    else:
        raise ValueError(
            f"Invalid value for argument `optimizer`. Expected one of {OPTIMIZERS}. "
            f"Received optimizer={name!r}."
        )
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

    from reference.tf_training import recording_variables

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
    from reference.tf_training import tape_step

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

    Bit-identical to ``train_fit`` (``reference.tf_training``); ``progress(steps done)``
    is called after every chunk.
    """
    from reference.probes import loss_function
    from reference.tf_training import epoch_function

    setup = _setup(keras_model, model, x, labels, orders, batch_size, optimizer, learning_rate)
    chunk = positive_steps(chunk_steps) * setup.batch_size  # examples per call
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


def positive_steps(value) -> int:
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


# -- lockstep: one Keras step from given weights and optimizer state ------------------


@dataclass
class OptimizerState:
    """An optimizer's state in scratch layout, as it is at the start (or end) of a step.

    ``iterations``: steps taken so far (Keras's ``optimizer.iterations``, scratch's
    ``optimizer.iterations``). ``momentums``/``velocities``: Adam's first and second
    moments per weight, ``{layer: {weight: array}}`` shaped like the weights (``None``
    for SGD, which has no slots).
    """

    iterations: int
    momentums: Tree | None = None
    velocities: Tree | None = None


@dataclass
class KerasStep:
    """What one lockstep Keras step produced (scratch layout).

    ``loss``: the batch's mean loss before the update; ``correct``: ``(batch,)`` flags
    of that forward pass; ``weights``, ``state``: after the update.
    """

    loss: np.floating
    correct: np.ndarray
    weights: Tree
    state: OptimizerState


class LockstepStepper:
    """Keras's own training step, started from weights and optimizer state given in
    scratch layout (lockstep training: the twin never runs free).

    Every call assigns the weights and, for Adam, the moments and the iteration count to
    the twin's variables and its optimizer's slots, then takes one ``tf.GradientTape``
    step with Keras's optimizer (``opt.apply``), all inside one compiled ``tf.function``,
    and reads everything back. Keras 3 keeps Adam's slots in ``optimizer._momentums`` /
    ``_velocities``, one per variable in the order the optimizer was built with (here:
    the twin's weights in layer order, each mapped to its scratch key by the layout).

    Parameters
    ----------
    keras_model : the twin (``reference.twin.twin(model)``)
    model : the scratch ``HarnessModel`` (its layout and keys; its weights are not read)
    optimizer, learning_rate : as ``make_optimizer``
    """

    def __init__(self, keras_model, model, *, optimizer="sgd", learning_rate=0.005):
        from reference.probes import loss_function
        from reference.tf_training import lockstep_step
        from reference.twin import keras_weight_variables

        self.dtype = check_dtype(np.dtype(model.dtype).name)
        self.keras_model, self.model, self.optimizer_name = keras_model, model, optimizer
        self.layout = layout_module.layout_for(model)
        self.units = int(keras_model.output_shape[-1])
        params = model.params()
        scratch_key = {self.layout.keras_key(layer, weight): (layer, weight)
                       for layer in params for weight in params[layer]}  # fmt: skip
        self.keys, variables = [], []
        for k_layer, weights in keras_weight_variables(keras_model).items():
            for k_weight, variable in weights.items():
                if (k_layer, k_weight) not in scratch_key:
                    raise ValueError(
                        f"Lockstep for `{model.name}`: Keras weight `{k_layer}/{k_weight}` has "
                        f"no scratch counterpart (scratch keys: {sorted(scratch_key.values())})."
                    )
                self.keys.append(scratch_key[(k_layer, k_weight)])
                variables.append(variable)
        self._variables = variables
        self.optimizer = make_optimizer(optimizer, learning_rate, self.dtype)
        self.optimizer.build(variables)
        slots = self._slots(keras_model)
        self._slots, self._loss_fn = slots, loss_function()
        self._step = lockstep_step(keras_model, variables, self.optimizer, slots, self._loss_fn)

    def _slots(self, keras_model) -> tuple[list, list]:
        if self.optimizer_name != "adam":
            return [], []
        momentums = getattr(self.optimizer, "_momentums", None)
        velocities = getattr(self.optimizer, "_velocities", None)
        if momentums is None or velocities is None or len(momentums) != len(self.keys):
            import keras

            raise RuntimeError(
                f"Keras {keras.__version__}: Adam keeps no `_momentums`/`_velocities` list "
                f"with one slot per weight ({len(self.keys)}); lockstep cannot set its state."
            )
        return list(momentums), list(velocities)

    def __call__(self, weights: Tree, state: OptimizerState, x, labels, nudges=None) -> KerasStep:
        """One Keras step from ``weights`` and ``state`` on the batch ``x`` (scratch layout,
        preprocessed) with integer ``labels``.

        ``nudges``: ``{scratch layer: array}`` added to those layers' inputs (scratch
        layout of the input) during the step; the step then runs eagerly (rarely needed:
        ``parity.lockstep`` re-syncs a max-pool or ReLU decision that way).
        """
        from reference.tf_training import call_lockstep, eager_lockstep_step

        to_keras = self.layout.to_keras
        arrays = [to_keras(layer, weight, weights[layer][weight]) for layer, weight in self.keys]
        moments = ([], [])
        if self.optimizer_name == "adam":
            moments = tuple(
                [to_keras(layer, weight, self._moment(tree, layer, weight))
                 for layer, weight in self.keys]
                for tree in (state.momentums, state.velocities)
            )  # fmt: skip
        x_keras = self.layout.input_to_keras(np.asarray(x))
        y = one_hot(labels, self.units, self.dtype)
        args = [*arrays, *moments[0], *moments[1], np.int64(state.iterations), x_keras, y]
        if nudges:
            added = {self.layout.keras_key(layer, "input")[0]: to_keras(layer, "input", array)
                     for layer, array in nudges.items()}  # fmt: skip
            loss, correct, *reads = eager_lockstep_step(
                self.keras_model, self._variables, self.optimizer, self._slots, self._loss_fn,
                args, added,
            )  # fmt: skip
        else:
            loss, correct, *reads = call_lockstep(self._step(len(y)), args)
        n = len(self.keys)
        after = OptimizerState(int(reads[-1]))
        if self.optimizer_name == "adam":
            after.momentums = self._tree(reads[n : 2 * n])
            after.velocities = self._tree(reads[2 * n : 3 * n])
        return KerasStep(loss, correct, self._tree(reads[:n]), after)

    def forward(self, weights: Tree, x) -> dict[str, np.ndarray]:
        """Every layer's output of the twin at ``weights`` (``reference.probes.forward``),
        for looking at a step again; the next ``__call__`` assigns its own weights."""
        from reference.probes import forward

        for (layer, weight), variable in zip(self.keys, self._variables, strict=True):
            variable.assign(self.layout.to_keras(layer, weight, weights[layer][weight]))
        return forward(self.keras_model, self.model, x)

    def _moment(self, tree: Tree | None, layer: str, weight: str) -> np.ndarray:
        """A moment in scratch layout; zeros before the first step (Keras's initial value)."""
        if tree is None or weight not in tree.get(layer, {}):
            return np.zeros_like(self.model.params()[layer][weight])
        return tree[layer][weight]

    def _tree(self, arrays) -> Tree:
        out: Tree = {}
        for (layer, weight), keras_array in zip(self.keys, arrays, strict=True):
            array = self.layout.from_keras(layer, weight, keras_array)
            out.setdefault(layer, {})[weight] = array
        return out
