"""The Keras twin of a scratch model: same architecture, same names, same weights.

``twin(model)`` builds a ``keras.Sequential`` from the model's network description
(``model.spec``) through one table, :data:`KERAS_LAYERS` (layer kind -> Keras layer),
shared by every family: the layer names are the description's (including layers the
implementation folds into another one, such as the ``flatten`` of the channels-first
family), and the scratch weights are copied in through ``reference.layout``.
``load_into_scratch`` is the way back.

The softmax is a separate ``Activation("softmax", name="softmax")`` so that the logits
(the ``dense`` output) can be probed; ``fused_softmax=True`` builds the form users
write, ``Dense(10, activation="softmax")`` (a test shows both give identical outputs
and gradients).
"""

from __future__ import annotations

import numpy as np

from reference import layout as layout_module
from reference import modal_layers
from reference.backend import check_dtype
from reference.layout import Layout, NoKerasCounterpart, Tree


class TwinError(ValueError):
    """A scratch model the twin cannot mirror, or a twin/process mismatch."""


def twin(model, dtype: str = "float64", *, fused_softmax: bool = False):
    """The Keras twin of the scratch ``HarnessModel`` ``model``, its weights copied in.

    Parameters
    ----------
    model : scratch.protocol.HarnessModel
        Any model with a network description ``model.spec`` (``spec.Network``).
    dtype : float32 or float64
        Must equal the model's dtype and this process's Keras floatx (see
        ``reference.backend.configure``).
    fused_softmax : bool
        Build ``Dense(units, activation="softmax", name="dense")`` with no separate
        ``softmax`` layer (logits cannot be probed then).

    Returns
    -------
    keras.Sequential named ``twin_<model name>``.
    """
    import keras

    name = check_dtype(dtype)
    _check_model_dtype(model, name)
    _check_floatx(name)
    layout = layout_module.layout_for(model)
    input_shape, layers = tuple(model.spec.input_shape), keras_layers(model.spec)
    if fused_softmax:
        layers = _fuse_softmax(layers, model.name)
    keras_model = keras.Sequential(
        [keras.Input(shape=input_shape, name="input"), *layers], name=f"twin_{model.name}"
    )
    _check_covers(keras_model, model, fused_softmax)
    copy_into_keras(keras_model, model, layout)
    _check_weight_dtypes(keras_model, name)
    return keras_model


def copy_into_keras(keras_model, model, layout: Layout | None = None) -> None:
    """Copy the scratch weights into the twin (converted through ``layout``)."""
    layout = layout or layout_module.layout_for(model)
    converted = layout.weights_to_keras(weights_and_state(model))
    variables = keras_weight_variables(keras_model)
    missing = [
        f"{layer}/{weight}"
        for layer, weights in variables.items()
        for weight in weights
        if weight not in converted.get(layer, {})
    ]
    if missing:
        raise TwinError(
            f"Twin of `{model.name}`: Keras weight(s) {missing} have no scratch counterpart "
            f"(scratch params: {_keys(model.params())})."
        )
    for k_layer, weights in converted.items():
        for k_weight, array in weights.items():
            try:
                variable = variables[k_layer][k_weight]
            except KeyError:
                raise NoKerasCounterpart(
                    f"Twin of `{model.name}`: no Keras weight `{k_layer}/{k_weight}` for "
                    f"the scratch weight that maps to it; twin weights: {_keys(variables)}."
                ) from None
            if tuple(variable.shape) != array.shape:
                raise layout_module.LayoutError(
                    f"Twin of `{model.name}`: Keras layer `{k_layer}` weight `{k_weight}`: "
                    f"expected shape {tuple(variable.shape)}, received {array.shape}."
                )
            variable.assign(array)


def load_into_scratch(keras_model, model) -> None:
    """Copy the twin's weights back into the scratch ``model`` (the way back)."""
    layout = layout_module.layout_for(model)
    params = weights_and_state(model)
    values = keras_weights(keras_model)
    extra = [
        f"{layer}/{weight}"
        for layer, weights in values.items()
        for weight in weights
        if (layer, weight) not in {layout.keras_key(sl, sw) for sl in params for sw in params[sl]}
    ]
    if extra:
        raise TwinError(
            f"load_into_scratch(`{model.name}`): Keras weight(s) {extra} have no scratch "
            f"counterpart (scratch params: {_keys(params)})."
        )
    back = layout.weights_from_keras(values, params)
    model.set_params(back)
    model.set_state(back)


def weights_and_state(model) -> Tree:
    """The scratch model's live weights and non-trainable state (batch norm's moving
    statistics) in one tree, ``{layer: {name: array}}``: what the twin's variables hold."""
    out: Tree = {}
    for tree in (model.params(), model.state()):
        for layer, arrays in tree.items():
            out.setdefault(layer, {}).update(arrays)
    return out


def keras_weight_variables(keras_model) -> dict:
    """``{layer name: {weight name: keras.Variable}}`` for every layer with weights."""
    out: dict = {}
    for layer in keras_model.layers:
        for variable in layer.weights:
            out.setdefault(layer.name, {})[variable.name] = variable
    return out


def keras_weights(keras_model) -> Tree:
    """``{layer name: {weight name: ndarray}}`` (Keras layouts), copies."""
    return {
        layer: {weight: np.array(variable.numpy()) for weight, variable in weights.items()}
        for layer, weights in keras_weight_variables(keras_model).items()
    }


def _keys(tree) -> list[str]:
    return [f"{layer}/{q}" for layer, qs in tree.items() for q in qs]


# -- checks ---------------------------------------------------------------------------


def _check_model_dtype(model, name: str) -> None:
    model_dtype = np.dtype(model.dtype).name
    if model_dtype != name:
        raise TwinError(
            f"twin(`{model.name}`, dtype={name!r}): the scratch model is {model_dtype}; "
            "build the twin in the model's dtype (one process per dtype)."
        )


def _check_floatx(name: str) -> None:
    import keras

    floatx = keras.config.floatx()
    if floatx != name:
        raise TwinError(
            f"twin(dtype={name!r}) in a process whose Keras floatx is {floatx!r}: the "
            f"compiled loss, optimizer and fit's input slicing would run in {floatx}. Call "
            f"reference.backend.configure({name!r}) first in a fresh process, or use "
            "reference.backend.run_in_dtype_process."
        )


def _check_covers(keras_model, model, fused_softmax: bool) -> None:
    twin_names = {layer.name for layer in keras_model.layers}
    expected = [n for n in model.layer_names if not (fused_softmax and n == "softmax")]
    missing = [n for n in expected if n not in twin_names]
    if missing:
        raise NoKerasCounterpart(
            f"Twin of `{model.name}`: scratch layer(s) {missing} have no Keras "
            f"counterpart; twin layers: {[layer.name for layer in keras_model.layers]}."
        )


def _check_weight_dtypes(keras_model, name: str) -> None:
    for layer, weights in keras_weight_variables(keras_model).items():
        for weight, variable in weights.items():
            if variable.dtype != name:
                raise TwinError(
                    f"Twin layer `{layer}` weight `{weight}` is {variable.dtype}, expected "
                    f"{name} (was a Keras object built before configure()?)."
                )


# -- architectures --------------------------------------------------------------------


def _conv2d(keras, layer):
    return keras.layers.Conv2D(
        layer.filters,
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        use_bias=layer.use_bias,
        data_format="channels_last",
        name=layer.name,
    )


def _pooling2d(keras_class):
    def make(keras, layer):
        return getattr(keras.layers, keras_class)(
            pool_size=layer.pool_size,
            strides=layer.strides,
            padding=layer.padding,
            data_format="channels_last",
            name=layer.name,
        )

    return make


def _activation(function: str):
    return lambda keras, layer: keras.layers.Activation(function, name=layer.name)


# spec kind -> Keras layer, for every family. The softmax is an ``Activation``: Keras 3's
# softmax activation keeps the link to its logits, so the compiled loss is computed from
# them, unclipped (DESIGN.md). Tanh and Sigmoid are ``Activation`` layers too (Keras has no
# layer class of its own for them): a layer of their own, so their output is probed.
KERAS_LAYERS = {
    "Conv2D": _conv2d,
    "MaxPooling2D": _pooling2d("MaxPooling2D"),
    "AveragePooling2D": _pooling2d("AveragePooling2D"),
    "GlobalAveragePooling2D": lambda keras, layer: keras.layers.GlobalAveragePooling2D(
        data_format="channels_last", name=layer.name
    ),
    "ZeroPadding2D": lambda keras, layer: keras.layers.ZeroPadding2D(
        layer.padding, data_format="channels_last", name=layer.name
    ),
    "Flatten": lambda keras, layer: keras.layers.Flatten(name=layer.name),
    "Dense": lambda keras, layer: keras.layers.Dense(
        layer.units, use_bias=layer.use_bias, name=layer.name
    ),
    "ReLU": lambda keras, layer: keras.layers.ReLU(name=layer.name),
    "LeakyReLU": lambda keras, layer: keras.layers.LeakyReLU(
        negative_slope=layer.negative_slope, name=layer.name
    ),
    "Tanh": _activation("tanh"),
    "Sigmoid": _activation("sigmoid"),
    "Softmax": _activation("softmax"),
    # Keras's BatchNormalization (harness-set mode when called without `training`) and a
    # dropout with an injected mask: reference.modal_layers says why and how.
    "BatchNormalization": modal_layers.batch_normalization,
    "Dropout": modal_layers.dropout,
}


def keras_layers(network) -> list:
    """The Keras layers of the network description ``network`` (``spec.Network``), in
    order and named like it; NoKerasCounterpart for a kind :data:`KERAS_LAYERS` lacks."""
    import keras

    missing = [layer.label for layer in network.layers if layer.kind not in KERAS_LAYERS]
    if missing:
        raise NoKerasCounterpart(
            f"Network `{network.name}`: {missing} have no Keras counterpart; known kinds: "
            f"{sorted(KERAS_LAYERS)}."
        )
    return [KERAS_LAYERS[layer.kind](keras, layer) for layer in network.layers]


def _fuse_softmax(layers: list, model_name: str) -> list:
    import keras

    if [layer.name for layer in layers[-2:]] != ["dense", "softmax"]:
        raise TwinError(
            f"Twin of `{model_name}`: fused_softmax needs the last layers `dense`, `softmax`; "
            f"received {[layer.name for layer in layers[-2:]]}."
        )
    dense = layers[-2]
    fused = keras.layers.Dense(dense.units, activation="softmax", name="dense")
    return [*layers[:-2], fused]
