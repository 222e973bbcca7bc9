"""The derivations check's use of the FD engine: a later layer's weights FD'd from its
input on (the model's optional ``loss_from``), and the fallback to the full forward."""

from __future__ import annotations

import numpy as np
import pytest

from parity.checks import derivations
from parity.checks.common import per_example_loss
from scratch import models


@pytest.fixture
def blog_model():
    from parity.data import load_mnist

    data = load_mnist()
    model = models.build("zhou", seed=0)
    return model, model.preprocess(data.test_images[:2]), data.test_labels[:2]


def test_a_later_layers_weights_are_differenced_from_its_input_on(blog_model):
    model, x, labels = blog_model
    groups = derivations.example_groups(model, len(labels))
    loss = derivations._weight_loss(model, "dense", x, labels, groups)
    assert loss.__name__ == "tail"
    np.testing.assert_array_equal(loss(), per_example_loss(model.probabilities(x), labels))


def test_the_weight_tail_falls_back_to_the_full_forward_when_loss_from_disagrees(blog_model):
    model, x, labels = blog_model
    honest = model.loss_from
    model.loss_from = lambda layer, h, y: honest(layer, h, y) * (1 + 1e-12)  # planted
    groups = derivations.example_groups(model, len(labels))
    loss = derivations._weight_loss(model, "dense", x, labels, groups)
    assert loss.__name__ == "full"
    np.testing.assert_array_equal(loss(), per_example_loss(model.probabilities(x), labels))


@pytest.mark.keras
def test_the_finite_differences_report_their_points_up_to_the_total():
    """The derivations phase is not silent: counts rise to the total of FD'd points."""
    from parity.checks.common import Context
    from parity.data import load_mnist
    from reference.twin import twin

    data = load_mnist()
    model = models.build("zhou", seed=0, dtype="float64")
    events = []
    ctx = Context("zhou", "float64", model, data.test_images[:8], data.test_labels[:8], 0,
                  progress=events.append)  # fmt: skip
    ctx.set_twin(twin(model, "float64"), "random")
    rows = derivations.derivation_rows(ctx)
    assert rows
    # zhou: conv2d 8x3x3 (no bias), max-pool, dense 1352x10 + bias; FD'd weight points
    # capped at FD_MAX_POINTS; inputs at every position of the IMAGES examples
    # (28x28 image, 26x26x8 pool input, 10 logits).
    cap = derivations.FD_MAX_POINTS
    weights = sum(min(w.size, cap) for layer in model.params().values() for w in layer.values())
    inputs = derivations.IMAGES * (28 * 28 + 26 * 26 * 8 + 10)
    # two phases (a weight point costs a forward pass per step, an input one is batched)
    by_phase = {}
    for e in events:
        by_phase.setdefault(e.description.rsplit(" of ", 1)[1], []).append(e)
    assert sorted(by_phase) == ["layer inputs", "weights"]
    for kind, total in (("weights", weights), ("layer inputs", inputs)):
        counts = [e.done for e in by_phase[kind]]
        assert {e.total for e in by_phase[kind]} == {total}
        assert {e.unit for e in by_phase[kind]} == {"point"}
        assert counts[-1] == total and all(a <= b for a, b in zip(counts, counts[1:], strict=False))
        assert counts.count(total) == 1  # a bar closes at its total: one end, not a reopened bar
    assert by_phase["weights"][0].done == 0
    assert len({e.done for e in by_phase["weights"]}) > weights  # one by one (a pass each)


def test_weights_are_differenced_per_example_unless_a_layer_couples_the_examples():
    each = derivations.example_groups(models.build("two-conv", seed=0), 3)
    assert [g.tolist() for g in each] == [[0], [1], [2]]
    coupled = derivations.example_groups(models.build("cs231n-3layer", seed=0), 3)
    assert [g.tolist() for g in coupled] == [[0, 1, 2]]  # batch norm: one group, the batch


@pytest.mark.keras
def test_a_first_layer_weight_that_kinks_in_one_image_is_still_judged_in_the_others():
    """chw-odd seed 3, trained: its first conv's kernel points kink somewhere in a batch of
    4 images at nearly every point (4% judged on the batch mean); per example, about half
    are judged, and the rows are PASS, not INCONCLUSIVE."""
    from reference.backend import configure

    configure("float64")
    from parity import runner

    config = runner.RunConfig(models=("chw-odd",), dtypes=("float64",), seed=3,
                              checks=("derivations",), states=("trained",))  # fmt: skip
    part = runner.run_dtype(config, "float64", runner.load_batches(config))
    key = ("conv2d", "kernel", "fd")
    rows = [r for r in part["rows"]["derivations"]
            if (r["layer"], r["quantity"], r["desired_side"]) == key]  # fmt: skip
    assert len(rows) == 2 and {r["status"] for r in rows} == {"PASS"}
    assert all(0.3 < r["evaluated_fraction"] < 1 for r in rows)  # kinks left out, not none
