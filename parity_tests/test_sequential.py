import numpy as np
import pytest

from parity import tolerances
from parity.data import load_mnist
from parity.testing import EXACT, FD_RTOL, check, model_difference
from reference import layout
from scratch import models
from scratch.layers import Conv2D, Dense, Flatten, ReLU, Softmax
from scratch.optim import SGD
from scratch.pooling import MaxPool2D
from scratch.sequential import Sequential

# zhou.py vs zhou-seq, two implementations of one network differing in summation order only,
# like scratch vs Keras: their budget; measured 1.8e-15
CROSS_RTOL = tolerances.GRADIENTS_FLOAT64.rtol
FD_SAMPLES = 300  # elements per large tensor: enough to see a wrong row, keeps the test ~5 s
JITTER = 0.1  # breaks real images' exact ties; 1e-3 left positive windows 1e-7 from a tie
KINK_MARGIN = 2e-6  # FD (eps 1e-6) must not cross a ReLU zero or a max-pool tie


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def two_conv(mnist):
    model = models.build("two-conv", seed=1)
    rng = np.random.default_rng(5)
    x = model.preprocess(mnist.train_images[:3])
    x += rng.normal(scale=JITTER, size=x.shape)
    labels = mnist.train_labels[:3]
    assert distance_to_kinks(model.forward(x)) > KINK_MARGIN  # measured 3.8e-6
    loss, grads = model.gradients(x, labels)
    return model, x, labels, loss, grads


def distance_to_kinks(outputs):
    """Smallest |pre-activation| and smallest gap between a positive window maximum and
    the runner-up: how far FD may move before a piecewise-linear layer switches."""
    h = outputs["re_lu"]
    n, height, width, c = h.shape
    windows = h.reshape(n, height // 2, 2, width // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    ranked = np.sort(windows.reshape(-1, 4), axis=1)
    gaps = (ranked[:, 3] - ranked[:, 2])[ranked[:, 3] > 0]
    pre = [np.abs(outputs[name]).min() for name in ("conv2d", "conv2d_1")]
    return min(gaps.min(), *pre)


def sample(size, seed=0, where=None):
    candidates = np.arange(size) if where is None else np.flatnonzero(where)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, min(FD_SAMPLES, candidates.size), replace=False))


# ---------------------------------------------------------------- model gradients vs FD

TWO_CONV_QUANTITIES = [
    ("conv2d", "kernel"), ("conv2d", "bias"), ("conv2d_1", "kernel"), ("conv2d_1", "bias"),
    ("dense", "kernel"), ("dense", "bias"), ("conv2d", "input"), ("re_lu", "input"),
    ("conv2d_1", "input"), ("re_lu_1", "input"), ("flatten", "input"), ("dense", "input"),
    ("softmax", "input"),
]  # fmt: skip


@pytest.mark.parametrize(
    "layer, quantity", TWO_CONV_QUANTITIES, ids=[f"{a}.{b}" for a, b in TWO_CONV_QUANTITIES]
)
def test_two_conv_gradients_match_finite_differences_of_the_mean_loss(two_conv, layer, quantity):
    model, x, labels, _, grads = two_conv
    analytic = grads[layer][quantity]
    idx = sample(analytic.size)
    fd = model_difference(model, x, labels, layer, quantity, indices=idx)
    check(analytic.ravel()[idx], fd, FD_RTOL, layer, quantity)


def test_two_conv_max_pool_input_gradient_matches_fd_where_relu_is_positive(two_conv):
    # Zeros from the ReLU tie inside a window: a kink, where FD is one-sided. Check the
    # positive entries (each window's unique maximum or a strict non-maximum).
    model, x, labels, _, grads = two_conv
    h = model.forward(x)["re_lu"]
    idx = sample(h.size, where=h.ravel() > 0)
    fd = model_difference(model, x, labels, "max_pooling2d", "input", indices=idx)
    check(grads["max_pooling2d"]["input"].ravel()[idx], fd, FD_RTOL, "max_pooling2d", "input")


def test_gradients_update_nothing_and_give_input_for_every_layer(two_conv):
    model, x, labels, loss, grads = two_conv
    before = {k: {w: a.copy() for w, a in v.items()} for k, v in model.params().items()}
    again, _ = model.gradients(x, labels)
    assert again == loss and list(grads) == list(model.layer_names)
    assert all("input" in grads[name] for name in model.layer_names)
    for layer, weights in model.params().items():
        for weight, array in weights.items():
            check(array, before[layer][weight], EXACT, layer, weight, "before")
            assert grads[layer][weight].shape == array.shape


def test_loss_is_the_mean_cross_entropy_of_the_softmax_output(two_conv):
    model, x, labels, loss, _ = two_conv
    probs = model.forward(x)["softmax"]
    expected = -np.log(probs[np.arange(3), labels]).mean()
    check(np.array(loss), np.array(expected), EXACT, "softmax", "loss", "formula")


# ---------------------------------------------------------------- two implementations


def test_blog_network_and_its_general_layer_twin_agree_on_tied_mnist_windows(mnist):
    blog, seq = models.build("zhou", seed=3), models.build("zhou-seq")
    weights = blog.params()
    seq.set_params({
        "conv2d": {"kernel": layout.blog_filters_to_keras(weights["conv2d"]["kernel"], "conv2d")},
        "dense": {"kernel": weights["dense"]["kernel"], "bias": weights["dense"]["bias"]},
    })  # fmt: skip
    images, labels = mnist.train_images[:16], mnist.train_labels[:16]
    x = blog.preprocess(images)
    conv = seq.forward(x[..., None])["conv2d"]
    windows = conv.reshape(16, 13, 2, 13, 2, 8).transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4)
    tied = np.mean((windows == windows.max(axis=1, keepdims=True)).sum(axis=1) > 1)
    assert tied > 0.5  # the point of the test: most windows tie (measured 0.64)
    seq_outputs = seq.forward(x[..., None])
    for layer, expected in blog.forward(x).items():
        check(seq_outputs[layer], expected.reshape(seq_outputs[layer].shape), CROSS_RTOL,
              layer, "output", "zhou")  # fmt: skip
    blog_loss, blog_grads = blog.gradients(x, labels)
    seq_loss, seq_grads = seq.gradients(x[..., None], labels)
    check(np.array(seq_loss), np.array(blog_loss), CROSS_RTOL, "softmax", "loss", "zhou")
    blog_grads["conv2d"]["kernel"] = layout.blog_filters_to_keras(
        blog_grads["conv2d"]["kernel"], "conv2d"
    )
    blog_grads["conv2d"]["input"] = blog_grads["conv2d"]["input"][..., None]
    for layer, quantities in blog_grads.items():
        for quantity, expected in quantities.items():
            check(seq_grads[layer][quantity], expected, CROSS_RTOL, layer, quantity, "zhou")


# ---------------------------------------------------------------- Sequential behaviour


def test_unnamed_layers_get_keras_default_names():
    model = Sequential(
        [Conv2D(2, 3), ReLU(), Conv2D(2, 3), MaxPool2D(2), ReLU(), Flatten(), Dense(3),
         Dense(10, name="dense_1"), Softmax()],
        (10, 10, 1),
    )  # fmt: skip
    assert model.layer_names == (
        "conv2d", "re_lu", "conv2d_1", "max_pooling2d", "re_lu_1", "flatten", "dense",
        "dense_1", "softmax",
    )  # fmt: skip


def test_two_conv_architecture_names_and_shapes():
    model = models.build("two-conv")
    shapes = {k: v.shape for k, v in model.forward(np.zeros((2, 28, 28, 1))).items()}
    assert shapes == {
        "conv2d": (2, 28, 28, 8), "re_lu": (2, 28, 28, 8), "max_pooling2d": (2, 14, 14, 8),
        "conv2d_1": (2, 7, 7, 16), "re_lu_1": (2, 7, 7, 16), "flatten": (2, 784),
        "dense": (2, 10), "softmax": (2, 10),
    }  # fmt: skip
    params = {k: {w: a.shape for w, a in v.items()} for k, v in model.params().items()}
    assert params == {
        "conv2d": {"kernel": (3, 3, 1, 8), "bias": (8,)},
        "conv2d_1": {"kernel": (3, 3, 8, 16), "bias": (16,)},
        "dense": {"kernel": (784, 10), "bias": (10,)},
    }


def test_params_are_the_live_arrays():
    model = models.build("two-conv")
    model.params()["dense"]["bias"][3] = 7.0
    assert model.layer("dense").params["bias"][3] == 7.0


def test_preprocess_scales_to_minus_half_plus_half_with_a_channel_axis(mnist):
    model = models.build("two-conv", dtype="float32")
    x = model.preprocess(mnist.train_images[:2])
    expected = (mnist.train_images[:2] / 255 - 0.5).astype(np.float32)[..., None]
    assert x.dtype == np.float32 and np.array_equal(x, expected)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_train_step_equals_gradients_then_sgd_bit_for_bit(mnist, dtype):
    fast, general = models.build("two-conv", dtype=dtype), models.build("two-conv", dtype=dtype)
    x, labels = fast.preprocess(mnist.train_images[:4]), mnist.train_labels[:4]
    for _ in range(3):
        fast.train_step(x, labels, 0.05)
        SGD(0.05).update(general.params(), general.gradients(x, labels)[1])
    for layer, weights in general.params().items():
        for weight, array in weights.items():
            check(fast.params()[layer][weight], array, EXACT, layer, weight, "gradients+SGD")


def test_float32_model_is_float32_throughout(mnist):
    model = models.build("two-conv", dtype="float32")
    x = model.preprocess(mnist.train_images[:2])
    _, grads = model.gradients(x, mnist.train_labels[:2])
    arrays = [*model.forward(x).values()] + [a for v in grads.values() for a in v.values()]
    arrays += [a for v in model.params().values() for a in v.values()]
    assert {a.dtype for a in arrays} == {np.dtype("float32")}


def test_the_same_seed_gives_the_same_weights_and_another_seed_does_not():
    a, b, c = models.build("two-conv", 4), models.build("two-conv", 4), models.build("two-conv", 5)
    ka, kb, kc = (m.params()["conv2d_1"]["kernel"] for m in (a, b, c))
    assert np.array_equal(ka, kb) and not np.array_equal(ka, kc)


# ---------------------------------------------------------------- registry


def test_registry_lists_user_models_and_hides_internal_ones():
    assert "two-conv" in models.MODEL_NAMES and "zhou-seq" not in models.MODEL_NAMES
    assert models.build("zhou-seq").layer_names == (
        "conv2d", "max_pooling2d", "flatten", "dense", "softmax",
    )  # fmt: skip


def test_unknown_model_name_is_rejected_with_the_allowed_names():
    with pytest.raises(ValueError) as error:
        models.build("three-conv")
    assert str(error.value) == (
        f"Invalid value for argument `name`. Expected one of {models.MODEL_NAMES}. "
        "Received name='three-conv'."
    )


def test_registry_sets_the_model_name_and_dtype():
    model = models.build("two-conv", dtype="float32")
    assert model.name == "two-conv" and model.dtype == np.float32


# ---------------------------------------------------------------- errors

TWO_CONV_INPUT_ERRORS = [
    (np.zeros((2, 28, 28)), "Input 0 of model `two-conv` is incompatible with the layer: "
     "expected ndim=4, found ndim=3. Full shape received: (2, 28, 28)"),
    (np.zeros((2, 28, 28, 3)), "Input 0 of model `two-conv` is incompatible with the layer: "
     "expected axis -1 of input shape to have value 1, but received input with shape "
     "(2, 28, 28, 3)"),
    (np.zeros((2, 27, 28, 1)), "Input 0 of model `two-conv` is incompatible with the layer: "
     "expected shape=(None, 28, 28, 1), found shape=(2, 27, 28, 1)"),
    (np.zeros((2, 28, 28, 1), np.float32), "Invalid input to model `two-conv`. Expected "
     "dtype float64 (the layer's dtype). Received an input of dtype float32."),
]  # fmt: skip


@pytest.mark.parametrize(
    "x, message", TWO_CONV_INPUT_ERRORS, ids=["rank", "channels", "height", "dtype"]
)
def test_model_input_errors_name_the_rule_and_what_was_received(x, message):
    with pytest.raises(ValueError) as error:
        models.build("two-conv").forward(x)
    assert str(error.value) == message


def test_non_finite_input_is_rejected_with_its_position():
    x = np.zeros((2, 28, 28, 1))
    x[1, 3, 4, 0], x[1, 5, 5, 0] = np.nan, np.inf
    with pytest.raises(ValueError) as error:
        models.build("two-conv").gradients(x, np.array([0, 1]))
    assert str(error.value) == (
        "Invalid input to model `two-conv`. Expected finite values. Received 2 non-finite "
        "value(s), the first at index (1, 3, 4, 0): np.float64(nan)."
    )


def test_label_outside_the_classes_is_rejected():
    with pytest.raises(ValueError) as error:
        models.build("two-conv").gradients(np.zeros((2, 28, 28, 1)), np.array([3, 10]))
    assert str(error.value) == (
        "Invalid value for argument `labels`. Expected integers in [0, 10). Received 1 "
        "label(s) outside that range, the first labels[1]=10."
    )


def test_a_model_without_softmax_has_no_loss():
    model = Sequential([Flatten(), Dense(3)], (2, 2, 1))
    with pytest.raises(ValueError, match="expected the last layer to be a Softmax"):
        model.gradients(np.zeros((1, 2, 2, 1)), np.array([0]))


def test_duplicate_layer_names_are_rejected():
    with pytest.raises(ValueError) as error:
        Sequential([Dense(2, name="d"), Dense(2, name="d")], (3,))
    assert str(error.value) == (
        "Invalid value for argument `layers`. Expected unique layer names. Received "
        "duplicate name(s) ['d']."
    )


def test_kernel_larger_than_the_input_is_rejected_at_build():
    with pytest.raises(ValueError) as error:
        Sequential([Conv2D(2, 3), Conv2D(2, 5)], (6, 6, 1))
    assert str(error.value) == (
        "Invalid value for argument `kernel_size`. Expected a kernel no larger than the "
        "padded input (4, 4) (padding='valid', layer `conv2d_1`). Received "
        "kernel_size=(5, 5)."
    )


def test_model_difference_rejects_an_unknown_weight():
    with pytest.raises(ValueError, match=r"argument `quantity`. Expected 'input' or a weight"):
        model_difference(models.build("two-conv"), np.zeros((1, 28, 28, 1)), [0], "re_lu", "kernel")
