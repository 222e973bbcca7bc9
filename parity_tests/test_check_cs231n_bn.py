import re
from pathlib import Path

import pytest

from parity import runner, tolerances
from parity.compare import ERROR, PASS, is_failure
from parity.testing import planted_copy
from scratch.user_code import UserCode, UserCodeError, load, locate
from scratch.user_cs231n import UserCs231nModel
from scratch.user_cs231n_norm import NORM_LAYERS
from spec.networks import CS231N_3LAYER

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n_bn" / "layers.py"
PLAIN_EXAMPLE = EXAMPLE.parents[1] / "cs231n" / "layers.py"
MODAL_ONLY = dict(checks=("modal",), states=())
BN_QUANTITIES = {"output", "input", "gamma", "beta", "running_mean", "running_var",
                 "output (inference)", "input (inference)"}  # fmt: skip
EXPECTED_KEYS = {
    *((f"batch_normalization{s}", q) for s in ("", "_1") for q in BN_QUANTITIES),
    *(("dropout", q) for q in ("output", "input", "output (inference)")),
}

# Planted faults: (old text present exactly once in the example, new text).
BN_NO_MEAN_TERM = ("dx = (n * dxhat - total - self.xhat", "dx = (n * dxhat - self.xhat")
DROPOUT_NEW_MASK_IN_BACKWARD = (
    "        return dout * self.mask\n",
    "        return dout * (self.rng.random(dout.shape) < self.p) / dout.dtype.type(self.p)\n",
)
MOMENTUM_REVERSED = (
    "self.running_mean = m * self.running_mean + (1 - m) * mean",
    "self.running_mean = (1 - m) * self.running_mean + m * mean",
)
RUNNING_VAR_MISSING = (
    "self.running_mean, self.running_var = np.zeros(D), np.ones(D)",
    "self.running_mean = np.zeros(D)",
)
# Keras's default epsilon 1e-3 where cs231n's 1e-5 was asked, in the training-mode
# normalisation only: every training-mode output moves by ~1e-3 / (2 var) = 1.2e-4 (var ~ 4)
KERAS_EPSILON_IN_TRAINING = ("std = np.sqrt(var + x.dtype.type(self.eps))",
                             'std = np.sqrt(var + x.dtype.type(1e-3 if mode == "train" else '
                             "self.eps))")  # fmt: skip
BACKWARD_ONLY_DX = ("        return dx, dgamma, dbeta\n", "        return dx\n")
FORWARD_NO_MODE = ("    def forward(self, x, mode=\"train\"):\n        if mode == \"test\":",
                   "    def forward(self, x):\n        if False:")  # fmt: skip


def _planted(tmp_path, *edits) -> Path:
    return planted_copy(EXAMPLE, tmp_path, *edits)


def _modal(path, dtype="float64"):
    """The ``modal`` table of ``parity check --api cs231n`` on ``path`` (float64: in this
    process; float32: in its own process, as the CLI runs it)."""
    code = UserCode(str(path), "cs231n")
    config = runner.RunConfig(models=(code.name,), dtypes=(dtype,), images=4,
                              user_code=(code,), **MODAL_ONLY)  # fmt: skip
    return runner.run(config, in_process=dtype == "float64").tables.get("modal")


def _failing(rows) -> set:
    bad = rows[rows["status"].map(is_failure)]
    return set(zip(bad["layer"], bad["quantity"], strict=True))


def test_norm_layers_map_cs231n_3layer_conventions_explicitly():
    calls = {layer.name: (layer.call, layer.input_shape) for layer in NORM_LAYERS}
    assert calls == {
        "batch_normalization": ("SpatialBatchNorm(8, eps=1e-05, momentum=0.9)", (32, 8, 26, 26)),
        "batch_normalization_1": ("BatchNorm(32, eps=1e-05, momentum=0.9)", (32, 32)),
        "dropout": ("Dropout(0.5)", (32, 32)),
    }


@pytest.mark.keras
def test_example_batch_norm_and_dropout_pass_alone_float64():
    rows = _modal(EXAMPLE)
    assert set(zip(rows["layer"], rows["quantity"], strict=True)) == EXPECTED_KEYS
    assert set(rows["status"]) == {PASS} and set(rows["dtype"]) == {"float64"}


def test_example_batch_norm_and_dropout_pass_alone_float32():
    rows = _modal(EXAMPLE, "float32")
    assert set(zip(rows["layer"], rows["quantity"], strict=True)) == EXPECTED_KEYS
    assert set(rows["status"]) == {PASS} and set(rows["dtype"]) == {"float32"}


@pytest.mark.keras
def test_a_file_without_norm_classes_has_no_modal_table():
    assert _modal(PLAIN_EXAMPLE) is None  # modal.csv is written only where it has rows


@pytest.mark.keras
@pytest.mark.parametrize(
    "edit,failing",
    [(BN_NO_MEAN_TERM, {("batch_normalization", "input"), ("batch_normalization_1", "input")}),
     (DROPOUT_NEW_MASK_IN_BACKWARD, {("dropout", "input")}),
     (MOMENTUM_REVERSED, {("batch_normalization", "running_mean"),
                          ("batch_normalization_1", "running_mean")})],
    ids=["batchnorm-backward-no-mean-term", "dropout-mask-not-reused", "momentum-reversed"],
)  # fmt: skip
def test_planted_fault_fails_at_the_right_layer_and_quantity(tmp_path, edit, failing):
    assert _failing(_modal(_planted(tmp_path, edit))) == failing


def test_kerass_epsilon_in_training_mode_fails_float32_on_the_checks_own_budgets(tmp_path):
    rows = _modal(_planted(tmp_path, KERAS_EPSILON_IN_TRAINING), "float32")
    failing = _failing(rows)
    assert {("batch_normalization", "output"), ("batch_normalization_1", "output")} <= failing
    assert all(q in {"output", "input", "gamma"} for _, q in failing), failing
    borrowed = tolerances.get("forward", "float32", CS231N_3LAYER).rtol  # the network's
    assert rows["rel_error"].max() < borrowed  # which passed every row


@pytest.mark.keras
def test_backward_returning_only_dx_is_an_error_row_at_the_users_method(tmp_path):
    rows = _modal(_planted(tmp_path, BACKWARD_ONLY_DX)).set_index(["layer", "quantity"])
    status = rows.groupby(level="layer")["status"].agg(frozenset).to_dict()
    assert status == {"batch_normalization": {ERROR}, "batch_normalization_1": {ERROR},
                      "dropout": {PASS}}  # fmt: skip
    message = rows.loc[("batch_normalization_1", "-"), "message"]
    assert "BatchNorm.backward returned an array of shape (32, 32); the API returns (dx, " \
           "dgamma, dbeta)" in message and "layers.py" in message, message  # fmt: skip


@pytest.mark.parametrize(
    "edit,message",
    [(RUNNING_VAR_MISSING,
      "class SpatialBatchNorm: invalid attribute `running_var` after SpatialBatchNorm(8, "
      "eps=1e-05, momentum=0.9). Expected a numpy array of shape (8,)"),
     (FORWARD_NO_MODE,
      "in Dropout.forward: the signature (x) cannot take the call Dropout.forward(x, mode)")],
    ids=["running-var-missing", "forward-without-mode"],
)  # fmt: skip
def test_api_faults_found_when_the_classes_are_built_exit_2_naming_them(tmp_path, check, capsys,
                                                                       edit, message):  # fmt: skip
    path = _planted(tmp_path, edit)
    with pytest.raises(UserCodeError, match=re.escape(message)):
        UserCs231nModel(load(locate(path)))
    code, summary = check(path, "--epochs", "0", "--images", "4")  # exit 2, nothing written
    err = capsys.readouterr().err
    assert code == 2 and summary is None and message in err and str(path) in err, err
