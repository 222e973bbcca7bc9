"""The derivations check's use of the FD engine: a later layer's weights FD'd from its
input on (the model's optional ``loss_from``), and the fallback to the full forward."""

from __future__ import annotations

import pytest

from parity.checks import derivations
from scratch import models


@pytest.fixture
def blog_model():
    from parity.data import load_mnist

    data = load_mnist()
    model = models.build("zhou", seed=0)
    return model, model.preprocess(data.test_images[:2]), data.test_labels[:2]


def test_a_later_layers_weights_are_differenced_from_its_input_on(blog_model):
    model, x, labels = blog_model
    loss = derivations._weight_loss(model, "dense", x, labels)
    assert loss.__name__ == "tail" and loss() == derivations.mean_loss(model, x, labels)


def test_the_weight_tail_falls_back_to_the_full_forward_when_loss_from_disagrees(blog_model):
    model, x, labels = blog_model
    honest = model.loss_from
    model.loss_from = lambda layer, h, y: honest(layer, h, y) * (1 + 1e-12)  # planted
    loss = derivations._weight_loss(model, "dense", x, labels)
    assert loss.__name__ == "full" and loss() == derivations.mean_loss(model, x, labels)


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
    total = weights + derivations.IMAGES * (28 * 28 + 26 * 26 * 8 + 10)
    counts = [e.done for e in events]
    assert {e.total for e in events} == {total} and {e.unit for e in events} == {"point"}
    assert counts[0] == 0 and counts[-1] == total
    assert all(a <= b for a, b in zip(counts, counts[1:], strict=False))
    assert len(set(counts)) > weights  # a weight's points one by one (a forward pass each)
    assert all("[derivations zhou float64 random]" in e.description for e in events)
