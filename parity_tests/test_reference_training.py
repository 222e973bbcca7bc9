import numpy as np
import pytest

from parity.compare import compare
from parity.data import load_mnist
from reference import probes, training
from reference import twin as twin_module
from reference.testing import MODEL_NAMES, ModelNotAvailable, build_model, scratch_train

pytestmark = pytest.mark.keras

STEPS = 1000  # one epoch of 1,000 images at batch size 1 (issue 4)
LEARNING_RATE = 0.005  # the blog's
LOSS_RTOL = 1e-10  # issue 4: per-step losses; measured 1.3e-15 (zhou-seq), 1.7e-15 (two-conv)
WEIGHT_RTOL = 1e-12  # issue 4's bound for final weights; measured 1.5e-15 (zhou-seq)
ORDER_SEED = 7  # the training schedule: a fixed permutation of the pool
ADAM_BATCH = 32
ADAM_LR = 0.001
ADAM_LOSS_RTOL = 1e-10  # issue 7: per-step losses equal in float64; measured 3.9e-16
ADAM_WEIGHT_RTOL = 1e-12  # measured 2.7e-15 (needs scratch Adam with float32-rounded betas)


@pytest.fixture(scope="module")
def data():
    return load_mnist()


@pytest.fixture(scope="module")
def order(data):
    return np.random.default_rng(ORDER_SEED).permutation(len(data.train_images))[:STEPS]


def _model(name, **kwargs):
    try:
        return build_model(name, **kwargs)
    except ModelNotAvailable as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module", params=MODEL_NAMES)
def runs(request, data, order):
    """Scratch SGD training and the twin's fit and tape runs, on the same schedule."""
    results = {}
    for side in ("scratch", "fit", "tape"):
        model = _model(request.param)
        x = model.preprocess(data.train_images)
        if side == "scratch":
            results[side] = (*scratch_train(model, x, data.train_labels, [order]), model.params())
        else:
            results[side] = training.train(
                side, twin_module.twin(model), model, x, data.train_labels, [order]
            )
    return results


def _records(ours: dict, theirs: dict, rtol: float, side: str):
    return [
        compare(
            ours[k][w],
            theirs[k][w],
            layer=k,
            quantity=w,
            atol=0.0,
            rtol=rtol,
            desired_side=side,
            expected_dtype=np.float64,
        )
        for k in ours
        for w in ours[k]
    ]


def _assert_all_pass(records):
    failed = [r.message for r in records if not r.passed]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("path", ["fit", "tape"])
def test_per_step_losses_match_scratch_training(runs, path):
    losses, _, _ = runs["scratch"]
    run = runs[path]
    assert run.losses.dtype == np.float64 and run.losses.shape == (STEPS,)
    _assert_all_pass(
        [
            compare(
                losses,
                run.losses,
                layer="loss",
                quantity="per-step loss",
                atol=0.0,
                rtol=LOSS_RTOL,
                desired_side=path,
            )
        ]
    )


@pytest.mark.parametrize("path", ["fit", "tape"])
def test_final_weights_match_scratch_training(runs, path):
    _, _, params = runs["scratch"]
    _assert_all_pass(_records(params, runs[path].weights, WEIGHT_RTOL, path))


@pytest.mark.parametrize("path", ["fit", "tape"])
def test_correct_flags_and_learning_rate_match(runs, path):
    _, n_correct, _ = runs["scratch"]
    run = runs[path]
    assert np.array_equal(run.correct.astype(int), n_correct)
    assert run.learning_rate.dtype == np.float64 and run.learning_rate == LEARNING_RATE
    assert run.steps_per_epoch == [STEPS]


def test_fit_and_tape_loop_are_bit_identical(runs):
    fit, tape = runs["fit"], runs["tape"]
    assert np.array_equal(fit.losses, tape.losses)
    assert all(
        np.array_equal(fit.weights[k][w], tape.weights[k][w])
        for k in fit.weights
        for w in fit.weights[k]
    )


@pytest.mark.parametrize("name", ["two-conv", "chw-relu", "zhou"])
def test_fit_steps_are_exactly_plain_sgd(name, data):
    # Two steps (two 1-batch epochs): a momentum term would be invisible in the first.
    model = _model(name)
    x, labels = model.preprocess(data.train_images[:8]), data.train_labels[:8]
    run = training.train_fit(
        twin_module.twin(model), model, x, labels, [np.arange(8)] * 2, batch_size=8
    )
    probe_model = _model(name)
    before = [model.params(), *run.epoch_weights[:-1]]
    for step, (weights, after) in enumerate(zip(before, run.epoch_weights, strict=True)):
        probe_model.set_params(weights)
        loss, grads = probes.gradients(twin_module.twin(probe_model), probe_model, x, labels)
        expected = {
            k: {w: a - np.float64(LEARNING_RATE) * grads[k][w] for w, a in ws.items()}
            for k, ws in probe_model.params().items()
        }
        assert run.losses[step] == loss  # the recorded step loss is the probe's, bit for bit
        _assert_all_pass(_records(expected, after, 0.0, f"fit step {step}"))


def test_adam_minibatches_match_scratch_adam(data, order):
    results = []
    for side in ("scratch", "fit"):
        model = _model("chw-relu")
        x = model.preprocess(data.train_images)
        kwargs = dict(batch_size=ADAM_BATCH, optimizer="adam", learning_rate=ADAM_LR)
        if side == "scratch":
            results.append(
                (scratch_train(model, x, data.train_labels, [order], **kwargs)[0], model.params())
            )
        else:
            run = training.train_fit(
                twin_module.twin(model), model, x, data.train_labels, [order], **kwargs
            )
            results.append((run.losses, run.weights))
    (losses, params), (keras_losses, keras_weights) = results
    _assert_all_pass(
        [
            compare(
                losses,
                keras_losses,
                layer="loss",
                quantity="per-step loss",
                atol=0.0,
                rtol=ADAM_LOSS_RTOL,
            )
        ]
    )
    _assert_all_pass(_records(params, keras_weights, ADAM_WEIGHT_RTOL, "fit"))


ADAM_FORMULA_RTOL = 1e-15  # one rounding of the last division; measured 6.5e-16
ADAM_BETA_EFFECT = 6.6e-6  # relative step change from float32-rounded betas; measured 6.676e-6


def test_keras_float64_adam_uses_float32_betas_in_the_bias_correction():
    import tensorflow as tf

    g = np.array([1.0, 1e-3, 1e-6])
    variable = tf.Variable(np.zeros(3))
    training.make_optimizer("adam", ADAM_LR, "float64").apply([tf.constant(g)], [variable])

    def first_step(beta_1, beta_2):  # t = 1, m = (1 - b1) g, v = (1 - b2) g^2 (Keras's order)
        alpha = ADAM_LR * np.sqrt(1 - beta_2) / (1 - beta_1)
        return -((g * (1 - 0.9)) * alpha) / (np.sqrt(g * g * (1 - 0.999)) + 1e-7)

    rounded = first_step(np.float64(np.float32(0.9)), np.float64(np.float32(0.999)))
    exact = first_step(0.9, 0.999)
    keras_step = variable.numpy()
    _assert_all_pass(
        [
            compare(
                keras_step,
                rounded,
                layer="adam",
                quantity="step",
                atol=0.0,
                rtol=ADAM_FORMULA_RTOL,
                desired_side="float32 betas",
            )
        ]
    )
    assert (
        compare(keras_step, exact, layer="adam", quantity="step", atol=0.0, rtol=1.0).rel_error
        > ADAM_BETA_EFFECT
    )


def test_make_optimizer_holds_the_learning_rate_in_float64():
    for name in training.OPTIMIZERS:
        variable = training.make_optimizer(name, LEARNING_RATE, "float64").learning_rate
        assert variable.dtype == "float64" and variable.numpy() == 0.005
    assert np.float64(np.float32(0.005)) != 0.005  # what a float32 build would hold


def test_training_rejects_bad_arguments(data):
    model = build_model("two-conv")
    keras_model = twin_module.twin(model)
    x, labels = model.preprocess(data.train_images[:4]), data.train_labels[:4]
    with pytest.raises(ValueError, match=r"argument `optimizer`.*Received optimizer='adagrad'"):
        training.train_fit(keras_model, model, x, labels, [np.arange(4)], optimizer="adagrad")
    with pytest.raises(ValueError, match=r"argument `orders`. Expected indices in \[0, 4\)"):
        training.train_tape(keras_model, model, x, labels, [np.arange(5)])
    with pytest.raises(ValueError, match=r"argument `path`.*Received path='eager'"):
        training.train("eager", keras_model, model, x, labels, [np.arange(4)])
    with pytest.raises(ValueError, match=r"argument `chunk_steps`.*Received chunk_steps=0"):
        training.train("epoch", keras_model, model, x, labels, [np.arange(4)], chunk_steps=0)
    with pytest.raises(ValueError, match=r"Expected float64 inputs"):
        training.train_tape(keras_model, model, x.astype(np.float32), labels, [np.arange(4)])
