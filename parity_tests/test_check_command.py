import shutil
from pathlib import Path

import pandas as pd
import pytest

from parity import cli, runner
from parity.compare import ERROR, FAIL, NOT_PROVIDED, PASS, is_failure
from scratch.user_code import locate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "blog"
# Planted faults are edits of the example (old text present exactly once -> new text).
FIRST_MAX = """\
            # argmax over the 4 cells (row-major) returns the first maximum of each channel.
            first = np.argmax(window.reshape(4, channels), axis=0)
            d_L_d_input[2 * i + first // 2, 2 * j + first % 2, np.arange(channels)] = d_L_d_out[
                i, j
            ]
"""
ALL_TIES = """\
            is_max = window == np.amax(window, axis=(0, 1))  # every tied maximum: the blog's rule
            d_L_d_input[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = is_max * d_L_d_out[i, j]
"""
NO_IMAGE_GRADIENT = """\
        for top, left, patch in self.patches(self.last_input):
            # Every filter saw this patch; its output gradient scales the patch.
            d_L_d_filters += d_L_d_out[top, left][:, None, None] * patch
        self.filters -= learn_rate * d_L_d_filters
        return None
"""


def _image_gradient(write: str) -> str:
    """The conv's backprop returning its image's gradient (the blog's exercise), each
    overlapping window's contribution written with ``write`` (``+=`` is right)."""
    return f"""\
        d_L_d_image = np.zeros_like(self.last_input)
        for top, left, patch in self.patches(self.last_input):
            d_L_d_filters += d_L_d_out[top, left][:, None, None] * patch
            contribution = np.tensordot(d_L_d_out[top, left], self.filters, axes=1)
            d_L_d_image[top : top + 3, left : left + 3] {write} contribution
        self.filters -= learn_rate * d_L_d_filters
        return d_L_d_image
"""


FAST = ("--epochs", "0", "--images", "4", "--dtypes", "float64")
FAST_CHECKS = dict(checks=("forward", "gradients", "ties"), states=("initial",))


def _user_code(tmp_path, replace=None) -> Path:
    """A copy of examples/blog; ``replace`` is ``{file: (old, new)}``, each ``old`` present
    exactly once (the planted bug)."""
    folder = tmp_path / "code"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name, (old, new) in (replace or {}).items():
        text = (folder / name).read_text()
        assert text.count(old) == 1, (name, old)
        (folder / name).write_text(text.replace(old, new))
    return folder


def _run(folder, **config) -> pd.DataFrame:
    """The checks of ``parity check`` on ``folder`` in this process; the summary."""
    code = locate(folder)
    config = runner.RunConfig(models=(code.name,), dtypes=("float64",), images=4,
                              user_code=(code,), **config)  # fmt: skip
    return runner.run(config, in_process=True).summary


def _status(summary, check, key) -> str:
    rows = summary[(summary["check"] == check) & (summary["layer"] + "/" + summary["quantity"]
                                                  == key)]  # fmt: skip
    assert len(rows) == 1, (check, key, summary[["check", "layer", "quantity"]])
    return rows["status"].iloc[0]


def _failing(summary) -> set:
    bad = summary[summary["status"].map(is_failure)]
    return {f"{c} {lay}/{q}" for c, lay, q in zip(bad["check"], bad["layer"], bad["quantity"],
                                                  strict=True)}  # fmt: skip


@pytest.mark.keras
def test_example_passes_with_the_conv_input_gradient_not_provided(check):
    # Every check at every state (the README's promise), on 2 images: the example's loops
    # make each finite-difference point a forward pass per image (4 images: 22 s of CPU, 2: 14 s)
    code, summary = check(EXAMPLE, *FAST[:2], "--images", "2", *FAST[4:])
    assert code == 0
    assert _status(summary, "gradients", "conv2d/input") == NOT_PROVIDED
    assert _status(summary, "derivations", "conv2d/input") == NOT_PROVIDED
    assert set(summary["status"]) == {PASS, NOT_PROVIDED}
    assert summary.loc[summary["layer"] == "conv2d", "user_class"].eq("Conv3x3").all()


@pytest.mark.keras
def test_blog_all_ties_max_pool_rule_fails_at_the_max_pool_layer(tmp_path):
    folder = _user_code(tmp_path, replace={"maxpool.py": (FIRST_MAX, ALL_TIES)})
    summary = _run(folder, **FAST_CHECKS)
    assert _status(summary, "ties", "max_pooling2d/routing") == FAIL
    assert _status(summary, "gradients", "max_pooling2d/input") == FAIL
    assert _status(summary, "gradients", "conv2d/input") == NOT_PROVIDED
    assert ERROR not in set(summary["status"])


@pytest.mark.keras
@pytest.mark.parametrize("write,status", [("+=", PASS), ("=", FAIL)],
                         ids=["accumulated", "overwritten"])  # fmt: skip
def test_conv_input_gradient_must_accumulate_overlapping_windows(tmp_path, write, status):
    folder = _user_code(tmp_path, replace={"conv.py": (NO_IMAGE_GRADIENT, _image_gradient(write))})
    summary = _run(folder, **FAST_CHECKS)
    assert _status(summary, "gradients", "conv2d/input") == status
    assert _failing(summary) == ({"gradients conv2d/input"} if status == FAIL else set())


@pytest.mark.keras
@pytest.mark.parametrize(
    "file,update,key",
    [
        ("conv.py", "self.filters -= learn_rate * d_L_d_filters", "conv2d/kernel"),
        ("softmax.py", "self.weights -= learn_rate * d_L_d_weights", "dense/kernel"),
        ("softmax.py", "self.biases -= learn_rate * d_L_d_totals", "dense/bias"),
    ],
    ids=["conv-filters", "softmax-weights", "softmax-biases"],
)
def test_gradient_ascent_update_fails_at_the_weight_it_updates(tmp_path, file, update, key):
    folder = _user_code(tmp_path, replace={file: (update, update.replace("-=", "+="))})
    summary = _run(folder, **FAST_CHECKS)
    assert _failing(summary) == {f"gradients {key}"}


@pytest.mark.keras
def test_one_file_with_the_three_classes_is_checked_like_a_folder(tmp_path):
    single = tmp_path / "my_cnn.py"
    single.write_text("\n".join((EXAMPLE / f).read_text() for f in
                                ("conv.py", "maxpool.py", "softmax.py")))  # fmt: skip
    summary = _run(single, **FAST_CHECKS)
    assert set(summary["status"]) == {PASS, NOT_PROVIDED}


@pytest.mark.keras
def test_update_before_input_gradient_fails_the_gradients_check_outside_training(tmp_path):
    # The input gradient taken AFTER the weights moved: backprop is read with a nonzero
    # learning rate, so the gradients check sees it; the weight gradients stay right.
    update = "        self.weights -= learn_rate * d_L_d_weights\n"
    grad = "        d_L_d_input = self.weights @ d_L_d_totals\n"
    folder = _user_code(tmp_path, replace={"softmax.py": (grad + update, update + grad)})
    summary = _run(folder, checks=("gradients",), states=("initial",))
    assert _status(summary, "gradients", "dense/input") == FAIL
    assert _status(summary, "gradients", "dense/kernel") == PASS


@pytest.mark.keras
def test_training_through_the_example_passes(tmp_path):
    training = runner.TrainingOptions(epochs=1, train_size=40, test_size=20,
                                      keras_paths=("tape",))  # fmt: skip
    summary = _run(EXAMPLE, checks=(), states=(), training=training)
    assert set(summary["check"]) == {"training"} and set(summary["status"]) == {PASS}


# Faults in the classes' API found when they are built, before any of their methods runs:
# exit 2 naming the file and line of the class, the class, the attribute or method, the
# rule as the blog defines it and what was found; nothing is written. A factory's wrong
# weight shape exits 2 the same way (test_check_factory.py).
API_FAULTS = {
    "biases-column": ({"softmax.py": ("np.zeros(nodes)", "np.zeros((nodes, 1))")},
                      ["softmax.py:9: class Softmax: invalid attribute `biases` after "
                       "Softmax(1352, 10). Expected a numpy array of shape (10,) (the blog "
                       "API: Softmax(input_len, nodes) holds `weights` (input_len, nodes) and "
                       "`biases` (nodes,)", "Received shape (10, 1)."]),
    "biases-renamed": ({"softmax.py": ("self.biases = np.zeros(nodes)",
                                       "self.bias = np.zeros(nodes)")},
                       ["softmax.py:9: class Softmax: invalid attribute `biases`",
                        "Received no attribute `biases` (attributes: bias (10,), weights "
                        "(1352, 10))."]),
    "pool-takes-learn-rate": ({"maxpool.py": ("def backprop(self, d_L_d_out):",
                                              "def backprop(self, d_L_d_out, learn_rate):")},
                              ["maxpool.py:30 in MaxPool2.backprop: the signature (d_L_d_out, "
                               "learn_rate) cannot take the call MaxPool2.backprop(d_L_d_out)",
                               "backprop(d_L_d_out), no learning rate"]),
    "constructor-signature": ({"conv.py": ("def __init__(self, num_filters):",
                                           "def __init__(self, num_filters, size):")},
                              ["conv.py:9: Conv3x3(8) raised TypeError", "'size'",
                               "Expected the blog API: Conv3x3(num_filters)"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(API_FAULTS))
def test_api_faults_found_when_the_classes_are_built_exit_2_naming_them(tmp_path, check,
                                                                       capsys, case):  # fmt: skip
    plant, words = API_FAULTS[case]
    folder = _user_code(tmp_path, replace=plant)
    code, summary = check(folder, *FAST)
    err = capsys.readouterr().err
    assert code == 2 and summary is None, err
    assert all(f"{folder}/{w}" in err or w in err for w in words), err
    assert str(folder) in err and "scratch/" not in err and "Traceback" not in err


@pytest.mark.keras
def test_logits_not_cached_are_error_rows_at_the_users_forward(tmp_path, check, capsys):
    # `last_totals` is set by forward only: found while running the user's code, an ERROR
    # row in every check that ran forward, placed at the user's Softmax.forward (not at the
    # adapter that noticed), printed once under the table.
    folder = _user_code(tmp_path, replace={"softmax.py": ("self.last_totals = totals",
                                                          "self.cached = totals")})  # fmt: skip
    softmax = folder / "softmax.py"  # its backprop reads the logits back from `cached` too
    softmax.write_text(softmax.read_text().replace("self.last_totals", "self.cached"))
    code, summary = check(folder, *FAST)
    assert code == 3
    errors = summary[summary["status"] == ERROR]
    assert len(errors) > 1
    where = f"(at {folder}/softmax.py:17 in Softmax.forward)"
    assert errors["message"].str.contains(where, regex=False).all(), errors["message"].iloc[0]
    assert errors["message"].str.contains("Found after forward: attributes: biases (10,), "
                                          "cached (10,)", regex=False).all()  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("did not set `self.last_totals`") == 1 and where in out
    assert f"ERROR in {len(errors)} rows" in out and "user_blog.py" not in out


@pytest.mark.keras
def test_a_later_layer_returning_none_is_placed_at_its_backprop(tmp_path, check):
    folder = _user_code(tmp_path, replace={"maxpool.py": ("        return d_L_d_input\n",
                                                          "        return None\n")})  # fmt: skip
    code, summary = check(folder, *FAST)
    message = summary.loc[summary["status"] == ERROR, "message"]
    assert code == 3 and len(message)
    assert message.str.contains(f"(at {folder}/maxpool.py:30 in MaxPool2.backprop)",
                                regex=False).all(), message.iloc[0]  # fmt: skip


@pytest.mark.parametrize(
    "plant,names",
    [
        ({"maxpool.py": ("class MaxPool2:", "class MaxPool:")}, ["maxpool.py", "MaxPool2"]),
        ({"softmax.py": ("import numpy as np\n", "import numpy as np\ndef broken(:\n")},
         ["softmax.py:7", "syntax error"]),
        ({"conv.py": ("import numpy as np\n", "import numpy as np\n\n1 / 0\n")},
         ["conv.py", "ZeroDivisionError", "conv.py:8"]),
        ({"conv.py": ("import numpy as np\n", "import numpy as np\nimport cnn\n")},
         ["conv.py", "ModuleNotFoundError", "cnn"]),
    ],
    ids=["missing-class", "syntax-error", "import-time-exception", "imports-cnn"],
)  # fmt: skip
def test_code_that_cannot_be_loaded_exits_2_naming_file_and_expectation(tmp_path, capsys,
                                                                        plant, names):  # fmt: skip
    folder = _user_code(tmp_path, replace=plant)
    assert cli.main(["check", str(folder), "--out", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in names) and "Expected" in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,names",
    [
        (["nowhere"], ["PATH='", "nowhere", "no such file"]),
        (["--api", "keras"], ["argument `--api`", "auto, blog, cs231n", "'keras'"]),
    ],
    ids=["missing-path", "unknown-api"],
)
def test_bad_path_or_api_exits_2(tmp_path, capsys, args, names):
    path = [str(tmp_path / args[0])] if args[0] == "nowhere" else [str(EXAMPLE), *args]
    assert cli.main(["check", *path, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in names), err


def test_auto_api_lists_what_it_found_and_what_it_expected(tmp_path, capsys):
    other = tmp_path / "net.py"
    other.write_text("class TwoLayerNet:\n    pass\n\n\nclass Softmax:\n    pass\n")
    assert cli.main(["check", str(other), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Found: net.py: Softmax, TwoLayerNet" in err and "missing: Conv3x3, MaxPool2" in err
    assert "Expected the blog API" in err


def test_float64_buffers_in_a_float32_run_fail_at_the_dtype_stage(tmp_path):
    # The blog's np.zeros buffers are float64 whatever the input: honest dtype FAILs (in
    # the float32 process), never an ERROR.
    line = "out = np.zeros((rows - 2, cols - 2, self.num_filters), dtype=dtype)"
    folder = _user_code(tmp_path, replace={"conv.py": (line, line.replace(", dtype=dtype", ""))})
    out = tmp_path / "out"
    args = ["check", str(folder), "--out", str(out), *FAST[:4], "--dtypes", "float32"]
    assert cli.main(args) == 1
    summary = pd.read_csv(next(out.iterdir()) / "summary.csv")
    failed = summary[summary["status"] == FAIL]
    assert "forward conv2d/output" in _failing(summary) and ERROR not in set(summary["status"])
    assert failed["message"].str.startswith("dtype:").all()
