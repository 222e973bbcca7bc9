"""The cs231n three-layer convnet (batch norm, dropout) through the harness: its
description, the twin's batch-norm and dropout rows, the harness's modes and masks, the
moving statistics as state, the finite differences of coupled examples and the budgets."""

import re

import numpy as np
import pytest

from parity import modes, tolerances
from parity.checks import derivations
from parity.checks.common import Context
from parity.data import load_mnist
from reference.backend import run_in_dtype_process
from reference.testing import masked_dropout_vs_keras
from scratch.models import build
from spec import SpecError
from spec.layers import Layer
from spec.networks import CS231N_3LAYER, LENET5

MODEL = "cs231n-3layer"


@pytest.fixture(scope="module")
def batch():
    data = load_mnist()
    return data.test_images[:32], data.test_labels[:32]


# -- the description (numpy only) ---------------------------------------------------------


def test_description_has_cs231n_conventions_and_state_keys():
    bn = CS231N_3LAYER.layer("batch_normalization")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    assert CS231N_3LAYER.layer("dropout").rate == 0.5
    assert CS231N_3LAYER.training_batch == 32
    assert ("batch_normalization", "moving_variance") in CS231N_3LAYER.keys()
    assert CS231N_3LAYER.coupled() == ("batch_normalization", "batch_normalization_1")
    assert not LENET5.modal()


@pytest.mark.parametrize("kind, hyper, text", [
    ("BatchNormalization", dict(momentum=1.0), "momentum=1.0"),
    ("BatchNormalization", dict(epsilon=0.0), "epsilon=0.0"),
    ("Dropout", dict(rate=1.0), "rate=1.0"),
    ("Dropout", {}, "requires `rate`"),
])  # fmt: skip
def test_invalid_hyperparameters_name_layer_and_value(kind, hyper, text):
    with pytest.raises(SpecError, match=text):
        Layer(kind, "x", **hyper)


def test_masks_keep_with_probability_one_minus_rate_and_are_seeded():
    a = modes.draw(CS231N_3LAYER, 256, 0, 1, 2)["dropout"]
    assert a.shape == (256, 32) and a.dtype == bool
    assert abs(a.mean() - 0.5) < 0.02
    assert np.array_equal(a, modes.draw(CS231N_3LAYER, 256, 0, 1, 2)["dropout"])
    assert not np.array_equal(a, modes.draw(CS231N_3LAYER, 256, 0, 1, 3)["dropout"])


def test_scratch_model_rejects_a_missing_or_misshapen_mask():
    model = build(MODEL)
    with pytest.raises(ValueError, match="one mask per dropout layer"):
        model.set_masks({})
    with pytest.raises(ValueError, match="masks\\['dropout'\\]"):
        model.set_masks({"dropout": np.ones((4, 31), bool)})


def test_an_injected_mask_of_another_batch_is_refused_not_redrawn():
    model = build(MODEL)
    layer = model.layer("dropout")
    layer.training = True
    layer.mask = np.ones((4, 32), bool)  # injected for a batch of 4
    message = ("Layer `dropout`: expected an injected dropout mask of the input's shape "
               "(2, 32). Received a mask of shape (4, 32).")  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.forward(np.ones((2, 32)))
    layer.mask = None  # none injected: the layer draws its own, of the input's shape
    assert layer.forward(np.ones((2, 32))).shape == layer.mask.shape == (2, 32)
    assert layer.forward(np.ones((5, 32))).shape == layer.mask.shape == (5, 32)


@pytest.mark.keras
def test_lockstep_stepper_of_a_twin_with_dropout_needs_every_steps_masks(batch):
    from parity.lockstep import Snapshot
    from reference.lockstep_step import LockstepStepper
    from reference.optimizers import scratch_optimizer
    from reference.twin import twin

    model = build(MODEL)
    before = Snapshot.take(model, scratch_optimizer("sgd", 0.01))
    stepper = LockstepStepper(twin(model, "float64"), model, optimizer="sgd", learning_rate=0.01)
    x, labels = model.preprocess(batch[0]), batch[1]
    masks = modes.draw(CS231N_3LAYER, len(labels), 0, 0)
    assert np.isfinite(stepper(before.weights, before.state, x, labels, masks=masks).loss)
    with pytest.raises(ValueError, match=re.escape("dropout layer ['dropout'] (a twin keeps")):
        stepper(before.weights, before.state, x, labels)  # would reuse the masks above


def test_batchnorm_budgets_only_for_networks_with_batch_norm():
    for check in ("forward", "gradients"):
        assert tolerances.get(check, "float64", CS231N_3LAYER) is tolerances.get(
            f"{check}-batchnorm", "float64")  # fmt: skip
        assert tolerances.get(check, "float64", LENET5) is tolerances.get(check, "float64")
    for check in (
        "lockstep-weights-momentum",
        "lockstep-momentum-state",
        "lockstep-weights-rmsprop",
    ):  # measured beside each, float64 only
        assert tolerances.get(check, "float64", CS231N_3LAYER) is tolerances.get(
            f"{check}-batchnorm", "float64")  # fmt: skip
        assert tolerances.get(check, "float32", CS231N_3LAYER) is tolerances.get(check, "float32")


# -- the twin's rows ------------------------------------------------------------------------


@pytest.mark.keras
@pytest.mark.parametrize("scale_bug, equal", [(1.0, True), (0.5, False)], ids=["real", "planted"])
def test_masked_dropout_is_keras_dropout_bit_for_bit_float64(scale_bug, equal):
    out, grad, dtype = masked_dropout_vs_keras(0.3, 1, scale_bug)
    assert (out, grad, dtype) == (equal, equal, "float64")


def test_masked_dropout_is_keras_dropout_bit_for_bit_float32():
    # rate 0.3: a scale 1 / 0.7 that is not exact in binary (0.5's 2 would hide a rounding)
    assert run_in_dtype_process("float32", masked_dropout_vs_keras, 0.3, 2) == (
        True,
        True,
        "float32",
    )


@pytest.mark.keras
def test_twin_batch_norm_takes_cs231n_momentum_and_epsilon_not_keras_defaults():
    from reference.twin import twin

    keras_model = twin(build(MODEL))
    for name in ("batch_normalization", "batch_normalization_1"):
        layer = keras_model.get_layer(name)
        assert (layer.momentum, layer.epsilon) == (0.9, 1e-5)
        assert [v.name for v in layer.trainable_weights] == ["gamma", "beta"]


@pytest.mark.keras
@pytest.mark.parametrize("model_name", [MODEL, "cs231n-3layer-chw"])  # NHWC and channels-first
def test_moving_statistics_are_copied_both_ways(model_name):
    from reference.twin import keras_weights, load_into_scratch, twin

    model = build(model_name)
    rng = np.random.default_rng(0)
    for arrays in model.state().values():
        for array in arrays.values():
            array[...] = rng.uniform(0.5, 2.0, array.shape)
    keras_model = twin(model)
    mean = keras_weights(keras_model)["batch_normalization"]["moving_mean"]
    assert np.array_equal(mean, model.state()["batch_normalization"]["moving_mean"])
    fresh = build(model_name)
    load_into_scratch(keras_model, fresh)
    assert np.array_equal(
        fresh.state()["batch_normalization_1"]["moving_variance"],
        model.state()["batch_normalization_1"]["moving_variance"],
    )


# -- the checks on correct and planted code ---------------------------------------------------


def _context(batch, hooks=()):
    from reference.twin import twin

    model = build(MODEL)
    for hook in hooks:
        hook(model)
    ctx = Context(MODEL, "float64", model, batch[0], batch[1], seed=0)
    ctx.set_twin(twin(model), "initial")
    return ctx


def _failing(rows):
    """Failing ``(layer, quantity)`` in the rows' order (forward order)."""
    return list(dict.fromkeys((r["layer"], r["quantity"]) for r in rows if r["status"] != "PASS"))


@pytest.mark.keras
def test_correct_code_passes_forward_both_modes_and_gradients(batch):
    from parity.checks import forward, gradients

    ctx = _context(batch)
    rows = forward.forward_rows(ctx) + gradients.gradient_rows(ctx)
    assert {r["quantity"] for r in rows} >= {"output", forward.INFERENCE, "gamma", "input"}
    assert _failing(rows) == []


@pytest.mark.keras
def test_inference_rows_use_moving_statistics_of_the_state(batch):
    """A scratch layer whose inference mode uses the batch's statistics fails the
    inference rows only, at that layer."""
    from parity.checks import forward

    ctx = _context(batch)
    bn = ctx.model.layer("batch_normalization_1")
    original = bn._forward

    def batch_stats_always(x):
        training, bn.training = bn.training, True
        try:
            return original(x)
        finally:
            bn.training = training

    bn._forward = batch_stats_always
    failing = _failing(forward.forward_rows(ctx))
    assert failing[0] == ("batch_normalization_1", forward.INFERENCE)
    assert all(q == forward.INFERENCE for _, q in failing)


@pytest.mark.keras
def test_unmasked_twin_fails_at_dropout(batch):
    """The harness's mask on one side only: a different mask on the Keras side fails the
    dropout layer's output (so the rows do compare the masked values)."""
    from parity.checks import forward
    from reference.modal_layers import set_masks

    ctx = _context(batch)
    set_masks(ctx.twin, {"dropout": ~ctx.masks["dropout"]})
    assert _failing(forward.forward_rows(ctx))[0] == ("dropout", "output")


@pytest.mark.keras
def test_batched_per_example_fd_is_wrong_for_coupled_examples(batch):
    """Why derivations perturb one example at a time here: the batched engine's stacked
    copies are one big batch (other statistics), and its answer differs from the true
    derivative of the 4-image batch's mean loss."""
    from parity import finite_diff
    from parity.checks.common import per_example_loss

    model = build(MODEL)
    x = model.preprocess(batch[0][:4])
    labels = batch[1][:4]
    model.set_masks(modes.rows(modes.draw(model.spec, 32, 0, 0), 4))
    # stacked copies would need a mask per copy: check the coupling alone, dropout off
    model.layer("dropout").training = False
    batched = finite_diff.per_example(
        lambda b: per_example_loss(model.probabilities(b), np.tile(labels, len(b) // 4)), x
    )
    _, grads = model.gradients(x, labels)
    rel = np.abs(batched.values - grads["conv2d"]["input"]).max() / np.abs(
        grads["conv2d"]["input"]).max()  # fmt: skip
    assert rel > 0.1


@pytest.mark.keras
@pytest.mark.parametrize("planted", [False, True], ids=["correct", "no-mean-term"])
def test_derivations_of_coupled_inputs(batch, planted):
    from parity.catalog_modes import BatchNormBackwardNoMeanTerm

    hooks = (BatchNormBackwardNoMeanTerm("batch_normalization_1"),) if planted else ()
    ctx = _context(batch, hooks)
    ctx.state = "trained"
    rows = [r for r in derivations.derivation_rows(ctx) if r["desired_side"] == "fd"]
    scratch_fails = {(r["layer"], r["quantity"]) for r in rows
                     if r["actual_side"] == "scratch" and r["status"] != "PASS"}  # fmt: skip
    keras_fails = {(r["layer"], r["quantity"]) for r in rows
                   if r["actual_side"] == "keras" and r["status"] != "PASS"}  # fmt: skip
    assert keras_fails == set()
    if planted:
        assert ("conv2d", "input") in scratch_fails and ("dense", "kernel") in scratch_fails
    else:
        assert scratch_fails == set()
    assert ctx.masks["dropout"].shape == (32, 32)  # the check batch's masks are back
    assert ctx.model.layer("dropout").mask.shape == (32, 32)


# -- lockstep: the moving statistics after every step ----------------------------------------


def _lockstep(hooks=(), optimizer="sgd"):
    from parity.checks.training import training_check

    lr = 0.01 if optimizer == "sgd" else 0.001
    result = training_check(MODEL, "float64", load_mnist(), optimizer=optimizer,
                            learning_rate=lr, batch_size=32, epochs=1, train_size=96,
                            test_size=64, keras_paths=(), model_hooks=hooks,
                            in_process=True)  # fmt: skip
    return {(c.layer, c.quantity): c for _, _, c in result.comparisons}


@pytest.mark.keras
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lockstep_compares_moving_statistics_after_every_step(optimizer):
    rows = _lockstep(optimizer=optimizer)
    for layer in ("batch_normalization", "batch_normalization_1"):
        for name in ("moving_mean", "moving_variance"):
            assert rows[(layer, f"{name} update")].passed
    assert all(c.passed for c in rows.values()), [c.message for c in rows.values()
                                                  if not c.passed]  # fmt: skip
    assert not any("moving_mean momentum" in q for _, q in rows)  # state has no Adam slots


@pytest.mark.keras
def test_lockstep_catches_reversed_moving_average_momentum_at_its_layer():
    from parity.catalog_modes import BatchNormMomentumReversed

    rows = _lockstep((BatchNormMomentumReversed("batch_normalization"),))
    failing = {key for key, c in rows.items() if not c.passed}
    assert failing == {("batch_normalization", "moving_mean update"),
                       ("batch_normalization", "moving_variance update")}  # fmt: skip
