"""The same thin checks over the other model families (slow: one run of three models in
two dtype processes, about a minute on 2 cores)."""

import pytest

from parity import runner

# the shipped models before this round's channels-first ones (every model: test_selftest.py)
MODELS = ("two-conv", "chw", "chw-relu", "nhwc-odd", "chw-odd", "lenet5")
DTYPES = ("float64", "float32")
KEYS = [(m, d, *key) for m in MODELS for d in DTYPES for key in runner.expected_keys(m, d)]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("checks_slow")]  # one run per suite


@pytest.fixture(scope="session")
def results():
    return runner.run(runner.RunConfig(models=MODELS, dtypes=DTYPES))


@pytest.mark.parametrize("model,dtype,check,layer,quantity", KEYS,
                         ids=["-".join(k) for k in KEYS])  # fmt: skip
def test_check_passes(results, model, dtype, check, layer, quantity):
    s = results.summary
    hit = s[(s.model == model) & (s.dtype == dtype) & (s.check == check) & (s.layer == layer)
            & (s.quantity == quantity)]  # fmt: skip
    assert len(hit) == 1, f"{model} {dtype} {check} {layer}/{quantity}: no row in the run"
    assert hit.iloc[0].status == "PASS", hit.iloc[0].message


def test_run_reports_nothing_beyond_the_tested_keys(results):
    columns = ["model", "dtype", "check", "layer", "quantity"]
    assert {tuple(r) for r in results.summary[columns].itertuples(index=False)} == set(KEYS)
