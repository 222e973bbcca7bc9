"""The channels-first family's loss: the second seed document's ``softmax_loss(scores, y)``
(softmax cross-entropy averaged over the batch, and ``dscores`` already divided by N) and
the ``softmax`` it builds its probabilities with. numpy only.
"""

from __future__ import annotations

import numpy as np

from scratch.chw_checks import _cast_finite, _invalid
from scratch.protocol import check_dtype


def softmax(scores) -> np.ndarray:
    """Row-wise softmax ``exp(s - max s) / sum exp(s - max s)``, last axis.

    ``softmax_loss`` builds its probabilities with this very function, so the
    probabilities a model reports are bit-identical to the ones its loss used.
    """
    scores = np.asarray(scores)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_loss(scores, y) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy averaged over the batch, and its gradient.

    Parameters
    ----------
    scores : ndarray (N, K) or (K,)
        Logits, float32 or float64 (kept in that dtype).
    y : int array (N,) or int
        Class indices in ``[0, K)``.

    Returns
    -------
    loss : float
        ``mean_n( log sum_k exp(s_nk - m_n) - (s_n,y_n - m_n) )``, ``m_n = max_k s_nk``.
    dscores : ndarray like ``scores``
        ``(softmax(scores) - onehot(y)) / N``.
    """
    scores_in = np.asarray(scores)
    if scores_in.ndim not in (1, 2) or scores_in.shape[-1] < 1:
        raise _invalid("scores", "rank 2 (N, K) or rank 1 (K,)", f"scores.shape={np.shape(scores)}")
    dtype = check_dtype(scores_in.dtype) if scores_in.dtype.kind == "f" else np.dtype("float64")
    s = _cast_finite(scores_in, dtype, "scores")
    single = s.ndim == 1
    s = s[None] if single else s
    labels = _check_labels(y, s.shape[0], s.shape[1], single)
    n = s.shape[0]
    rows = np.arange(n)
    shifted = s - s.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, labels].mean()
    dscores = softmax(s)  # same computation the model reports as its probabilities
    dscores[rows, labels] -= 1
    dscores /= dtype.type(n)
    return float(loss), (dscores[0] if single else dscores)


def _check_labels(y, n: int, k: int, single: bool) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise _invalid("y", "integer class indices", f"y.dtype={y.dtype}")
    want = () if single else (n,)
    if y.shape != want:
        raise _invalid("y", f"shape {want} (one label per row of scores)", f"y.shape={y.shape}")
    y = y.reshape(-1)
    outside = (y < 0) | (y >= k)
    if outside.any():
        raise _invalid(
            "y",
            f"class indices in [0, {k})",
            f"y={int(y[outside][0])} at position {int(np.flatnonzero(outside)[0])}",
        )
    return y
