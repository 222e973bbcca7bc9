import re

import numpy as np
import pytest

from parity.checks import derivations, ties
from scratch import layers as SL
from scratch.models import build
from scratch.pooling import MaxPool2D
from scratch.sequential import Sequential
from spec import (
    ExpandDims,
    FlattenOrder,
    Flip,
    Layer,
    Network,
    Permute,
    Reshape,
    SpecError,
    Squeeze,
)
from spec import transforms as T
from spec.layers import stack
from spec.networks import NETWORKS


def _net(*layers, input_shape=(28, 28, 1), **kwargs):
    return Network("t", input_shape, stack(*layers), **kwargs)


HEAD = (("Flatten", {}), ("Dense", dict(units=10)), ("Softmax", {}))

# Per-example Keras output shapes, worked out by hand from the Keras/TensorFlow rules.
SHIPPED_SHAPES = {
    "zhou": {"conv2d": (26, 26, 8), "max_pooling2d": (13, 13, 8), "flatten": (1352,),
             "dense": (10,), "softmax": (10,)},
    "two-conv": {"conv2d": (28, 28, 8), "re_lu": (28, 28, 8), "max_pooling2d": (14, 14, 8),
                 "conv2d_1": (7, 7, 16), "re_lu_1": (7, 7, 16), "flatten": (784,),
                 "dense": (10,), "softmax": (10,)},
    "chw-relu": {"conv2d": (26, 26, 8), "re_lu": (26, 26, 8), "max_pooling2d": (13, 13, 8),
                 "flatten": (1352,), "dense": (10,), "softmax": (10,)},
    "lenet5": {"zero_padding2d": (32, 32, 1), "conv2d": (28, 28, 6), "tanh": (28, 28, 6),
               "average_pooling2d": (14, 14, 6), "conv2d_1": (10, 10, 16),
               "tanh_1": (10, 10, 16), "average_pooling2d_1": (5, 5, 16), "flatten": (400,),
               "dense": (120,), "tanh_2": (120,), "dense_1": (84,), "tanh_3": (84,),
               "dense_2": (10,), "softmax": (10,)},
}  # fmt: skip


@pytest.mark.parametrize("name", SHIPPED_SHAPES)
def test_shipped_network_shapes_layer_by_layer(name):
    shapes = NETWORKS[name].shapes()
    assert {layer: out for layer, (_, out) in shapes.items()} == SHIPPED_SHAPES[name]


@pytest.mark.parametrize(
    "layer, side, expected",
    [
        (("Conv2D", dict(filters=6, kernel_size=3, strides=2, padding="same")), 28, 14),
        (("Conv2D", dict(filters=6, kernel_size=3, strides=2, padding="same")), 27, 14),
        (("Conv2D", dict(filters=6, kernel_size=2)), 14, 13),
        (("Conv2D", dict(filters=6, kernel_size=3, strides=2)), 28, 13),
        (("MaxPooling2D", dict(pool_size=2)), 13, 6),  # valid crops the odd row
        (("MaxPooling2D", dict(pool_size=3, strides=2)), 6, 2),
        (("MaxPooling2D", dict(pool_size=2, padding="same")), 13, 7),
        (("ZeroPadding2D", dict(padding=1)), 28, 30),
        (("ZeroPadding2D", dict(padding=2)), 28, 32),
        (("AveragePooling2D", dict(pool_size=2)), 13, 6),  # valid crops the odd row
        (("AveragePooling2D", dict(pool_size=3, strides=2)), 10, 4),
        (("LeakyReLU", {}), 13, 13),
        (("Tanh", {}), 13, 13),
        (("Sigmoid", {}), 13, 13),
    ],
    ids=["conv-k3-s2-same-28", "conv-k3-s2-same-27", "conv-k2-valid", "conv-k3-s2-valid",
         "pool2-odd", "pool3-s2", "pool2-same-odd", "zero-pad1", "zero-pad2", "avg2-odd",
         "avg3-s2", "leaky", "tanh", "sigmoid"],
)  # fmt: skip
def test_spatial_shape_rules(layer, side, expected):
    out = _net(layer, *HEAD, input_shape=(side, side, 1)).shapes()
    assert out[stack(layer)[0].name][1][:2] == (expected, expected)


def test_weight_shapes_follow_keras():
    assert NETWORKS["two-conv"].weight_shapes()["conv2d_1"] == {
        "kernel": (3, 3, 8, 16), "bias": (16,),
    }  # fmt: skip
    assert NETWORKS["zhou"].weight_shapes()["conv2d"] == {"kernel": (3, 3, 1, 8)}  # no bias


def test_stack_names_layers_like_keras():
    names = [layer.name for layer in NETWORKS["two-conv"].layers]
    assert names == ["conv2d", "re_lu", "max_pooling2d", "conv2d_1", "re_lu_1", "flatten",
                     "dense", "softmax"]  # fmt: skip


# -- errors: each names the layer, the rule and the value ---------------------------------

ERRORS = {
    "kernel-larger-than-input": (
        lambda: _net(("Conv2D", dict(filters=4, kernel_size=5)), *HEAD, input_shape=(3, 3, 1)),
        "Layer `conv2d` (Conv2D) with padding='valid' needs a window no larger than its input "
        "(rows: kernel_size 5 > 3). Received input shape (3, 3, 1).",
    ),
    "pool-on-1x1": (
        lambda: _net(("MaxPooling2D", {}), *HEAD, input_shape=(1, 1, 4)),
        "Layer `max_pooling2d` (MaxPooling2D) with padding='valid' needs a window no larger "
        "than its input (rows: pool_size 2 > 1). Received input shape (1, 1, 4).",
    ),
    "dense-without-flatten": (
        lambda: _net(
            ("Conv2D", dict(filters=2, kernel_size=3)), ("Dense", dict(units=10)), ("Softmax", {})
        ),  # fmt: skip
        "Layer `dense` (Dense) expects a flat per-example input (features,); Keras's Dense "
        "would act on the last axis only: put a Flatten before it. Received input shape "
        "(26, 26, 2).",
    ),
    "conv-on-flat-input": (
        lambda: _net(("Flatten", {}), ("Conv2D", dict(filters=2, kernel_size=3)), *HEAD),
        "Layer `conv2d` (Conv2D) expects a per-example input (H, W, C). Received input shape "
        "(784,).",
    ),
    "unknown-kind": (
        lambda: Layer("Conv3D", "conv3d"),
        "Layer `conv3d`: unknown kind 'Conv3D'; known: ('Conv2D', 'MaxPooling2D', "
        "'AveragePooling2D', 'GlobalAveragePooling2D', 'ZeroPadding2D', 'Flatten', 'Dense', "
        "'ReLU', 'LeakyReLU', 'Tanh', 'Sigmoid', 'Softmax', 'BatchNormalization', 'Dropout').",
    ),
    "missing-hyperparameter": (
        lambda: Layer("Conv2D", "conv2d", kernel_size=3),
        "Layer `conv2d` (Conv2D) requires `filters`. Received filters=None.",
    ),
    "foreign-hyperparameter": (
        lambda: Layer("Dense", "dense", units=10, filters=8),
        "Layer `dense` (Dense) has no hyperparameter `filters`. Received filters=8.",
    ),
    "zero-filters": (
        lambda: Layer("Conv2D", "conv2d", filters=0, kernel_size=3),
        "Layer `conv2d` (Conv2D) expects `filters` a positive int. Received filters=0.",
    ),
    "bad-padding": (
        lambda: Layer("Conv2D", "conv2d", filters=1, kernel_size=3, padding="full"),
        "Layer `conv2d` (Conv2D) expects `padding` one of ('valid', 'same'). Received "
        "padding='full'.",
    ),
    "avg-pool-on-1x1": (
        lambda: _net(("AveragePooling2D", {}), *HEAD, input_shape=(1, 1, 4)),
        "Layer `average_pooling2d` (AveragePooling2D) with padding='valid' needs a window no "
        "larger than its input (rows: pool_size 2 > 1). Received input shape (1, 1, 4).",
    ),
    "global-pool-on-flat-input": (
        lambda: _net(("Flatten", {}), ("GlobalAveragePooling2D", {}), *HEAD[1:]),
        "Layer `global_average_pooling2d` (GlobalAveragePooling2D) expects a per-example "
        "input (H, W, C). Received input shape (784,).",
    ),
    "negative-slope": (
        lambda: Layer("LeakyReLU", "leaky_re_lu", negative_slope=-0.1),
        "Layer `leaky_re_lu` (LeakyReLU) expects `negative_slope` a finite float >= 0. "
        "Received negative_slope=-0.1.",
    ),
    "slope-not-a-number": (
        lambda: Layer("LeakyReLU", "leaky_re_lu", negative_slope="0.2"),
        "Layer `leaky_re_lu` (LeakyReLU) expects `negative_slope` a finite float >= 0. "
        "Received negative_slope='0.2'.",
    ),
    "slope-on-tanh": (
        lambda: Layer("Tanh", "tanh", negative_slope=0.2),
        "Layer `tanh` (Tanh) has no hyperparameter `negative_slope`. Received negative_slope=0.2.",
    ),
    "bad-strides": (
        lambda: Layer("MaxPooling2D", "max_pooling2d", strides=(2, 0)),
        "Layer `max_pooling2d` (MaxPooling2D) expects `strides` a positive int or pair of "
        "them. Received strides=(2, 0).",
    ),
    "duplicate-names": (
        lambda: Network(
            "t",
            (4,),
            (Layer("Dense", "d", units=2), Layer("Dense", "d", units=2), Layer("Softmax", "s")),
        ),  # fmt: skip
        "Network `t`: layer names must be unique. Received duplicates ['d'].",
    ),
    "last-not-softmax": (
        lambda: Network("t", (4,), (Layer("Dense", "dense", units=2),)),
        "Network `t`: the last layer must be an unfolded Softmax (the loss is cross-entropy "
        "on its probabilities). Received Layer `dense` (Dense).",
    ),
    "folded-relu": (
        lambda: _net(("ReLU", dict(folded=True)), *HEAD),
        "Layer `re_lu` (ReLU) cannot be folded (only ('Flatten', 'ZeroPadding2D') can). "
        "Received folded=True.",
    ),
    "layout-of-unknown-key": (
        lambda: _net(*HEAD, layouts={("dense", "gamma"): ()}),
        "Network `t`: layout key ('dense', 'gamma') names no quantity of the implementation",
    ),
    "layout-that-does-not-fit": (
        lambda: _net(*HEAD, layouts={("flatten", "input"): (Permute((1, 0)),)}),
        "Network `t`: layout of layer `flatten` input (Keras shape (None, 28, 28, 1)): "
        "Permute(axes=(1, 0)): expected a rank-2 array, received shape (None, 28, 28, 1).",
    ),
    "learning-rate-not-positive": (
        lambda: _net(*HEAD, learning_rates={"momentum": 0.0}),
        "Network `t`: expected `learning_rates` to map optimizer names to finite, strictly "
        "positive floats. Received 'momentum': 0.0.",
    ),
    "flatten-order-without-flatten": (
        lambda: _net(
            ("Conv2D", dict(filters=2, kernel_size=3)),
            *HEAD,
            layouts={("conv2d", "kernel"): (FlattenOrder(0, "CHW"),)},
        ),  # fmt: skip
        "Network `t`: layout of layer `conv2d` uses FlattenOrder(axis=0, order='CHW', "
        "grid=None) but no Flatten of an (H, W, C) map comes at or before it.",
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_spec_error_names_layer_rule_and_value(case):
    make, message = ERRORS[case]
    with pytest.raises(SpecError, match="^" + re.escape(message)):
        make()


# -- transforms ---------------------------------------------------------------------------

TRANSFORMS = {
    "permute": ((Permute((2, 3, 1, 0)),), (8, 2, 3, 5)),
    "blog-filters": ((Permute((1, 2, 0)), ExpandDims(2)), (8, 3, 3)),
    "expand": ((ExpandDims(3),), (4, 28, 28)),
    "squeeze": ((Squeeze(1),), (4, 1, 5)),
    "flip": ((Flip((0, 1)),), (3, 3, 2, 4)),
    "flatten-order-rows": ((FlattenOrder(0, "CHW", (13, 13, 8)),), (1352, 10)),
    "flatten-order-vectors": ((FlattenOrder(1, "WCH", (3, 5, 2)),), (4, 30)),
    "reshape": ((Reshape((8, 3, 3), (3, 3, 1, 8)),), (8, 3, 3)),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_round_trip_is_bit_exact_and_shapes_agree(name):
    transforms, shape = TRANSFORMS[name]
    a = np.random.default_rng(0).standard_normal(shape)
    k = T.to_keras(transforms, a)
    assert k.shape == T.keras_shape(transforms, shape)
    assert T.native_shape(transforms, k.shape) == shape
    back = T.from_keras(transforms, k)
    assert back.dtype == a.dtype and np.array_equal(back, a)
    assert np.array_equal(T.to_keras(transforms, T.from_keras(transforms, k)), k)
    k[...] = 0  # fresh arrays, never views of the input
    assert not np.array_equal(T.to_keras(transforms, a), k)


def test_flatten_order_moves_each_element_to_keras_hwc_position():
    h, w, c = 3, 4, 2
    native = np.arange(c * h * w).reshape(1, c * h * w)  # value = CHW flat index
    keras = T.to_keras((FlattenOrder(1, "CHW", (h, w, c)),), native)[0]
    assert all(keras[i * w * c + j * c + k] == k * h * w + i * w + j
               for i, j, k in np.ndindex(h, w, c))  # fmt: skip


def test_transform_records_reject_bad_data():
    with pytest.raises(T.TransformError, match=r"permutation of 0..2. Received axes=\(0, 0, 1\)"):
        Permute((0, 0, 1))
    with pytest.raises(T.TransformError, match=r"permutation of 'HWC'. Received order='CHX'"):
        FlattenOrder(0, "CHX")
    with pytest.raises(T.TransformError, match=r"expected size 1 on axis 1"):
        T.from_keras((ExpandDims(1),), np.zeros((2, 3)))


@pytest.mark.parametrize("name", NETWORKS)
def test_every_key_round_trips_through_its_layout(name):
    network = NETWORKS[name]
    rng = np.random.default_rng(1)
    for layer, quantity in network.keys():
        shape = tuple(3 if d is None else d for d in network.native_shape(layer, quantity))
        a = rng.standard_normal(shape)
        transforms = network.layout(layer, quantity)
        k = T.to_keras(transforms, a)
        keras_shape = network.keras_shape(layer, quantity)
        assert k.shape == tuple(3 if d is None else d for d in keras_shape), (layer, quantity)
        assert np.array_equal(T.from_keras(transforms, k), a), (layer, quantity)


# -- the description is what the implementations and the harness use ----------------------


@pytest.mark.parametrize("name", NETWORKS)
def test_models_carry_their_description_and_its_names(name):
    model = build(name)
    assert model.spec is NETWORKS[name]
    assert model.layer_names == NETWORKS[name].native_names


@pytest.mark.parametrize("name", ["two-conv", "zhou-seq"])
def test_sequential_built_from_description_describes_itself_back(name):
    model = build(name)
    described = Sequential([SL.Conv2D(1, 3)] + [SL.Flatten(), SL.Dense(10), SL.Softmax()],
                           (28, 28, 1)).spec  # fmt: skip
    assert described.layers[0] == Layer("Conv2D", "conv2d", filters=1, kernel_size=3)
    assert model._describe() == NETWORKS[name].layers


@pytest.mark.parametrize("name, dtype", [(n, d) for n in NETWORKS for d in ("float64", "float32")])
def test_adapter_preprocessing_is_the_description_formula(name, dtype):
    model, network = build(name, dtype=dtype), NETWORKS[name]
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    images = np.tile(images, (1, 2, 2))[:, :28, :28]
    ours = model.preprocess(images)
    keras_x = T.to_keras(network.layout(network.native_names[0], "input"), ours)
    assert np.array_equal(keras_x[..., 0], network.preprocess.apply(images, dtype))


def test_pools_and_kinks_are_found_by_kind_not_by_name():
    stack_ = [SL.Conv2D(2, 3, name="c"), SL.ReLU(name="act"), MaxPool2D(2, name="pool"),
              SL.Flatten(name="f"), SL.Dense(10, name="d"), SL.Softmax(name="p")]  # fmt: skip
    model = Sequential(stack_, (8, 8, 1), name="odd-names")
    assert model.spec.pools() == ("pool",) and model.spec.kinked() == ("act", "pool")
    assert ties.pool_layers(model) == ["pool"]
    assert ("pool", "input") in derivations.expected(model)


def test_leaky_relu_is_kinked_and_average_pooling_tanh_sigmoid_are_not():
    network = _net(
        ("Conv2D", dict(filters=2, kernel_size=3)), ("LeakyReLU", {}), ("Tanh", {}),
        ("Sigmoid", {}), ("AveragePooling2D", {}), ("MaxPooling2D", {}),
        ("GlobalAveragePooling2D", {}), ("Dense", dict(units=10)), ("Softmax", {}),
    )  # fmt: skip
    assert network.kinked() == ("leaky_re_lu", "max_pooling2d")
    assert network.pools() == ("max_pooling2d",)  # the max-pool routing (ties) check's pools
    assert network.shapes()["global_average_pooling2d"][1] == (2,)


def test_layer_defaults_follow_keras():
    assert Layer("AveragePooling2D", "a").strides == (2, 2)  # strides = pool_size
    assert Layer("AveragePooling2D", "a", pool_size=3).strides == (3, 3)
    assert Layer("LeakyReLU", "l").negative_slope == 0.3
    assert Layer("LeakyReLU", "l", negative_slope=0).negative_slope == 0.0


def test_a_learning_rate_key_that_names_no_optimizer_is_refused_where_it_is_read():
    from reference.optimizers import default_learning_rate

    network = _net(*HEAD, learning_rates={"momentun": 0.01})
    with pytest.raises(ValueError, match=re.escape("Network `t`: `learning_rates` keys must be "
                                                   "optimizers ('sgd', ")):  # fmt: skip
        default_learning_rate("sgd", network)
