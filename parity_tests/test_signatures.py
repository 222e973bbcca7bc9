"""Signatures of well-known mistakes (parity/diagnosis/signatures.py): each named, at the
right layer, on its planted bug, and none on correct code."""

import pytest

from parity import catalog, runner

pytestmark = pytest.mark.keras


def _diagnosis(model: str, hooks=()):
    config = runner.RunConfig(models=(model,), dtypes=("float64",), images=8,
                              checks=("gradients", "diagnosis"), states=("random",),
                              model_hooks=hooks)  # fmt: skip
    try:
        return runner.run(config, in_process=True).tables["diagnosis"]
    finally:
        catalog.restore_globals()


@pytest.mark.parametrize("entry,layer,signature", [
    ("blog-all-ties-maxpool", "max_pooling2d", "pool-mass-not-conserved"),
    ("tie-to-last-max", "max_pooling2d", "ties-to-last-maximum"),
    ("gradient-buffer-never-reset", "conv2d_1", "accumulating-gradients"),
    ("blog-update-plus-equals", "dense", "gradient-sign-flipped"),
])  # fmt: skip
def test_each_signature_is_named_at_its_layer(entry, layer, signature):
    found = _diagnosis(catalog.BY_NAME[entry].model, catalog.hooks_of(catalog.BY_NAME[entry]))
    assert set(zip(found.layer, found.signature, strict=True)) == {(layer, signature)}


def test_the_blogs_rule_is_named_as_copying_to_every_tied_maximum():
    entry = catalog.BY_NAME["blog-all-ties-maxpool"]
    found = _diagnosis(entry.model, catalog.hooks_of(entry))
    assert "copied to every tied maximum" in found.advice.iloc[0]


@pytest.mark.parametrize("model", ["zhou", "two-conv", "chw-relu", "nhwc-odd"])
def test_correct_code_shows_no_signature(model):
    assert _diagnosis(model).empty
