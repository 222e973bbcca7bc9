"""Categorical cross-entropy, averaged over the batch (Keras), with integer labels.

Two forms, each returning ``(loss, gradient)``:

* ``categorical_crossentropy(probs, labels)``: from probabilities, as in the blog.
  loss = mean_i(-log p[i, y_i]); d loss / d p[i, j] = -1 / (N p[i, y_i]) if j == y_i,
  else 0. Chained through ``Softmax.backward`` this gives ``(p - onehot) / N``.
* ``categorical_crossentropy_from_logits(logits, labels)``: fused and stable.
  loss = mean_i(logsumexp(z_i) - z[i, y_i]), computed with the row maximum
  subtracted; d loss / d z = (softmax(z) - onehot) / N.

Two multiclass hinge losses on scores ``(N, K)``, also ``(loss, gradient)``:

* ``categorical_hinge(scores, labels)``: Keras's ``CategoricalHinge`` exactly:
  ``max(neg - pos + 1, 0)`` with ``pos = s[y]`` and ``neg = max_j((1 - onehot_j) s_j)``,
  so ``neg`` is never below 0 (the masked true class contributes a 0), mean over the
  batch. TensorFlow's gradient rules are mirrored: ``maximum(a, 0)`` passes the gradient
  to ``a`` where ``a >= 0``; ``reduce_max`` splits it equally among tied maxima.
* ``multiclass_svm(scores, labels, delta=1)``: cs231n's SVM loss (Weston-Watkins):
  ``sum_{j != y} max(0, s_j - s_y + delta)``, mean over the batch; the gradient counts
  margins ``> 0``. No Keras loss computes it (``CategoricalHinge`` takes the max over
  the wrong classes, not the sum), so the harness compares it with the same formula
  written in ``keras.ops`` and differentiated by TensorFlow.

The loss is a Python float; gradients have the input's shape and dtype.
"""

from __future__ import annotations

import numpy as np


def check_labels(labels, n: int, num_classes: int) -> np.ndarray:
    """``labels`` as an int64 ``(n,)`` array of classes in ``[0, num_classes)``."""
    array = np.asarray(labels)
    if array.dtype.kind not in "iu" or array.shape != (n,):
        raise ValueError(
            f"Invalid value for argument `labels`. Expected a 1-D integer array of "
            f"length {n} (one class index per example). Received labels with dtype "
            f"{array.dtype} and shape {array.shape}."
        )
    outside = np.flatnonzero((array < 0) | (array >= num_classes))
    if outside.size:
        first = int(outside[0])
        raise ValueError(
            f"Invalid value for argument `labels`. Expected integers in [0, {num_classes}). "
            f"Received {outside.size} label(s) outside that range, the first "
            f"labels[{first}]={int(array[first])}."
        )
    return array.astype(np.int64, copy=False)


def _check_scores(argument: str, scores) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.dtype.kind != "f" or 0 in scores.shape:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a non-empty 2-D float "
            f"array (batch, classes). Received {argument} with shape {scores.shape} and "
            f"dtype {scores.dtype}."
        )
    return scores


def categorical_crossentropy(probs, labels) -> tuple[float, np.ndarray]:
    """Mean cross-entropy from probabilities ``(N, K)`` and its gradient w.r.t. them."""
    probs = _check_scores("probs", probs)
    n, k = probs.shape
    labels = check_labels(labels, n, k)
    rows = np.arange(n)
    picked = probs[rows, labels]
    loss = -np.log(picked).mean()
    dprobs = np.zeros_like(probs)
    dprobs[rows, labels] = -1.0 / (n * picked)
    return float(loss), dprobs


def categorical_crossentropy_from_logits(logits, labels) -> tuple[float, np.ndarray]:
    """Mean cross-entropy from logits ``(N, K)`` (fused, stable) and ``(p - onehot)/N``."""
    logits = _check_scores("logits", logits)
    n, k = logits.shape
    labels = check_labels(labels, n, k)
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    loss = (np.log(total[:, 0]) - shifted[rows, labels]).mean()
    dlogits = exp / total
    dlogits[rows, labels] -= 1
    dlogits /= n
    return float(loss), dlogits


def categorical_hinge(scores, labels) -> tuple[float, np.ndarray]:
    """Keras's ``CategoricalHinge`` (see the module docstring) and its gradient."""
    scores = _check_scores("scores", scores)
    n, k = scores.shape
    labels = check_labels(labels, n, k)
    rows = np.arange(n)
    onehot = np.zeros_like(scores)
    onehot[rows, labels] = 1
    masked = (1 - onehot) * scores
    neg = masked.max(axis=1)
    margin = neg - scores[rows, labels] + 1
    ties = masked == neg[:, None]
    active = (margin >= 0)[:, None] / n  # TF's maximum: the gradient to a where a >= 0
    dscores = active * ((1 - onehot) * ties / ties.sum(axis=1, keepdims=True) - onehot)
    return float(np.maximum(margin, 0).mean()), dscores.astype(scores.dtype, copy=False)


def multiclass_svm(scores, labels, delta: float = 1.0) -> tuple[float, np.ndarray]:
    """cs231n's multiclass SVM loss (see the module docstring) and its gradient."""
    scores = _check_scores("scores", scores)
    n, k = scores.shape
    labels = check_labels(labels, n, k)
    rows = np.arange(n)
    margins = np.maximum(0, scores - scores[rows, labels][:, None] + scores.dtype.type(delta))
    margins[rows, labels] = 0
    positive = (margins > 0).astype(scores.dtype)
    positive[rows, labels] = -positive.sum(axis=1)
    return float(margins.sum() / n), positive / scores.dtype.type(n)


def count_correct(probs: np.ndarray, labels: np.ndarray) -> int:
    """How many rows' argmax (the first one on ties) equals the label."""
    return int(np.count_nonzero(np.argmax(probs, axis=1) == labels))
