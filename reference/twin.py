"""The Keras twin of a scratch model: same architecture, same names, same weights.

``twin(model)`` builds a ``keras.Sequential`` whose layer names are the scratch layer
names (plus layers the scratch side folds into another one, such as the ``flatten``
of the channels-first family) and copies the scratch weights in through
``reference.layout``. ``load_into_scratch`` is the way back.

The softmax is a separate ``Activation("softmax", name="softmax")`` so that the logits
(the ``dense`` output) can be probed; ``fused_softmax=True`` builds the form users
write, ``Dense(10, activation="softmax")`` (a test shows both give identical outputs
and gradients).
"""

from __future__ import annotations

import numpy as np

from reference import layout as layout_module
from reference.backend import check_dtype
from reference.layout import Layout, NoKerasCounterpart, Tree


class TwinError(ValueError):
    """A scratch model the twin cannot mirror, or a twin/process mismatch."""


def twin(model, dtype: str = "float64", *, fused_softmax: bool = False):
    """The Keras twin of the scratch ``HarnessModel`` ``model``, its weights copied in.

    Parameters
    ----------
    model : scratch.protocol.HarnessModel
        ``zhou``, ``chw``, ``chw-relu`` or a scratch Sequential (``two-conv``, ...).
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
    input_shape, layers = _layers_for(model, layout)
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
    converted = layout.weights_to_keras(model.params())
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
    params = model.params()
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
    model.set_params(layout.weights_from_keras(values, params))


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


def _layers_for(model, layout: Layout) -> tuple[tuple, list]:
    """``(input shape without batch, [named Keras layers])`` for ``model``'s family."""
    if layout.family == "blog":
        return _blog_layers(model)
    if layout.family == "chw":
        return _chw_layers(model)
    from reference import sequential_twin

    return sequential_twin.layers_for(model)


def _blog_layers(model) -> tuple[tuple, list]:
    """Conv2D(F, 3, use_bias=False) -> MaxPooling2D(2) -> Flatten -> Dense(10) -> softmax."""
    import keras

    _check_layer_names(model, ("conv2d", "max_pooling2d", "flatten", "dense", "softmax"))
    params = model.params()
    _check_weight_keys(model, params, {"conv2d": ("kernel",), "dense": ("kernel", "bias")})
    filters, kh, kw = np.shape(params["conv2d"]["kernel"])  # (F, 3, 3)
    units = np.shape(params["dense"]["kernel"])[1]  # (1352, 10)
    layers = [
        keras.layers.Conv2D(
            filters,
            (kh, kw),
            use_bias=False,
            padding="valid",
            data_format="channels_last",
            name="conv2d",
        ),
        keras.layers.MaxPooling2D(pool_size=2, name="max_pooling2d"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(units, name="dense"),
        keras.layers.Activation("softmax", name="softmax"),
    ]
    return (layout_module.IMAGE_SIDE, layout_module.IMAGE_SIDE, 1), layers


def _chw_layers(model) -> tuple[tuple, list]:
    """Conv2D(F, k[, strides]) -> [ReLU re_lu] -> MaxPooling2D(2) -> Flatten -> Dense -> softmax."""
    import keras

    relu = "re_lu" in model.layer_names
    expected = ("conv2d", "re_lu", "max_pooling2d", "dense", "softmax")
    _check_layer_names(model, expected if relu else tuple(n for n in expected if n != "re_lu"))
    params = model.params()
    _check_weight_keys(model, params, {"conv2d": ("kernel", "bias"), "dense": ("kernel", "bias")})
    filters, channels, kh, kw = np.shape(params["conv2d"]["kernel"])  # (F, C, kh, kw)
    units = np.shape(params["dense"]["kernel"])[1]  # (C*H*W, 10)
    conv = getattr(getattr(model, "net", None), "conv", None)
    pad, stride = getattr(conv, "pad", 0), getattr(conv, "stride", 1)
    if pad != 0:
        raise NoKerasCounterpart(
            f"Twin of `{model.name}`: scratch layer `conv2d` has pad={pad}; the twin has "
            "no ZeroPadding2D counterpart (only pad=0 is mirrored)."
        )
    layers = [
        keras.layers.Conv2D(
            filters,
            (kh, kw),
            strides=stride,
            padding="valid",
            data_format="channels_last",
            name="conv2d",
        ),
    ]
    if relu:
        layers.append(keras.layers.ReLU(name="re_lu"))
    layers += [
        keras.layers.MaxPooling2D(pool_size=2, name="max_pooling2d"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(units, name="dense"),
        keras.layers.Activation("softmax", name="softmax"),
    ]
    side = layout_module.IMAGE_SIDE
    return (side, side, channels), layers


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


def _check_layer_names(model, expected: tuple) -> None:
    names = tuple(model.layer_names)
    if names != expected:
        extra = [n for n in names if n not in expected]
        raise NoKerasCounterpart(
            f"Twin of `{model.name}`: expected scratch layers {list(expected)}, received "
            f"{list(names)}" + (f"; {extra} have no Keras counterpart." if extra else ".")
        )


def _check_weight_keys(model, params: Tree, expected: dict) -> None:
    received = {layer: tuple(weights) for layer, weights in params.items()}
    wanted = {layer: tuple(weights) for layer, weights in expected.items()}
    if {k: set(v) for k, v in received.items()} != {k: set(v) for k, v in wanted.items()}:
        raise NoKerasCounterpart(
            f"Twin of `{model.name}`: expected scratch weights {_keys(wanted)}, received "
            f"{_keys(received)}; the difference has no Keras counterpart."
        )
