import numpy as np
import pytest

from parity.testing import check, check_gradients
from scratch.losses import (
    categorical_crossentropy,
    categorical_crossentropy_from_logits,
    count_correct,
)

REWRITE_RTOL = 1e-14  # fused vs composed softmax + CE, re-associated maths; measured 0 here


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def batch(n=5, k=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)), rng.integers(0, k, size=n)


def test_cross_entropy_from_probabilities_gradient_matches_finite_differences():
    logits, labels = batch()
    probs = softmax(logits)
    _, grad = categorical_crossentropy(probs, labels)
    loss = lambda: categorical_crossentropy(probs, labels)[0]  # noqa: E731
    check_gradients(loss, {"d loss / d probs": grad}, {"d loss / d probs": probs}, "loss")


def test_cross_entropy_from_logits_gradient_matches_finite_differences():
    logits, labels = batch(seed=1)
    _, grad = categorical_crossentropy_from_logits(logits, labels)
    loss = lambda: categorical_crossentropy_from_logits(logits, labels)[0]  # noqa: E731
    check_gradients(loss, {"d loss / d logits": grad}, {"d loss / d logits": logits}, "loss")


def test_from_logits_equals_softmax_then_cross_entropy_and_is_the_batch_mean():
    logits, labels = batch(n=6, seed=2)
    fused, dlogits = categorical_crossentropy_from_logits(logits, labels)
    composed, _ = categorical_crossentropy(softmax(logits), labels)
    per_example = -np.log(softmax(logits)[np.arange(6), labels])
    check(np.array(fused), np.array(composed), REWRITE_RTOL, "loss", "loss", "composed")
    check(np.array(fused), np.array(per_example.mean()), REWRITE_RTOL, "loss", "loss", "mean")
    onehot = np.eye(4)[labels]
    check(dlogits, (softmax(logits) - onehot) / 6, REWRITE_RTOL, "loss", "dlogits", "(p-y)/N")


def test_from_logits_is_stable_for_huge_logits():
    loss, grad = categorical_crossentropy_from_logits(np.array([[1000.0, -1000.0]]), [1])
    assert loss == 2000.0 and np.isfinite(grad).all()


def test_losses_keep_float32():
    logits, labels = batch()
    _, dlogits = categorical_crossentropy_from_logits(logits.astype(np.float32), labels)
    _, dprobs = categorical_crossentropy(softmax(logits).astype(np.float32), labels)
    assert dlogits.dtype == dprobs.dtype == np.float32


def test_count_correct_takes_the_first_maximum_on_ties():
    probs = np.array([[0.5, 0.5], [0.2, 0.8]])
    assert count_correct(probs, np.array([0, 1])) == 2 and count_correct(probs, [1, 0]) == 0


@pytest.mark.parametrize(
    "labels, message",
    [
        (
            [0, 4, 1],
            "Invalid value for argument `labels`. Expected integers in [0, 4). Received 1 "
            "label(s) outside that range, the first labels[1]=4.",
        ),
        (
            [-1, 0, 9],
            "Invalid value for argument `labels`. Expected integers in [0, 4). Received 2 "
            "label(s) outside that range, the first labels[0]=-1.",
        ),
        (
            [0.0, 1.0, 2.0],
            "Invalid value for argument `labels`. Expected a 1-D integer array of length 3 "
            "(one class index per example). Received labels with dtype float64 and shape (3,).",
        ),
        (
            [0, 1],
            "Invalid value for argument `labels`. Expected a 1-D integer array of length 3 "
            "(one class index per example). Received labels with dtype int64 and shape (2,).",
        ),
    ],
    ids=["above_range", "negative", "float_labels", "wrong_length"],
)
@pytest.mark.parametrize(
    "loss", [categorical_crossentropy, categorical_crossentropy_from_logits],
    ids=["from_probs", "from_logits"],
)  # fmt: skip
def test_bad_labels_are_rejected_with_the_rule_and_value(loss, labels, message):
    with pytest.raises(ValueError) as error:
        loss(np.full((3, 4), 0.25), np.array(labels))
    assert str(error.value) == message


def test_scores_must_be_a_2d_float_batch():
    with pytest.raises(ValueError, match=r"argument `probs`. Expected a non-empty 2-D float"):
        categorical_crossentropy(np.full(4, 0.25), np.array([0]))
