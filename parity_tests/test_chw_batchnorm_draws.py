"""A user's cs231n Dropout in cs231n-3layer-chw draws its own masks: the harness reads each
batch's `mask`, gives it to Keras and replays the draw (scratch.user_cs231n_draws)."""

from pathlib import Path

import numpy as np
import pytest

from parity import modes, runner
from parity.checks import derivations
from parity.compare import ERROR, PASS
from parity.testing import planted_copy
from scratch.user_api import ApiError
from scratch.user_code import UserCode, load, locate
from scratch.user_cs231n import UserCs231nModel
from scratch.user_cs231n_draws import Draws, RandomSources

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n_bn" / "layers.py"
IN_NETWORK = dict(checks=("forward", "gradients", "isolation"), states=("random",))

# The example's Dropout draws from its own `self.rng = np.random.default_rng()`; these
# replace its draw line (present once).
DRAW = "        self.mask = (self.rng.random(x.shape) < self.p) / x.dtype.type(self.p)\n"
GLOBAL_RNG = (DRAW, "        self.mask = (np.random.rand(*x.shape) < self.p) / self.p\n")
FRESH_GENERATOR = (DRAW, "        self.mask = np.random.default_rng().random(x.shape) < self.p\n"
                         "        self.mask = self.mask / self.p\n")  # fmt: skip
NO_MASK_CACHED = ("        return x * self.mask\n",
                  "        out, self.mask = x * self.mask, None\n        return out\n")  # fmt: skip
MALFORMED_MASK = ("        self.mask = self.mask.astype(x.dtype)\n",
                  "        self.mask = self.rng.random(x.shape)\n")  # fmt: skip


def _planted(tmp_path, *edits) -> Path:
    return planted_copy(EXAMPLE, tmp_path, *edits)


def _model(path=EXAMPLE, dtype="float64") -> UserCs231nModel:
    return UserCs231nModel(load(locate(path)), dtype=dtype)


def _batch(model, n=6, key=0):
    x = model.preprocess(np.random.default_rng(key).integers(0, 256, (n, 28, 28)))
    return x, modes.draw(model.spec, n, 0, key)


def _run(path, **config):
    code = UserCode(str(path), "cs231n")
    config = runner.RunConfig(models=(code.name,), dtypes=("float64",), images=8,
                              user_code=(code,), **config)  # fmt: skip
    return runner.run(config, in_process=True).summary


# -- the draws (numpy only) ---------------------------------------------------------------


@pytest.mark.parametrize("edits", [(), (GLOBAL_RNG,)], ids=["own-generator", "np-random-rand"])
def test_the_twin_gets_the_mask_the_users_dropout_drew_and_every_forward_replays_it(
    tmp_path, edits
):  # fmt: skip
    model = _model(_planted(tmp_path, *edits))
    x, harness = _batch(model)
    used = modes.inject(model, harness)
    outputs = [model.forward(x) for _ in range(3)]
    kept = outputs[0]["dropout"] != 0
    assert np.array_equal(kept, used["dropout"] & (outputs[0]["re_lu_1"] != 0))
    assert not np.array_equal(used["dropout"], harness["dropout"])  # the user's, not ours
    assert all(np.array_equal(o["dropout"], outputs[0]["dropout"]) for o in outputs[1:])


def test_the_same_masks_replay_a_draw_and_new_masks_draw_afresh():
    model = _model()
    x, first = _batch(model)
    used = modes.inject(model, first)
    fresh = modes.inject(model, modes.draw(model.spec, 6, 0, 1))
    assert np.count_nonzero(fresh["dropout"] != used["dropout"]) > 20  # of 192
    for again in (first, used):  # the harness's masks, or the ones the layer drew
        assert np.array_equal(modes.inject(model, again)["dropout"], used["dropout"])


def test_a_replay_leaves_numpys_global_state_where_it_was(tmp_path):
    model = _model(_planted(tmp_path, GLOBAL_RNG))
    x, harness = _batch(model)
    modes.inject(model, harness)
    before = np.random.get_state()[1].copy()  # noqa: NPY002 (what np.random.rand uses)
    model.forward(x)
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_a_draw_that_does_not_repeat_is_an_error_at_dropout_forward(tmp_path):
    model = _model(_planted(tmp_path, FRESH_GENERATOR))
    x, harness = _batch(model)
    modes.inject(model, harness)
    with pytest.raises(ApiError, match="your Dropout's mask is not reproducible: layer "
                                       "`dropout` \\(Dropout\\)") as raised:  # fmt: skip
        model.forward(x)
    assert "in Dropout.forward" in raised.value.location


def test_without_the_state_restore_the_replay_is_caught(monkeypatch):
    monkeypatch.setattr(RandomSources, "restore", lambda self: None)  # planted: no restore
    model = _model()
    x, harness = _batch(model)
    modes.inject(model, harness)
    with pytest.raises(ApiError, match="not reproducible"):
        model.forward(x)


@pytest.mark.parametrize(
    "edit,message",
    [(NO_MASK_CACHED, "layer `dropout`: Dropout.forward(x, 'train') left `mask` None for x "
                      "of shape (6, 32)"),
     (MALFORMED_MASK, "layer `dropout`: Dropout.forward(x, 'train') left `mask` with 192 "
                      "distinct nonzero values")],
    ids=["mask-not-cached", "mask-not-a-keep-mask"],
)  # fmt: skip
def test_a_mask_the_harness_cannot_read_is_an_error_at_dropout_forward(tmp_path, edit, message):
    model = _model(_planted(tmp_path, edit))
    x, harness = _batch(model)
    modes.inject(model, harness)  # never raises: the batch's forward does, every time
    for _ in range(2):
        with pytest.raises(ApiError) as raised:
            model.forward(x)
        assert message in str(raised.value) and "in Dropout.forward" in raised.value.location


# -- in the network, against Keras ----------------------------------------------------------


@pytest.mark.keras
def test_dropout_drawing_from_np_random_passes_in_the_network(tmp_path):
    summary = _run(_planted(tmp_path, GLOBAL_RNG), **IN_NETWORK)
    assert set(summary["status"]) == {PASS}
    assert "dropout" in set(summary[summary["check"] == "isolation"]["layer"])


@pytest.mark.keras
def test_dropout_not_caching_its_mask_is_an_error_row_naming_it(tmp_path):
    summary = _run(_planted(tmp_path, NO_MASK_CACHED), **IN_NETWORK)
    errors = summary[summary["status"] == ERROR]
    assert set(errors["check"]) == {"forward", "gradients", "isolation"}
    assert errors["message"].str.contains("layer `dropout`: Dropout.forward\\(x, 'train'\\) "
                                          "left `mask` None").all()  # fmt: skip
    assert errors["message"].str.contains("in Dropout.forward").all()


@pytest.mark.keras
def test_without_the_state_restore_derivations_and_forward_rows_are_errors(monkeypatch):
    monkeypatch.setattr(RandomSources, "restore", lambda self: None)  # planted: no restore
    summary = _run(EXAMPLE, checks=("forward", "derivations"), states=("random",))
    training = summary[~summary["quantity"].str.endswith("(inference)")]
    assert set(training["check"]) == {"forward", "derivations"}
    assert set(training["status"]) == {ERROR}
    assert training["message"].str.contains("not reproducible").all()


# Finite differences at 16 points per array, not 256: a point FD'd under masks other than
# the gradient's fails whatever the sample's size, and the 256-point engine itself is judged
# on this file's network by test_chw_batchnorm_slow.py (~4x fewer forward passes).
FEW_FD_POINTS = 16


@pytest.mark.slow  # ~4 s: finite differences of every array, through the user's layers
@pytest.mark.keras
def test_without_the_restore_and_its_check_different_masks_fail_the_rows(monkeypatch):
    monkeypatch.setattr(RandomSources, "restore", lambda self: None)  # planted: no restore
    monkeypatch.setattr(Draws, "check_replay", staticmethod(lambda *args: None))  # nor check
    monkeypatch.setattr(derivations, "FD_MAX_POINTS", FEW_FD_POINTS)
    summary = _run(EXAMPLE, checks=("forward", "derivations"), states=("random",))
    failing = summary[summary["status"] != PASS]
    assert {("forward", "dropout", "output")} <= set(
        zip(failing["check"], failing["layer"], failing["quantity"], strict=True)
    )
    assert "derivations" in set(failing["check"])


LOCKSTEP = dict(checks=("training",), states=(),
                training=runner.TrainingOptions(batch_size=None, epochs=1, train_size=128,
                                                test_size=64))  # fmt: skip


@pytest.mark.keras
def test_lockstep_gives_the_keras_step_the_users_draw(tmp_path):
    summary = _run(_planted(tmp_path, GLOBAL_RNG), **LOCKSTEP)
    lockstep = summary[summary["quantity"].str.endswith("(lockstep)")]
    assert len(lockstep) > 10 and set(lockstep["status"]) == {PASS}


@pytest.mark.keras
def test_lockstep_with_the_harness_masks_instead_fails(monkeypatch):
    inject = modes.inject
    monkeypatch.setattr(modes, "inject", lambda model, masks, *a: inject(model, masks, *a)
                        and masks)  # planted: the Keras step gets the harness's masks  # fmt: skip
    summary = _run(EXAMPLE, **LOCKSTEP)
    failing = summary[(summary["status"] != PASS) & summary["quantity"].str.endswith("(lockstep)")]
    assert {"dense_1", "dense"} <= set(failing["layer"])
