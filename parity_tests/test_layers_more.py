"""The layers hand-written CNNs also use (issue 15), each against its Keras layer in
float64: forward, input gradient, weight gradients, and batch norm's moving statistics.
Keras is fed the same input and upstream gradient (one ``tf.GradientTape``)."""

import numpy as np
import pytest

from parity import tolerances
from parity.compare import compare
from scratch.activations import LeakyReLU, Sigmoid, Tanh
from scratch.dropout import Dropout
from scratch.normalization import BatchNormalization
from scratch.padding import ZeroPadding2D
from scratch.pooling import AveragePooling2D, GlobalAveragePooling2D

pytestmark = pytest.mark.keras

FORWARD = tolerances.get("forward", "float64")
GRADIENTS = tolerances.get("gradients", "float64")


def _check(ours, theirs, tol, layer, quantity):
    record = compare(ours, theirs, layer=layer, quantity=quantity, atol=tol.atol, rtol=tol.rtol,
                     expected_dtype="float64")  # fmt: skip
    assert record.passed, record.message


def _keras(keras_layer, x, dout, weights=(), training=None):
    """Keras's output, input gradient and weight gradients for upstream ``dout``."""
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = keras_layer(x) if training is None else keras_layer(x, training=training)
    sources = [x] + [v for v in keras_layer.trainable_weights]
    grads = tape.gradient(y, sources, output_gradients=tf.constant(dout))
    weights = {v.name: g.numpy() for v, g in zip(sources[1:], grads[1:], strict=True)}
    return y.numpy(), grads[0].numpy(), weights


def _compare_layer(ours, keras_layer, shape, seed=0, training=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    if not ours.built:
        ours.build(shape[1:], rng, "float64")
    if not keras_layer.built:
        keras_layer.build(shape)
    for name, value in ours.params.items():  # O(1) weights, not the flat initial ones
        value[...] = rng.normal(size=value.shape) + (1.0 if name == "gamma" else 0.0)
        next(v for v in keras_layer.weights if v.name == name).assign(value)
    y = ours.forward(x)
    dout = rng.normal(size=y.shape)
    dx = ours.backward(dout)
    y_k, dx_k, grads_k = _keras(keras_layer, x, dout, training=training)
    label = type(ours).__name__
    _check(y, y_k, FORWARD, label, "output")
    _check(dx, dx_k, GRADIENTS, label, "input")
    assert set(ours.grads) == set(grads_k)
    for name, grad in ours.grads.items():
        _check(grad, grads_k[name], GRADIENTS, label, name)


def _keras_layers():
    import keras

    return keras.layers


@pytest.mark.parametrize("pool,strides,shape", [
    (2, None, (3, 6, 6, 2)), (2, None, (2, 7, 5, 3)), (3, 2, (2, 9, 8, 2)),
    ((2, 3), 1, (2, 5, 7, 1)),
], ids=["p2", "p2_odd_crops", "p3_s2_overlap", "p2x3_s1"])  # fmt: skip
def test_average_pooling_matches_keras(pool, strides, shape):
    L = _keras_layers()
    _compare_layer(AveragePooling2D(pool, strides), L.AveragePooling2D(pool, strides), shape)


def test_global_average_pooling_matches_keras():
    L = _keras_layers()
    _compare_layer(GlobalAveragePooling2D(), L.GlobalAveragePooling2D(), (3, 5, 4, 6))


@pytest.mark.parametrize("padding", [0, 1, 2], ids=["p0", "p1", "p2"])
def test_zero_padding_matches_keras(padding):
    L = _keras_layers()
    _compare_layer(ZeroPadding2D(padding), L.ZeroPadding2D(padding), (2, 5, 4, 3))


def test_zero_padding_rejects_a_negative_or_non_int_padding():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"Expected a non-negative integer. Received padding"):
            ZeroPadding2D(bad)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_sigmoid_and_tanh_match_keras(kind):
    L = _keras_layers()
    ours = Sigmoid() if kind == "sigmoid" else Tanh()
    x_large = (4, 3, 3, 2)  # N(0, 1) inputs, plus saturating ones below
    _compare_layer(ours, L.Activation(kind), x_large)
    _compare_layer(type(ours)(), L.Activation(kind), (2, 50), seed=3)


@pytest.mark.parametrize("slope", [0.3, 0.1, 0.25], ids=["default", "s0.1", "s0.25"])
def test_leaky_relu_matches_keras_float32_rounded_slope_and_zero(slope):
    L = _keras_layers()
    _compare_layer(LeakyReLU(slope), L.LeakyReLU(negative_slope=slope), (3, 4, 4, 2))
    ours, theirs = LeakyReLU(slope), L.LeakyReLU(negative_slope=slope)  # exact zeros and -1
    x = np.array([[-1.0, 0.0, 2.0, -3.0]])
    ours.build((4,), None, "float64")
    y, dx = ours.forward(x), ours.backward(np.ones_like(x))
    y_k, dx_k, _ = _keras(theirs, x, np.ones_like(x))
    assert np.array_equal(y, y_k) and np.array_equal(dx, dx_k)


@pytest.mark.parametrize("shape", [(6, 4, 4, 3), (8, 5)], ids=["nhwc", "dense"])
def test_batch_norm_training_mode_matches_keras_and_updates_moving_statistics(shape):
    L = _keras_layers()
    ours, theirs = BatchNormalization(), L.BatchNormalization()
    ours.training = True
    _compare_layer(ours, theirs, shape, training=True)
    for name in ("moving_mean", "moving_variance"):
        keras_value = next(v for v in theirs.weights if v.name == name).numpy()
        _check(ours.state[name], keras_value, FORWARD, "BatchNormalization", name)


def test_batch_norm_inference_mode_uses_moving_statistics_like_keras():
    L = _keras_layers()
    ours, theirs = BatchNormalization(momentum=0.9, epsilon=1e-5), L.BatchNormalization(
        momentum=0.9, epsilon=1e-5)  # fmt: skip
    ours.build((5,), None, "float64")
    theirs.build((4, 5))
    rng = np.random.default_rng(7)
    for name in ("moving_mean", "moving_variance"):
        ours.state[name][...] = rng.uniform(0.5, 2.0, 5)
        next(v for v in theirs.weights if v.name == name).assign(ours.state[name])
    before = {k: v.copy() for k, v in ours.state.items()}
    _compare_layer(ours, theirs, (4, 5), seed=2, training=False)
    assert all(np.array_equal(before[k], ours.state[k]) for k in before)


def test_dropout_with_the_same_mask_matches_keras_scaling():
    import tensorflow as tf

    rate, shape = 0.4, (4, 3, 3, 2)
    ours = Dropout(rate, seed=1)
    ours.build(shape[1:], None, "float64")
    ours.training = True
    x = np.random.default_rng(0).normal(size=shape)
    y = ours.forward(x)
    dx = ours.backward(np.ones(shape))
    # TensorFlow's own inverted dropout, its mask made ours: x * (1 / (1 - rate)) kept.
    kept = tf.where(tf.constant(ours.mask), tf.constant(x) * (1 / (1 - rate)), 0.0)
    assert np.array_equal(y, kept.numpy())
    assert np.array_equal(dx, np.where(ours.mask, 1 / (1 - rate), 0.0))
    assert 0.45 < ours.mask.mean() < 0.75  # kept with probability 1 - rate = 0.6
    ours.training = False
    assert np.array_equal(ours.forward(x), x)


def _loss_scores(seed=0, n=16, k=10):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, k))
    scores[0] = -np.abs(scores[0])  # every score negative: Keras's masked-zero floor
    scores[0, 3] = -0.01
    return scores, rng.integers(0, k, size=n)


def _keras_loss(function, scores, labels):
    import tensorflow as tf

    s = tf.constant(scores)
    target = tf.constant(np.eye(scores.shape[1])[labels])
    with tf.GradientTape() as tape:
        tape.watch(s)
        loss = function(target, s)
    return loss.numpy(), tape.gradient(loss, s).numpy()


def test_cross_entropy_from_logits_matches_kerass_categorical_crossentropy():
    import keras

    from scratch.losses import categorical_crossentropy_from_logits

    logits, labels = _loss_scores(seed=2)
    loss, grad = categorical_crossentropy_from_logits(logits, labels)
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    loss_k, grad_k = _keras_loss(keras_loss, logits, labels)
    _check(np.float64(loss), loss_k, FORWARD, "categorical_crossentropy", "loss")
    _check(grad, grad_k, GRADIENTS, "categorical_crossentropy", "logits")


def test_cross_entropy_from_probabilities_matches_keras_up_to_its_renormalisation():
    import keras

    from scratch.chw_loss import softmax
    from scratch.losses import categorical_crossentropy

    probabilities, labels = softmax(_loss_scores(seed=2)[0]), _loss_scores(seed=2)[1]
    loss, grad = categorical_crossentropy(probabilities, labels)
    loss_k, grad_k = _keras_loss(keras.losses.CategoricalCrossentropy(), probabilities, labels)
    _check(np.float64(loss), loss_k, FORWARD, "categorical_crossentropy", "loss")
    # Keras divides p by sum(p) first: its gradient adds 1 / (N sum p) = 1 / N everywhere, a
    # constant per row that the softmax's backward pass maps to 0 (the logits agree)
    _check(grad + 1 / len(labels), grad_k, GRADIENTS, "categorical_crossentropy", "probabilities")


def test_categorical_hinge_matches_keras_loss_and_gradient():
    import keras

    from scratch.losses import categorical_hinge

    scores, labels = _loss_scores()
    loss, grad = categorical_hinge(scores, labels)
    loss_k, grad_k = _keras_loss(keras.losses.CategoricalHinge(), scores, labels)
    _check(np.float64(loss), loss_k, FORWARD, "categorical_hinge", "loss")
    _check(grad, grad_k, GRADIENTS, "categorical_hinge", "scores")


def test_cs231n_svm_loss_matches_its_formula_in_keras_ops_and_differs_from_categorical_hinge():
    import keras
    from keras import ops

    from scratch.losses import multiclass_svm

    def svm(target, s):  # cs231n's SVM loss in keras.ops, differentiated by TensorFlow
        correct = ops.sum(target * s, axis=-1, keepdims=True)
        margins = ops.maximum(s - correct + 1.0, 0.0) * (1.0 - target)
        return ops.mean(ops.sum(margins, axis=-1))

    scores, labels = _loss_scores(seed=1)
    loss, grad = multiclass_svm(scores, labels)
    loss_k, grad_k = _keras_loss(svm, scores, labels)
    _check(np.float64(loss), loss_k, FORWARD, "multiclass_svm", "loss")
    _check(grad, grad_k, GRADIENTS, "multiclass_svm", "scores")
    hinge, _ = _keras_loss(keras.losses.CategoricalHinge(), scores, labels)
    assert abs(hinge - loss) > 0.1  # not the same loss: max over wrong classes vs their sum


@pytest.mark.parametrize("spatial", [False, True], ids=["BatchNorm", "SpatialBatchNorm"])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_cs231n_batch_norm_matches_keras_with_its_momentum_and_eps(spatial, mode):
    from scratch.chw_norm import BatchNorm, SpatialBatchNorm

    rng = np.random.default_rng(5)
    shape = (6, 3, 4, 5) if spatial else (8, 5)
    channels = shape[1]
    ours = (SpatialBatchNorm if spatial else BatchNorm)(channels)
    theirs = _keras_layers().BatchNormalization(axis=1, momentum=0.9, epsilon=1e-5)
    theirs.build(shape)
    values = dict(gamma=rng.normal(size=channels) + 1, beta=rng.normal(size=channels),
                  moving_mean=rng.normal(size=channels),
                  moving_variance=rng.uniform(0.5, 2, channels))  # fmt: skip
    ours.gamma, ours.beta = values["gamma"].copy(), values["beta"].copy()
    ours.running_mean, ours.running_var = values["moving_mean"], values["moving_variance"]
    for name, value in values.items():
        next(v for v in theirs.weights if v.name == name).assign(value)
    x, dout = rng.normal(size=shape), rng.normal(size=shape)
    y = ours.forward(x, mode)
    dx, dgamma, dbeta = ours.backward(dout)
    y_k, dx_k, grads_k = _keras(theirs, x, dout, training=mode == "train")
    _check(y, y_k, FORWARD, type(ours).__name__, "output")
    _check(dx, dx_k, GRADIENTS, type(ours).__name__, "input")
    _check(dgamma, grads_k["gamma"], GRADIENTS, type(ours).__name__, "gamma")
    _check(dbeta, grads_k["beta"], GRADIENTS, type(ours).__name__, "beta")
    running = {"moving_mean": ours.running_mean, "moving_variance": ours.running_var}
    for name, value in running.items():
        _check(value, next(v for v in theirs.weights if v.name == name).numpy(), FORWARD,
               type(ours).__name__, name)  # fmt: skip


def test_cs231n_dropout_keeps_with_probability_p_and_reuses_its_mask():
    from scratch.chw_norm import Dropout as KeepDropout

    layer = KeepDropout(0.6, seed=2)
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 5))
    y = layer.forward(x, "train")
    assert 0.5 < layer.mask.mean() < 0.7
    assert np.array_equal(y, np.where(layer.mask, x * (1 / 0.6), 0))
    assert np.array_equal(layer.backward(np.ones_like(x)), np.where(layer.mask, 1 / 0.6, 0))
    nhwc = Dropout(1 - 0.6)  # the NHWC layer with Keras's rate and the same mask agrees
    nhwc.build(x.shape[1:], None, "float64")
    nhwc.training, nhwc.mask = True, layer.mask
    assert np.array_equal(nhwc.forward(x), y)
