"""Keras's batch normalization and dropout on one channels-first batch, layer alone.

The Keras side of ``parity.checks.modal``: a user's cs231n ``BatchNorm``/``SpatialBatchNorm``
is compared with ``keras.layers.BatchNormalization(axis=1, momentum, epsilon)`` (axis 1 is
the feature axis of ``(N, D)`` and the channel axis of ``(N, C, H, W)``: no layout
conversion), a user's ``Dropout`` with the twin's ``MaskedDropout`` (``reference.
modal_layers``: TensorFlow's inverted-dropout arithmetic, bit-identical to Keras's
``Dropout`` given its mask) holding the mask the user's layer drew.
"""

from __future__ import annotations

import numpy as np

# Keras's BatchNormalization weights, in get_weights() order.
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def batch_norm(x: np.ndarray, weights: dict, momentum: float, epsilon: float,
               training: bool, dout: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """One call of Keras's BatchNormalization on ``x`` ``(N, D)`` or ``(N, C, H, W)``.

    ``weights``: ``{"gamma", "beta", "moving_mean", "moving_variance"}``, each ``(D,)``.
    Returns ``output`` (``x``'s shape), ``input``, ``gamma``, ``beta`` (the VJP of
    ``dout``), and ``moving_mean``, ``moving_variance`` after the call (updated in
    training mode: ``momentum * moving + (1 - momentum) * batch``, biased variance).
    """
    import keras

    from reference import tf_backend

    layer = keras.layers.BatchNormalization(
        axis=1, momentum=momentum, epsilon=epsilon, dtype=x.dtype.name
    )
    layer.build(x.shape)
    layer.set_weights([np.asarray(weights[k], x.dtype) for k in BN_WEIGHTS])
    x_k = keras.ops.convert_to_tensor(x)
    y, gradient = tf_backend.record(lambda: layer(x_k, training=training), watch=[x_k])
    dx, dgamma, dbeta = gradient(y, [x_k, layer.gamma, layer.beta], dout.astype(x.dtype))
    out = dict(output=keras.ops.convert_to_numpy(y), input=dx, gamma=dgamma, beta=dbeta)
    out.update(zip(BN_WEIGHTS[2:], (np.asarray(v) for v in layer.get_weights()[2:]), strict=True))
    return out


def dropout(x: np.ndarray, keep: np.ndarray, rate: float, dout: np.ndarray) -> dict:
    """Training-mode inverted dropout of ``x`` with the keep mask ``keep`` (bool, ``x``'s
    shape): ``output`` and ``input`` (the VJP of ``dout``)."""
    import keras

    from reference import tf_backend
    from reference.modal_layers import classes

    _, masked = classes()
    layer = masked(rate, dtype=x.dtype.name)
    layer.build(x.shape)
    layer.keep.assign(np.asarray(keep, dtype=bool))
    x_k = keras.ops.convert_to_tensor(x)
    y, gradient = tf_backend.record(lambda: layer(x_k, training=True), watch=[x_k])
    (dx,) = gradient(y, [x_k], dout.astype(x.dtype))
    return dict(output=keras.ops.convert_to_numpy(y), input=dx)
