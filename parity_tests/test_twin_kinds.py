"""The layer kinds of issue 15 in the network description: each is one spec kind, one
twin row (``reference.twin.KERAS_LAYERS``) and one scratch row (``scratch.sequential.
LAYERS``). A description using all of them, built both ways, agrees layer by layer in
float64 (forward outputs, loss gradients of every weight and layer input), at the initial
and at O(1) weights; a twin row with the wrong Keras layer fails and names the layer."""

import pytest

from parity.compare import compare
from parity.data import load_mnist
from reference import probes
from reference import twin as twin_module
from reference.testing import o1_params
from scratch.sequential import Sequential
from spec import Network
from spec.layers import stack
from spec.networks import LENET5, UNIT_SCALING

pytestmark = pytest.mark.keras

FORWARD_RTOL = 1e-12  # test_reference_twin's bound (measured worst 1.5e-14)
GRADIENT_RTOL = 1e-10  # test_reference_twin's bound (measured worst 1.4e-14)

KINDS = Network(
    "kinds", (28, 28, 1),
    stack(
        ("ZeroPadding2D", dict(padding=1)),  # 30x30x1
        ("Conv2D", dict(filters=4, kernel_size=3, strides=2)),  # 14x14x4
        ("LeakyReLU", dict(negative_slope=0.2)),
        ("AveragePooling2D", dict(pool_size=3, strides=2)),  # 6x6x4, overlapping windows
        ("Sigmoid", {}),
        ("Conv2D", dict(filters=6, kernel_size=2)),  # 5x5x6
        ("Tanh", {}),
        ("AveragePooling2D", dict(pool_size=2)),  # 2x2x6: the odd row and column cropped
        ("Conv2D", dict(filters=8, kernel_size=1, padding="same")),
        ("GlobalAveragePooling2D", {}),  # 8
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    ),
    UNIT_SCALING,
)  # fmt: skip


@pytest.fixture(scope="module")
def batch():
    data = load_mnist()
    return data.train_images[:8], data.train_labels[:8]


def _records(network, batch, weights):
    model = Sequential.from_network(network, seed=0)
    if weights == "o1":
        model.set_params(o1_params(model))
    keras_model = twin_module.twin(model)
    x = model.preprocess(batch[0])
    ours_out, theirs_out = model.forward(x), probes.forward(keras_model, model, x)
    loss, ours = model.gradients(x, batch[1])
    # kinked layers (LeakyReLU here) anchored on the scratch side's input, as the gradients
    # check does
    loss_k, theirs = probes.gradients(keras_model, model, x, batch[1], ours_out)
    records = [compare(ours_out[n], theirs_out[n], layer=n, quantity="output", atol=0.0,
                       rtol=FORWARD_RTOL) for n in model.layer_names]  # fmt: skip
    records += [compare(ours[n][q], theirs[n][q], layer=n, quantity=q, atol=0.0,
                        rtol=GRADIENT_RTOL) for n in ours for q in ours[n]]  # fmt: skip
    return records, (loss, loss_k)


@pytest.mark.parametrize("network", [KINDS, LENET5], ids=["kinds", "lenet5"])
@pytest.mark.parametrize("weights", ["init", "o1"])
def test_every_new_kind_matches_its_twin_layer_forward_and_backward(network, weights, batch):
    records, (loss, loss_k) = _records(network, batch, weights)
    failed = [r.message for r in records if not r.passed]
    assert not failed, "\n".join(failed)
    assert abs(loss - loss_k) <= 1e-14 * abs(loss_k)  # summation order of the batch mean
    assert len(records) == len(network.layers) + sum(
        1 + len(w) for w in (network.weight_shapes().get(n.name, {}) for n in network.layers)
    )


def test_leaky_relu_is_anchored_and_tanh_is_not():
    model = Sequential.from_network(KINDS)
    kinked = probes.kinked_layers(twin_module.twin(model), model)
    assert kinked == [("leaky_re_lu", "leaky_re_lu")]


def test_twin_rows_build_the_keras_layers_the_kinds_name():
    import keras

    model = Sequential.from_network(KINDS)
    layers = {layer.name: layer for layer in twin_module.twin(model).layers}
    assert layers["leaky_re_lu"].get_config()["negative_slope"] == 0.2
    assert isinstance(layers["average_pooling2d"], keras.layers.AveragePooling2D)
    assert layers["average_pooling2d"].get_config()["strides"] == (2, 2)
    assert layers["average_pooling2d"].get_config()["pool_size"] == (3, 3)
    assert isinstance(layers["global_average_pooling2d"], keras.layers.GlobalAveragePooling2D)
    for name, function in (("sigmoid", "sigmoid"), ("tanh", "tanh"), ("softmax", "softmax")):
        assert layers[name].get_config()["activation"] == function
    assert layers["zero_padding2d"].get_config()["padding"] == ((1, 1), (1, 1))


@pytest.mark.parametrize("kind, wrong, layer", [
    ("Tanh", lambda keras, layer: keras.layers.Activation("sigmoid", name=layer.name), "tanh"),
    ("LeakyReLU", lambda keras, layer: keras.layers.LeakyReLU(0.3, name=layer.name),
     "leaky_re_lu"),
    ("AveragePooling2D", lambda keras, layer: keras.layers.MaxPooling2D(
        layer.pool_size, layer.strides, name=layer.name), "average_pooling2d"),
], ids=["tanh-as-sigmoid", "leaky-default-slope", "average-as-max"])  # fmt: skip
def test_a_wrong_twin_row_fails_at_its_own_layer_first(kind, wrong, layer, batch, monkeypatch):
    monkeypatch.setitem(twin_module.KERAS_LAYERS, kind, wrong)
    records, _ = _records(KINDS, batch, "o1")
    failed = [r for r in records if not r.passed and r.quantity == "output"]
    assert failed and failed[0].layer == layer, [r.layer for r in failed]
