"""Keras counterparts of the scratch NHWC layers (``scratch.layers``), one per class.

A scratch ``Sequential`` already uses Keras's layouts and names, so its twin is the
same stack of Keras layers with the same hyper-parameters and names. A scratch layer
class with no entry here has no Keras counterpart: an error naming the layer.
"""

from __future__ import annotations

from reference.layout import NoKerasCounterpart
from scratch import layers as scratch_layers


def _conv2d(layer):
    import keras

    return keras.layers.Conv2D(
        layer.filters,
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        use_bias=layer.use_bias,
        data_format="channels_last",
        name=layer.name,
    )


def _max_pool2d(layer):
    import keras

    return keras.layers.MaxPooling2D(
        pool_size=layer.pool_size,
        strides=layer.strides,
        padding=layer.padding,
        data_format="channels_last",
        name=layer.name,
    )


def _dense(layer):
    import keras

    return keras.layers.Dense(layer.units, use_bias=layer.use_bias, name=layer.name)


def _flatten(layer):
    import keras

    return keras.layers.Flatten(name=layer.name)


def _relu(layer):
    import keras

    return keras.layers.ReLU(name=layer.name)


def _softmax(layer):
    import keras

    return keras.layers.Activation("softmax", name=layer.name)


COUNTERPARTS = {
    scratch_layers.Conv2D: _conv2d,
    scratch_layers.MaxPool2D: _max_pool2d,
    scratch_layers.Dense: _dense,
    scratch_layers.Flatten: _flatten,
    scratch_layers.ReLU: _relu,
    scratch_layers.Softmax: _softmax,
}


def layers_for(model) -> tuple[tuple, list]:
    """``(input shape without batch, [Keras layers])`` for a scratch ``Sequential``."""
    stack = getattr(model, "layers", None)
    if not isinstance(stack, (list, tuple)) or not hasattr(model, "input_shape"):
        raise NoKerasCounterpart(
            f"Model `{model.name}` ({type(model).__name__}): not a known family (zhou, chw, "
            "chw-relu) nor a scratch Sequential with `layers` and `input_shape`; no Keras "
            "counterpart."
        )
    keras_layers = []
    for layer in stack:
        make = COUNTERPARTS.get(type(layer))
        if make is None:
            raise NoKerasCounterpart(
                f"Model `{model.name}`: scratch layer `{getattr(layer, 'name', '?')}` "
                f"({type(layer).__name__}) has no Keras counterpart; known layer classes: "
                f"{sorted(cls.__name__ for cls in COUNTERPARTS)}."
            )
        keras_layers.append(make(layer))
    return tuple(model.input_shape), keras_layers
