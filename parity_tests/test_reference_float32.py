import numpy as np
import pytest

from parity import tolerances
from parity.compare import compare
from parity.data import load_mnist
from reference.backend import run_in_dtype_process
from reference.testing import MODEL_NAMES, float32_measurements

# float32 budgets, norm-wise relative, over the five models on 32 real images, at initial
# and moderate (0.25 * O(1)) weights, oneDNN on. Forward and gradients use the harness's
# budgets (parity.tolerances), which record these worst cases too.
FORWARD_RTOL = tolerances.FORWARD_FLOAT32.rtol  # measured worst 1.87e-6 (chw, moderate)
GRADIENT_RTOL = tolerances.GRADIENTS_FLOAT32.rtol  # measured worst 2.93e-6 (two-conv, initial)
LOSS_RTOL = 3e-6  # batch loss 2.1e-7; per-step losses over 200 SGD steps 3.2e-7 (zhou-seq)
WEIGHT_RTOL = 7e-6  # final weights after 200 SGD steps, measured worst 7.0e-7 (zhou)
FLOAT32_VS_FLOAT64_MIN = 1e-8  # float32 logits vs float64, measured 2.8e-7..6.4e-7: far above 1e-12


@pytest.fixture(scope="module")
def measured():
    data = load_mnist()
    images, labels = data.train_images[:200], data.train_labels[:200]
    return run_in_dtype_process("float32", float32_measurements, MODEL_NAMES, images, labels)


@pytest.fixture(params=MODEL_NAMES)
def model_result(request, measured):
    if request.param not in measured["models"]:
        pytest.skip(f"model {request.param!r} not available")
    return measured["models"][request.param]


def _records(ours, theirs, quantity_prefix, rtol):
    return [
        compare(
            ours[k][q],
            theirs[k][q],
            layer=k,
            quantity=f"{quantity_prefix}{q}",
            atol=0.0,
            rtol=rtol,
            expected_dtype=np.float32,
        )
        for k in ours
        for q in ours[k]
    ]


def _assert_all_pass(records):
    failed = [r.message for r in records if not r.passed]
    assert not failed, "\n".join(failed)


def test_child_process_runs_float32(measured):
    assert measured["floatx"] == "float32"


def test_float32_twin_weights_outputs_loss_and_learning_rate_are_float32(model_result):
    assert model_result["weight_dtypes"] == ["float32"]
    assert model_result["dtypes"] == {"output": "float32", "loss": "float32"}
    lr = model_result["train_fit"]["learning_rate"]
    assert lr.dtype == np.float32 and lr == np.float32(0.005)


@pytest.mark.parametrize("weights", ["init", "o1"])
def test_float32_forward_and_gradients_within_budget(model_result, weights):
    ours, theirs = model_result[weights]["forward"]
    (loss, grads), (keras_loss, keras_grads) = model_result[weights]["gradients"]
    forward = {k: {"output": ours[k]} for k in ours}
    _assert_all_pass(
        _records(forward, {k: {"output": theirs[k]} for k in theirs}, "", FORWARD_RTOL)
    )
    _assert_all_pass(_records(grads, keras_grads, "grad ", GRADIENT_RTOL))
    assert abs(loss - keras_loss) <= LOSS_RTOL * abs(keras_loss)


@pytest.mark.parametrize("path", ["fit", "tape"])
def test_float32_training_within_budget(model_result, path):
    run = model_result[f"train_{path}"]
    _assert_all_pass(
        [
            compare(
                run["scratch_losses"],
                run["keras_losses"],
                layer="loss",
                quantity="per-step loss",
                atol=0.0,
                rtol=LOSS_RTOL,
                expected_dtype=np.float32,
            )
        ]
    )
    _assert_all_pass(_records(run["scratch_weights"], run["keras_weights"], "", WEIGHT_RTOL))


def test_float32_twin_is_far_from_float64_so_float64_checks_would_catch_it(model_result):
    logits32 = model_result["o1"]["forward"][1]["dense"].astype(np.float64)
    record = compare(
        logits32,
        model_result["o1_logits64"],
        layer="dense",
        quantity="output",
        atol=0.0,
        rtol=1e-12,
    )
    assert not record.passed and record.rel_error > FLOAT32_VS_FLOAT64_MIN, record.message


def test_float32_process_rejects_float64_twin_and_optimizer(measured):
    errors = measured["errors"]
    assert "twin(dtype='float64') in a process whose Keras floatx is 'float32'" in errors["twin"]
    assert "expected np.float64(0.005) (float64)" in errors["optimizer"]
