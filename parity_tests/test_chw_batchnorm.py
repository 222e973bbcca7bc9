"""cs231n-3layer-chw: the cs231n three-layer convnet in the channels-first family, and a
user's cs231n file with batch-norm and dropout classes judged inside it (issue 15)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parity import modes, runner
from parity.compare import is_failure
from parity.testing import planted_copy
from scratch.models import build
from scratch.user_code import UserCode, load, locate
from scratch.user_cs231n import UserCs231nModel
from spec.networks import CHW_RELU, CS231N_3LAYER_CHW

MODEL = "cs231n-3layer-chw"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n_bn" / "layers.py"
PLAIN_EXAMPLE = EXAMPLE.parents[1] / "cs231n" / "layers.py"
IN_NETWORK = dict(checks=("forward", "gradients", "isolation"), states=("random",))

# Planted faults in the example: (old text present exactly once, new text).
BN_NO_MEAN_TERM = ("dx = (n * dxhat - total - self.xhat", "dx = (n * dxhat - self.xhat")
DROPOUT_NEW_MASK_IN_BACKWARD = (
    "        return dout * self.mask\n",
    "        return dout * (self.rng.random(dout.shape) < self.p) / dout.dtype.type(self.p)\n",
)


def _planted(tmp_path, *edits) -> Path:
    return planted_copy(EXAMPLE, tmp_path, *edits)


def _run(path, **config) -> pd.DataFrame:
    """``parity check --api cs231n`` on ``path`` in this (float64) process: the summary."""
    code = UserCode(str(path), "cs231n")
    config = runner.RunConfig(models=(code.name,), dtypes=("float64",), images=8,
                              user_code=(code,), **config)  # fmt: skip
    return runner.run(config, in_process=True).summary


def _failing(summary) -> set:
    bad = summary[summary["status"].map(is_failure)]
    return set(zip(bad["check"], bad["layer"], bad["quantity"], strict=True))


# -- the description and the adapter (numpy only) ---------------------------------------------


def test_a_file_with_the_three_norm_classes_runs_in_cs231n_3layer_chw():
    assert UserCs231nModel(load(locate(EXAMPLE))).spec is CS231N_3LAYER_CHW
    assert UserCs231nModel(load(locate(PLAIN_EXAMPLE))).spec is CHW_RELU


def test_users_conv_bias_before_batch_norm_is_held_at_zero_and_not_a_weight():
    user = UserCs231nModel(load(locate(EXAMPLE)), dtype="float32")
    assert set(user.params()["conv2d"]) == {"kernel"} and set(user.params()["dense"]) == {"kernel"}
    conv = dict(user.layers)["conv2d"]
    assert not conv.bias.any() and conv.bias.dtype == np.float32
    assert user.state()["batch_normalization"]["moving_variance"].dtype == np.float32


def test_batch_norm_gets_the_whole_batch_even_when_the_users_layers_take_one_image():
    model = UserCs231nModel(load(locate(EXAMPLE)))
    bn = dict(model.layers)["batch_normalization_1"]
    seen, original = [], bn.forward
    bn.forward = lambda x, mode: seen.append(x.shape) or original(x, mode)
    x = model.preprocess(np.random.default_rng(0).integers(0, 256, (6, 28, 28)))
    model.set_masks(modes.to_scratch(model, modes.draw(model.spec, 6, 0, 0)))
    model.gradients(x, np.arange(6))
    assert seen == [(6, 32)]  # one training-mode call per step: the statistics move once


def test_shipped_model_state_is_the_running_statistics_and_set_state_writes_them():
    model = build(MODEL)
    state = model.state()
    assert {k: set(v) for k, v in state.items()} == {
        name: {"moving_mean", "moving_variance"} for name in CS231N_3LAYER_CHW.coupled()
    }
    model.set_state({"batch_normalization": {"moving_mean": np.full(8, 0.25),
                                             "moving_variance": np.full(8, 2.0)},
                     "batch_normalization_1": {"moving_mean": np.zeros(32),
                                               "moving_variance": np.ones(32)}})  # fmt: skip
    assert np.array_equal(dict(model.layers)["batch_normalization"].running_var, np.full(8, 2.0))


def test_a_missing_mask_in_training_mode_is_an_error_naming_the_layer():
    model = build(MODEL)
    x = model.preprocess(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="Layer `dropout`: no dropout mask for a batch"):
        model.forward(x)
    with pytest.raises(ValueError, match="one mask per dropout layer"):
        model.set_masks({})


# -- a user's classes judged in the network ---------------------------------------------------


@pytest.mark.keras
def test_example_passes_in_the_network():
    summary = _run(EXAMPLE, **IN_NETWORK)
    assert _failing(summary) == set()
    assert {"batch_normalization", "dropout"} <= set(summary["layer"])


@pytest.mark.keras
def test_batch_norm_backward_without_mean_term_fails_at_the_batch_norm_layers(tmp_path):
    failing = _failing(_run(_planted(tmp_path, BN_NO_MEAN_TERM), **IN_NETWORK))
    isolated = {(layer, q) for check, layer, q in failing if check == "isolation"}
    assert isolated == {("batch_normalization", "input"), ("batch_normalization_1", "input")}


@pytest.mark.keras
def test_dropout_redrawing_its_mask_in_backward_fails_at_the_dropout_layer(tmp_path):
    failing = _failing(_run(_planted(tmp_path, DROPOUT_NEW_MASK_IN_BACKWARD), **IN_NETWORK))
    assert {(layer, q) for check, layer, q in failing if check == "isolation"} == {
        ("dropout", "input")
    }
