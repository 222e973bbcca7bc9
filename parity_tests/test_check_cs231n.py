import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import narrowed_run

from parity import cli, runner
from parity.checks import sweep
from parity.compare import ERROR, FAIL, PASS, is_failure
from parity.testing import planted_copy
from scratch.chw_model import build_chw_relu
from scratch.cs231n_api import ChannelsFirstModel
from scratch.user_code import UserCode, UserCodeError, load, locate
from scratch.user_cs231n import UserCs231nModel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n" / "layers.py"
# 2 images: the full checks (the examples and relu-in-place) are mostly finite differences, a
# forward pass per image for each point; what the tests judge does not depend on the count
FAST = ("--epochs", "0", "--images", "2", "--dtypes", "float64")
CHECKS = dict(checks=("forward", "gradients", "isolation"), states=("random",))
IN_PLACE_MESSAGE = "layer `re_lu` (ReLU) modified its input in place"

# Planted faults: (old text present exactly once in the example, new text).
RELU_IN_PLACE = ("        return np.maximum(x, 0)\n", "        x[x < 0] = 0\n        return x\n")
LINEAR_HWC = ("self.flat = x.reshape(-1)  # C, H, W order",
              "self.flat = x.transpose(1, 2, 0).reshape(-1)")  # fmt: skip
DSCORES_NOT_DIVIDED = ("    dscores /= n\n", "")
DW_F_C_SWAPPED = (
    "dw[:, :, i, j] = np.tensordot(dout, self.x_pad[where], axes=([1, 2], [1, 2]))",
    "dw[:, :, i, j] = np.tensordot(self.x_pad[where], dout, axes=([1, 2], [1, 2])).reshape("
    "dw.shape[:2])",  # (C, F) read as (F, C): exact when C = 1 or F = 1
)
DX_STRIDE_MISSING = (
    "dx_pad[where] +=",
    "dx_pad[:, i : i + dout.shape[1], j : j + dout.shape[2]] +=",
)
BACKWARD_ONLY_DX = ("return dx, dw, dout.copy()", "return dx")
PAD_EVERY_AXIS = ("np.pad(x, ((0, 0), (p, p), (p, p)))", "np.pad(x, p)")
SWEEP_ONLY = dict(checks=("sweep",), states=())


def _planted(tmp_path, *edits) -> Path:
    return planted_copy(EXAMPLE, tmp_path, *edits)


def _run(path, network="", **config) -> pd.DataFrame:
    """The checks of ``parity check --api cs231n`` on ``path`` in this process; the summary."""
    code = UserCode(str(path), "cs231n", network=network)
    config = runner.RunConfig(models=(code.name,), dtypes=("float64",), images=4,
                              user_code=(code,), **config)  # fmt: skip
    return runner.run(config, in_process=True).summary


def _failing(summary) -> set:
    bad = summary[summary["status"].map(is_failure)]
    return {f"{c} {lay}/{q}" for c, lay, q in zip(bad["check"], bad["layer"], bad["quantity"],
                                                  strict=True)}  # fmt: skip


def _isolated(summary) -> set:
    return {key.split(" ")[1] for key in _failing(summary) if key.startswith("isolation ")}


@pytest.fixture(scope="module")
def mnist():
    from parity.data import load_mnist

    return load_mnist()


# -- the example and the one adapter ----------------------------------------------------------


@pytest.mark.keras
def test_example_passes_and_names_the_users_classes(check):
    code, summary = check(EXAMPLE, *FAST)
    assert code == 0 and set(summary["status"]) == {PASS}
    classes = dict(zip(summary["layer"], summary["user_class"].fillna(""), strict=True))
    assert classes == {"loss": "", "conv2d": "Conv", "re_lu": "ReLU",
                       "max_pooling2d": "MaxPool2x2", "dense": "Linear",
                       "softmax": "softmax_loss"}  # fmt: skip


@pytest.mark.keras
@pytest.mark.parametrize("optimizer,batch", [("sgd", 1), ("adam", 8)])
def test_training_the_example_through_its_returned_gradients_passes(optimizer, batch):
    training = runner.TrainingOptions(optimizer=optimizer, learning_rate=0.005, epochs=1,
                                      batch_size=batch, train_size=40, test_size=20,
                                      keras_paths=("tape",))  # fmt: skip
    summary = _run(EXAMPLE, checks=(), states=(), training=training)
    assert set(summary["check"]) == {"training"} and set(summary["status"]) == {PASS}


@pytest.mark.keras
def test_example_passes_on_chw_odd_with_channels_stride_and_padding():
    summary = _run(EXAMPLE, network="chw-odd", **CHECKS)
    assert set(summary["status"]) == {PASS} and "conv2d_1" in set(summary["layer"])


def test_shipped_chw_models_and_user_files_share_the_adapter():
    user = UserCs231nModel(load(locate(EXAMPLE, "cs231n")), seed=3)
    shipped = build_chw_relu(seed=3)
    assert isinstance(shipped, ChannelsFirstModel) and isinstance(user, ChannelsFirstModel)
    for layer, weights in shipped.params().items():  # the very weights chw-relu starts from
        for name, array in weights.items():
            np.testing.assert_array_equal(user.params()[layer][name], array)


# -- planted faults, each named at its layer --------------------------------------------------


@pytest.mark.keras
def test_relu_in_place_is_reported_as_in_place_and_blames_no_other_layer(tmp_path, check):
    code, summary = check(_planted(tmp_path, RELU_IN_PLACE), *FAST)  # every check and state
    assert code == 1 and _failing(summary) == {"gradients re_lu/input in place"}
    row = summary[summary["status"] == FAIL].iloc[0]
    assert IN_PLACE_MESSAGE in row["message"] and "ReLU.forward(x) changed" in row["message"]


@pytest.mark.keras
@pytest.mark.parametrize(
    "edit,pinned",
    [(LINEAR_HWC, {"dense/output", "dense/kernel"}), (DSCORES_NOT_DIVIDED, {"softmax/input"})],
    ids=["linear-flattens-hwc", "dscores-not-divided-by-n"],
)
def test_planted_fault_is_pinned_to_its_layer_by_isolation(tmp_path, edit, pinned):
    assert _isolated(_run(_planted(tmp_path, edit), **CHECKS)) == pinned


@pytest.mark.keras
@pytest.mark.parametrize(
    "edit,pinned",
    [(DW_F_C_SWAPPED, {"conv2d_1/kernel"}), (DX_STRIDE_MISSING, {"conv2d/input"})],
    ids=["dw-f-c-swapped", "dx-stride-missing"],
)
def test_fault_invisible_on_the_fixed_network_fails_on_chw_odd(tmp_path, edit, pinned):
    # The fixed network has C = 1 (dw's F/C mix-up is exact) and stride 1: both pass there.
    path = _planted(tmp_path, edit)
    assert _failing(_run(path, **CHECKS)) == set()
    assert _isolated(_run(path, network="chw-odd", **CHECKS)) == pinned


@pytest.mark.keras
def test_exception_in_the_users_method_is_an_error_row_exit_3(tmp_path, check, capsys):
    code, summary = check(_planted(tmp_path, BACKWARD_ONLY_DX), *FAST)
    assert code == 3
    message = summary.loc[summary["status"] == ERROR, "message"].iloc[0]
    assert "Linear.backward returned an array of shape (8, 13, 13)" in message
    assert "(dx, dw, db)" in message and "Traceback" not in capsys.readouterr().err
    # placed at the user's method that returned it, not at the adapter that noticed
    assert message.endswith(f"(at {tmp_path}/layers.py:112 in Linear.backward)"), message


# -- the sweep: each layer alone at settings the fixed network never uses ----------------------


def _sweep(path, seed=0) -> pd.DataFrame:
    code = UserCode(str(path), "cs231n")
    config = runner.RunConfig(models=(code.name,), dtypes=("float64",), seed=seed,
                              user_code=(code,), **SWEEP_ONLY)  # fmt: skip
    return runner.run(config, in_process=True).tables["sweep"]


def _bad(rows) -> pd.DataFrame:
    return rows[rows["status"] != PASS]


@pytest.fixture(scope="module")
def example_sweep():
    return _sweep(EXAMPLE, seed=0)


@pytest.mark.keras
def test_sweep_passes_the_example_at_every_setting_it_draws(example_sweep):
    rows = example_sweep
    assert len(rows) == 54 and set(rows["status"]) == {PASS}  # 6 convs x 4, 3 x (2+2+4+2)
    assert {"conv2d", "max_pooling2d", "re_lu", "dense", "softmax"} == set(rows["layer"])


@pytest.mark.keras
@pytest.mark.parametrize(
    "edit,failing,status,words",
    [(DW_F_C_SWAPPED, {"conv2d/kernel"}, {FAIL}, ""),
     (DX_STRIDE_MISSING, {"conv2d/input"}, {FAIL}, "stride=2"),
     (PAD_EVERY_AXIS, {"conv2d/-"}, {ERROR}, "pad=1")],
    ids=["dw-f-c-swapped", "dx-stride-missing", "np-pad-pads-the-channel-axis"],
)  # fmt: skip
def test_sweep_catches_faults_the_fixed_network_passes_naming_layer_and_setting(
    tmp_path, edit, failing, status, words
):
    bad = _bad(_sweep(_planted(tmp_path, edit)))
    assert set(bad["layer"] + "/" + bad["quantity"]) == failing and set(bad["status"]) == status
    assert all(m.startswith(f"{s}: ") for s, m in zip(bad["setting"], bad["message"], strict=True))
    assert all(words in s for s in bad["setting"]), set(bad["setting"])


@pytest.mark.keras
def test_sweep_rows_reach_the_summary_and_the_exit_code(tmp_path, check, monkeypatch):
    # The command's run at the initial weights only (the rows' way to the summary does not
    # depend on the state); the fault is exact on the fixed network, where C = 1
    # (test_fault_invisible_on_the_fixed_network_fails_on_chw_odd).
    narrowed_run(monkeypatch, in_process=True, states=("initial",))
    code, summary = check(_planted(tmp_path, DW_F_C_SWAPPED), *FAST)
    failed = summary[summary["status"] == FAIL]
    assert code == 1 and list(failed["check"] + " " + failed["layer"]) == ["sweep conv2d"]
    assert failed["message"].iloc[0].startswith("conv C=")


@pytest.mark.keras
def test_sweep_reruns_with_the_same_seed_give_identical_rows(example_sweep):
    first, again, other = example_sweep, _sweep(EXAMPLE, seed=0), _sweep(EXAMPLE, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert list(first["setting"]) != list(other["setting"])


def test_sweep_writes_nothing_into_hypothesis_storage_and_restores_its_home(tmp_path):
    from hypothesis import configuration

    home = tmp_path / "users-project" / ".hypothesis"  # where a user's run would write
    configuration.set_hypothesis_home_dir(home)
    try:
        sweep.draw_settings(seed=3)
        assert not home.exists()  # hypothesis caches constants there without the guard
        assert configuration.storage_directory(intent_to_write=False).home_directory == home
    finally:
        configuration.set_hypothesis_home_dir(None)


def test_sweep_settings_are_the_ones_the_fixed_network_never_uses():
    drawn = sweep.draw_settings(seed=3)
    assert drawn == sweep.draw_settings(seed=3)
    kinds = {
        kind: [s for s in drawn if s.kind == kind]
        for kind in ("conv", "pool", "relu", "linear", "loss")
    }
    assert [len(v) for v in kinds.values()] == [6, 3, 3, 3, 3]
    convs = kinds["conv"]
    assert all(s.C > 1 and s.F > 1 and s.F != s.C and s.H % 2 == s.W % 2 == 1 for s in convs)
    assert all(s.H != s.W for s in convs) and sum(s.stride == 2 and s.pad == 1 for s in convs) >= 3
    assert all(s.H % 2 == s.W % 2 == 1 for s in kinds["pool"])
    assert all(s.C * s.H * s.W != s.out for s in kinds["linear"])
    assert all(s.N > 1 for s in kinds["loss"])


# -- in place, without Keras: the adapter's watch ---------------------------------------------


def _in_place_relu(model):
    relu = dict(model.layers)["re_lu"]

    def forward(x):
        relu._mask = x > 0
        x[x < 0] = 0
        return x

    relu.forward = forward


def _in_place_relu_backward(model):
    relu = dict(model.layers)["re_lu"]

    def backward(dout):
        dout[~relu._mask] = 0
        return dout

    relu.backward = backward


@pytest.mark.parametrize(
    "plant,key,words",
    [(_in_place_relu, ("re_lu", "forward"), "ReLU.forward(x) changed"),
     (_in_place_relu_backward, ("re_lu", "backward"), "ReLU.backward(dout) changed")],
    ids=["forward-x", "backward-dout"],
)  # fmt: skip
def test_a_write_into_the_callers_array_is_recorded_and_kept_out_of_other_values(
    mnist, plant, key, words
):
    clean, planted = build_chw_relu(seed=1), build_chw_relu(seed=1)
    plant(planted)
    x, y = clean.preprocess(mnist.train_images[:3]), mnist.train_labels[:3]
    (_, ours), (_, theirs) = planted.gradients(x, y), clean.gradients(x, y)
    ours["forward"], theirs["forward"] = planted.forward(x), clean.forward(x)
    assert list(planted.modified_inputs()) == [key] and clean.modified_inputs() == {}
    assert (
        IN_PLACE_MESSAGE in planted.modified_inputs()[key]
        and words in planted.modified_inputs()[key]
    )
    for layer, quantities in theirs.items():
        for quantity, array in quantities.items():
            np.testing.assert_array_equal(
                ours[layer][quantity], array, err_msg=f"{layer} {quantity}"
            )


def test_softmax_loss_writing_into_the_scores_is_recorded(mnist):
    model = build_chw_relu()

    def shifting_loss(scores, y):
        from scratch.chw import softmax_loss

        scores -= scores.max(axis=1, keepdims=True)  # the caller's scores, in place
        return softmax_loss(scores, y)

    model.loss_function = shifting_loss
    model.gradients(model.preprocess(mnist.train_images[:2]), mnist.train_labels[:2])
    message = model.modified_inputs()[("softmax", "forward")]
    assert message.startswith("layer `softmax` (softmax_loss) modified its input in place")


# -- locating the code ------------------------------------------------------------------------


def test_auto_picks_cs231n_from_the_names_a_file_defines():
    assert locate(EXAMPLE).api == "cs231n" and locate(EXAMPLE.parents[1] / "blog").api == "blog"


def test_relu_is_used_when_the_file_defines_it(tmp_path):
    text = EXAMPLE.read_text()
    start, end = text.index("class ReLU:"), text.index("class MaxPool2x2:")
    path = tmp_path / "no_relu.py"
    path.write_text(text[:start] + text[end:])
    model = UserCs231nModel(load(locate(path)))
    assert model.layer_names == ("conv2d", "max_pooling2d", "dense", "softmax")
    assert (
        model.spec.name == "chw" and UserCs231nModel(load(locate(EXAMPLE))).spec.name == "chw-relu"
    )


@pytest.mark.parametrize(
    "text,words",
    [
        ("class Conv3x3: pass\nclass MaxPool2: pass\nclass Softmax: pass\n"
         "class Conv: pass\nclass MaxPool2x2: pass\nclass Linear: pass\n"
         "def softmax_loss(s, y): pass\n",
         ["it defines the names of both", "--api blog or --api cs231n"]),
        ("class Conv: pass\nclass Pool: pass\ndef loss(s, y): pass\n",
         ["cannot tell which API", "Found: net.py: Conv, Pool, loss",
          "MaxPool2x2, Linear, softmax_loss (for cs231n)", "Conv3x3, MaxPool2, Softmax (for blog)",
          "Expected the blog API", "or the cs231n API"]),
    ],
    ids=["both", "neither"],
)  # fmt: skip
def test_auto_with_both_sets_of_names_or_neither_exits_2(tmp_path, capsys, text, words):
    (tmp_path / "net.py").write_text(text)
    assert cli.main(["check", str(tmp_path / "net.py"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,words",
    [
        (["FOLDER", "--api", "cs231n"], ["argument `PATH`", "one .py file", "(a folder)"]),
        (["FILE", "--api", "cs231n"], ["not the cs231n API", "missing: softmax_loss (for cs231n)"]),
        (["SYNTAX", "--api", "cs231n"], ["layers.py:2: syntax error", "Expected the cs231n API"]),
        (["IMPORT", "--api", "cs231n"], ["ZeroDivisionError", "layers.py:3"]),
    ],
    ids=["folder", "missing-function", "syntax-error", "import-time-exception"],
)
def test_cs231n_code_that_cannot_be_located_or_imported_exits_2(tmp_path, capsys, args, words):
    text = EXAMPLE.read_text()
    variants = {
        "FOLDER": None,
        "FILE": text.replace("def softmax_loss(", "def loss("),
        "SYNTAX": "import numpy as np\ndef broken(:\n" + text,
        "IMPORT": "import numpy as np\n\n1 / 0\n" + text,
    }
    path = tmp_path / "layers.py"
    if variants[args[0]] is not None:
        path.write_text(variants[args[0]])
    target = tmp_path if args[0] == "FOLDER" else path
    assert cli.main(["check", str(target), *args[1:], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "Traceback" not in err, err


@pytest.mark.parametrize(
    "edit,message",
    [(("self.bias = np.zeros(out_features)", "self.bias = np.zeros((out_features, 1))"),
      "layers.py:96: class Linear: invalid attribute `bias` after Linear(1352, 10). Expected a "
      "numpy array of shape (10,) (the cs231n API: Linear(in_features, out_features) holds "
      "`weights` (in, out) and `bias` (out,)). Received shape (10, 1)."),
     (("self.weights = 1e-3 *", "self.W = 1e-3 *"),
      "layers.py:96: class Linear: invalid attribute `weights` after Linear(1352, 10). "
      "Expected a numpy array of shape (1352, 10)"),
     (("    def backward(self, dout):\n        dx_pad", "    def backward(self):\n        dx_pad"),
      "in Conv.backward: the signature () cannot take the call Conv.backward(dout)"),
     (("def softmax_loss(scores, y):", "def softmax_loss(scores):"),
      "in softmax_loss: the signature (scores) cannot take the call softmax_loss(scores, y)"),
     (("def __init__(self, in_channels, out_channels, filter_size, pad=0, stride=1):",
       "def __init__(self, in_channels, out_channels, filter_size, padding=0, stride=1):"),
      "layers.py:12: Conv(1, 8, 3, pad=0, stride=1) raised TypeError")],
    ids=["bias-column", "weights-renamed", "backward-signature", "loss-signature",
         "constructor-keyword"],
)  # fmt: skip
def test_api_faults_found_when_the_classes_are_built_exit_2_naming_them(tmp_path, check, capsys,
                                                                       edit, message):  # fmt: skip
    path = _planted(tmp_path, edit)
    with pytest.raises(UserCodeError, match=re.escape(message)):
        UserCs231nModel(load(locate(path)))
    code, summary = check(path, *FAST)  # the command: exit 2, nothing written
    err = capsys.readouterr().err
    assert code == 2 and summary is None and message in err and str(path) in err, err
