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
