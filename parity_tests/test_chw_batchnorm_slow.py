"""cs231n-3layer-chw end to end (slow): `parity run` and `parity check` on the cs231n
example with batch-norm classes, both dtypes, one epoch (lockstep compares the running
statistics after every step)."""

from pathlib import Path

import pytest

from parity import runner
from scratch.user_code import UserCode

MODEL = "cs231n-3layer-chw"
DTYPES = ("float64", "float32")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n_bn" / "layers.py"

pytestmark = pytest.mark.slow


def _not_passing(summary) -> str:
    failing = summary[summary.status != "PASS"]
    return failing[["dtype", "check", "layer", "quantity", "message"]].to_string()


def test_network_passes_every_check_in_both_dtypes():
    training = runner.TrainingOptions(batch_size=None, epochs=1)
    s = runner.run(runner.RunConfig(models=(MODEL,), dtypes=DTYPES, training=training)).summary
    assert (s.status == "PASS").all(), _not_passing(s)
    expected = {(d, *k) for d in DTYPES for k in runner.expected_keys(MODEL, d)}
    assert expected <= {tuple(r) for r in s[["dtype", "check", "layer", "quantity"]].itertuples(
        index=False)}  # fmt: skip
    moving = s[(s.check == "training") & s.quantity.str.startswith("moving_")]
    assert len(moving) == 2 * 2 * 2  # 2 layers x (mean, variance) x 2 dtypes


def test_users_example_passes_in_the_network_in_both_dtypes():
    code = UserCode(str(EXAMPLE), "cs231n")
    training = runner.TrainingOptions(batch_size=None, epochs=1)
    s = runner.run(runner.RunConfig(models=(code.name,), dtypes=DTYPES, user_code=(code,),
                                    training=training)).summary  # fmt: skip
    assert (s.status == "PASS").all(), _not_passing(s)
    assert {"isolation", "derivations", "training", "modal"} <= set(s.check)
    assert "dropout" in set(s[s.check == "isolation"].layer)
