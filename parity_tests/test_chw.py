import re

import numpy as np
import pytest

from parity.data import load_mnist
from parity.finite_diff import central_difference
from parity.testing import EXACT, FD_EPS, FD_RTOL, check, check_gradients, model_difference, probe
from scratch.chw import Conv, Linear, MaxPool2x2, ReLU, softmax, softmax_loss
from scratch.chw_model import build_chw, build_chw_relu

ADJOINT_RTOL = 1e-13  # <Ju,v> vs <u,J^T v> over sum|terms|, measured 4.8e-17 (summation order)
ORACLE_RTOL = 1e-13  # oracles that sum in another order, measured 4.1e-16
MARGIN_FACTOR = 5  # network FD inputs keep every tie and kink 5 FD steps' reach away


def _tie_free(shape, rng, step=1e-2):
    """Distinct values, spaced `step`, none zero: no max-pool tie, no ReLU kink within eps."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2 + 0.5) * step).reshape(shape)


def _fd_check(layer, x, quantity, seed=0):
    """Backward against central differences of L = sum(forward(x) * v)."""
    v = np.random.default_rng(seed + 100).standard_normal(np.shape(layer.forward(x)))
    result = layer.backward(v)
    result = result if isinstance(result, tuple) else (result, None, None)
    grads = dict(zip(("dx", "dw", "db"), result, strict=True))
    weights = getattr(layer, "filters", getattr(layer, "weights", None))
    target = {"dx": x, "dw": weights, "db": getattr(layer, "bias", None)}[quantity]
    check_gradients(probe(layer.forward, x, v), grads, {quantity: target}, type(layer).__name__)


# ----------------------------------------------------------------------------- Conv
# (C, F, k, pad, stride, H, W, batch or None for one image (C, H, W))
CONV_CASES = [
    pytest.param(1, 2, 3, 0, 1, 6, 6, 2, id="c1_k3_p0_s1_h6w6_batch2"),
    pytest.param(3, 4, 3, 1, 1, 5, 6, 2, id="c3_k3_p1_s1_h5w6_batch2"),
    pytest.param(3, 2, 3, 1, 2, 7, 7, None, id="c3_k3_p1_s2_h7w7_single"),
    pytest.param(1, 3, 3, 0, 2, 9, 7, 3, id="c1_k3_p0_s2_h9w7_batch3"),
    pytest.param(3, 2, 2, 0, 2, 8, 6, 2, id="c3_k2_p0_s2_h8w6_batch2"),
    pytest.param(3, 2, 4, 1, 2, 6, 8, None, id="c3_k4_p1_s2_h6w8_single"),
    pytest.param(1, 8, 3, 0, 1, 28, 28, 1, id="c1_k3_p0_s1_h28w28_batch1"),
    pytest.param(2, 3, 3, 1, 2, 7, 6, 2, id="c2_k3_p1_s2_h7w6_untiled_w_batch2"),
]


def _conv(c, f, k, pad, stride, h, w, batch, seed=0):
    rng = np.random.default_rng(seed)
    conv = Conv(c, f, k, pad=pad, stride=stride, weight_scale=1.0, rng=rng)
    conv.bias[...] = rng.standard_normal(f)
    shape = (c, h, w) if batch is None else (batch, c, h, w)
    return conv, rng.standard_normal(shape)


def _naive_conv(x, filters, bias, pad, stride):
    """Cross-correlation by its definition, one output pixel at a time (the oracle)."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    f, _, k, _ = filters.shape
    ho, wo = (xp.shape[2] - k) // stride + 1, (xp.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], f, ho, wo))
    for n, o, i, j in np.ndindex(out.shape):
        patch = xp[n, :, i * stride : i * stride + k, j * stride : j * stride + k]
        out[n, o, i, j] = np.sum(patch * filters[o]) + bias[o]
    return out


@pytest.mark.parametrize("quantity", ["dx", "dw", "db"])
@pytest.mark.parametrize("c, f, k, pad, stride, h, w, batch", CONV_CASES)
def test_conv_backward_matches_finite_differences(c, f, k, pad, stride, h, w, batch, quantity):
    conv, x = _conv(c, f, k, pad, stride, h, w, batch)
    _fd_check(conv, x, quantity)


@pytest.mark.parametrize("c, f, k, pad, stride, h, w, batch", CONV_CASES)
def test_conv_forward_matches_naive_cross_correlation(c, f, k, pad, stride, h, w, batch):
    conv, x = _conv(c, f, k, pad, stride, h, w, batch)
    xb = x if batch is not None else x[None]
    expected = _naive_conv(xb, conv.filters, conv.bias, pad, stride)
    check(conv.forward(xb), expected, ORACLE_RTOL, "Conv", "output", "naive")


@pytest.mark.parametrize("c, f, k, pad, stride, h, w, batch", CONV_CASES)
def test_conv_is_adjoint_in_input_and_filters(c, f, k, pad, stride, h, w, batch):
    conv, u = _conv(c, f, k, pad, stride, h, w, batch)
    conv.bias[...] = 0  # the map must be linear, not affine
    v = np.random.default_rng(7).standard_normal(np.shape(conv.forward(u)))
    dx, dw, _ = conv.backward(v)
    _assert_adjoint(conv.forward(u) * v, u * dx)
    w_dir = np.random.default_rng(8).standard_normal(conv.filters.shape)
    conv.filters[...] = w_dir  # dw at input u does not depend on the filters
    _assert_adjoint(conv.forward(u) * v, w_dir * dw)


def _assert_adjoint(lhs_terms, rhs_terms):
    lhs, rhs = np.sum(lhs_terms), np.sum(rhs_terms)
    scale = np.sum(np.abs(lhs_terms)) + np.sum(np.abs(rhs_terms))
    assert abs(lhs - rhs) <= ADJOINT_RTOL * scale, (lhs, rhs, abs(lhs - rhs) / scale)


def test_padding_leaves_batch_and_channel_axes_alone():
    # The document's np.pad(x, pad) would pad N and C too: shape (4, 5, 7, 7), not (2, 3, 7, 7).
    conv, x = _conv(3, 2, 3, 1, 1, 5, 5, 2)
    out = conv.forward(x)
    assert out.shape == (2, 2, 5, 5)
    check(
        out, _naive_conv(x, conv.filters, conv.bias, 1, 1), ORACLE_RTOL, "Conv", "output", "naive"
    )
    assert conv.backward(np.ones_like(out))[0].shape == x.shape


def test_conv_weights_are_seeded_normal_times_scale_and_bias_zero():
    conv = Conv(3, 4, 3, weight_scale=1e-3, rng=np.random.default_rng(5))
    expected = np.random.default_rng(5).standard_normal((4, 3, 3, 3)) * 1e-3
    check(conv.filters, expected, EXACT, "Conv", "kernel", "numpy")
    assert conv.bias.shape == (4,) and not conv.bias.any()


# ----------------------------------------------------------------------------- pooling
POOL_CASES = [
    pytest.param((2, 1, 4, 4), id="c1_h4w4_batch2"),
    pytest.param((2, 3, 5, 7), id="c3_h5w7_odd_batch2"),
    pytest.param((3, 6, 4), id="c3_h6w4_single"),
    pytest.param((1, 5, 3), id="c1_h5w3_odd_single"),
]


@pytest.mark.parametrize("shape", POOL_CASES)
def test_maxpool_backward_matches_finite_differences_on_tie_free_input(shape):
    _fd_check(MaxPool2x2(), _tie_free(shape, np.random.default_rng(1)), "dx")


@pytest.mark.parametrize("shape", POOL_CASES)
def test_maxpool_forward_is_the_max_of_each_2x2_window(shape):
    x = np.random.default_rng(2).standard_normal(shape)
    h, w = shape[-2] // 2 * 2, shape[-1] // 2 * 2
    x4 = x[..., :h, :w].reshape(*shape[:-2], h // 2, 2, w // 2, 2)
    check(MaxPool2x2().forward(x), x4.max(axis=(-3, -1)), EXACT, "MaxPool2x2", "output", "numpy")


@pytest.mark.parametrize(
    "window, expected",
    [
        pytest.param([[1, 1], [1, 1]], [[1, 0], [0, 0]], id="all_tied_to_top_left"),
        pytest.param([[0, 3], [3, 0]], [[0, 1], [0, 0]], id="row_major_not_column_major"),
        pytest.param([[0, 0], [2, 2]], [[0, 0], [1, 0]], id="bottom_row_tie_to_left"),
    ],
)
def test_maxpool_routes_a_tied_window_to_its_first_max_in_row_major_order(window, expected):
    pool = MaxPool2x2()
    pool.forward(np.array(window, dtype=float)[None, None])
    dx = pool.backward(np.ones((1, 1, 1, 1)))
    check(dx[0, 0], np.array(expected, dtype=float), EXACT, "MaxPool2x2", "input", "tf_rule")


# ----------------------------------------------------------------------------- ReLU
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 5, 4)], ids=["batch2_c3", "single_c3"])
def test_relu_backward_matches_finite_differences_away_from_zero(shape):
    _fd_check(ReLU(), _tie_free(shape, np.random.default_rng(3)), "dx")


def test_relu_gradient_at_zero_is_zero():
    relu = ReLU()
    relu.forward(np.array([-1.0, 0.0, 2.0]))
    check(relu.backward(np.ones(3)), np.array([0.0, 0.0, 1.0]), EXACT, "ReLU", "input", "rule")


# ----------------------------------------------------------------------------- Linear
LINEAR_CASES = [
    pytest.param((2, 3, 4, 5), id="chw_batch2"),
    pytest.param((3, 4, 5), id="chw_single"),
    pytest.param((4, 60), id="flat_batch4"),
    pytest.param((1, 3, 4, 5), id="chw_batch1"),
]


def _linear(shape, seed=0):
    rng = np.random.default_rng(seed)
    features = int(np.prod(shape[-3:])) if len(shape) >= 3 else shape[-1]
    linear = Linear(features, 7, weight_scale=1.0, rng=rng)
    linear.bias[...] = rng.standard_normal(7)
    return linear, rng.standard_normal(shape)


@pytest.mark.parametrize("quantity", ["dx", "dw", "db"])
@pytest.mark.parametrize("shape", LINEAR_CASES)
def test_linear_backward_matches_finite_differences(shape, quantity):
    linear, x = _linear(shape)
    _fd_check(linear, x, quantity)


def test_linear_flattens_in_c_h_w_order():
    linear, x = _linear((2, 3, 4, 5))
    w_chw = linear.weights.reshape(3, 4, 5, 7)  # row c*20 + h*5 + w multiplies x[:, c, h, w]
    expected = np.einsum("nchw,chwo->no", x, w_chw) + linear.bias
    check(linear.forward(x), expected, ORACLE_RTOL, "Linear", "output", "einsum")


@pytest.mark.parametrize("shape", LINEAR_CASES)
def test_linear_is_adjoint_in_input_and_weights(shape):
    linear, u = _linear(shape)
    linear.bias[...] = 0
    v = np.random.default_rng(9).standard_normal(np.shape(linear.forward(u)))
    dx, dw, _ = linear.backward(v)
    _assert_adjoint(linear.forward(u) * v, u * dx)
    w_dir = np.random.default_rng(10).standard_normal(linear.weights.shape)
    linear.weights[...] = w_dir
    _assert_adjoint(linear.forward(u) * v, w_dir * dw)


# ----------------------------------------------------------------------------- loss
@pytest.mark.parametrize("shape", [(4, 10), (10,)], ids=["batch4", "single"])
def test_softmax_loss_gradient_matches_finite_differences(shape):
    rng = np.random.default_rng(4)
    scores, y = rng.standard_normal(shape) * 3, rng.integers(0, 10, shape[:-1])
    dscores = softmax_loss(scores, y)[1]
    check_gradients(
        lambda: softmax_loss(scores, y)[0], {"input": dscores}, {"input": scores}, "softmax_loss"
    )


def test_softmax_loss_is_the_batch_mean_of_minus_log_probability():
    rng = np.random.default_rng(5)
    scores, y = rng.standard_normal((6, 10)), rng.integers(0, 10, 6)
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probs[np.arange(6), y]))
    check(softmax_loss(scores, y)[0], expected, ORACLE_RTOL, "softmax_loss", "loss", "formula")


def test_softmax_loss_is_shift_invariant_and_finite_at_huge_scores():
    rng = np.random.default_rng(6)  # dyadic scores: s + 1e4 is exact, so both sides are too
    scores, y = np.round(rng.standard_normal((3, 10)) * 1024) / 1024, np.array([1, 2, 3])
    loss, dscores = softmax_loss(scores, y)
    shifted_loss, shifted_d = softmax_loss(scores + 1e4, y)  # exp(1e4) overflows unshifted
    check(shifted_loss, loss, EXACT, "softmax_loss", "loss", "unshifted")
    check(shifted_d, dscores, EXACT, "softmax_loss", "input", "unshifted")


# ----------------------------------------------------------------------------- network
@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def _fd_inputs(model, mnist, count=2, seed=1):
    """Real images plus a seeded jitter, O(1) weights; asserts the FD margin holds."""
    rng = np.random.default_rng(seed)
    x = model.preprocess(mnist.train_images[:count]) + rng.uniform(0, 0.05, (count, 1, 28, 28))
    scale = {"conv2d": 0.5, "dense": 0.1}  # O(1) logits: gradients far above FD rounding
    params = model.params()
    model.set_params({n: {w: rng.standard_normal(a.shape) * scale[n] for w, a in ws.items()}
                      for n, ws in params.items()})  # fmt: skip
    # One FD step moves a conv output by <= eps*max(|kernel|, |x|, 1), a window's gap by twice
    # that; seed 1 is one whose inputs keep that margin (seed 0 does not: gap 2.6e-6).
    reach = 2 * FD_EPS * max(1.0, np.abs(x).max(), np.abs(model.params()["conv2d"]["kernel"]).max())
    conv = model.forward(x)["conv2d"]
    assert (
        _pool_margin(conv if model.name == "chw" else np.maximum(conv, 0)) > MARGIN_FACTOR * reach
    )
    assert model.name == "chw" or np.min(np.abs(conv)) > MARGIN_FACTOR * reach
    return x, mnist.train_labels[:count]


def _pool_margin(a):
    """Smallest gap between a window's max and its runner-up; windows clamped to all-zero
    by ReLU are skipped (their gradient is zero on both sides of the FD step)."""
    n, c, h, w = a.shape
    win = np.sort(a.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
                  .reshape(-1, 4), axis=1)  # fmt: skip
    live = win[:, 3] != 0
    return np.min(win[live, 3] - win[live, 2])


def _fd_tail(model, name, a, labels):
    """FD of the loss w.r.t. layer `name`'s input, and where it is defined: the pool input of
    chw-relu has windows clamped to all-zero by ReLU, tied maxima (kinks), masked out."""
    numeric = central_difference(lambda: model.loss_from(name, a, labels), a, FD_EPS)
    live = np.ones(a.shape, dtype=bool)
    if name == "max_pooling2d" and model.name == "chw-relu":
        window_max = a.reshape(*a.shape[:2], 13, 2, 13, 2).max(axis=(3, 5))
        live = np.repeat(np.repeat(window_max != 0, 2, axis=2), 2, axis=3)
    return numeric, live


@pytest.fixture(scope="module")
def fd_networks(mnist):
    """Per network: O(1) weights, FD-safe inputs, its gradient tree and every layer's input."""
    cache = {}

    def get(model_name):
        if model_name not in cache:
            model = {"chw": build_chw, "chw-relu": build_chw_relu}[model_name](seed=0)
            x, labels = _fd_inputs(model, mnist)
            _, grads = model.gradients(x, labels)
            outputs = list(model.forward(x).values())
            inputs = dict(zip(model.layer_names, [x, *outputs[:-1]], strict=True))
            cache[model_name] = model, labels, grads, inputs
        return cache[model_name]

    return get


def _network_cases(names):
    return [pytest.param(m, n, id=f"{m}-{n}") for m in ("chw", "chw-relu") for n in names
            if (m, n) != ("chw", "re_lu")]  # fmt: skip


@pytest.mark.parametrize(
    "model_name, name", _network_cases(["conv2d", "re_lu", "max_pooling2d", "dense", "softmax"])
)
def test_network_input_gradients_match_finite_differences_of_its_loss(
    fd_networks, model_name, name
):
    model, labels, grads, inputs = fd_networks(model_name)
    numeric, live = _fd_tail(model, name, inputs[name].copy(), labels)
    check(grads[name]["input"] * live, numeric * live, FD_RTOL, name, "input", "fd")


@pytest.mark.parametrize("model_name", ["chw", "chw-relu"])
@pytest.mark.parametrize("name, weight", [("conv2d", "kernel"), ("conv2d", "bias"),
                                          ("dense", "kernel"), ("dense", "bias")])  # fmt: skip
def test_network_weight_gradients_match_finite_differences_of_its_loss(
    fd_networks, model_name, name, weight
):
    model, labels, grads, inputs = fd_networks(model_name)
    array = model.params()[name][weight]
    # The loss from this layer's input on is the same function of `array`, with fewer layers.
    tail = lambda: model.loss_from(name, inputs[name], labels)  # noqa: E731
    check_gradients(tail, {weight: grads[name][weight]}, {weight: array}, name)


@pytest.mark.parametrize("build", [build_chw, build_chw_relu], ids=["chw", "chw-relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_network_shapes_names_and_dtypes(build, dtype, mnist):
    model = build(seed=0, dtype=dtype)
    x = model.preprocess(mnist.train_images[:3])
    loss, grads = model.gradients(x, mnist.train_labels[:3])
    assert x.shape == (3, 1, 28, 28) and x.dtype == dtype and loss.dtype == dtype
    shapes = {name: out.shape for name, out in model.forward(x).items()}
    assert shapes == {k: v for k, v in NET_SHAPES.items() if k in model.layer_names}
    assert tuple(grads) == model.layer_names == tuple(shapes)
    arrays = [a for layer in grads.values() for a in layer.values()]
    assert {a.dtype for a in arrays} == {np.dtype(dtype)}


NET_SHAPES = {
    "conv2d": (3, 8, 26, 26),
    "re_lu": (3, 8, 26, 26),
    "max_pooling2d": (3, 8, 13, 13),
    "dense": (3, 10),
    "softmax": (3, 10),
}


def test_network_layer_names_follow_the_contract():
    assert build_chw_relu().layer_names == (
        "conv2d", "re_lu", "max_pooling2d", "dense", "softmax",
    )  # fmt: skip
    assert build_chw().layer_names == ("conv2d", "max_pooling2d", "dense", "softmax")
    assert (build_chw().name, build_chw_relu().name) == ("chw", "chw-relu")


def test_network_gradient_tree_shapes_are_native(mnist):
    model = build_chw_relu()
    _, grads = model.gradients(model.preprocess(mnist.train_images[:2]), mnist.train_labels[:2])
    shapes = {(n, q): a.shape for n, layer in grads.items() for q, a in layer.items()}
    assert shapes[("conv2d", "kernel")] == (8, 1, 3, 3) and shapes[("conv2d", "bias")] == (8,)
    assert shapes[("dense", "kernel")] == (1352, 10) and shapes[("dense", "input")] == (
        2,
        8,
        13,
        13,
    )
    assert shapes[("conv2d", "input")] == (2, 1, 28, 28) and shapes[("softmax", "input")] == (2, 10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reported_probabilities_are_the_ones_the_loss_used(dtype, mnist):
    model = build_chw_relu(dtype=dtype)
    model.set_params({n: {w: a + 0.3 for w, a in ws.items()} for n, ws in model.params().items()})
    x, y = model.preprocess(mnist.train_images[:4]), mnist.train_labels[:4]
    out = model.forward(x)
    check(out["softmax"], softmax(out["dense"]), EXACT, "softmax", "output", "softmax()")
    dscores = model.gradients(x, y)[1]["softmax"]["input"]
    onehot = np.eye(10, dtype=dtype)[y]
    check(
        dscores,
        (out["softmax"] - onehot) / np.array(4, dtype),
        EXACT,
        "softmax",
        "input",
        "(p-onehot)/N",
    )


def test_network_is_seeded_and_float32_is_float64_rounded():
    a, b, c = build_chw(seed=3), build_chw(seed=3), build_chw(seed=4)
    check(
        a.params()["dense"]["kernel"],
        b.params()["dense"]["kernel"],
        EXACT,
        "dense",
        "kernel",
        "same_seed",
    )
    assert not np.array_equal(a.params()["conv2d"]["kernel"], c.params()["conv2d"]["kernel"])
    low = build_chw(seed=3, dtype="float32").params()["conv2d"]["kernel"]
    check(
        low,
        a.params()["conv2d"]["kernel"].astype(np.float32),
        EXACT,
        "conv2d",
        "kernel",
        "float64_cast",
    )


def test_params_are_live_and_gradients_update_nothing(mnist):
    model = build_chw_relu()
    x, y = model.preprocess(mnist.train_images[:2]), mnist.train_labels[:2]
    before = {n: {w: a.copy() for w, a in ws.items()} for n, ws in model.params().items()}
    model.gradients(x, y)
    for n, ws in model.params().items():
        for w, a in ws.items():
            check(a, before[n][w], EXACT, n, w, "before")
    model.params()["dense"]["bias"][3] = 5.0
    assert model.forward(x)["dense"][0, 3] == pytest.approx(5.0, abs=0.1)


def test_preprocess_is_image_over_255_channels_first(mnist):
    model = build_chw(dtype="float32")
    x = model.preprocess(mnist.train_images[:2])
    expected = (mnist.train_images[:2].astype(np.float32) / np.float32(255))[:, None]
    check(x, expected, EXACT, "preprocess", "input", "image/255")
    assert x.min() == 0.0 and x.max() == 1.0


# ----------------------------------------------------------------------------- errors
ERRORS = [
    pytest.param(
        lambda: Conv(0, 8, 3),
        "Invalid value for argument `in_channels`. Expected a strictly positive integer. "
        "Received in_channels=0.",
        id="conv_in_channels_zero",
    ),
    pytest.param(
        lambda: Conv(1, 8, 3, pad=-1),
        "Invalid value for argument `pad`. Expected a non-negative integer or 'same'. "
        "Received pad=-1.",
        id="conv_negative_pad",
    ),
    pytest.param(
        lambda: Conv(1, 8, 3).forward(np.zeros((28, 28))),
        "Invalid value for argument `x`. Expected rank 3 (C, H, W) or rank 4 (N, C, H, W). "
        "Received x.shape=(28, 28).",
        id="conv_rank_2",
    ),
    pytest.param(
        lambda: Conv(1, 8, 3).forward(np.zeros((2, 28, 28, 1))),
        "Invalid value for argument `x`. Expected 1 channel(s) on the channel axis (axis -3, "
        "channels-first). Received x.shape=(2, 28, 28, 1).",
        id="conv_nhwc_input",
    ),
    pytest.param(
        lambda: Conv(1, 1, 5, pad=0).forward(np.zeros((1, 1, 3, 9))),
        "Invalid value for argument `x`. Expected H + 2*pad >= filter_size=5 (the filter must "
        "fit the padded input). Received H=3 with pad=0: H + 2*pad = 3.",
        id="conv_filter_larger_than_input",
    ),
    pytest.param(
        lambda: Conv(1, 1, 3).forward(np.full((1, 1, 4, 4), np.nan)),
        "Invalid value for argument `x`. Expected finite values. Received x with 16 "
        "non-finite value(s) (nan or inf, after casting to float64).",
        id="conv_nan_input",
    ),
    pytest.param(
        lambda: Conv(1, 1, 3, dtype="float32").forward(np.full((1, 3, 3), 1e300)),
        "Invalid value for argument `x`. Expected finite values. Received x with 9 "
        "non-finite value(s) (nan or inf, after casting to float32).",
        id="conv_float32_overflow_on_cast",
    ),
    pytest.param(
        lambda: MaxPool2x2().forward(np.zeros((1, 1, 1, 4))),
        "Invalid value for argument `x`. Expected H >= 2 and W >= 2 for 2x2 pooling. "
        "Received x.shape=(1, 1, 1, 4).",
        id="pool_too_small",
    ),
    pytest.param(
        lambda: Linear(1352, 10).forward(np.zeros((2, 8, 13, 12))),
        "Invalid value for argument `x`. Expected a batch (N, ...) whose non-batch axes hold "
        "in_features=1352 values, or one example of that many values. "
        "Received x.shape=(2, 8, 13, 12).",
        id="linear_wrong_features",
    ),
    pytest.param(
        lambda: softmax_loss(np.zeros((2, 10)), np.array([0, 10])),
        "Invalid value for argument `y`. Expected class indices in [0, 10). "
        "Received y=10 at position 1.",
        id="labels_above_range",
    ),
    pytest.param(
        lambda: softmax_loss(np.zeros((2, 10)), np.array([-1, 0])),
        "Invalid value for argument `y`. Expected class indices in [0, 10). "
        "Received y=-1 at position 0.",
        id="labels_negative",
    ),
    pytest.param(
        lambda: softmax_loss(np.zeros((2, 10)), np.array([0.0, 1.0])),
        "Invalid value for argument `y`. Expected integer class indices. Received y.dtype=float64.",
        id="labels_float",
    ),
    pytest.param(
        lambda: softmax_loss(np.zeros((2, 10)), np.array([0, 1, 2])),
        "Invalid value for argument `y`. Expected shape (2,) (one label per row of scores). "
        "Received y.shape=(3,).",
        id="labels_wrong_count",
    ),
    pytest.param(
        lambda: build_chw().forward(np.zeros((2, 28, 28, 1))),
        "Invalid value for argument `x`. Expected shape (N, 1, 28, 28) (channels-first batch). "
        "Received x.shape=(2, 28, 28, 1).",
        id="model_nhwc_input",
    ),
    pytest.param(
        lambda: build_chw().preprocess(np.zeros((2, 784), np.uint8)),
        "Invalid value for argument `images`. Expected shape (N, 28, 28). "
        "Received images.shape=(2, 784).",
        id="preprocess_flat_images",
    ),
    pytest.param(
        lambda: build_chw(dtype="float16"),
        "Invalid value for argument `dtype`. Expected one of ('float32', 'float64'). "
        "Received dtype='float16'.",
        id="model_float16",
    ),
]


@pytest.mark.parametrize("call, message", ERRORS)
def test_invalid_arguments_raise_keras_style_messages(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_backward_before_forward_and_wrong_dout_shape_are_refused():
    with pytest.raises(RuntimeError, match=r"^Conv\.backward called before Conv\.forward\.$"):
        Conv(1, 1, 3).backward(np.zeros((1, 1, 2, 2)))
    pool = MaxPool2x2()
    pool.forward(np.zeros((1, 1, 4, 4)))
    message = (
        "Expected the shape of MaxPool2x2's last output (1, 1, 2, 2). "
        "Received dout.shape=(1, 1, 4, 4)."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        pool.backward(np.zeros((1, 1, 4, 4)))


# chw-relu's pool input is left out: its ReLU-clamped windows tie at 0 (kinks, masked above).
@pytest.mark.parametrize("name", ["conv2d", "re_lu", "dense", "softmax"])
def test_harness_model_difference_agrees_on_chw_relu(fd_networks, name):
    model, labels, grads, inputs = fd_networks("chw-relu")
    cells = np.arange(0, grads[name]["input"].size, 97)  # a spread sample of elements
    numeric = model_difference(model, inputs["conv2d"], labels, name, "input", FD_EPS, cells)
    check(grads[name]["input"].reshape(-1)[cells], numeric, FD_RTOL, name, "input", "fd")


def test_loss_from_names_the_layer_it_does_not_know():
    message = "Invalid value for argument `layer_name`. Expected one of ('conv2d', "
    with pytest.raises(ValueError, match=re.escape(message)):
        build_chw().loss_from("flatten", np.zeros((1, 1352)), np.array([0]))
