"""The subject interface declares its capabilities (issue 12 item 3): the harness asks
``model.provides`` instead of probing attributes, and a capability a model lacks is a
``CapabilityError`` naming it."""

from pathlib import Path

import numpy as np
import pytest

from parity.data import load_mnist
from parity.testing import model_difference
from scratch import models
from scratch.optim import SGD
from scratch.protocol import REQUIRED, Capability, CapabilityError, HarnessModel
from scratch.train import train
from scratch.user_blog import build_user_blog
from scratch.user_code import UserCode
from scratch.user_cs231n import build_user_cs231n

CS231N_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n" / "layers.py"
BLOG_EXAMPLE = CS231N_EXAMPLE.parents[1] / "blog"
SHIPPED = models.MODEL_NAMES


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def _batch(model, mnist, n=3):
    return model.preprocess(mnist.train_images[:n]), mnist.train_labels[:n]


def _user_cs231n():
    return build_user_cs231n(UserCode(str(CS231N_EXAMPLE), "cs231n"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_model_declares_the_required_capabilities(name):
    assert REQUIRED <= models.build(name).capabilities


@pytest.mark.parametrize("name", SHIPPED)
def test_a_declared_train_step_steps_and_an_undeclared_one_names_the_capability(name, mnist):
    model = models.build(name)
    x, labels = _batch(model, mnist)
    if model.provides(Capability.TRAIN_STEP):
        before = model.snapshot()
        model.train_step(x, labels, 0.5)
        assert any(not np.array_equal(model.params()[k][w], before[k][w])
                   for k in before for w in before[k])  # fmt: skip
        return
    with pytest.raises(CapabilityError, match=f"Model `{name}` .*`train step`"):
        model.train_step(x, labels, 0.5)


def test_a_model_without_loss_from_gets_a_capability_error_not_an_attribute_error(mnist):
    model = build_user_blog(UserCode(str(BLOG_EXAMPLE), "blog"))
    assert not model.provides(Capability.LOSS_FROM)
    x, labels = _batch(model, mnist, 2)
    with pytest.raises(CapabilityError, match="`loss from a layer`"):
        model_difference(model, x, labels, "max_pooling2d", "input", indices=[0])


def test_a_users_cs231n_loss_from_a_layer_is_its_own_forward_from_there(mnist):
    model = _user_cs231n()  # one image at a time: the same per-image walk as forward
    x, labels = _batch(model, mnist, 3)
    loss, _ = model.gradients(x, labels)
    h = model.forward(x)["re_lu"]
    assert model.loss_from("max_pooling2d", h, labels) == loss
    assert model.loss_from("max_pooling2d", h * 2, labels) != loss


@pytest.mark.parametrize("name", ["chw", "zhou"])
def test_a_model_declaring_no_train_step_gets_the_general_path(name, mnist):
    # zhou declares a train step: the fast path, never gradients_and_probabilities at
    # batch 1; chw declares none: every step goes through the general path.
    model = models.build(name)
    x, labels = _batch(model, mnist, 4)
    calls, original = [0], model.gradients_and_probabilities

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    model.gradients_and_probabilities = counted
    train(model, x, labels, SGD(0.01), epochs=1, batch_size=1, orders=[np.arange(4)])
    assert calls[0] == (0 if model.provides(Capability.TRAIN_STEP) else 4)


def test_sgd_with_momentum_never_takes_the_plain_sgd_train_step(mnist):
    # train_step is w -= lr g: with momentum it would silently drop the velocity.
    runs = []
    for fast_path in (True, False):
        model = models.build("zhou")
        x, labels = _batch(model, mnist, 4)
        train(model, x, labels, SGD(0.01, momentum=0.9), epochs=1, batch_size=1,
              orders=[np.arange(4)], fast_path=fast_path)  # fmt: skip
        runs.append(model.snapshot())
    for layer, weights in runs[0].items():
        for weight, array in weights.items():
            assert np.array_equal(array, runs[1][layer][weight]), (layer, weight)


@pytest.mark.parametrize("name", SHIPPED)
def test_snapshot_is_a_copy_and_restore_brings_the_weights_back_bit_for_bit(name):
    model = models.build(name)
    saved = model.snapshot()
    for weights in model.params().values():
        for array in weights.values():
            array += 1.0
    for arrays in model.state().values():  # batch norm's moving statistics: state
        for array in arrays.values():
            array += 1.0
    live = {k: {**model.params().get(k, {}), **model.state().get(k, {})} for k in saved}
    assert all(not np.array_equal(live[k][w], saved[k][w])
               for k in saved for w in saved[k])  # fmt: skip
    model.restore(saved)
    fresh = models.build(name)
    for tree, built in ((model.params(), fresh.params()), (model.state(), fresh.state())):
        for layer, weights in built.items():
            for weight, array in weights.items():
                assert np.array_equal(tree[layer][weight], array), (layer, weight)


def _base(**members):
    """A HarnessModel subclass with the abstract methods stubbed, plus ``members``."""
    stubs = {m: lambda self, *a: None for m in ("preprocess", "forward", "gradients", "params")}
    return type("Subject", (HarnessModel,), {"layer_names": (), **stubs, **members})


def test_a_train_step_defined_but_not_declared_is_a_type_error():
    with pytest.raises(TypeError, match="`train step` is not declared but `train_step` is defined"):
        _base(train_step=lambda self, x, labels, lr: (0.0, 0))


def test_a_capability_declared_but_not_defined_is_a_type_error():
    with pytest.raises(TypeError, match="`loss from a layer` is declared but `loss_from` is not"):
        _base(capabilities=REQUIRED | {Capability.LOSS_FROM})


def test_a_missing_required_capability_is_a_type_error():
    with pytest.raises(TypeError, match="must include every required capability"):
        _base(capabilities=frozenset({Capability.GRADIENTS}))
