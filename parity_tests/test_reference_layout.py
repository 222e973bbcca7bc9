import subprocess
import sys

import numpy as np
import pytest

from parity.compare import compare
from reference import layout as L
from reference.testing import MODEL_NAMES, ModelNotAvailable, build_model
from spec.networks import CHW_RELU, NETWORKS

CHW = (8, 13, 13)  # pooled C, H, W of the channels-first family
SAME_SUM_RTOL = 1e-14  # same products summed in another order; measured ~1e-16
PAIRS = {  # name: (to_keras, from_keras, scratch-side shape, extra args)
    "blog_filters": (L.blog_filters_to_keras, L.keras_to_blog_filters, (8, 3, 3), ()),
    "chw_filters": (L.chw_filters_to_keras, L.keras_to_chw_filters, (8, 2, 3, 5), ()),
    "chw_rows": (L.chw_rows_to_hwc, L.hwc_rows_to_chw, (1352, 10), (CHW,)),
    "chw_vectors": (L.chw_vectors_to_hwc, L.hwc_vectors_to_chw, (4, 1352), (CHW,)),
    "nchw": (L.nchw_to_nhwc, L.nhwc_to_nchw, (4, 8, 26, 26), ()),
    "images": (L.images_to_nhwc, L.nhwc_to_images, (4, 28, 28), ()),
}


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("name", PAIRS)
def test_conversion_round_trip_is_bit_exact_and_fresh(name):
    to_keras, from_keras, shape, extra = PAIRS[name]
    a = _random(shape)
    k = to_keras(a, *extra, "here")
    back = from_keras(k, *extra, "here")
    assert back.dtype == a.dtype and np.array_equal(back, a)
    k[...] = 0  # results never alias their input
    assert np.array_equal(from_keras(to_keras(a, *extra, "here"), *extra, "here"), a)


def test_blog_filters_land_on_keras_kernel_positions():
    filters = _random((8, 3, 3))
    kernel = L.blog_filters_to_keras(filters, "conv2d kernel")  # (3, 3, 1, 8)
    assert all(kernel[i, j, 0, f] == filters[f, i, j] for f, i, j in np.ndindex(8, 3, 3))


def test_chw_filters_land_on_keras_kernel_positions():
    filters = _random((4, 2, 3, 3))
    kernel = L.chw_filters_to_keras(filters, "conv2d kernel")  # (3, 3, 2, 4)
    idx = np.ndindex(4, 2, 3, 3)
    assert all(kernel[i, j, c, f] == filters[f, c, i, j] for f, c, i, j in idx)


def test_chw_rows_are_permuted_to_hwc_order_row_by_row():
    c, h, w = CHW
    rows = _random((c * h * w, 10))
    hwc = L.chw_rows_to_hwc(rows, CHW, "dense kernel")
    idx = np.ndindex(c, h, w)
    assert all(
        np.array_equal(hwc[i * w * c + j * c + k], rows[k * h * w + i * w + j]) for k, i, j in idx
    )


def test_permuted_rows_give_the_same_dense_output_and_a_reshape_does_not():
    activation = _random((4, *CHW))  # (N, C, H, W)
    rows = _random((1352, 10), seed=1)
    chw_out = activation.reshape(4, -1) @ rows
    nhwc_flat = L.nchw_to_nhwc(activation, "a").reshape(4, -1)
    good = compare(
        nhwc_flat @ L.chw_rows_to_hwc(rows, CHW, "k"),
        chw_out,
        layer="dense",
        quantity="output",
        atol=0,
        rtol=SAME_SUM_RTOL,
    )
    bad = compare(
        nhwc_flat @ rows, chw_out, layer="dense", quantity="output", atol=0, rtol=SAME_SUM_RTOL
    )
    assert good.passed, good.message
    assert not bad.passed and bad.rel_error > 0.1


def _layouts():
    layouts = {f"{name}-spec": L.Layout(network) for name, network in NETWORKS.items()}
    for name in MODEL_NAMES:
        try:
            layouts[name] = L.layout_for(build_model(name))
        except ModelNotAvailable:
            pass
    return layouts


LAYOUTS = _layouts()


def _concrete(shape, n=3):
    return tuple(n if d is None else d for d in shape)


@pytest.mark.parametrize("name", LAYOUTS)
def test_family_layout_round_trips_every_key_bit_exactly(name):
    layout = LAYOUTS[name]
    for (layer, quantity), rule in layout.rules.items():
        if rule.scratch_shape is None:
            continue
        a = _random(_concrete(rule.scratch_shape))
        back = layout.from_keras(layer, quantity, layout.to_keras(layer, quantity, a))
        assert np.array_equal(back, a), (layer, quantity)


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n in LAYOUTS])
def test_model_weights_round_trip_bit_exactly(name):
    model = build_model(name)
    layout = LAYOUTS[name]
    params = model.params()
    back = layout.weights_from_keras(layout.weights_to_keras(params), params)
    assert {k: set(v) for k, v in back.items()} == {k: set(v) for k, v in params.items()}
    for layer, weights in params.items():
        for weight, array in weights.items():
            assert back[layer][weight].dtype == array.dtype
            assert np.array_equal(back[layer][weight], array), (layer, weight)


def test_wrong_shape_names_layer_expected_and_received():
    layout = L.Layout(CHW_RELU)
    with pytest.raises(
        L.LayoutError,
        match=r"chw-relu: scratch layer `conv2d` kernel: expected "
        r"shape \(8, 1, 3, 3\), received \(8, 1, 3, 4\)",
    ):
        layout.to_keras("conv2d", "kernel", np.zeros((8, 1, 3, 4)))
    with pytest.raises(
        L.LayoutError,
        match=r"Keras layer `flatten` input \(for scratch layer "
        r"`dense` input\): expected shape \(N, 13, 13, 8\), received \(2, 8, 13, 13\)",
    ):
        layout.from_keras("dense", "input", np.zeros((2, 8, 13, 13)))
    with pytest.raises(
        L.LayoutError,
        match=r"scratch layer `conv2d` input: expected shape "
        r"\(N, 1, 28, 28\), received \(2, 28, 28, 1\)",
    ):
        layout.input_to_keras(np.zeros((2, 28, 28, 1)))


def test_pure_conversion_rejects_wrong_shape_with_where():
    with pytest.raises(
        L.LayoutError,
        match=r"zhou conv2d: expected shape \(N, 3, 3\), received "
        r"\(8, 3, 4\)",
    ):
        L.blog_filters_to_keras(np.zeros((8, 3, 4)), "zhou conv2d")
    with pytest.raises(L.LayoutError, match=r"expected shape \(1352, N\), received \(1351, 10\)"):
        L.chw_rows_to_hwc(np.zeros((1351, 10)), CHW, "dense kernel")


def test_unknown_scratch_key_has_no_keras_counterpart():
    layout = LAYOUTS["zhou-spec"]
    with pytest.raises(
        L.NoKerasCounterpart,
        match=r"scratch layer `dropout` quantity `output` "
        "has no Keras counterpart",
    ):
        layout.to_keras("dropout", "output", np.zeros(3))


def test_layout_imports_without_tensorflow():
    probe = "import sys, reference.layout; print(sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras'}))"  # noqa: E501
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
