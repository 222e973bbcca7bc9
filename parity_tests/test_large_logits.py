"""The large-logits state (parity/checks/large_logits.py) and the softmax-overflow signature:
correct code passes there on every model and dtype; a softmax without max subtraction fails
there only, and is named."""

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from parity import catalog, runner, tolerances
from parity.checks import common, large_logits
from parity.compare import ERROR, FAIL, NOT_PROVIDED, PASS, compare
from parity.data import load_mnist
from scratch.models import MODEL_NAMES, build
from scratch.user_code import locate

STATE = (large_logits.STATE,)
CHECKS = ("forward", "gradients", "diagnosis")
BUGS = ("softmax-without-max-subtraction", "softmax-loss-without-max-subtraction")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "blog"


@pytest.fixture(scope="module")
def images():
    return load_mnist().test_images[:16]


# -- the construction (numpy only) ----------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_thresholds_are_past_the_largest_exp_that_is_finite(dtype):
    limit = math.log(np.finfo(dtype).max)  # 709.78, 88.72
    threshold = np.dtype(dtype).type(large_logits.OVERFLOW_LOGIT[dtype])
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(threshold)) and np.isfinite(np.exp(np.dtype(dtype).type(limit - 1)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["zhou", "chw", "lenet5"])
def test_the_shift_lifts_every_images_largest_logit_and_keeps_its_probabilities(
        name, dtype, images):  # fmt: skip
    model = build(name, seed=3, dtype=dtype)
    common.randomize(model, 3)
    x, layer = model.preprocess(images), large_logits.logits_layer(model)
    before = model.forward(x)
    labels = large_logits.shift_bias(model, before[layer])
    after = model.forward(x)
    threshold = large_logits.OVERFLOW_LOGIT[dtype]
    assert (after[layer].max(axis=1) >= threshold).all()
    assert after[layer].max() < 2 ** math.ceil(math.log2(threshold))  # one binade: one ulp
    assert (labels == before[layer].argmax(axis=1)).all()
    tol = tolerances.get(large_logits.BUDGET, dtype)
    same = compare(after["softmax"], before["softmax"], layer="softmax", quantity="output",
                   atol=tol.atol, rtol=tol.rtol)  # fmt: skip
    assert same.passed, same.message


def test_the_logits_layer_is_the_dense_before_the_softmax():
    assert large_logits.logits_layer(build("zhou")) == "dense"
    assert large_logits.logits_layer(build("lenet5")) == "dense_2"


def test_non_finite_logits_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="argument `logits`.*1 non-finite"):
        large_logits.shift_bias(build("zhou"), np.array([[0.0, np.nan]]))


# -- correct code ---------------------------------------------------------------------------


def _run(models, dtype="float64", hooks=(), in_process=True, **config):
    config = runner.RunConfig(
        models=tuple(models),
        dtypes=(dtype,),
        images=16,
        model_hooks=hooks,
        **{"checks": CHECKS, "states": STATE, **config},
    )
    try:
        return runner.run(config, in_process=in_process)
    finally:
        catalog.restore_globals()


@pytest.mark.keras
def test_correct_code_passes_on_every_model_float64_with_no_signature():
    results = _run(MODEL_NAMES)
    assert set(results.summary["status"]) == {PASS}
    assert set(results.tables["forward"]["state"]) == set(STATE)
    assert results.tables["diagnosis"].empty


@pytest.mark.keras
def test_correct_code_passes_on_every_model_float32_with_no_signature():
    results = _run(MODEL_NAMES, "float32", in_process=False)  # its own process
    assert set(results.summary["status"]) == {PASS}
    assert results.tables["diagnosis"].empty


@pytest.mark.keras
def test_the_state_runs_forward_and_gradients_only():
    tables = _run(("two-conv",), checks=runner.RunConfig().checks).tables
    ran = {
        t for t in ("forward", "gradients", "isolation", "ties", "derivations") if len(tables[t])
    }
    assert ran == {"forward", "gradients"}
    keys = zip(tables["gradients"].layer, tables["gradients"].quantity, strict=True)
    assert ("loss", "value") in set(keys)


# -- a softmax without max subtraction ------------------------------------------------------


@pytest.mark.keras
@pytest.mark.parametrize("bug", BUGS)
def test_planted_bug_passes_every_other_state(bug):
    entry = catalog.BY_NAME[bug]
    summary = _run((entry.model,), hooks=catalog.hooks_of(entry),
                   states=("initial", "trained", "random")).summary  # fmt: skip
    assert set(summary["status"]) == {PASS}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bug,forward_failing", [
    ("softmax-without-max-subtraction", {"softmax"}),
    ("softmax-loss-without-max-subtraction", set()),  # the probabilities are the harness's
])  # fmt: skip
@pytest.mark.keras
def test_planted_bug_fails_at_the_state_and_is_named(bug, forward_failing, dtype):
    entry = catalog.BY_NAME[bug]
    results = _run((entry.model,), dtype, catalog.hooks_of(entry), in_process=dtype == "float64")
    bad = results.summary[results.summary["status"] != PASS]
    assert set(bad.layer[bad.check == "forward"]) == forward_failing
    assert ("gradients", "loss") in set(zip(bad["check"], bad["layer"], strict=True))
    assert set(bad["status"]) == {FAIL} and bad["message"].str.contains("non-finite").all()
    found = results.tables["diagnosis"]
    assert list(zip(found.layer, found.signature, strict=True)) == [("softmax", "softmax-overflow")]
    peak = re.search(r"overflow at logits of (\d+):", found.evidence.iloc[0])
    assert int(peak.group(1)) >= large_logits.OVERFLOW_LOGIT[dtype], found.evidence.iloc[0]
    assert "subtract the row maximum before exp" in found.advice.iloc[0]


@dataclass(frozen=True)
class RaisingExp:
    """zhou's Softmax.forward taking exp with Python's math.exp (OverflowError) or NumPy set
    to raise (FloatingPointError), as loop-style user code does."""

    how: str

    def __call__(self, model) -> None:
        layer = model.net.softmax
        original = layer.forward

        def forward(input):
            totals = np.asarray(input, dtype=layer.dtype).reshape(-1) @ layer.weights
            if self.how == "math":
                for total in totals + layer.biases:
                    math.exp(total)
            else:
                with np.errstate(over="raise"):
                    np.exp(totals + layer.biases)
            return original(input)

        layer.forward = forward


@pytest.mark.keras
@pytest.mark.parametrize("how,raised", [("math", "OverflowError"), ("numpy", "FloatingPointError")])
def test_an_overflow_the_code_raises_is_an_error_row_with_the_signature(how, raised):
    results = _run(("zhou",), hooks=(RaisingExp(how),))
    assert set(results.summary["status"]) == {ERROR}
    assert results.summary["message"].str.contains(raised).all()
    found = results.tables["diagnosis"]
    assert list(found.signature) == ["softmax-overflow"]
    assert f"your code raised {raised}" in found.evidence.iloc[0]


# -- a user's blog code ---------------------------------------------------------------------


def _user_run(folder):
    code = locate(folder)
    config = runner.RunConfig(models=(code.name,), dtypes=("float64",), images=4,
                              user_code=(code,), checks=CHECKS, states=STATE)  # fmt: skip
    return runner.run(config, in_process=True)


@pytest.mark.keras
@pytest.mark.parametrize("example", [EXAMPLE, EXAMPLE.parent / "cs231n" / "layers.py"])
def test_the_examples_subtract_the_maximum_and_pass(example):
    assert set(_user_run(example).summary["status"]) <= {PASS, NOT_PROVIDED}  # conv2d/input


@pytest.mark.keras
def test_the_blogs_published_softmax_is_named(tmp_path):
    folder = _copy_example(tmp_path)
    text = (folder / "softmax.py").read_text()
    assert text.count("np.exp(totals - totals.max())") == 1
    (folder / "softmax.py").write_text(
        text.replace("np.exp(totals - totals.max())", "np.exp(totals)")
    )  # the blog's line
    results = _user_run(folder)
    assert {("forward", "softmax"), ("gradients", "loss")} <= _failing(results)
    assert list(results.tables["diagnosis"].signature) == ["softmax-overflow"]


@pytest.mark.keras
def test_a_backward_pass_that_takes_exp_unshifted_is_named(tmp_path):
    text = (_copy_example(tmp_path) / "softmax.py").read_text()
    shifted = "np.exp(self.last_totals - self.last_totals.max())"
    assert text.count(shifted) == 1
    (tmp_path / "code" / "softmax.py").write_text(text.replace(shifted, "np.exp(self.last_totals)"))
    results = _user_run(tmp_path / "code")
    failing = _failing(results)
    assert ("gradients", "dense") in failing and {c for c, _ in failing} == {"gradients"}
    found = results.tables["diagnosis"]
    assert list(found.signature) == ["softmax-overflow"]
    assert "the backward pass takes exp of the logits again" in found.evidence.iloc[0]


def _copy_example(tmp_path) -> Path:
    folder = tmp_path / "code"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _failing(results) -> set:
    bad = results.summary[results.summary["status"] != PASS]
    return set(zip(bad["check"], bad["layer"], strict=True))
