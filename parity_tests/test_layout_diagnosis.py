"""Layout diagnosis (parity/diagnosis/layout.py): each catalog layout bug named by its
transform at its layer; nothing named on correct code or on bugs that are not layouts."""

from dataclasses import dataclass

import numpy as np
import pytest

from parity import catalog, runner
from parity.checks.common import Context, randomize
from parity.diagnosis import layout as diagnosis
from parity.plant import ScaleOutput  # not a layout bug: every candidate is tried
from spec import Flip

pytestmark = pytest.mark.keras


def _run(model: str, hooks=(), dtype="float64"):
    """float64 in this process; float32 in its own (Keras floatx is per process)."""
    config = runner.RunConfig(models=(model,), dtypes=(dtype,), images=8,
                              checks=("forward", "gradients", "isolation", "diagnosis"),
                              states=("random",), model_hooks=hooks)  # fmt: skip
    try:
        return runner.run(config, in_process=dtype == "float64")
    finally:
        catalog.restore_globals()


def _layout_rows(results):
    found = results.tables["diagnosis"]
    return found[found.signature == diagnosis.SIGNATURE]


def _named(results) -> set:
    rows = _layout_rows(results)
    return set(zip(rows["layer"], rows["transform"], strict=True))


@pytest.mark.parametrize("entry,layer,transform,words", [
    ("true-convolution", "conv2d", "true-convolution",
     "the kernel is flipped in both spatial axes: your layer computes a true convolution; "
     "Keras computes cross-correlation"),
    ("filters-reshape-not-transpose", "conv2d", "converted-by-reshape-F-kh-kw",
     "the kernel is held as (F, kh, kw) and converted to Keras's (kh, kw, F) by a reshape "
     "where a transpose is needed"),
    ("chw-rows-not-permuted", "dense", "rows-CHW",
     "the kernel's rows follow the flatten order C, H, W of its (13, 13, 8) input; Keras's "
     "Flatten orders them H, W, C"),
    ("pad-all-axes", "conv2d", "batch-shifted-1",
     "example n of your layer's output is computed from example n-1"),
])  # fmt: skip
def test_each_catalog_layout_bug_is_named_at_its_layer(entry, layer, transform, words):
    results = _run(catalog.BY_NAME[entry].model, catalog.hooks_of(catalog.BY_NAME[entry]))
    assert _named(results) == {(layer, transform)}
    assert _layout_rows(results).evidence.iloc[0].startswith(words)


@pytest.mark.parametrize("model", ["zhou", "two-conv", "chw", "chw-relu", "zhou-seq",
                                   "nhwc-odd", "chw-odd"])  # fmt: skip
def test_correct_code_gets_no_layout_diagnosis_even_when_every_layer_is_searched(
    model, monkeypatch
):
    monkeypatch.setattr(
        diagnosis, "failing_layers", lambda rows, state: {"conv2d", "conv2d_1", "conv2d_2", "dense"}
    )
    results = _run(model)
    assert results.passed
    assert _layout_rows(results).empty


@pytest.mark.parametrize("model,hooks", [
    ("zhou", catalog.hooks_of(catalog.BY_NAME["off-by-one-window"])),
    ("zhou", catalog.hooks_of(catalog.BY_NAME["softmax-jacobian-wrong-sign"])),
    ("two-conv", (ScaleOutput("conv2d_1", 1.5),)),
    ("two-conv", (ScaleOutput("dense", 1.5),)),
], ids=["off-by-one-window", "softmax-jacobian-wrong-sign", "scaled-conv",
        "scaled-dense"])  # fmt: skip
def test_a_bug_that_is_not_a_layout_gets_no_layout_diagnosis(model, hooks):
    results = _run(model, hooks)
    assert not results.passed  # the bug is caught, just not named a layout
    assert _layout_rows(results).empty


@dataclass(frozen=True)
class PlantedLayout:
    """The scratch layer computes with ``T(K)`` (K: its kernel in Keras layout): its
    conversion to Keras goes through the inverse of the candidate's records."""

    network: str
    layer: str
    candidate: str

    def __call__(self, model) -> None:
        catalog._install_layout_dispatch()
        model.selftest_layout_bug = self

    def corrupt(self, layout):
        from spec.candidates import Inverse, candidates, pairs

        network = layout.network
        found = {c.name: c for c in candidates(network, self.layer) + pairs(network, self.layer)}
        for weight, records in found[self.candidate].weights:
            inverse = tuple(Inverse(r) for r in reversed(records))
            rule = layout.rule(self.layer, weight)
            layout = layout.with_transforms(self.layer, weight, rule.transforms + inverse)
        return layout


@pytest.mark.parametrize("model,layer,transform", [
    ("two-conv", "dense", "converted-by-reshape-units-inputs"),
    ("two-conv", "conv2d_1", "input-channels-reversed"),
    ("two-conv", "conv2d_1", "output-channels-reversed"),
    ("nhwc-odd", "conv2d_2", "layer-reshapes-F-C-kh-kw"),
    ("chw-odd", "conv2d_1", "true-convolution + converted-by-reshape-F-C-kh-kw"),
    ("two-conv", "dense", "layer-reshapes-units-inputs + rows-WHC"),
])  # fmt: skip
def test_a_planted_candidate_or_pair_is_named(model, layer, transform):
    results = _run(model, (PlantedLayout(model, layer, transform),))
    assert _named(results) == {(layer, transform)}


def test_two_catalog_bugs_on_one_kernel_are_named_as_a_pair():
    hooks = (catalog.TrueConvolution(), catalog.FiltersReshapeNotTranspose())
    results = _run("zhou", hooks)
    assert _named(results) == {("conv2d", "converted-by-reshape-F-kh-kw + true-convolution")}
    # the catalog's true convolution flips the kernel in forward only: its backward is
    # cross-correlation's, so both gradients stay wrong under the pair, and it says so
    assert "input, kernel still differ: a second mistake" in _layout_rows(results).evidence.iloc[0]


def test_only_the_random_state_is_searched():
    entry = catalog.BY_NAME["true-convolution"]
    config = runner.RunConfig(models=("zhou",), dtypes=("float64",), images=8,
                              checks=("forward", "diagnosis"), states=("initial", "random"),
                              model_hooks=catalog.hooks_of(entry))  # fmt: skip
    try:
        found = runner.run(config, in_process=True).tables["diagnosis"]
    finally:
        catalog.restore_globals()
    assert set(found.state) == {"random"}


def test_the_search_restores_the_twins_weights_bit_for_bit():
    from parity.data import load_mnist
    from reference.twin import keras_weights, twin
    from scratch.models import build

    model = build("two-conv", seed=0, dtype="float64")
    ScaleOutput("conv2d_1", 1.5)(model)
    randomize(model, 0)
    data = load_mnist()
    ctx = Context("two-conv", "float64", model, data.test_images[:4], data.test_labels[:4], 0)
    ctx.set_twin(twin(model, "float64"), diagnosis.STATE)
    before = keras_weights(ctx.twin)
    assert diagnosis.layout_rows(ctx, {"conv2d_1"}) == []
    after = keras_weights(ctx.twin)
    for layer, weights in before.items():
        for name, value in weights.items():
            assert np.array_equal(after[layer][name], value), (layer, name)


def test_a_flip_is_found_in_float32_too():
    results = _run("zhou", catalog.hooks_of(catalog.BY_NAME["true-convolution"]), "float32")
    assert _named(results) == {("conv2d", "true-convolution")}
    assert repr(Flip((0, 1))) in _layout_rows(results).evidence.iloc[0]
