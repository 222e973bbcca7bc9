"""Lockstep training's Keras side: one Keras step from given weights and optimizer state.

``parity.lockstep`` re-syncs the twin to the scratch model before every step; this
module takes that step (``LockstepStepper``, one compiled ``tf.function`` from
``reference.tf_backend``) and reads everything back in scratch layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reference import layout as layout_module
from reference.backend import check_dtype
from reference.layout import Tree
from reference.optimizers import keras_slots, kind_of
from reference.probes import one_hot
from reference.training import make_optimizer


@dataclass
class OptimizerState:
    """An optimizer's state in scratch layout, as it is at the start (or end) of a step.

    ``iterations``: steps taken so far (Keras's ``optimizer.iterations``, scratch's
    ``optimizer.iterations``). ``slots``: ``{slot: {layer: {weight: array}}}``, each slot
    shaped like the weights, named as in ``reference.optimizers`` (SGD with momentum:
    ``momentum``; RMSprop: ``velocity``; Adam, AdamW: ``momentum`` and ``velocity``; plain
    SGD: none). A slot or weight missing from it is zero (Keras's initial value).
    """

    iterations: int
    slots: dict[str, Tree] = field(default_factory=dict)


@dataclass
class KerasStep:
    """What one lockstep Keras step produced (scratch layout).

    ``loss``: the batch's mean loss before the update; ``probabilities``: ``(batch,
    units)``, the twin's output of that forward pass; ``correct``: ``(batch,)`` flags
    (its argmax is the label); ``weights``, ``state``: after the update.
    """

    loss: np.floating
    probabilities: np.ndarray
    correct: np.ndarray
    weights: Tree
    state: OptimizerState


class LockstepStepper:
    """Keras's own training step, started from weights and optimizer state given in
    scratch layout (lockstep training: the twin never runs free).

    Every call assigns the weights, the optimizer's slots (``reference.optimizers``: SGD
    momentum's velocities, RMSprop's mean squares, Adam's and AdamW's moments) and the
    iteration count to the twin's variables and its optimizer, then takes one
    ``tf.GradientTape`` step with Keras's optimizer (``opt.apply``), all inside one
    compiled ``tf.function``, and reads everything back. Keras 3 keeps each slot in a list
    on the optimizer (``optimizer._momentums``, ``momentums``, ``_velocities``: the table
    names it), one variable per weight in the order the optimizer was built with (here:
    the twin's weights in layer order, each mapped to its scratch key by the layout).

    Parameters
    ----------
    keras_model : the twin (``reference.twin.twin(model)``)
    model : the scratch ``HarnessModel`` (its layout and keys; its weights are not read)
    optimizer, learning_rate : as ``make_optimizer``
    """

    def __init__(self, keras_model, model, *, optimizer="sgd", learning_rate=0.005):
        from reference.probes import loss_function
        from reference.tf_backend import lockstep_step
        from reference.twin import keras_weight_variables

        self.dtype = check_dtype(np.dtype(model.dtype).name)
        self.keras_model, self.model, self.optimizer_name = keras_model, model, optimizer
        self.layout = layout_module.layout_for(model)
        self.units = int(keras_model.output_shape[-1])
        params, state = model.params(), model.state()
        scratch_key = {self.layout.keras_key(layer, weight): (layer, weight)
                       for tree in (params, state) for layer in tree
                       for weight in tree[layer]}  # fmt: skip
        # Trainable weights (stepped by the optimizer) and non-trainable state (batch norm's
        # moving statistics: assigned before the step, updated by its forward pass, read
        # back; never given to the optimizer).
        self.keys, variables, self.state_keys, state_variables = [], [], [], []
        for k_layer, weights in keras_weight_variables(keras_model).items():
            for k_weight, variable in weights.items():
                if (k_layer, k_weight) not in scratch_key:
                    raise ValueError(
                        f"Lockstep for `{model.name}`: Keras weight `{k_layer}/{k_weight}` has "
                        f"no scratch counterpart (scratch keys: {sorted(scratch_key.values())})."
                    )
                key = scratch_key[(k_layer, k_weight)]
                if variable.trainable:
                    self.keys.append(key)
                    variables.append(variable)
                else:
                    self.state_keys.append(key)
                    state_variables.append(variable)
        self._variables, self._state_variables = variables, state_variables
        self.slot_names = kind_of(optimizer).slot_names
        self.optimizer = make_optimizer(optimizer, learning_rate, self.dtype)
        self.optimizer.build(variables)
        self._slots = keras_slots(self.optimizer, optimizer, len(self.keys))
        self._loss_fn = loss_function()
        self._step = lockstep_step(keras_model, variables, self.optimizer, self._slots,
                                   self._loss_fn, state_variables)  # fmt: skip

    def __call__(self, weights: Tree, state: OptimizerState, x, labels, nudges=None,
                 masks=None) -> KerasStep:  # fmt: skip
        """One Keras step from ``weights`` and ``state`` on the batch ``x`` (scratch layout,
        preprocessed) with integer ``labels``.

        ``weights`` holds the moving statistics too (``HarnessModel.snapshot``), and so
        does the returned ``KerasStep.weights``. ``masks``: ``{scratch dropout layer: keep
        mask}`` in Keras layout, the step's dropout masks: required, one per dropout layer,
        on every call of a twin with dropout (ValueError naming the layers when None: the
        twin's mask variables would silently keep the previous step's masks), None or
        ``{}`` for a twin without (``reference.modal_layers.set_masks`` checks the names).
        ``nudges``: ``{scratch layer: array}`` added to those layers' inputs (scratch
        layout of the input) during the step; the step then runs eagerly (rarely needed:
        ``parity.lockstep`` re-syncs a max-pool or ReLU decision that way).
        """
        from reference.modal_layers import set_masks
        from reference.tf_backend import call_lockstep, eager_lockstep_step

        dropouts = self.model.spec.masked()
        if masks is None and dropouts:
            raise ValueError(
                f"Invalid value for argument `masks`. Expected the step's keep mask of every "
                f"dropout layer {list(dropouts)} (a twin keeps the last masks it was given: "
                f"a step without them would reuse the previous step's). Received masks=None."
            )
        if masks is not None:
            key = self.layout.keras_key
            set_masks(self.keras_model, {key(n, "input")[0]: m for n, m in masks.items()})
        to_keras = self.layout.to_keras
        arrays = [to_keras(layer, weight, weights[layer][weight])
                  for layer, weight in (*self.keys, *self.state_keys)]  # fmt: skip
        slots = [to_keras(layer, weight, self._slot(state, name, layer, weight))
                 for name in self.slot_names for layer, weight in self.keys]  # fmt: skip
        x_keras = self.layout.input_to_keras(np.asarray(x))
        y = one_hot(labels, self.units, self.dtype)
        args = [*arrays, *slots, np.int64(state.iterations), x_keras, y]
        if nudges:
            added = {self.layout.keras_key(layer, "input")[0]: to_keras(layer, "input", array)
                     for layer, array in nudges.items()}  # fmt: skip
            loss, probabilities, *reads = eager_lockstep_step(
                self.keras_model, self._variables, self.optimizer, self._slots, self._loss_fn,
                args, added, self._state_variables,
            )  # fmt: skip
        else:
            loss, probabilities, *reads = call_lockstep(self._step(len(y)), args)
        n, n_state = len(self.keys), len(self.state_keys)
        after = OptimizerState(int(reads[-1]))
        slots = reads[n + n_state : -1]
        for k, name in enumerate(self.slot_names):
            after.slots[name] = self._tree(slots[k * n : (k + 1) * n])
        correct = np.argmax(probabilities, axis=-1) == np.asarray(labels)
        weights_after = self._tree(reads[:n])
        for layer, arrays_of in self._tree(reads[n : n + n_state], self.state_keys).items():
            weights_after.setdefault(layer, {}).update(arrays_of)
        return KerasStep(loss, probabilities, correct, weights_after, after)

    def forward(self, weights: Tree, x) -> dict[str, np.ndarray]:
        """Every layer's output of the twin at ``weights`` (``reference.probes.forward``),
        for looking at a step again; the next ``__call__`` assigns its own weights."""
        from reference.probes import forward

        pairs = zip((*self.keys, *self.state_keys), (*self._variables, *self._state_variables),
                    strict=True)  # fmt: skip
        for (layer, weight), variable in pairs:
            variable.assign(self.layout.to_keras(layer, weight, weights[layer][weight]))
        return forward(self.keras_model, self.model, x)

    def _slot(self, state: OptimizerState, name: str, layer: str, weight: str) -> np.ndarray:
        """A slot in scratch layout; zeros before the first step (Keras's initial value)."""
        array = state.slots.get(name, {}).get(layer, {}).get(weight)
        return np.zeros_like(self.model.params()[layer][weight]) if array is None else array

    def _tree(self, arrays, keys=None) -> Tree:
        out: Tree = {}
        for (layer, weight), keras_array in zip(
            self.keys if keys is None else keys, arrays, strict=True
        ):
            array = self.layout.from_keras(layer, weight, keras_array)
            out.setdefault(layer, {})[weight] = array
        return out
