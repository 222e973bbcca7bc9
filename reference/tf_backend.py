"""Everything in reference/ that is specific to TensorFlow, in one module.

Keras 3 on the TensorFlow backend. The other modules of reference/ speak Keras (layers'
own calls, ``keras.ops.convert_to_tensor``/``convert_to_numpy``, Keras's optimizers and
loss); what Keras has no API for is here, so running the probes on another Keras backend
means another module like this one. Importing it imports TensorFlow, so the other modules
import it only inside the functions that need it (``reference.backend`` configures floatx
first).

Process setup (``reference.backend.configure`` calls these):

- ``list_devices``: TensorFlow's device probe (CUDA's start-up lines, logged now, inside
  the caller's filter);
- ``enable_determinism``: TensorFlow's op determinism;
- ``environment``: TensorFlow's version and thread counts, for reports.

Gradients of the probes (``reference.probes``):

- ``record(fn, watch)``: ``fn()`` on a ``tf.GradientTape`` and a ``gradient`` function
  of what it computed (weights and the tensors in ``watch``, intermediate tensors too);
- ``anchored_call(layer, h, anchor)``: ``layer(h)`` whose backward pass is the layer's
  VJP taken at another input (``tf.custom_gradient``).

Training (``reference.training``, ``reference.lockstep_step``): one training step, written
once (``_train_step``) and traced into every compiled path: the forward pass
``keras_model(x, training=True)``, the loss, ``tf.GradientTape``'s gradient of it, and
``optimizer.apply`` with Keras's own optimizer. That is what Keras's ``fit`` runs per batch
(``keras/src/backend/tensorflow/trainer.py``, ``train_step``: the compiled loss adds
nothing to one loss with weight 1, and ``apply_gradients`` is ``apply``), so every path
below gives ``fit``'s weights and losses bit for bit
(``parity_tests/test_reference_training.py`` proves it on a prefix, both dtypes, SGD and
Adam):

- ``tape_step``: one step per call (a ``tf.function`` called once per batch);
- ``epoch_function``: many steps per call, a whole epoch (or a chunk of one) inside one
  ``tf.function``: no Python between steps, the fastest of the three on CPU;
- ``lockstep_step``: one step from weights and optimizer state assigned inside it.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

# -- process setup ---------------------------------------------------------------------


def list_devices() -> None:
    """TensorFlow's device probe: CUDA's start-up lines are logged now (call it inside
    ``reference.backend.start_up_lines_filtered``)."""
    tf.config.list_physical_devices()


def enable_determinism() -> None:
    """TensorFlow's op determinism (``tf.config.experimental.enable_op_determinism``)."""
    tf.config.experimental.enable_op_determinism()


# This module's compiled steps: one tf.function per model and optimizer, by design.
OWN_FUNCTIONS = ("<function tape_step.<locals>.step", "<function lockstep_step.<locals>.step")


class OwnRetracingFilter(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about this module's
    own steps (:data:`OWN_FUNCTIONS`). Each model gets its own step function, traced once;
    TensorFlow counts traces by the function's code, so a process that trains more than
    five models (``parity selftest``, measured: 5 of the last 13 calls) is told it
    retraces in a loop. Every other warning, retracing of any other function included,
    passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message
                    and any(own in message for own in OWN_FUNCTIONS))  # fmt: skip


def quiet_own_retracing() -> None:
    """Install :class:`OwnRetracingFilter` on TensorFlow's logger (once per process)."""
    logger = tf.get_logger()
    if not any(isinstance(f, OwnRetracingFilter) for f in logger.filters):
        logger.addFilter(OwnRetracingFilter())


def environment() -> dict:
    """``{"tensorflow": version, "intra_op_parallelism_threads": n,
    "inter_op_parallelism_threads": n}`` (0: TensorFlow's default, all cores)."""
    threading = tf.config.threading
    return {
        "tensorflow": tf.__version__,
        "intra_op_parallelism_threads": threading.get_intra_op_parallelism_threads(),
        "inter_op_parallelism_threads": threading.get_inter_op_parallelism_threads(),
    }


# -- gradients of the probes -----------------------------------------------------------


def record(fn, watch=()):
    """``(fn(), gradient)``: ``fn()`` computed on a ``tf.GradientTape`` that watches the
    tensors in ``watch`` (and every trainable variable ``fn`` reads).

    ``gradient(target, sources, output_gradients=None)`` -> one numpy array per source
    (None where ``target`` does not depend on it): ``d target / d source``, or the VJP
    ``output_gradients^T d target / d source`` (``output_gradients`` a numpy array or a
    tensor shaped like ``target``). ``sources`` may be variables, watched tensors or
    tensors ``fn`` computed from them. Call it once (the tape is not persistent).
    """
    with tf.GradientTape() as tape:
        for tensor in watch:
            tape.watch(tensor)
        result = fn()

    def gradient(target, sources, output_gradients=None):
        if output_gradients is not None:
            output_gradients = tf.convert_to_tensor(output_gradients)
        grads = tape.gradient(target, sources, output_gradients=output_gradients)
        return [None if g is None else g.numpy() for g in grads]

    return result, gradient


def anchored_call(layer, h, anchor: np.ndarray):
    """``layer(h)``, whose backward pass is the layer's own VJP taken at ``anchor`` (a
    numpy array shaped like ``h``, cast to ``h``'s dtype: a scratch side that returned
    float64 from a float32 model is a dtype FAIL of its rows, not a crash here)."""
    anchor = tf.constant(np.asarray(anchor).astype(h.dtype.as_numpy_dtype, copy=False))

    @tf.custom_gradient
    def call(inp):
        def backward(dy):
            with tf.GradientTape() as tape:
                tape.watch(anchor)
                y = layer(anchor)
            return tape.gradient(y, anchor, output_gradients=dy)

        return layer(inp), backward

    return call(h)


# -- training --------------------------------------------------------------------------


def _train_step(keras_model, variables, optimizer, loss_fn, xb, yb):
    """One Keras training step on the batch ``(xb, yb)`` (one-hot ``yb``).

    Returns the batch's mean loss before the update and ``(batch,)`` correct flags.
    """
    loss, probs = _step_probabilities(keras_model, variables, optimizer, loss_fn, xb, yb)
    return loss, _correct(probs, yb)


def _step_probabilities(keras_model, variables, optimizer, loss_fn, xb, yb):
    """``_train_step``'s work; returns the mean loss and the ``(batch, units)``
    probabilities, both before the update."""
    with tf.GradientTape() as tape:
        probs = keras_model(xb, training=True)
        loss = loss_fn(yb, probs)
    optimizer.apply(tape.gradient(loss, variables), variables)
    return loss, probs


def _correct(probs, yb):
    return tf.equal(tf.argmax(probs, axis=-1), tf.argmax(yb, axis=-1))


def recording_variables(dtype: str) -> tuple:
    """``(loss, correct)`` variables that ``fit``'s recording loss assigns every step:
    a scalar of ``dtype`` and ``(batch,)`` bools."""
    loss_var = tf.Variable(tf.zeros([], dtype=dtype), trainable=False)
    correct_var = tf.Variable(tf.zeros([0], tf.bool), shape=tf.TensorShape([None]), trainable=False)
    return loss_var, correct_var


def tape_step(keras_model, optimizer, loss_fn):
    """``step(xb, yb) -> (loss, correct)`` on numpy batches, one compiled step per call."""
    variables = keras_model.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        return _train_step(keras_model, variables, optimizer, loss_fn, xb, yb)

    def call(xb: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loss, correct = step(tf.constant(xb), tf.constant(yb))
        return loss.numpy(), correct.numpy()

    return call


def epoch_function(keras_model, optimizer, loss_fn, x: np.ndarray, y: np.ndarray, batch_size):
    """``run(order) -> (losses (steps,), correct (order.size,))``: the steps of ``order``
    (indices into ``x``, cut into consecutive batches of ``batch_size``, the last one
    possibly shorter) inside one ``tf.function``, in a ``tf.while_loop``.

    ``x``: ``(N, ...)`` inputs in Keras layout; ``y``: ``(N, units)`` one-hot. Both are
    copied into tensors once and passed to every call (not captured as graph constants:
    full MNIST would be a 400 MB constant). The order's length is dynamic: one trace
    serves every epoch and chunk.
    """
    variables = keras_model.trainable_variables
    x_t, y_t = tf.constant(x), tf.constant(y)
    size = int(batch_size)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec(x_t.shape, x_t.dtype),
            tf.TensorSpec(y_t.shape, y_t.dtype),
        ]
    )
    def run(order, xs, ys):
        n = tf.shape(order)[0]
        steps = (n + size - 1) // size
        losses = tf.TensorArray(xs.dtype, size=steps)
        flags = tf.TensorArray(tf.bool, size=steps, infer_shape=False, element_shape=[None])
        for k in tf.range(steps):
            batch = order[k * size : tf.minimum((k + 1) * size, n)]
            xb, yb = tf.gather(xs, batch), tf.gather(ys, batch)
            loss, correct = _train_step(keras_model, variables, optimizer, loss_fn, xb, yb)
            losses = losses.write(k, loss)
            flags = flags.write(k, correct)
        return losses.stack(), flags.concat()

    def call(order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        losses, correct = run(tf.constant(order, tf.int64), x_t, y_t)
        return losses.numpy(), correct.numpy()

    return call


# -- lockstep: one step from given weights and optimizer state ------------------------


def lockstep_step(keras_model, variables, optimizer, slots, loss_fn, state_variables=()):
    """The compiled lockstep step, ``concrete(batch_size)`` (see
    ``reference.lockstep_step.LockstepStepper``).

    ``slots``: the optimizer's slot variables, one list per slot (``reference.optimizers``;
    none for plain SGD), each in the order of ``variables``; ``state_variables``
    (non-trainable: batch norm's moving statistics) are assigned before the step and
    updated by its forward pass. Flat tensor arguments ``(*weights, *state, *slots[0],
    *slots[1], ..., iterations, x, y)``. Returns ``concrete(batch_size)``, the function
    traced for that batch size (cached; at most two: full batches and the shorter last
    one). Calling a concrete function skips ``tf.function``'s per-call signature matching
    (most of a small step's cost); a fixed batch size runs about 3x faster than an unknown
    one (measured). The concrete function returns ``(loss, probabilities, *weights,
    *state, *slots, iterations)``: the loss and the ``(batch, units)`` probabilities before
    the step, the rest after it.
    """
    slot_list = [variable for slot in slots for variable in slot]
    assigned = [*variables, *state_variables]
    n_w, n_s = len(assigned), len(slot_list)

    @tf.function
    def step(*args):
        weights, slot_values = args[:n_w], args[n_w : n_w + n_s]
        iterations, xb, yb = args[n_w + n_s :]
        for variable, value in zip(assigned, weights, strict=True):
            variable.assign(value)
        for slot, value in zip(slot_list, slot_values, strict=True):
            slot.assign(value)
        optimizer.iterations.assign(iterations)
        loss, probs = _step_probabilities(keras_model, variables, optimizer, loss_fn, xb, yb)
        reads = [tf.identity(v) for v in [*assigned, *slot_list, optimizer.iterations]]
        return (loss, probs, *reads)

    def spec(variable):
        return tf.TensorSpec(variable.shape, variable.dtype)

    batch, units = keras_model.inputs[0], int(keras_model.output_shape[-1])
    traced = {}

    def concrete(batch_size: int):
        if batch_size not in traced:
            traced[batch_size] = step.get_concrete_function(
                *(spec(v) for v in assigned),
                *(spec(s) for s in slot_list),
                tf.TensorSpec([], tf.int64),
                tf.TensorSpec([batch_size, *batch.shape[1:]], batch.dtype),
                tf.TensorSpec([batch_size, units], batch.dtype),
            )
        return traced[batch_size]

    return concrete


def eager_lockstep_step(keras_model, variables, optimizer, slots, loss_fn, arrays, added: dict,
                        state_variables=()):  # fmt: skip
    """``lockstep_step``'s work, eagerly, with ``added[keras layer]`` (an array in Keras
    layout) added to that layer's input during the step; ``arrays`` as its arguments.
    Returns the same tuple, as numpy arrays."""
    slot_list = [variable for slot in slots for variable in slot]
    assigned = [*variables, *state_variables]
    n_w, n_s = len(assigned), len(slot_list)
    for variable, value in zip(assigned + slot_list, arrays[: n_w + n_s], strict=True):
        variable.assign(value)
    optimizer.iterations.assign(arrays[n_w + n_s])
    h, yb = tf.constant(arrays[-2]), tf.constant(arrays[-1])
    with tf.GradientTape() as tape:
        for layer in keras_model.layers:
            if layer.name in added:
                h = h + tf.constant(added[layer.name])
            h = layer(h, training=True)
        loss = loss_fn(yb, h)
    optimizer.apply(tape.gradient(loss, variables), variables)
    reads = [v.numpy() for v in [*assigned, *slot_list, optimizer.iterations]]
    return (loss.numpy(), h.numpy(), *reads)


def call_lockstep(concrete, arrays) -> tuple:
    """Call a ``lockstep_step`` concrete function on numpy ``arrays``; numpy results."""
    results = concrete(*(tf.constant(a) for a in arrays))
    return tuple(r.numpy() for r in results)


# -- dropout masks ---------------------------------------------------------------------


def mask_variable(feature_shape: tuple):
    """A non-trainable bool ``tf.Variable`` of shape ``(None, *feature_shape)`` (any batch
    size assigned later), empty: a dropout keep mask the harness assigns before each call
    (``reference.modal_layers``). Not a Keras variable, so no Keras weight."""
    return tf.Variable(
        tf.zeros([0, *feature_shape], tf.bool),
        shape=tf.TensorShape([None, *feature_shape]),
        trainable=False,
    )
