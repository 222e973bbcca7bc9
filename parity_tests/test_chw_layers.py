"""The channels-first family's other layers (``scratch.chw_layers``) and ``Conv``'s 'same'
padding, strides that do not tile and ``use_bias=False``, each against its Keras layer in
float64 and float32: output, input gradient and weight gradients for one upstream gradient
(one ``tf.GradientTape``). Keras is NHWC: ``x`` and ``dout`` go in transposed, its results
come back transposed. Planted bugs fail exactly the quantities they break."""

import re

import numpy as np
import pytest

from parity import tolerances
from parity.compare import compare
from parity.testing import EXACT, check
from scratch.chw import Conv
from scratch.chw_layers import AvgPool, GlobalAvgPool, LeakyReLU, Sigmoid, Tanh
from scratch.chw_model import ChwModel, make_layers
from spec import SpecError
from spec.layers import stack
from spec.networks import CHW_SAME, LENET5_CHW, channels_first

DTYPES = ("float64", "float32")


def _nhwc(a):
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a  # (N, C, H, W) -> (N, H, W, C)


def _nchw(a):
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a  # (N, H, W, C) -> (N, C, H, W)


def _conv(c, f, k, dtype, **kwargs):
    conv = Conv(c, f, k, weight_scale=1.0, rng=np.random.default_rng(3), dtype=dtype, **kwargs)
    if conv.use_bias:
        conv.bias[...] = np.random.default_rng(4).standard_normal(f)
    return conv


def _keras_conv(conv, dtype):
    """Keras's Conv2D holding ``conv``'s weights; a ZeroPadding2D first for an int pad."""
    import keras

    k, s = conv.filter_size, conv.stride
    same = conv.pad == "same"
    layer = keras.layers.Conv2D(conv.out_channels, k, strides=s, padding="same" if same else
                                "valid", use_bias=conv.use_bias, dtype=dtype)  # fmt: skip
    layer.build((None, None, None, conv.in_channels))
    layer.kernel.assign(conv.filters.transpose(2, 3, 1, 0))  # (F, C, kh, kw) -> (kh, kw, C, F)
    if conv.use_bias:
        layer.bias.assign(conv.bias)
    pad = None if same or not conv.pad else keras.layers.ZeroPadding2D(conv.pad, dtype=dtype)
    weights = [layer.kernel] + ([layer.bias] if conv.use_bias else [])
    return (lambda x: layer(x if pad is None else pad(x))), weights


def _ours(cls, *args):
    return lambda dtype: cls(*args, dtype=dtype)


def _keras_layer(name, *args, **kwargs):
    import keras

    def make(ours, dtype):
        return getattr(keras.layers, name)(*args, **kwargs, dtype=dtype), []

    return make


# id: (our layer in dtype, Keras call and weights from our layer, input shape (N, C, H, W))
CASES = {
    "sigmoid": (_ours(Sigmoid), _keras_layer("Activation", "sigmoid"), (2, 3, 4, 5)),
    "tanh": (_ours(Tanh), _keras_layer("Activation", "tanh"), (2, 3, 4, 5)),
    "leaky_relu_default": (_ours(LeakyReLU), _keras_layer("LeakyReLU"), (2, 3, 4, 5)),
    "leaky_relu_s0.1": (_ours(LeakyReLU, 0.1), _keras_layer("LeakyReLU", negative_slope=0.1),
                        (2, 3, 4, 5)),
    "avg_pool_p2": (_ours(AvgPool), _keras_layer("AveragePooling2D", 2), (2, 3, 6, 6)),
    "avg_pool_p2_odd_crops": (_ours(AvgPool), _keras_layer("AveragePooling2D", 2), (2, 3, 7, 5)),
    "avg_pool_p3_s2_overlap": (_ours(AvgPool, 3, 2), _keras_layer("AveragePooling2D", 3, 2),
                               (2, 2, 9, 8)),
    "avg_pool_p2_s3_gaps": (_ours(AvgPool, 2, 3), _keras_layer("AveragePooling2D", 2, 3),
                            (2, 2, 8, 7)),
    "global_avg_pool": (_ours(GlobalAvgPool), _keras_layer("GlobalAveragePooling2D"),
                        (2, 4, 5, 3)),
    # 'same' at stride 2, TensorFlow's split per axis (top/left, bottom/right): H 7 k4 -> 1/2,
    # W 9 k4 -> 1/2; H 7 k3 -> 1/1, W 8 k3 -> 0/1; k2 on 7 -> 0/1; k1 on 8: 0/0, 7 rows read.
    "conv_same_s2_k4_h7w9": (lambda dtype: _conv(3, 4, 4, dtype, pad="same", stride=2),
                             _keras_conv, (2, 3, 7, 9)),
    "conv_same_s2_k3_h7w8": (lambda dtype: _conv(2, 3, 3, dtype, pad="same", stride=2),
                             _keras_conv, (2, 2, 7, 8)),
    "conv_same_s2_k2_h7w7": (lambda dtype: _conv(2, 3, 2, dtype, pad="same", stride=2),
                             _keras_conv, (2, 2, 7, 7)),
    "conv_same_s1_k4_h6w5": (lambda dtype: _conv(2, 2, 4, dtype, pad="same"),
                             _keras_conv, (2, 2, 6, 5)),
    "conv_same_s2_k1_h8w8": (lambda dtype: _conv(2, 3, 1, dtype, pad="same", stride=2),
                             _keras_conv, (2, 2, 8, 8)),
    # strides that do not tile: (8 - 3) % 2 = 1, (28 + 2 - 3) % 2 = 1: Keras floors.
    "conv_valid_s2_untiled_h8w6": (lambda dtype: _conv(2, 3, 3, dtype, stride=2),
                                   _keras_conv, (2, 2, 8, 6)),
    "conv_pad1_s2_untiled_h28": (lambda dtype: _conv(1, 2, 3, dtype, pad=1, stride=2),
                                 _keras_conv, (1, 1, 28, 28)),
    "conv_no_bias": (lambda dtype: _conv(3, 4, 3, dtype, pad="same", stride=2, use_bias=False),
                     _keras_conv, (2, 3, 7, 7)),
}  # fmt: skip


def _inputs(shape, dtype):
    """N(0, 2^2) values plus exact zeros and saturating +-30 (sigmoid, tanh, LeakyReLU at 0)."""
    x = np.random.default_rng(0).normal(0, 2, shape)
    x.reshape(-1)[:3] = (0.0, 30.0, -30.0)
    return x.astype(dtype)


def _keras(call, weights, x, dout):
    """Keras's output, d/dx and d/d(weights) for upstream ``dout``, NCHW in, NCHW out."""
    import tensorflow as tf

    xt = tf.constant(_nhwc(x))
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = call(xt)
    grads = tape.gradient(y, [xt, *weights], output_gradients=tf.constant(_nhwc(dout)))
    return _nchw(y.numpy()), _nchw(grads[0].numpy()), [g.numpy() for g in grads[1:]]


@pytest.fixture(scope="module")
def keras_results():
    """Per (case, dtype): x, dout and Keras's output, dx and weight gradients in our
    layouts (kernel (F, C, kh, kw)), computed once for the case tests and the planted bugs."""
    cache = {}

    def get(case, dtype):
        if (case, dtype) not in cache:
            make, make_keras, shape = CASES[case]
            ours = make(dtype)
            x = _inputs(shape, dtype)
            call, weights = make_keras(ours, dtype)
            out_shape = np.shape(ours.forward(x))
            dout = np.random.default_rng(1).standard_normal(out_shape).astype(dtype)
            y, dx, grads = _keras(call, weights, x, dout)
            names = dict(zip(("kernel", "bias")[: len(grads)], grads, strict=True))
            if "kernel" in names:
                names["kernel"] = names["kernel"].transpose(3, 2, 0, 1)  # -> (F, C, kh, kw)
            cache[(case, dtype)] = x, dout, {"output": y, "input": dx, **names}
        return cache[(case, dtype)]

    return get


def _records(layer, x, dout, theirs, dtype) -> dict:
    """Our layer's output, dx (and dw, db) against Keras's, on the dtype's budgets."""
    out = layer.forward(x)
    result = layer.backward(dout)
    dx, dw, db = result if isinstance(result, tuple) else (result, None, None)
    ours = {"output": out, "input": dx, "kernel": dw, "bias": db}
    assert {q for q, a in ours.items() if a is not None} == set(theirs)  # no bias: db None
    records = {}
    for quantity, desired in theirs.items():
        tol = tolerances.get("forward" if quantity == "output" else "gradients", dtype)
        records[quantity] = compare(ours[quantity], desired, layer=type(layer).__name__,
                                    quantity=quantity, atol=tol.atol, rtol=tol.rtol,
                                    expected_dtype=dtype)  # fmt: skip
    return records


@pytest.mark.keras
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_layer_matches_keras(keras_results, case, dtype):
    x, dout, theirs = keras_results(case, dtype)
    for record in _records(CASES[case][0](dtype), x, dout, theirs, dtype).values():
        assert record.passed, record.message


# -- planted bugs ------------------------------------------------------------------------
class TanhFromInput(Tanh):  # tanh' computed from the input: 1 - x^2
    def _apply(self, x):
        return np.tanh(x), x


class SigmoidFromInput(Sigmoid):  # sigmoid' computed from the input: x (1 - x)
    def _apply(self, x):
        return super()._apply(x)[0], x


class LeakyBackwardUnscaled(LeakyReLU):  # ReLU's backward: 0, not the slope, below 0
    def _derivative(self, dout, positive):
        return np.where(positive, dout, 0.0)


class LeakySlopeUnrounded(LeakyReLU):  # 0.3 exactly, not TensorFlow's float32(0.3)
    def __init__(self, dtype=np.float64):
        super().__init__(dtype=dtype)
        self._slope = self.dtype.type(self.negative_slope)


class AvgPoolNotDivided(AvgPool):  # backward hands every cell the whole dout
    def backward(self, dout):
        return super().backward(dout) * self.pool_size**2


class GlobalAvgPoolNotDivided(GlobalAvgPool):  # backward not divided by H*W
    def backward(self, dout):
        (_, _, h, w), _ = self._shape
        return super().backward(dout) * (h * w)


class ConvSameExtraOnTop(Conv):  # 'same' with the odd zero at the top/left, not bottom/right
    def axis_padding(self, size, axis):
        out, before, after = super().axis_padding(size, axis)
        return out, after, before


def _conv_case(cls, case):
    """The conv of ``case`` rebuilt as ``cls``, with its weights."""

    def make(dtype):
        shipped = CASES[case][0](dtype)
        layer = cls(shipped.in_channels, shipped.out_channels, shipped.filter_size,
                    pad=shipped.pad, stride=shipped.stride, dtype=dtype)  # fmt: skip
        layer.filters, layer.bias = shipped.filters, shipped.bias
        return layer

    return make


# bug: (case, planted layer in dtype, the quantities that fail in float64)
PLANTED = {
    "tanh-derivative-from-input": ("tanh", _ours(TanhFromInput), {"input"}),
    "sigmoid-derivative-from-input": ("sigmoid", _ours(SigmoidFromInput), {"input"}),
    "leaky-relu-backward-unscaled": ("leaky_relu_default", _ours(LeakyBackwardUnscaled),
                                     {"input"}),
    "leaky-relu-slope-not-float32": ("leaky_relu_default", _ours(LeakySlopeUnrounded),
                                     {"output", "input"}),
    "avg-pool-backward-not-divided": ("avg_pool_p3_s2_overlap", _ours(AvgPoolNotDivided, 3, 2),
                                      {"input"}),
    "global-avg-pool-backward-not-divided": ("global_avg_pool", _ours(GlobalAvgPoolNotDivided),
                                             {"input"}),
    "conv-same-odd-zero-on-top": ("conv_same_s2_k4_h7w9",
                                  _conv_case(ConvSameExtraOnTop, "conv_same_s2_k4_h7w9"),
                                  {"output", "input", "kernel"}),
}  # fmt: skip


@pytest.mark.keras
@pytest.mark.parametrize("bug", PLANTED)
def test_planted_bug_fails_exactly_the_quantities_it_breaks(keras_results, bug):
    case, make, expected = PLANTED[bug]
    x, dout, theirs = keras_results(case, "float64")
    records = _records(make("float64"), x, dout, theirs, "float64")
    assert {q for q, r in records.items() if not r.passed} == expected


@pytest.mark.keras
def test_float32_rounded_slope_is_invisible_in_float32_only(keras_results):
    x, dout, theirs = keras_results("leaky_relu_default", "float32")  # same slope in float32
    records = _records(LeakySlopeUnrounded(dtype="float32"), x, dout, theirs, "float32")
    assert all(r.passed for r in records.values())


# -- geometry and single images (no Keras) -------------------------------------------------
@pytest.mark.parametrize("size, k, stride, expected", [
    (7, 4, 2, (4, 1, 2)), (7, 3, 2, (4, 1, 1)), (8, 3, 2, (4, 0, 1)), (7, 2, 2, (4, 0, 1)),
    (28, 3, 2, (14, 0, 1)), (8, 1, 2, (4, 0, 0)),
], ids=["h7_k4", "h7_k3", "h8_k3", "h7_k2", "h28_k3", "h8_k1"])  # fmt: skip
def test_same_padding_splits_like_tensorflow(size, k, stride, expected):
    # (out, top, bottom); the Keras comparisons above pin the same split on values.
    assert Conv(1, 1, k, pad="same", stride=stride).axis_padding(size, "H") == expected


@pytest.mark.parametrize(
    "layer",
    [AvgPool(2), AvgPool(3, 2), GlobalAvgPool(), Tanh()],
    ids=["avg_pool", "avg_pool_p3_s2", "global_avg_pool", "tanh"],
)
def test_one_image_is_the_batch_of_one(layer):
    x = np.random.default_rng(5).standard_normal((1, 3, 7, 6))
    out = layer.forward(x)
    dout = np.random.default_rng(6).standard_normal(out.shape)
    dx = layer.backward(dout)
    check(layer.forward(x[0]), out[0], EXACT, type(layer).__name__, "output", "batch")
    check(layer.backward(dout[0]), dx[0], EXACT, type(layer).__name__, "input", "batch")


def test_untiled_rows_get_zero_gradient_and_no_bias_means_db_none():
    conv = _conv(1, 2, 3, "float64", stride=2, use_bias=False)
    x = np.random.default_rng(7).standard_normal((1, 1, 8, 8))
    dx, dw, db = conv.backward(np.ones_like(conv.forward(x)))
    assert conv.bias is None and db is None and dw.shape == (2, 1, 3, 3)
    assert not dx[..., 7, :].any() and not dx[..., :, 7].any() and dx[..., 6, 6].any()


# -- the networks ----------------------------------------------------------------------------
def test_make_layers_maps_every_new_kind_to_its_class():
    kinds = {name: type(layer).__name__ for name, layer in make_layers(
        CHW_SAME, np.random.default_rng(0), np.dtype("float64"), 1e-3)}  # fmt: skip
    assert kinds == {"conv2d": "Conv", "sigmoid": "Sigmoid", "conv2d_1": "Conv",
                     "leaky_re_lu": "LeakyReLU", "conv2d_2": "Conv",
                     "global_average_pooling2d": "GlobalAvgPool", "dense": "Linear"}  # fmt: skip
    same = dict(make_layers(CHW_SAME, np.random.default_rng(0), np.dtype("float64"), 1e-3))
    assert {(same[n].pad, same[n].stride) for n in ("conv2d", "conv2d_1", "conv2d_2")} == {
        ("same", 2)}  # fmt: skip
    lenet = dict(make_layers(LENET5_CHW, np.random.default_rng(0), np.dtype("float64"), 1e-3))
    assert [lenet[n].pad for n in ("conv2d", "conv2d_1")] == [2, 0]  # the folded ZeroPadding2D
    assert [type(lenet[n]).__name__ for n in ("tanh", "average_pooling2d", "dense_2")] == [
        "Tanh", "AvgPool", "Linear"]  # fmt: skip


@pytest.mark.parametrize("network_name", ["lenet5-chw", "chw-same"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_new_networks_give_native_shapes_and_dtypes(network_name, dtype):
    from spec.networks import NETWORKS

    model = ChwModel(NETWORKS[network_name], dtype=dtype)
    x = model.preprocess(np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8))
    loss, grads = model.gradients(x, np.array([3, 7]))
    shapes = {n: out.shape for n, out in model.forward(x).items()}
    assert shapes == {n: (2, *model.spec.native_shape(n, "output")[1:]) for n in shapes}
    assert loss.dtype == dtype and {a.dtype for g in grads.values() for a in g.values()} == {
        np.dtype(dtype)}  # fmt: skip


# -- errors -------------------------------------------------------------------------------
def _network(*layers):
    return channels_first("t", stack(*layers, ("Flatten", dict(folded=True)),
                                     ("Dense", dict(units=10)), ("Softmax", {})))  # fmt: skip


SPEC_ERRORS = [
    pytest.param(_network(("AveragePooling2D", dict(pool_size=(2, 3)))),
                 "Layer `average_pooling2d` (AveragePooling2D) has no channels-first pool "
                 "(MaxPool2x2: pool 2, strides 2; AvgPool: square pool and strides; both "
                 "'valid'). Received pool_size=(2, 3), strides=(2, 3), padding='valid'.",
                 id="avg_pool_not_square"),
    pytest.param(_network(("ZeroPadding2D", dict(padding=1, folded=True)),
                          ("Conv2D", dict(filters=2, kernel_size=3, padding="same"))),
                 "Layer `conv2d` (Conv2D) has no channels-first Conv (square kernel and "
                 "strides, padding 'valid' after an optional folded ZeroPadding2D or 'same' "
                 "without one). Received kernel_size=(3, 3), strides=(1, 1), "
                 "padding='same' after a folded padding of 1.",
                 id="same_after_folded_padding"),
    pytest.param(_network(("ZeroPadding2D", dict(padding=1))),
                 "Layer `zero_padding2d` (ZeroPadding2D) has no channels-first layer (Conv2D, "
                 "ReLU, Tanh, Sigmoid, LeakyReLU, MaxPooling2D, AveragePooling2D, "
                 "GlobalAveragePooling2D, Dense, BatchNormalization, Dropout, a folded "
                 "ZeroPadding2D before a Conv2D, a folded Flatten before a Dense). Received "
                 "folded=False.",
                 id="unfolded_padding"),
]  # fmt: skip


@pytest.mark.parametrize("network, message", SPEC_ERRORS)
def test_make_layers_names_the_layer_it_cannot_build(network, message):
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        make_layers(network, np.random.default_rng(0), np.dtype("float64"), 1e-3)


ERRORS = [
    pytest.param(lambda: Conv(1, 1, 3, pad="valid"),
                 "Invalid value for argument `pad`. Expected a non-negative integer or 'same'. "
                 "Received pad='valid'.", id="conv_pad_string"),
    pytest.param(lambda: Conv(1, 1, 3, use_bias=1),
                 "Invalid value for argument `use_bias`. Expected a bool. Received use_bias=1.",
                 id="conv_use_bias_int"),
    pytest.param(lambda: LeakyReLU(-0.1),
                 "Invalid value for argument `negative_slope`. Expected a finite number >= 0. "
                 "Received negative_slope=-0.1.", id="leaky_negative_slope"),
    pytest.param(lambda: AvgPool(0),
                 "Invalid value for argument `pool_size`. Expected a strictly positive integer. "
                 "Received pool_size=0.", id="avg_pool_zero"),
    pytest.param(lambda: AvgPool(3).forward(np.zeros((1, 1, 2, 5))),
                 "Invalid value for argument `x`. Expected H >= pool_size=3 and W >= "
                 "pool_size=3. Received x.shape=(1, 1, 2, 5).", id="avg_pool_window_too_big"),
    pytest.param(lambda: GlobalAvgPool().forward(np.zeros((4, 5))),
                 "Invalid value for argument `x`. Expected rank 3 (C, H, W) or rank 4 (N, C, H, "
                 "W). Received x.shape=(4, 5).", id="global_avg_pool_rank_2"),
]  # fmt: skip


@pytest.mark.parametrize("call, message", ERRORS)
def test_invalid_arguments_raise_keras_style_messages(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_backward_before_forward_and_wrong_dout_shape_are_refused():
    for layer in (Tanh(), AvgPool(), GlobalAvgPool()):
        name = type(layer).__name__
        with pytest.raises(RuntimeError, match=rf"^{name}\.backward called before {name}\."):
            layer.backward(np.zeros((1, 1, 2, 2)))
    pool = AvgPool()
    pool.forward(np.zeros((1, 1, 4, 4)))
    message = "Expected the shape of AvgPool's last output (1, 1, 2, 2). Received dout.shape="
    with pytest.raises(ValueError, match=re.escape(message + "(1, 1, 4, 4).")):
        pool.backward(np.zeros((1, 1, 4, 4)))
