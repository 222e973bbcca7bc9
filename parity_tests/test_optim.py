import math

import numpy as np
import pytest

from parity.compare import compare
from parity.testing import EXACT, check
from scratch.optim import SGD, Adam, AdamW, RMSprop, keras_beta_power, keras_cast

FORMULA_RTOL = 1e-13  # Adam vs the formula re-associated, 100 steps; measured 7.5e-17
KERAS_FLOAT64_RTOL = 1e-15  # one-ulp TF pow at rare steps (docstring); measured 3.7e-18
STEPS = 100
pytestmark = pytest.mark.xdist_group("optim")  # one worker runs `keras_runs` once per dtype


def problem(dtype="float64", steps=STEPS, seed=0):
    """Weights and a gradient sequence spanning eight orders of magnitude."""
    rng = np.random.default_rng(seed)
    shapes = {"conv2d": {"kernel": (3, 3, 1, 4), "bias": (4,)}, "dense": {"kernel": (36, 10)}}
    params = {
        layer: {name: rng.normal(size=shape).astype(dtype) for name, shape in weights.items()}
        for layer, weights in shapes.items()
    }
    grads = [
        {
            layer: {
                name: (rng.normal(size=s) * 10.0 ** rng.integers(-6, 2, size=s)).astype(dtype)
                for name, s in weights.items()
            }
            for layer, weights in shapes.items()
        }
        for _ in range(steps)
    ]
    return params, grads


def copy(tree):
    return {layer: {name: a.copy() for name, a in w.items()} for layer, w in tree.items()}


def adam_formula(w, grads, lr=0.001, b1=0.9, b2=0.999, eps=1e-7, beta_base=np.float32):
    """The docstring's formula, written the textbook way (Kingma & Ba, epsilon hat)."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        b1t, b2t = float(beta_base(b1)) ** t, float(beta_base(b2)) ** t
        w = w - lr * math.sqrt(1 - b2t) / (1 - b1t) * m / (np.sqrt(v) + eps)
    return w


# ---------------------------------------------------------------- SGD


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sgd_is_w_minus_lr_times_g_with_lr_in_the_weights_dtype(dtype):
    params, grads = problem(dtype, steps=1)
    expected = copy(params)
    SGD(0.005).update(params, grads[0])
    for layer, weights in expected.items():
        for name, w in weights.items():
            want = w - np.dtype(dtype).type(0.005) * grads[0][layer][name]
            check(params[layer][name], want, EXACT, layer, name, "formula")


def test_sgd_learning_rate_in_float32_is_the_rounded_constant():
    w = np.zeros(1, dtype=np.float32)
    SGD(0.005).update({"d": {"bias": w}}, {"d": {"bias": np.ones(1, np.float32)}})
    assert w[0] == -np.float32(0.005) and float(-w[0]) == 0.004999999888241291


def test_optimizers_ignore_input_gradients_and_update_in_place():
    params, grads = problem(steps=1)
    live = params["dense"]["kernel"]
    grads[0]["dense"]["input"] = np.ones((2, 36))
    Adam().update(params, grads[0])
    assert params["dense"]["kernel"] is live and "input" not in params["dense"]


def test_missing_gradient_is_rejected_before_anything_is_updated():
    params, grads = problem(steps=1)
    before = copy(params)
    del grads[0]["dense"]["kernel"]
    with pytest.raises(ValueError) as error:
        SGD(0.1).update(params, grads[0])
    assert str(error.value) == (
        "Invalid value for argument `grads`. Expected a gradient for every weight. "
        "Received none for layer `dense` weight `kernel`."
    )
    check(params["conv2d"]["kernel"], before["conv2d"]["kernel"], EXACT, "conv2d", "kernel",
          "before")  # fmt: skip


def test_gradient_of_the_wrong_shape_is_rejected():
    params, grads = problem(steps=1)
    grads[0]["conv2d"]["bias"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"Expected layer `conv2d` weight `bias` gradient with"):
        Adam().update(params, grads[0])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SGD(0), "Invalid value for argument `learning_rate`. Expected a finite, "
         "strictly positive float. Received learning_rate=0."),
        (lambda: Adam(beta_1=1.0), "Invalid value for argument `beta_1`. Expected a float "
         "in [0, 1). Received beta_1=1.0."),
        (lambda: Adam(epsilon=float("nan")), "Invalid value for argument `epsilon`. "
         "Expected a finite, strictly positive float. Received epsilon=nan."),
    ],
    ids=["sgd_lr_zero", "adam_beta_1_one", "adam_epsilon_nan"],
)  # fmt: skip
def test_bad_hyper_parameters_are_rejected(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value) == message


# ---------------------------------------------------------------- Adam


def run_adam(dtype="float64", **kwargs):
    params, grads = problem(dtype)
    start = copy(params)
    optimizer = Adam(**kwargs)
    for g in grads:
        optimizer.update(params, g)
    return start, grads, params, optimizer


def test_adam_matches_the_formula_in_its_docstring():
    start, grads, params, optimizer = run_adam()
    assert optimizer.iterations == STEPS
    for layer, weights in params.items():
        for name, w in weights.items():
            want = adam_formula(start[layer][name], [g[layer][name] for g in grads])
            check(w, want, FORMULA_RTOL, layer, name, "formula")


@pytest.mark.parametrize(
    "variant",
    [
        dict(beta_base=np.float64),  # float64 betas in the bias correction
        dict(eps=1e-7 * math.sqrt(1 - 0.999)),  # epsilon scaled: the Kingma form, roughly
    ],
    ids=["float64_beta_base", "epsilon_placement"],
)
def test_the_formula_comparison_sees_keras_subtleties(variant):
    start, grads, params, _ = run_adam()
    want = adam_formula(start["dense"]["kernel"], [g["dense"]["kernel"] for g in grads], **variant)
    record = compare(params["dense"]["kernel"], want, layer="dense", quantity="kernel",
                     atol=0.0, rtol=FORMULA_RTOL)  # fmt: skip
    assert not record.passed, record.message


def test_adam_keeps_its_state_per_weight_and_in_the_weights_dtype():
    _, _, params, optimizer = run_adam("float32")
    assert set(optimizer.momentums) == {
        ("conv2d", "kernel"),
        ("conv2d", "bias"),
        ("dense", "kernel"),
    }
    assert {m.dtype for m in optimizer.velocities.values()} == {np.dtype("float32")}
    assert {w.dtype for v in params.values() for w in v.values()} == {np.dtype("float32")}


def test_keras_beta_power_uses_a_float32_base_and_exact_rounding():
    assert keras_beta_power(0.9, 1) == 0.8999999761581421  # float32(0.9), as tf.cast gives
    exact = 0.9990000128746033**31  # C pow: 0.9694609236072224; the exact power rounds up
    assert keras_beta_power(0.999, 31) == 0.9694609236072225 != exact


# ---------------------------------------------------------------- against Keras itself


def keras_adam_weights(dtype, start, grads):
    """Runs in a process configured for ``dtype`` (reference.backend): Keras's Adam."""
    import keras

    variables = {
        (layer, name): keras.Variable(w, dtype=dtype)
        for layer, weights in start.items()
        for name, w in weights.items()
    }
    optimizer = keras.optimizers.Adam(learning_rate=0.001)
    keys = list(variables)
    for g in grads:
        optimizer.apply([g[layer][name] for layer, name in keys], [variables[k] for k in keys])
    return {key: np.asarray(variable.numpy()) for key, variable in variables.items()}


@pytest.mark.parametrize("dtype, rtol", [("float64", KERAS_FLOAT64_RTOL), ("float32", EXACT)])
def test_adam_matches_keras_adam(dtype, rtol):  # one spawned TensorFlow process each, ~5 s
    from reference.backend import run_in_dtype_process

    start, grads, params, _ = run_adam(dtype)
    theirs = run_in_dtype_process(dtype, keras_adam_weights, dtype, start, grads)
    for (layer, name), w in theirs.items():
        check(params[layer][name], w, rtol, layer, name, "keras")


# ---------------------------------------------------------------- SGD momentum, RMSprop, AdamW

OPTIMIZERS = {  # id -> (Keras class name, keyword arguments); ours takes the same ones
    "sgd_momentum": ("SGD", dict(learning_rate=0.01, momentum=0.9)),
    "sgd_nesterov": ("SGD", dict(learning_rate=0.01, momentum=0.9, nesterov=True)),
    "rmsprop": ("RMSprop", dict(learning_rate=0.001)),
    "rmsprop_momentum": ("RMSprop", dict(learning_rate=0.001, rho=0.8, momentum=0.5)),
    "adamw": ("AdamW", dict(learning_rate=0.001, weight_decay=0.004)),
}
OURS = {"SGD": SGD, "RMSprop": RMSprop, "AdamW": AdamW}


def keras_optimizer_runs(dtype, start, grads):
    """Runs in a process configured for ``dtype``: every OPTIMIZERS entry, in Keras."""
    import keras

    out = {}
    for name, (cls, kwargs) in OPTIMIZERS.items():
        variables = {(layer, w): keras.Variable(a, dtype=dtype)
                     for layer, weights in start.items() for w, a in weights.items()}  # fmt: skip
        optimizer = getattr(keras.optimizers, cls)(**kwargs)
        keys = list(variables)
        for g in grads:
            optimizer.apply([g[layer][w] for layer, w in keys], [variables[k] for k in keys])
        out[name] = {key: np.asarray(v.numpy()) for key, v in variables.items()}
    return out


@pytest.fixture(scope="module", params=["float64", "float32"])
def keras_runs(request):  # one spawned TensorFlow process per dtype, ~6 s
    from reference.backend import run_in_dtype_process

    params, grads = problem(request.param)
    return request.param, params, grads, run_in_dtype_process(
        request.param, keras_optimizer_runs, request.param, params, grads)  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_matches_keras_bit_for_bit(keras_runs, name):
    dtype, start, grads, theirs = keras_runs
    params = copy(start)
    cls, kwargs = OPTIMIZERS[name]
    optimizer = OURS[cls](**kwargs)
    for g in grads:
        optimizer.update(params, g)
    # AdamW's Adam step carries Adam's one-ulp TF pow steps in float64 (measured 3.7e-18)
    rtol = KERAS_FLOAT64_RTOL if (name, dtype) == ("adamw", "float64") else EXACT
    for (layer, weight), w in theirs[name].items():
        check(params[layer][weight], w, rtol, layer, weight, "keras")


def test_keras_cast_rounds_python_floats_through_float32():
    assert keras_cast(0.9, "float64") == 0.8999999761581421
    assert keras_cast(0.004, "float32") == np.float32(0.004)
