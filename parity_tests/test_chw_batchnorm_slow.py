"""cs231n-3layer-chw end to end (slow): `parity run` and `parity check` on the cs231n
example with batch-norm classes, both dtypes, one epoch (lockstep compares the running
statistics after every step).

What is judged where (issue 16: no run twice). The false-alarm sweep
(test_selftest.py::test_correct_code_raises_no_false_alarm_*) judges the shipped
cs231n-3layer-chw's static checks at every weight state (the "trained" one after the
default 300 steps) in both dtypes, asserting exactly runner.expected_keys and every row
PASS, but runs no training on it: the shipped network's run here trains it (no static
checks). The user's example is judged nowhere else with every check, so it keeps `parity
check`'s default weight states; its training, like the network's, is one epoch of 10
steps."""

from pathlib import Path

import pytest

from parity import runner
from scratch.models import build
from scratch.user_code import UserCode

MODEL = "cs231n-3layer-chw"
DTYPES = ("float64", "float32")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n_bn" / "layers.py"
# One epoch of 10 lockstep steps of 32 (the network's batch), every row compared after each
# step; `parity run`'s default 1,000 images is the same code 32 times.
TRAINING = runner.TrainingOptions(batch_size=None, epochs=1, train_size=320, test_size=100)

pytestmark = pytest.mark.slow


def _not_passing(summary) -> str:
    failing = summary[summary.status != "PASS"]
    return failing[["dtype", "check", "layer", "quantity", "message"]].to_string()


def test_network_trains_in_lockstep_in_both_dtypes():
    config = runner.RunConfig(models=(MODEL,), dtypes=DTYPES, training=TRAINING, states=())
    s = runner.run(config).summary
    assert (s.status == "PASS").all(), _not_passing(s)
    assert set(s.check) == {"training"}
    for dtype in DTYPES:
        rows = s[s.dtype == dtype]
        updates = set(rows.layer + "/" + rows.quantity)
        for layer, weights in build(MODEL).params().items():
            assert {f"{layer}/{w} update (lockstep)" for w in weights} <= updates, dtype
    moving = s[s.quantity.str.startswith("moving_")]
    assert len(moving) == 2 * 2 * 2  # 2 layers x (mean, variance) x 2 dtypes


def test_users_example_passes_in_the_network_in_both_dtypes():
    code = UserCode(str(EXAMPLE), "cs231n")
    s = runner.run(runner.RunConfig(models=(code.name,), dtypes=DTYPES, user_code=(code,),
                                    training=TRAINING)).summary  # fmt: skip
    assert (s.status == "PASS").all(), _not_passing(s)
    assert {"isolation", "derivations", "training", "modal"} <= set(s.check)
    assert "dropout" in set(s[s.check == "isolation"].layer)
    moving = s[(s.check == "training") & s.quantity.str.startswith("moving_")]
    assert len(moving) == 2 * 2 * 2  # the user's running statistics, every step
