"""Isolation pins a bug to the layer that makes it: each catalog bug in a layer's forward
or backward pass fails isolation rows of that layer only, while end-to-end gradients
fail downstream layers too."""

import pytest

from parity import catalog, runner

pytestmark = pytest.mark.keras

# catalog entry -> the (layer, quantity) rows of the layer that makes the mistake
PINNED = {
    "blog-all-ties-maxpool": {("max_pooling2d", "input")},
    "tie-to-last-max": {("max_pooling2d", "input")},
    "true-convolution": {("conv2d", "output")},
    "softmax-jacobian-wrong-sign": {("softmax", "input")},
    "softmax-jacobian-missing-square": {("softmax", "input")},
    "missing-bias-gradient": {("dense", "bias")},
    "conv-input-grad-no-flip": {("conv2d", "input")},
    "relu-drops-upstream": {("re_lu_1", "input")},
    "bias-grad-averaged": {("conv2d_1", "bias")},
    "stride-ignored-in-backward": {("conv2d_1", "input")},
    "off-by-one-window": {("conv2d", "kernel")},
    "avg-pool-backward-not-divided": {("average_pooling2d", "input")},
    "tanh-derivative-from-input": {("tanh", "input")},
}


def _failed(name: str):
    entry = catalog.BY_NAME[name]
    config = runner.RunConfig(models=(entry.model,), dtypes=("float64",), images=8,
                              checks=("gradients", "isolation"), states=("random",),
                              model_hooks=catalog.hooks_of(entry))  # fmt: skip
    try:
        summary = runner.run(config, in_process=True).summary
    finally:
        catalog.restore_globals()
    bad = summary[summary.status != "PASS"]
    return {(c, layer, q) for c, layer, q in zip(bad.check, bad.layer, bad.quantity, strict=True)}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_isolation_fails_only_the_layer_that_makes_the_mistake(name):
    failed = _failed(name)
    isolated = {(layer, q) for c, layer, q in failed if c == "isolation"}
    assert isolated == PINNED[name]


def test_end_to_end_gradients_blame_layers_upstream_of_the_mistake_too():
    failed = _failed("relu-drops-upstream")
    end_to_end = {layer for c, layer, _ in failed if c == "gradients"}
    assert {"re_lu_1", "conv2d_1", "conv2d"} <= end_to_end


def test_correct_code_passes_isolation_at_every_layer_and_weight():
    config = runner.RunConfig(models=("two-conv",), dtypes=("float64",), images=8,
                              checks=("isolation",), states=("random",))  # fmt: skip
    summary = runner.run(config, in_process=True).summary
    assert len(summary) == 2 * 8 + 6  # output and input of 8 layers, 6 weights
    assert (summary.status == "PASS").all()
