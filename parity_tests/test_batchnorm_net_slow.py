"""cs231n-3layer end to end (slow): `parity run` in both dtypes with its training
schedules, and the self-test's batch-norm and dropout entries caught at their layers."""

import pytest

from parity import catalog, runner, selftest

MODEL = "cs231n-3layer"
DTYPES = ("float64", "float32")
# The schedules, batch 32 (the network's own): SGD with momentum 0.9 at lr 0.01 and
# Adam at lr 1e-3, each the network's own rate (None: spec.Network.learning_rates); plain
# SGD at 0.01 too.
SCHEDULES = {"sgd": 0.01, "momentum": None, "adam": None}
ENTRIES = [e for e in catalog.ENTRIES if e.model == MODEL]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=sorted(SCHEDULES))
def results(request):
    training = runner.TrainingOptions(
        optimizer=request.param,
        batch_size=None,  # its own
        learning_rate=SCHEDULES[request.param],
        epochs=1,
    )
    return runner.run(runner.RunConfig(models=(MODEL,), dtypes=DTYPES, training=training))


def test_every_row_passes_in_both_dtypes(results):
    s = results.summary
    failing = s[s.status != "PASS"]
    assert failing.empty, failing[["dtype", "check", "layer", "quantity", "message"]].to_string()
    expected = {(d, *k) for d in DTYPES for k in runner.expected_keys(MODEL, d)}
    got = {tuple(r) for r in s[["dtype", "check", "layer", "quantity"]].itertuples(index=False)}
    assert expected <= got
    moving = s[(s.check == "training") & s.quantity.str.startswith("moving_")]
    assert len(moving) == 2 * 2 * 2  # 2 layers x (mean, variance) x 2 dtypes


def test_batchnorm_and_dropout_entries_are_caught_at_their_layers():
    result = selftest.run_selftest(selftest.Options(bugs=tuple(e.name for e in ENTRIES),
                                                    sweep=False))  # fmt: skip
    rows = result.catalog[result.catalog["kind"] == "bug"]
    assert len(rows) == sum(len(e.dtypes) for e in ENTRIES)
    missed = rows[rows["caught"] != "yes"]
    assert missed.empty, missed[["bug", "dtype", "message"]].to_string()
    for row in rows.itertuples():  # isolation names the layer the hook broke
        layer, keys = catalog.BY_NAME[row.bug].hook.layer, row.failed_keys.split(";")
        check = "training" if catalog.BY_NAME[row.bug].training else "isolation"
        named = {k.split(":")[1].split("/")[0] for k in keys if k.startswith(check + ":")}
        assert named == {layer}, (row.bug, row.dtype, row.failed_keys)
