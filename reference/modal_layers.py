"""The twin's batch-norm and dropout layers, and the harness's hold on their mode and masks.

Batch norm is Keras's own ``BatchNormalization`` (its arithmetic, its moving-average
update), subclassed for one thing only: when a layer is called with ``training=None``
(the probes call the twin's layers one by one, outside ``fit``) the mode is the one the
harness set (:func:`set_training`) instead of Keras's inference default, so every probe,
the anchored backward passes, the isolated layers and the finite differences' Keras tail
run in the mode of the scratch side without each call site passing it. An explicit
``training`` (``fit``, the lockstep step: ``keras_model(x, training=True)``) wins.

Dropout is NOT Keras's ``Dropout``: Keras draws its mask inside the call
(``keras.src.backend.tensorflow.random.dropout`` -> ``tf.nn.experimental.stateless_dropout``,
from its seed generator's state) and has no argument to take one, and TensorFlow's
stateless RNG cannot be reproduced in numpy. So the twin's dropout is a layer of this
module, :class:`MaskedDropout`: Keras's inverted-dropout arithmetic (TensorFlow's
``_dropout``: ``x * scale`` with ``scale = 1 / (1 - rate)`` converted to x's dtype, then the
dropped elements zeroed) applied with a keep mask the harness draws and assigns
(:func:`set_masks`). ``parity_tests/test_batchnorm_net.py`` shows it bit-identical to
``keras.layers.Dropout`` in both dtypes, outputs and input gradients, given the mask
Keras's layer drew. The mask is a non-trainable ``tf.Variable`` with an unknown batch axis
(``reference.tf_backend.mask_variable``), read inside compiled steps, so it is no Keras
weight: never copied, differentiated or updated.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def classes() -> tuple[type, type]:
    """``(ModeBatchNormalization, MaskedDropout)``, defined on first use (after the
    process set Keras's floatx: ``reference.backend.configure``)."""
    import keras

    class ModeBatchNormalization(keras.layers.BatchNormalization):
        """Keras's BatchNormalization; ``training=None`` means the harness's mode."""

        harness_training = False

        def call(self, inputs, training=None, mask=None):
            if training is None:
                training = self.harness_training
            return super().call(inputs, training=training, mask=mask)

    class MaskedDropout(keras.layers.Layer):
        """Inverted dropout with an injected keep mask (bool, the input's shape)."""

        harness_training = False

        def __init__(self, rate: float, **kwargs):
            super().__init__(**kwargs)
            self.rate = float(rate)

        def build(self, input_shape):
            from reference.tf_backend import mask_variable

            self.keep = mask_variable(tuple(input_shape[1:]))

        def call(self, inputs, training=None):
            if training is None:
                training = self.harness_training
            if not training:
                return inputs
            # TensorFlow's _dropout: scale = 1 / keep_prob, a Python float converted straight
            # to x's dtype (keras.ops.cast would round it to float32 first: 1 / 0.7 in a
            # float64 run then differs in the 8th digit)
            scale = keras.ops.convert_to_tensor(1 / (1 - self.rate), dtype=inputs.dtype)
            kept = inputs * scale
            return keras.ops.where(self.keep, kept, keras.ops.zeros_like(inputs))

        def compute_output_shape(self, input_shape):
            return input_shape

    return ModeBatchNormalization, MaskedDropout


def batch_normalization(keras, layer):
    """The twin's row for a ``spec`` BatchNormalization: momentum and epsilon always
    passed (Keras's defaults 0.99 and 1e-3 are not cs231n's 0.9 and 1e-5)."""
    bn, _ = classes()
    return bn(axis=-1, momentum=layer.momentum, epsilon=layer.epsilon, name=layer.name)


def dropout(keras, layer):
    """The twin's row for a ``spec`` Dropout (``rate``: the drop probability)."""
    _, masked = classes()
    return masked(layer.rate, name=layer.name)


def modal_layers(keras_model) -> list:
    """The twin's layers that have a harness mode (batch norm and dropout)."""
    bn, masked = classes()
    return [layer for layer in keras_model.layers if isinstance(layer, (bn, masked))]


def set_training(keras_model, training: bool) -> None:
    """The mode of every batch-norm and dropout layer called with ``training=None``."""
    for layer in modal_layers(keras_model):
        layer.harness_training = bool(training)


def set_masks(keras_model, masks: dict[str, np.ndarray]) -> None:
    """``{Keras dropout layer: keep mask (N, ...) bool, Keras layout}``; every dropout
    layer of the twin must get one (ValueError naming what is missing or extra)."""
    _, masked = classes()
    layers = {layer.name: layer for layer in keras_model.layers if isinstance(layer, masked)}
    if sorted(masks) != sorted(layers):
        raise ValueError(
            f"Invalid value for argument `masks`. Expected one mask per dropout layer "
            f"{sorted(layers)}. Received masks for {sorted(masks)}."
        )
    for name, mask in masks.items():
        layers[name].keep.assign(np.asarray(mask, dtype=bool))
