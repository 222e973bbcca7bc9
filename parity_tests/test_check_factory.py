from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parity import runner
from parity.checks import preprocessing
from parity.compare import FAIL, NOT_PROVIDED, PASS, is_failure
from scratch.user_code import UserCode, UserCodeError, locate
from scratch.user_factory import Subject, call_factory

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "factory" / "net.py"
# 2 images: the example's full check is mostly finite differences, a forward pass per image for
# each point; what the tests judge does not depend on the count
FAST = ("--epochs", "0", "--images", "2", "--dtypes", "float64")
QUICK = dict(checks=("forward", "gradients", "isolation", "preprocessing"), states=("random",))

# Planted faults: (old text present exactly once in the example, new text).
POOL_KEEPS_PARTIAL_WINDOW = [
    ("        h, w = height // 2, width // 2\n        cells = x[:, : 2 * h, : 2 * w]",
     "        h, w = (height + 1) // 2, (width + 1) // 2\n"
     "        x = np.pad(x, ((0, 0), (0, 2 * h - height), (0, 2 * w - width)), "
     "constant_values=-np.inf)\n        cells = x"),
    ("dx[:, : 2 * h, : 2 * w] = grid.reshape(channels, 2 * h, 2 * w)",
     "dx[...] = grid.reshape(channels, 2 * h, 2 * w)[:, : dx.shape[1], : dx.shape[2]]"),
]  # fmt: skip
CENTRED_IN_UINT8 = [
    ("x = images.astype(dtype) / 255 - 0.5", "x = (images - 128).astype(dtype) / 255")
]
LEFT_IN_0_255 = [("x = images.astype(dtype) / 255 - 0.5", "x = images.astype(dtype)")]


def _planted(tmp_path, edits, name="net.py") -> Path:
    text = EXAMPLE.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(path, **config) -> pd.DataFrame:
    """The checks of ``parity check PATH:make_network`` in this process; the summary."""
    code = UserCode(str(path), "factory", function="make_network")
    config = runner.RunConfig(models=(code.name,), dtypes=("float64",), images=4,
                              user_code=(code,), **config)  # fmt: skip
    return runner.run(config, in_process=True).summary


def _failing(summary) -> set:
    bad = summary[summary["status"].map(is_failure)]
    return {f"{lay}/{q}" for lay, q in zip(bad["layer"], bad["quantity"], strict=True)}


# -- the example ------------------------------------------------------------------------------


@pytest.mark.keras
def test_factory_example_passes_every_check_and_names_the_users_classes(check):
    code, summary = check(f"{EXAMPLE}:make_network", *FAST)
    assert code == 0 and set(summary["status"]) == {PASS}
    assert "preprocessing/input" in set(summary["layer"] + "/" + summary["quantity"])
    classes = dict(zip(summary["layer"], summary["user_class"].fillna(""), strict=True))
    assert classes["conv2d_1"] == "Conv" and classes["max_pooling2d"] == "MaxPool2x2"
    assert classes["softmax"] == "softmax_loss"


@pytest.mark.keras
def test_factory_example_trains_in_lockstep_with_keras():
    training = runner.TrainingOptions(epochs=1, batch_size=4, train_size=16, test_size=8,
                                      keras_paths=("tape",))  # fmt: skip
    summary = _run(EXAMPLE, checks=(), states=(), training=training)
    assert set(summary["check"]) == {"training"} and set(summary["status"]) == {PASS}


# -- planted faults, each named at its layer --------------------------------------------------


@pytest.mark.keras
def test_pool_keeping_a_partial_window_fails_at_the_pool(tmp_path):
    summary = _run(_planted(tmp_path, POOL_KEEPS_PARTIAL_WINDOW), **QUICK)
    assert _failing(summary) == {"max_pooling2d/output"}
    message = summary[summary["status"] == FAIL]["message"].iloc[0]
    assert "(10, 7, 7) per image; network `my-net` says (10, 6, 6)" in message


@pytest.mark.parametrize(
    "edit,hint",
    [(CENTRED_IN_UINT8, "centring done in uint8 wraps around"),
     (LEFT_IN_0_255, "left in [0, 255]")],
    ids=["centred-in-uint8", "left-in-0-255"],
)  # fmt: skip
def test_preprocessing_fault_fails_at_preprocessing_with_a_hint(tmp_path, edit, hint, mnist):
    rows = _preprocessing_rows(_planted(tmp_path, edit), mnist.test_images[:8])
    assert [(r["layer"], r["quantity"], r["status"]) for r in rows] == [
        ("preprocessing", "input", FAIL)
    ]
    assert hint in rows[0]["message"]


NO_PREPROCESS = [("preprocess=functools.partial(preprocess, dtype=dtype),  # optional", "")]
LEFT_IN_FLOAT64 = [("x = images.astype(dtype) / 255 - 0.5", "x = images / 255 - 0.5")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_correct_preprocessing_passes_in_each_dtype(mnist, dtype):
    rows = _preprocessing_rows(EXAMPLE, mnist.test_images[:8], dtype)
    assert [(r["status"], r["dtype"], r["array_dtype"]) for r in rows] == [(PASS, dtype, dtype)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_absent_preprocessing_is_not_provided_saying_the_documented_one_is_assumed(
    tmp_path, mnist, dtype
):
    rows = _preprocessing_rows(_planted(tmp_path, NO_PREPROCESS), mnist.test_images[:8], dtype)
    assert [(r["layer"], r["quantity"], r["status"]) for r in rows] == [
        ("preprocessing", "input", NOT_PROVIDED)
    ]
    assert "supplies no `preprocess`" in rows[0]["message"]
    assert "image / 255 - 0.5, is assumed" in rows[0]["message"]


@pytest.mark.parametrize("edits,hint", [(CENTRED_IN_UINT8, "wraps around"),
                                        (LEFT_IN_0_255, "left in [0, 255]")])  # fmt: skip
def test_preprocessing_fault_fails_in_float32_too(tmp_path, mnist, edits, hint):
    # A float32-only run judges the user's float32 preprocessing (it has no float64 process).
    rows = _preprocessing_rows(_planted(tmp_path, edits), mnist.test_images[:8], "float32")
    assert [r["status"] for r in rows] == [FAIL] and hint in rows[0]["message"]


def test_float64_preprocessing_in_a_float32_run_fails_at_the_dtype_stage(tmp_path, mnist):
    rows = _preprocessing_rows(_planted(tmp_path, LEFT_IN_FLOAT64), mnist.test_images[:8],
                               "float32")  # fmt: skip
    assert [r["status"] for r in rows] == [FAIL] and rows[0]["message"].startswith("dtype:")


def test_float32_budget_covers_correct_float32_preprocessings(mnist):
    # The ways people write image / 255 - 0.5 in float32, all correct, against the
    # reference (x / 255 in float32, then - 0.5): within PREPROCESSING_FLOAT32, and the
    # worst is the measured 1 ulp(0.5) the budget records.
    from parity import tolerances

    x = np.concatenate([mnist.train_images, mnist.test_images])
    f = np.float32
    reference = x.astype(f) / f(255) + f(-0.5)
    variants = [x.astype(f) / f(255) - f(0.5), (x / 255 - 0.5).astype(f),
                x.astype(f) * f(1 / 255) - f(0.5), (x.astype(f) - f(127.5)) / f(255)]  # fmt: skip
    budget = tolerances.PREPROCESSING_FLOAT32
    errors = [np.abs(v.astype(np.float64) - reference).max() / 0.5 for v in variants]
    assert max(errors) == pytest.approx(budget.measured, rel=0.01)
    assert max(errors) <= budget.rtol


@pytest.mark.keras
def test_a_preprocessing_fault_is_reported_once_at_preprocessing(tmp_path):
    summary = _run(_planted(tmp_path, CENTRED_IN_UINT8), **QUICK)
    assert _failing(summary) == {"preprocessing/input"}


def _preprocessing_rows(path, images, dtype="float64") -> list[dict]:
    from parity.checks.common import Context
    from scratch.user_factory import UserFactoryModel

    code = locate(f"{path}:make_network")
    model = UserFactoryModel(call_factory(code, dtype=dtype), dtype=dtype)
    ctx = Context("user", dtype, model, images, np.zeros(len(images), int), 0, state="-")
    return preprocessing.preprocessing_rows(ctx)


@pytest.fixture(scope="module")
def mnist():
    from parity.data import load_mnist

    return load_mnist()


# -- bad factories: exit 2, the message names the attribute, the rule and the value -----------

# case -> (the edit, what the message must say)
BAD_RETURNS = {
    "not-a-subject": (("return Subject(", "return {'network': NETWORK}\n    return Subject("),
                      "invalid `the return value`. Expected a scratch.user_factory.Subject. "
                      "Received a dict."),
    "too-few-layers": (("layers=layers,", "layers=layers[:4],"),
                       "invalid `Subject.layers`. Expected 5 layers, one per layer of network "
                       "`my-net` but the folded ones and the Softmax: conv2d (Conv2D), re_lu "
                       "(ReLU), conv2d_1 (Conv2D), max_pooling2d (MaxPooling2D), dense (Dense). "
                       "Received 4: Conv, ReLU, Conv, MaxPool2x2."),
    "wrong-kernel-shape": (("Conv(6, 10, 2, rng", "Conv(6, 10, 3, rng"),
                           "invalid `Subject.layers[2] (Conv, layer `conv2d_1`).filters`. "
                           "Expected shape (10, 6, 2, 2) (network `my-net`). Received shape "
                           "(10, 6, 3, 3)."),
    "loss-not-callable": (("loss=softmax_loss,", "loss='softmax_loss',"),
                          "invalid `Subject.loss`. Expected a function. Received a str."),
    "backward-signature": (("    def backward(self, dout):\n        channels, h, w, _",
                            "    def backward(self):\n        channels, h, w, _"),
                           "in MaxPool2x2.backward: the signature () cannot take the call "
                           "MaxPool2x2.backward(dout)"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_RETURNS))
def test_bad_factory_return_exits_2_naming_the_attribute(tmp_path, check, capsys, case):
    edit, message = BAD_RETURNS[case]
    path = _planted(tmp_path, [edit])
    code, summary = check(f"{path}:make_network", *FAST)
    err = capsys.readouterr().err
    assert code == 2 and summary is None
    assert f"{path}:make_network(seed=0, dtype=float64)" in err and message in err


def test_float32_weights_in_a_float64_call_are_named(tmp_path):
    path = _planted(tmp_path, [("Linear(360, 10, rng=rng, dtype=dtype)",
                                "Linear(360, 10, rng=rng, dtype='float32')")])  # fmt: skip
    with pytest.raises(UserCodeError, match=r"Subject.layers\[4\] \(Linear, layer `dense`\)"
                       r".weights`. Expected dtype float64 .* Received dtype float32"):  # fmt: skip
        call_factory(locate(f"{path}:make_network"))


@pytest.mark.parametrize(
    "target,message",
    [("{path}:make_netwrk", "defines no function `make_netwrk` (not defined; found: net.py: "),
     ("{path}:NETWORK", "defines no function `NETWORK` (it is a assignment"),
     ("{missing}:make_network", "no such file"),
     ("{raising}:make_network", "raised ZeroDivisionError: division by zero (at ")],
    ids=["missing-function", "not-a-function", "missing-file", "factory-raises"],
)  # fmt: skip
def test_factory_that_cannot_be_called_exits_2(tmp_path, check, capsys, target, message):
    raising = _planted(tmp_path, [("rng = np.random.default_rng(seed)", "1 / 0")], "raising.py")
    given = target.format(path=EXAMPLE, missing=tmp_path / "nope.py", raising=raising)
    code, summary = check(given, *FAST)
    assert code == 2 and summary is None and message in capsys.readouterr().err


def test_api_option_with_a_factory_exits_2(check, capsys):
    code, _ = check(f"{EXAMPLE}:make_network", "--api", "cs231n", *FAST)
    assert code == 2 and "Expected it left out (auto) with PATH:FUNCTION" in capsys.readouterr().err


def test_subject_is_the_documented_return_type():
    subject = call_factory(locate(f"{EXAMPLE}:make_network"), seed=1, dtype="float32")
    assert isinstance(subject, Subject) and subject.network.name == "my-net"
    assert all(p.dtype == np.float32 for p in (subject.layers[0].filters, subject.layers[4].bias))
