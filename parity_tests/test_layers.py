import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.testing import EXACT, check, check_gradients, probe
from scratch.layers import Conv2D, Dense, Flatten, ReLU, Softmax
from scratch.pooling import MaxPool2D
from scratch.windows import same_padding

ADJOINT_RTOL = 1e-13  # <Ju, v> vs <u, J^T v>: two float64 sums; measured worst 1.4e-15
PIECEWISE_ADJOINT_RTOL = 1e-10  # J u by central difference, exact but rounding; measured 7.9e-13


def built(layer, shape, seed=0, dtype="float64"):
    layer.build(shape, np.random.default_rng(seed), dtype)
    if "bias" in layer.params:  # non-zero biases so a missing bias gradient shows
        bias = layer.params["bias"]
        bias[...] = np.random.default_rng(seed + 1).normal(size=bias.shape)
    return layer


def fd_check_layer(layer, x, seed=0):
    """Every gradient of sum(out * w) against central differences, float64."""
    w = np.random.default_rng(seed).normal(size=layer.forward(x).shape)
    gradients = {"input": layer.backward(w), **layer.grads}
    assert set(layer.grads) == set(layer.params)
    check_gradients(
        probe(layer.forward, x, w), gradients, {"input": x, **layer.params}, layer.label
    )


def random_input(shape, seed=0):
    return np.random.default_rng(seed + 100).normal(size=shape)


# ---------------------------------------------------------------- Conv2D vs FD

BIAS_ID = {True: "bias", False: "nobias"}
CONV_CASES = [
    pytest.param(k, s, pad, c, size, bias, id=f"k{k}_s{s}_{pad}_c{c}_h{size}_{BIAS_ID[bias]}")
    for k in (3,)
    for s in (1, 2)
    for pad in ("valid", "same")
    for c in (1, 3)
    for size in (7, 8)
    for bias in (True, False)
] + [
    pytest.param((2, 3), (2, 1), "same", 2, 6, True, id="k2x3_s2x1_same_c2_h6_bias"),
    pytest.param(4, 1, "same", 1, 6, True, id="k4_s1_same_c1_h6_bias"),  # pads 1 top, 2 bottom
    pytest.param(3, 3, "valid", 2, 8, False, id="k3_s3_valid_c2_h8_nobias"),  # drops a row
]  # fmt: skip


@pytest.mark.parametrize("k, s, pad, c, size, bias", CONV_CASES)
def test_conv2d_gradients_match_finite_differences(k, s, pad, c, size, bias):
    layer = built(Conv2D(4, k, strides=s, padding=pad, use_bias=bias), (size, size + 1, c))
    fd_check_layer(layer, random_input((2, size, size + 1, c)))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 2), h=st.integers(3, 8), w=st.integers(3, 8), c=st.integers(1, 3),
    f=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 3),
    pad=st.sampled_from(["valid", "same"]), bias=st.booleans(),
)  # fmt: skip
def test_conv2d_gradients_match_finite_differences_random_configs(n, h, w, c, f, k, s, pad, bias):
    layer = built(Conv2D(f, k, strides=s, padding=pad, use_bias=bias), (h, w, c))
    fd_check_layer(layer, random_input((n, h, w, c)))


def naive_conv(x, kernel, bias, strides, padding):
    """Loops over every output pixel; TF 'same' split written out again here."""
    n, h, w, _ = x.shape
    kh, kw, _, f = kernel.shape
    if padding == "same":
        oh, ow = math.ceil(h / strides[0]), math.ceil(w / strides[1])
        th = max((oh - 1) * strides[0] + kh - h, 0)
        tw = max((ow - 1) * strides[1] + kw - w, 0)
        x = np.pad(x, ((0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // strides[0] + 1, (w - kw) // strides[1] + 1
    out = np.zeros((n, oh, ow, f))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * strides[0] : i * strides[0] + kh, j * strides[1] : j * strides[1] + kw]
            out[:, i, j] = np.einsum("nabc,abcf->nf", patch, kernel) + bias
    return out


@pytest.mark.parametrize("k, s, pad, c, size, bias", CONV_CASES)
def test_conv2d_forward_matches_a_loop_over_output_pixels(k, s, pad, c, size, bias):
    layer = built(Conv2D(4, k, strides=s, padding=pad, use_bias=bias), (size, size + 1, c))
    x = random_input((2, size, size + 1, c))
    bias_values = layer.params.get("bias", np.zeros(4))
    expected = naive_conv(x, layer.params["kernel"], bias_values, layer.strides, pad)
    check(layer.forward(x), expected, 1e-14, layer.label, "output", "loop")  # 1 ulp-level


@pytest.mark.parametrize(
    "size, k, s, expected",
    [(8, 3, 2, (4, 0, 1)), (7, 3, 2, (4, 1, 1)), (14, 3, 2, (7, 0, 1)), (28, 3, 1, (28, 1, 1)),
     (6, 4, 1, (6, 1, 2)), (5, 1, 2, (3, 0, 0)), (28, 3, 2, (14, 0, 1))],
    ids=["h8_k3_s2", "h7_k3_s2", "h14_k3_s2", "h28_k3_s1", "h6_k4_s1", "h5_k1_s2", "h28_k3_s2"],
)  # fmt: skip
def test_same_padding_puts_the_extra_pixel_at_the_bottom_right_like_tensorflow(
    size, k, s, expected
):
    assert same_padding(size, k, s) == expected


# ---------------------------------------------------------------- MaxPool2D

POOL_CASES = [
    pytest.param(2, None, 8, id="p2_s2_h8"),
    pytest.param(2, None, 7, id="p2_s2_h7_drops_last_row"),
    pytest.param(3, 2, 7, id="p3_s2_h7_overlapping"),
    pytest.param(2, 1, 6, id="p2_s1_h6_overlapping"),
    pytest.param((3, 2), (1, 2), 6, id="p3x2_s1x2_h6_overlapping_rows"),
    pytest.param(5, 3, 11, id="p5_s3_h11_table_free_path"),  # 25 > 16 pixels: argmax path
]


@pytest.mark.parametrize("pool, stride, size", POOL_CASES)
@pytest.mark.parametrize("c", [1, 3], ids=["c1", "c3"])
def test_max_pool_input_gradient_matches_finite_differences_on_tie_free_input(
    pool, stride, size, c
):
    layer = built(MaxPool2D(pool, stride), (size, size + 1, c))
    fd_check_layer(layer, random_input((2, size, size + 1, c)))


def naive_max_pool(x, pool, strides):
    n, h, w, c = x.shape
    oh, ow = (h - pool[0]) // strides[0] + 1, (w - pool[1]) // strides[1] + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            top, left = i * strides[0], j * strides[1]
            out[:, i, j] = x[:, top : top + pool[0], left : left + pool[1]].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("pool, stride, size", POOL_CASES)
def test_max_pool_forward_matches_a_loop_over_windows(pool, stride, size):
    layer = built(MaxPool2D(pool, stride), (size, size + 1, 3))
    x = random_input((2, size, size + 1, 3))
    check(layer.forward(x), naive_max_pool(x, layer.pool_size, layer.strides), EXACT,
          layer.label, "output", "loop")  # fmt: skip


def test_max_pool_routes_a_tied_window_to_its_first_maximum_in_row_major_order():
    x = np.array([[0.0, 5.0], [5.0, 5.0]]).reshape(1, 2, 2, 1)  # maxima at (0,1), (1,0), (1,1)
    layer = built(MaxPool2D(2), (2, 2, 1))
    layer.forward(x)
    dx = layer.backward(np.array([[[[3.0]]]]))
    assert dx[0, :, :, 0].tolist() == [[0.0, 3.0], [0.0, 0.0]]


def test_max_pool_routes_all_equal_windows_to_the_top_left_pixel_per_channel():
    x = np.full((2, 4, 4, 3), -0.5)  # an MNIST background: every window ties
    layer = built(MaxPool2D(2), (4, 4, 3))
    layer.forward(x)
    dx = layer.backward(np.ones((2, 2, 2, 3)))
    expected = np.zeros((2, 4, 4, 3))
    expected[:, ::2, ::2, :] = 1.0
    check(dx, expected, EXACT, "max_pooling2d", "input", "expected")


def test_overlapping_windows_add_their_gradients_where_they_share_the_maximum():
    x = np.zeros((1, 3, 3, 1))
    x[0, 1, 1, 0] = 9.0  # the maximum of all four 2x2 windows (stride 1)
    layer = built(MaxPool2D(2, strides=1), (3, 3, 1))
    layer.forward(x)
    dx = layer.backward(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1))
    assert dx[0, 1, 1, 0] == 10.0 and np.count_nonzero(dx) == 1


def test_first_maximum_rule_agrees_between_the_table_and_argmax_paths():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(4, 12, 12, 2)).astype(np.float64)  # many ties
    small = built(MaxPool2D(4), (12, 12, 2))  # 16 pixels: lookup table
    small.forward(x)
    positions = small._cache
    windows = x.reshape(4, 3, 4, 3, 4, 2).transpose(0, 1, 3, 5, 2, 4).reshape(4, 3, 3, 2, 16)
    first = windows.argmax(axis=-1)  # numpy's argmax: first maximum, row-major
    rows, cols = (
        4 * np.arange(3)[:, None, None] + first // 4,
        4 * np.arange(3)[None, :, None] + first % 4,
    )
    expected = (rows * 12 + cols) * 2 + np.arange(2)
    assert np.array_equal(positions, expected)


# ---------------------------------------------------------------- Dense, Flatten, ReLU, Softmax


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("features", [1, 7], ids=["d1", "d7"])
def test_dense_gradients_match_finite_differences(features, bias):
    layer = built(Dense(5, use_bias=bias), (features,))
    fd_check_layer(layer, random_input((3, features)))


def test_flatten_uses_nhwc_order_and_its_backward_inverts_it():
    layer = built(Flatten(), (2, 3, 4))
    x = random_input((2, 2, 3, 4))
    out = layer.forward(x)
    assert out.shape == (2, 24) and out[1, 5] == x[1, 0, 1, 1]  # (h=0, w=1, c=1) -> 1*4+1
    check(layer.backward(out), x, EXACT, "flatten", "input", "x")


def test_flatten_gradient_matches_finite_differences():
    fd_check_layer(built(Flatten(), (3, 2, 2)), random_input((2, 3, 2, 2)))


def test_relu_gradient_matches_finite_differences_away_from_zero():
    x = random_input((3, 4, 5, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep every element 1000 eps from the kink
    fd_check_layer(built(ReLU(), (4, 5, 2)), x)


def test_relu_gradient_at_exactly_zero_is_zero_like_tensorflow():
    layer = built(ReLU(), (3,))
    layer.forward(np.array([[-1.0, 0.0, 2.0]]))
    assert layer.backward(np.ones((1, 3))).tolist() == [[0.0, 0.0, 1.0]]


def test_softmax_gradient_matches_finite_differences():
    fd_check_layer(built(Softmax(), (6,)), random_input((4, 6)))


def test_softmax_is_stable_for_huge_logits():
    layer = built(Softmax(), (3,))
    probs = layer.forward(np.array([[1000.0, 1000.0, -1000.0], [-800.0, -801.0, -1e4]]))
    expected = np.array([[0.5, 0.5, 0.0], [1 / (1 + math.e**-1), 1 / (1 + math.e), 0.0]])
    check(probs, expected, 1e-15, "softmax", "output", "closed form")


# ---------------------------------------------------------------- adjoint tests


def well_separated(shape, seed=0):
    """Distinct values 0.01 apart, none closer than 0.005 to zero: no kink nearby."""
    size = math.prod(shape)
    values = (np.random.default_rng(seed).permutation(size) - size / 2 + 0.5) * 0.01
    return values.reshape(shape)


def inner(a, b):
    return float(np.sum(a * b))


@pytest.mark.parametrize("s, pad, c", [(1, "same", 3), (2, "same", 2), (2, "valid", 1)],
                         ids=["s1_same_c3", "s2_same_c2", "s2_valid_c1"])  # fmt: skip
def test_conv2d_backward_is_the_adjoint_of_forward_in_input_and_kernel(s, pad, c):
    layer = built(Conv2D(5, 3, strides=s, padding=pad, use_bias=False), (9, 8, c))
    x, u = random_input((2, 9, 8, c), 1), random_input((2, 9, 8, c), 2)
    v = random_input((2,) + layer.output_shape, 3)
    ju = layer.forward(u)  # linear in the input (no bias)
    jtv = layer.backward(v)
    check(np.array(inner(ju, v)), np.array(inner(u, jtv)), ADJOINT_RTOL, "conv2d", "<Ju,v> input")
    kernel_u = random_input(layer.params["kernel"].shape, 4)
    layer.params["kernel"][...] = kernel_u
    ju = layer.forward(x)  # linear in the kernel
    layer.backward(v)
    check(np.array(inner(ju, v)), np.array(inner(kernel_u, layer.grads["kernel"])),
          ADJOINT_RTOL, "conv2d", "<Ju,v> kernel")  # fmt: skip


def test_dense_backward_is_the_adjoint_of_forward():
    layer = built(Dense(6, use_bias=False), (11,))
    u, v = random_input((4, 11), 1), random_input((4, 6), 2)
    ju = layer.forward(u)
    check(np.array(inner(ju, v)), np.array(inner(u, layer.backward(v))), ADJOINT_RTOL,
          "dense", "<Ju,v> input")  # fmt: skip


@pytest.mark.parametrize("layer_factory, shape", [
    (lambda: MaxPool2D(2), (8, 8, 3)), (lambda: MaxPool2D(3, 2), (9, 9, 2)),
    (lambda: ReLU(), (5, 5, 2)),
], ids=["max_pool_p2", "max_pool_p3_s2_overlapping", "relu"])  # fmt: skip
def test_piecewise_linear_backward_is_the_adjoint_of_the_jacobian_away_from_kinks(
    layer_factory, shape
):
    layer = built(layer_factory(), shape)
    x, u = well_separated((2,) + shape), random_input((2,) + shape, 2)
    t = 1e-4  # |t u| < 5e-4 stays inside the 0.005 margins: J u is exact up to rounding
    ju = (layer.forward(x + t * u) - layer.forward(x - t * u)) / (2 * t)
    v = random_input((2,) + layer.output_shape, 3)
    layer.forward(x)
    jtv = layer.backward(v)
    check(np.array(inner(ju, v)), np.array(inner(u, jtv)), PIECEWISE_ADJOINT_RTOL,
          layer.label, "<Ju,v> input")  # fmt: skip


# ---------------------------------------------------------------- life cycle, init, dtypes


def test_glorot_uniform_kernels_zero_biases_and_seeded():
    a, b = built(Conv2D(8, 3), (5, 5, 2), seed=7), Conv2D(8, 3)
    b.build((5, 5, 2), np.random.default_rng(7), "float64")
    limit = math.sqrt(6 / (3 * 3 * 2 + 3 * 3 * 8))
    kernel = b.params["kernel"]
    assert np.array_equal(a.params["kernel"], kernel) and np.all(np.abs(kernel) <= limit)
    assert kernel.std() > 0.5 * limit / math.sqrt(3) and not b.params["bias"].any()


def test_gradients_are_overwritten_not_accumulated():
    layer = built(Conv2D(2, 3), (5, 5, 1))
    x, dout = random_input((1, 5, 5, 1)), random_input((1, 3, 3, 2), 1)
    layer.forward(x)
    layer.backward(dout)
    first = {k: v.copy() for k, v in layer.grads.items()}
    kept = layer.grads["kernel"]
    layer.backward(dout)
    check(layer.grads["kernel"], first["kernel"], EXACT, "conv2d", "kernel", "first call")
    assert kept is not layer.grads["kernel"]  # a fresh array: earlier results stay valid


@pytest.mark.parametrize(
    "layer, shape",
    [(Conv2D(3, 3, 2, "same"), (6, 6, 2)), (MaxPool2D(3, 1), (6, 6, 2)), (Dense(4), (5,)),
     (Flatten(), (2, 2, 2)), (ReLU(), (4,)), (Softmax(), (4,))],
    ids=["conv2d", "max_pooling2d", "dense", "flatten", "re_lu", "softmax"],
)  # fmt: skip
def test_float32_layers_keep_float32_everywhere(layer, shape):
    layer.build(shape, np.random.default_rng(0), "float32")
    x = random_input((2,) + shape).astype(np.float32)
    out = layer.forward(x)
    dx = layer.backward(np.ones_like(out))
    dtypes = {out.dtype, dx.dtype} | {
        a.dtype for a in [*layer.params.values(), *layer.grads.values()]
    }
    assert dtypes == {np.dtype("float32")}


def test_an_unbuilt_layer_builds_from_its_first_input():
    layer = Dense(3)
    out = layer.forward(np.ones((2, 4), dtype=np.float32))
    assert layer.params["kernel"].shape == (4, 3) and out.dtype == np.float32
