import dataclasses

import numpy as np
import pytest

from parity import tolerances
from parity.compare import compare
from parity.data import load_mnist
from reference import layout as layout_module
from reference import probes
from reference import twin as twin_module
from reference.testing import (
    MODEL_NAMES,
    ModelNotAvailable,
    build_model,
    o1_params,
    pool_input_nhwc,
    tie_fraction,
)
from spec import ExpandDims, Permute, SpecError
from spec.networks import CHW_RELU, NETWORKS

pytestmark = pytest.mark.keras

FORWARD_RTOL = tolerances.FORWARD_FLOAT64.rtol  # measured worst 1.45e-14 (zhou softmax, O(1))
GRADIENT_RTOL = tolerances.GRADIENTS_FLOAT64.rtol  # measured worst 1.45e-14 (zhou, O(1))
LOSS_RTOL = 1e-12  # measured worst 4e-16 (summation order of the batch mean)
MIN_TIE_FRACTION = 0.5  # "most windows tie": measured 0.7-0.9 on these images
N_IMAGES = 32
FUSED_RTOL = 0.0  # the fused Dense(softmax) runs the very same ops: identical bits
RESHAPE_BUG_MIN_REL = 0.1  # a reshape for the CHW->HWC permutation: measured ~1 relative
FLAT_INIT_ABS = 1e-2  # an absolute tolerance that would let the reshape bug pass at init


@pytest.fixture(scope="module")
def images():
    data = load_mnist()
    return data.train_images[:N_IMAGES], data.train_labels[:N_IMAGES]


@pytest.fixture(scope="module", params=MODEL_NAMES)
def pair(request):
    """(scratch model, twin, initial params copy) for one model, built once per module."""
    try:
        model = build_model(request.param)
    except ModelNotAvailable as error:
        pytest.skip(str(error))
    initial = {k: {w: a.copy() for w, a in ws.items()} for k, ws in model.params().items()}
    return model, twin_module.twin(model), initial


def _at(pair, weights):
    model, keras_model, initial = pair
    model.set_params(initial if weights == "init" else o1_params(model))
    twin_module.copy_into_keras(keras_model, model)
    return model, keras_model


def _assert_all_pass(records):
    failed = [r.message for r in records if not r.passed]
    assert not failed, "\n".join(failed)


def _compare_trees(ours, theirs, rtol, dtype=np.float64):
    return [
        compare(
            ours[layer][q],
            theirs[layer][q],
            layer=layer,
            quantity=q,
            atol=0.0,
            rtol=rtol,
            expected_dtype=dtype,
        )
        for layer in ours
        for q in ours[layer]
    ]


@pytest.mark.parametrize("weights", ["init", "o1"])
def test_forward_matches_scratch_at_every_layer(pair, images, weights):
    model, keras_model = _at(pair, weights)
    x = model.preprocess(images[0])
    ours, theirs = model.forward(x), probes.forward(keras_model, model, x)
    assert list(theirs) == list(model.layer_names)
    _assert_all_pass(
        compare(
            ours[k],
            theirs[k],
            layer=k,
            quantity="output",
            atol=0.0,
            rtol=FORWARD_RTOL,
            expected_dtype=np.float64,
        )
        for k in model.layer_names
    )


@pytest.mark.parametrize("weights", ["init", "o1"])
def test_gradients_match_scratch_for_every_weight_and_input(pair, images, weights):
    model, keras_model = _at(pair, weights)
    x, labels = model.preprocess(images[0]), images[1]
    loss, ours = model.gradients(x, labels)
    keras_loss, theirs = probes.gradients(keras_model, model, x, labels)
    assert {k: set(v) for k, v in theirs.items()} == {k: set(v) for k, v in ours.items()}
    _assert_all_pass(_compare_trees(ours, theirs, GRADIENT_RTOL))
    assert isinstance(keras_loss, np.float64)
    assert abs(loss - keras_loss) <= LOSS_RTOL * abs(keras_loss), (loss, keras_loss)


def test_gradient_batch_has_mostly_tied_pool_windows(pair, images):
    model, _ = _at(pair, "init")
    assert tie_fraction(pool_input_nhwc(model, model.preprocess(images[0]))) > MIN_TIE_FRACTION


def test_twin_layers_weights_and_outputs_are_float64(pair, images):
    model, keras_model = _at(pair, "init")
    assert {v.dtype for v in keras_model.weights} == {"float64"}
    outputs = probes.forward(keras_model, model, model.preprocess(images[0]))
    assert {a.dtype for a in outputs.values()} == {np.dtype(np.float64)}
    names = [layer.name for layer in keras_model.layers]
    assert [n for n in names if n in model.layer_names] == list(model.layer_names)


def test_weights_round_trip_bit_exactly_through_the_twin(pair):
    model, keras_model = _at(pair, "o1")
    expected = layout_module.layout_for(model).weights_to_keras(model.params())
    got = twin_module.keras_weights(keras_model)
    assert all(np.array_equal(got[k][w], expected[k][w]) for k in expected for w in expected[k])
    fresh = build_model(model.name, seed=123)
    twin_module.load_into_scratch(keras_model, fresh)
    for layer, weights in model.params().items():
        for weight, array in weights.items():
            assert np.array_equal(fresh.params()[layer][weight], array), (layer, weight)


@pytest.mark.parametrize("name", ["two-conv", "chw-relu", "zhou"])
def test_fused_softmax_twin_gives_identical_outputs_and_gradients(name, images):
    import tensorflow as tf

    try:
        model = build_model(name)
    except ModelNotAvailable as error:
        pytest.skip(str(error))
    model.set_params(o1_params(model))
    x = tf.constant(layout_module.layout_for(model).input_to_keras(model.preprocess(images[0])))
    y = probes.one_hot(images[1], 10, np.float64)
    results = []
    for fused in (False, True):
        keras_model = twin_module.twin(model, fused_softmax=fused)
        with tf.GradientTape() as tape:
            probs = keras_model(x)
            loss = probes.loss_function()(y, probs)
        grads = tape.gradient(loss, keras_model.trainable_variables)
        results.append([probs.numpy(), loss.numpy(), *[g.numpy() for g in grads]])
    assert len(results[0]) == len(results[1])
    _assert_all_pass(
        compare(fused, split, layer=name, quantity=f"item {i}", atol=0.0, rtol=FUSED_RTOL)
        for i, (split, fused) in enumerate(zip(*results, strict=True))
    )


def _planted(network, key, transforms):
    """``network`` with the layout datum of ``key`` replaced (a planted layout bug)."""
    layouts = {**network.layouts, key: transforms}
    return dataclasses.replace(network, name=f"{network.name}-planted", layouts=layouts)


def test_reshape_instead_of_permutation_is_caught_by_relative_forward_check(images):
    from scratch.chw_model import ChwModel

    model = ChwModel(_planted(CHW_RELU, ("dense", "kernel"), ()))  # rows as they are
    x = model.preprocess(images[0])
    keras_model = twin_module.twin(model)
    init = probes.forward(keras_model, model, x)
    assert np.max(np.abs(init["softmax"] - model.forward(x)["softmax"])) < FLAT_INIT_ABS
    model.set_params(o1_params(model))
    twin_module.copy_into_keras(keras_model, model)
    record = compare(
        model.forward(x)["dense"],
        probes.forward(keras_model, model, x)["dense"],
        layer="dense",
        quantity="output",
        atol=0.0,
        rtol=FORWARD_RTOL,
    )
    assert not record.passed and record.rel_error > RESHAPE_BUG_MIN_REL, record.message


@pytest.mark.parametrize(
    "name, key, transforms, layer",
    [
        ("chw-relu", ("conv2d", "kernel"), (Permute((3, 2, 1, 0)),), "conv2d"),  # kh <-> kw
        ("zhou", ("conv2d", "kernel"), (Permute((2, 1, 0)), ExpandDims(2)), "conv2d"),
        ("chw-relu", ("conv2d", "input"), (Permute((0, 3, 2, 1)),), "conv2d"),  # H <-> W
    ],
    ids=["chw-filters-kh-kw-swapped", "zhou-filters-kh-kw-swapped", "chw-input-h-w-swapped"],
)
def test_planted_layout_datum_fails_the_forward_check(images, name, key, transforms, layer):
    from scratch.chw_model import ChwModel
    from scratch.zhou_model import ZhouModel

    network = _planted(NETWORKS[name], key, transforms)
    model = ChwModel(network) if name == "chw-relu" else ZhouModel()
    model.spec = network  # the adapter's own arrays; only the layout datum differs
    model.set_params(o1_params(model))
    x = model.preprocess(images[0])
    keras_model = twin_module.twin(model)
    record = compare(model.forward(x)[layer], probes.forward(keras_model, model, x)[layer],
                     layer=layer, quantity="output", atol=0.0, rtol=FORWARD_RTOL)  # fmt: skip
    assert not record.passed and record.rel_error > RESHAPE_BUG_MIN_REL, record.message


# -- bad inputs ----------------------------------------------------------------------


def test_twin_rejects_unsupported_dtype():
    with pytest.raises(ValueError, match=r"argument `dtype`.*Received dtype='float16'"):
        twin_module.twin(build_model("two-conv"), "float16")


def test_twin_rejects_dtype_other_than_the_process_floatx():
    model = build_model("two-conv", dtype="float32")
    with pytest.raises(
        twin_module.TwinError,
        match=r"twin\(dtype='float32'\) in a process whose "
        r"Keras floatx is 'float64'",
    ):
        twin_module.twin(model, "float32")


def test_twin_rejects_model_of_another_dtype():
    with pytest.raises(
        twin_module.TwinError,
        match=r"twin\(`two-conv`, dtype='float32'\): the "
        "scratch model is float64",
    ):
        twin_module.twin(build_model("two-conv"), "float32")


def test_twin_rejects_scratch_layer_without_keras_counterpart():
    from scratch import layers as scratch_layers
    from scratch.sequential import Sequential

    class Mystery(scratch_layers.ReLU):
        pass

    stack = [
        scratch_layers.Conv2D(2, 3),
        Mystery(name="mystery"),
        scratch_layers.Flatten(),
        scratch_layers.Dense(10),
        scratch_layers.Softmax(),
    ]
    model = Sequential(stack, (28, 28, 1), name="odd")
    with pytest.raises(
        SpecError,
        match=r"Model `odd`: scratch layer `mystery` \(Mystery\) has no kind in the "
        r"network description",
    ):
        twin_module.twin(model)


def test_twin_rejects_mismatched_weight_shape():
    model = build_model("two-conv")
    model.layer("dense").params["kernel"] = np.zeros((784, 11))
    with pytest.raises(
        layout_module.LayoutError,
        match=r"two-conv: scratch layer `dense` kernel: expected shape \(784, 10\), "
        r"received \(784, 11\)",
    ):
        twin_module.twin(model)


def test_probes_reject_scratch_layer_the_twin_lacks(images):
    keras_model = twin_module.twin(build_model("chw"))
    with pytest.raises(
        layout_module.NoKerasCounterpart,
        match=r"scratch layer `re_lu` maps to "
        r"Keras layer `re_lu`, which the twin lacks",
    ):
        probes.forward(keras_model, build_model("chw-relu"), np.zeros((2, 1, 28, 28)))


def test_load_into_scratch_rejects_weights_without_scratch_counterpart():
    keras_model = twin_module.twin(build_model("two-conv"))
    with pytest.raises(
        twin_module.TwinError,
        match=r"load_into_scratch\(`zhou-seq`\): Keras "
        r"weight\(s\) \['conv2d/bias', 'conv2d_1/kernel'",
    ):
        twin_module.load_into_scratch(keras_model, build_model("zhou-seq"))


def test_probes_reject_input_in_the_wrong_layout():
    model = build_model("chw")
    keras_model = twin_module.twin(model)
    with pytest.raises(
        layout_module.LayoutError,
        match=r"scratch layer `conv2d` input: expected "
        r"shape \(N, 1, 28, 28\), received \(2, 28, 28, 1\)",
    ):
        probes.forward(keras_model, model, np.zeros((2, 28, 28, 1)))


def test_probes_reject_labels_out_of_range():
    model = build_model("chw")
    with pytest.raises(
        ValueError, match=r"class indices in \[0, 10\). Received values in \[0, 10\]"
    ):
        probes.gradients(
            twin_module.twin(model), model, np.zeros((2, 1, 28, 28)), np.array([0, 10])
        )


# Hand-written from each description: (Keras class, name, the config entries that matter).
TWIN_LAYERS = {
    "zhou": [
        ("Conv2D", "conv2d", dict(filters=8, kernel_size=(3, 3), strides=(1, 1),
                                  padding="valid", use_bias=False)),
        ("MaxPooling2D", "max_pooling2d", dict(pool_size=(2, 2), strides=(2, 2),
                                               padding="valid")),
        ("Flatten", "flatten", {}),
        ("Dense", "dense", dict(units=10, use_bias=True)),
        ("Activation", "softmax", dict(activation="softmax")),
    ],
    "chw-relu": [
        ("Conv2D", "conv2d", dict(filters=8, kernel_size=(3, 3), padding="valid",
                                  use_bias=True, data_format="channels_last")),
        ("ReLU", "re_lu", {}),
        ("MaxPooling2D", "max_pooling2d", dict(pool_size=(2, 2), strides=(2, 2))),
        ("Flatten", "flatten", {}),  # folded into the Linear on the scratch side
        ("Dense", "dense", dict(units=10)),
        ("Activation", "softmax", dict(activation="softmax")),
    ],
    "two-conv": [
        ("Conv2D", "conv2d", dict(filters=8, strides=(1, 1), padding="same", use_bias=True)),
        ("ReLU", "re_lu", {}),
        ("MaxPooling2D", "max_pooling2d", dict(pool_size=(2, 2), strides=(2, 2))),
        ("Conv2D", "conv2d_1", dict(filters=16, kernel_size=(3, 3), strides=(2, 2),
                                    padding="same")),
        ("ReLU", "re_lu_1", {}),
        ("Flatten", "flatten", {}),
        ("Dense", "dense", dict(units=10)),
        ("Activation", "softmax", dict(activation="softmax")),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", TWIN_LAYERS)
def test_twin_from_description_has_the_expected_keras_layers(name):
    keras_model = twin_module.twin(build_model(name))
    got = [(type(layer).__name__, layer.name, layer.get_config()) for layer in keras_model.layers]
    assert [(kind, n) for kind, n, _ in got] == [(k, n) for k, n, _ in TWIN_LAYERS[name]]
    for (_, layer, config), (_, _, expected) in zip(got, TWIN_LAYERS[name], strict=True):
        assert {k: config[k] for k in expected} == expected, layer
    assert tuple(keras_model.input_shape[1:]) == (28, 28, 1)
