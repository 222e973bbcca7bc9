"""Central finite differences: the one engine behind the derivations check and the tests.

numpy only (no TensorFlow): tests of scratch layers use it too; scratch never imports it.
Everything here evaluates the function being differentiated at perturbed points; nothing
uses a hand derivation or autodiff, so the differences stay an independent oracle.

- :func:`point_losses` perturbs an array in place, one element at a time, and restores
  it bit-exactly: ``f`` evaluated at ``x + k eps e_i`` for each multiple ``k``.
- :func:`central_difference`: the plain two-point difference ``(f(x+h) - f(x-h)) / 2h``
  (the tests' oracle on kink-free inputs).
- :func:`pointwise`: the four-point difference with the kink classifier (weights; ``f``
  may return per-example losses, classified one example at a time).
- :func:`per_example`: the same for an activation ``h (N, ...)``, one position in every
  example at once and many positions per call of a batched ``tail`` (layer inputs).
- :func:`classify`: which points are kinks, where FD is one-sided and cannot judge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from parity import tolerances

EPS = 1e-5  # central step: measured best of 1e-6..1e-4 (round-off ulp(loss)/EPS dominates below)
MULTIPLES = (1, -1, 2, -2)  # steps of the classified difference, in units of EPS
KINK_JUMP = 1e-4  # |fwd - bwd| / max|fd| marking an exact kink (smooth: EPS*|f''| / max|fd|)
KINK_SHARE = 0.5  # a point is judged only if FD's own consistency errors stay below this
# share of the derivations budget (atol + rtol * max|fd|): otherwise FD cannot vouch for it.
KINK_NOISE_ULPS = 2  # round-off allowance of the consistency tests, in ulp(loss) / EPS:
# measured |C(EPS) - C(2 EPS)| on smooth points <= 1 ulp(loss) / EPS (4.4e-11; chw and
# chw-relu trained, seed 1). Without it, round-off of a gradient of scale ~1e-5 reads as
# kinks.
CHUNK_BYTES = 4 * 2**20  # perturbed inputs per call of a batched numpy tail: of 2-64 MiB,
# 4 MiB was fastest on the scratch forward passes (their activations are ~20x the inputs)


@dataclass(frozen=True)
class Differences:
    """Classified central differences.

    ``values`` float64, FD of the function at each point (0 at a kink); ``kinks`` bool,
    same shape: the points FD cannot judge (one-sided there, or excluded by the caller).
    """

    values: np.ndarray
    kinks: np.ndarray

    @property
    def judged_fraction(self) -> float:
        return 1.0 - float(self.kinks.mean()) if self.kinks.size else 1.0


def point_losses(
    f: Callable[[], float],
    x: np.ndarray,
    indices: Iterable[int],
    steps: Iterable[float],
    on_point: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``f()`` with ``x.flat[i]`` moved by each step, float64: ``(len(steps),
    len(indices)) + shape`` where ``shape`` is that of ``f()``'s value (``()`` for a scalar
    loss, ``(N,)`` for per-example losses).

    ``x`` (any shape, writeable) is perturbed in place, one element at a time, and each
    element is written back bit-exactly before the next. ``on_point(points done)``,
    optional, is called after each point (progress). ValueError names the argument.
    """
    if not isinstance(x, np.ndarray) or not x.flags.writeable:
        raise ValueError(
            "Invalid value for argument `x`. Expected a writeable numpy array (perturbed in "
            f"place). Received {type(x).__name__}"
            + ("" if not isinstance(x, np.ndarray) else " (read-only)") + "."
        )  # fmt: skip
    steps = [float(s) for s in steps]
    indices = [int(i) for i in indices]
    losses = None
    for j, i in enumerate(indices):
        where = np.unravel_index(i, x.shape)
        original = x[where].copy()
        for row, step in enumerate(steps):
            x[where] = original + step
            value = np.asarray(f(), dtype=np.float64)
            if losses is None:
                losses = np.empty((len(steps), len(indices)) + value.shape, np.float64)
            losses[row, j] = value
        x[where] = original  # bit-exact restore
        if on_point is not None:
            on_point(j + 1)
    return np.empty((len(steps), 0)) if losses is None else losses


def central_difference(
    f: Callable[[], float], x: np.ndarray, eps: float, indices: Iterable[int] | None = None
) -> np.ndarray:
    """``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`` of ``f()``, which reads ``x``.

    Parameters
    ----------
    f : callable () -> float
    x : numpy.ndarray
        Perturbed in place element by element and restored exactly.
    eps : float
        Strictly positive.
    indices : iterable of int, optional
        Flat (C-order) indices; default every element.

    Returns
    -------
    numpy.ndarray
        float64, ``x.shape`` when ``indices`` is None, else ``(len(indices),)``. No kink
        classification: for inputs kept away from kinks by construction (the tests).
    """
    _check_eps(eps)
    idx = range(np.size(x)) if indices is None else indices
    losses = point_losses(f, x, idx, (eps, -eps))
    result = (losses[0] - losses[1]) / (2 * eps)
    return result.reshape(x.shape) if indices is None else result


def pointwise(f, x: np.ndarray, indices, eps: float = EPS, on_point=None) -> Differences:
    """Classified differences of ``f()`` at ``x.flat[indices]``: ``(len(indices),) +
    shape``, ``shape`` that of ``f()``'s value (a vector ``f``, e.g. per-example losses,
    is differenced and classified element by element: a kink in one example's loss
    leaves the others judged).

    Four evaluations per point (``MULTIPLES``), the base ``f()`` once; see :func:`classify`.
    ``on_point``: as in :func:`point_losses`.
    """
    _check_eps(eps)
    losses = point_losses(f, x, indices, [k * eps for k in MULTIPLES], on_point)
    return classify(losses, np.asarray(f(), dtype=np.float64), eps)


def per_example(
    tail, h: np.ndarray, eps: float = EPS, exclude=None, chunk_bytes: int = CHUNK_BYTES
) -> Differences:
    """d mean(tail(h)) / dh, one position in every example at once: ``h.shape`` float64.

    ``tail`` maps a batch ``(B, ...)`` to per-example losses ``(B,)``; it is called with
    many perturbed copies of ``h`` at once (``chunk_bytes`` of inputs per call), so an
    ``(N, ...)`` tensor costs ``4 x positions`` example evaluations in few calls. Points of
    ``exclude`` (bool, ``h.shape``; e.g. near max-pool ties) count as kinks.
    """
    _check_eps(eps)
    n, per = h.shape[0], h[0].size
    flat = h.reshape(n, per)
    base = np.asarray(tail(h), dtype=np.float64)  # (N,)
    losses = np.empty((len(MULTIPLES), per, n))
    chunk = max(1, chunk_bytes // (len(MULTIPLES) * n * per * h.itemsize))
    for start in range(0, per, chunk):
        positions = np.arange(start, min(start + chunk, per))
        p = len(positions)
        batch = np.empty((len(MULTIPLES), p, n, per), dtype=h.dtype)
        batch[...] = flat  # copy i of the chunk moves position start + i, in every example
        for row, k in enumerate(MULTIPLES):
            batch[row, np.arange(p), :, positions] = flat[:, positions].T + k * eps
        out = tail(batch.reshape((len(MULTIPLES) * p * n,) + h.shape[1:]))
        losses[:, start : start + p] = np.asarray(out, np.float64).reshape(-1, p, n)
    result = classify(losses.transpose(0, 2, 1), base[:, None], eps)  # (N, per) each
    kinks = result.kinks if exclude is None else result.kinks | exclude.reshape(n, per)
    values = np.where(kinks, 0.0, result.values) / n
    return Differences(values.reshape(h.shape), kinks.reshape(h.shape))


def classify(losses: np.ndarray, base, eps: float = EPS) -> Differences:
    """Losses at +EPS, -EPS, +2EPS, -2EPS (``(4, ...)``) and at 0 -> :class:`Differences`.

    FD is one-sided at a kink, so kinks get FD 0 and are left out of the comparison. With
    ``C(h)`` the central difference and ``J(h) = |f(h) - 2 f(0) + f(-h)| / h``, a point is
    a kink where (a) the forward and backward differences disagree grossly (``J(EPS)``,
    a ReLU at exactly 0), or where FD's own consistency fails by more than a share of
    the budget: (b) ``C(EPS)`` vs ``C(2 EPS)``, or (c) ``J(2 EPS)`` vs ``2 J(EPS)`` (equal
    for a smooth function up to EPS^3). For a kink at distance ``d < EPS`` the error of
    ``C(EPS)`` is ``D (EPS - d) / (2 EPS)`` (``D`` the jump in slope), (b) reads
    ``D d / (4 EPS)`` and (c) ``D |3 d - 2 EPS| / (2 EPS)``: the larger of the two is
    at least 0.7 times that error for every ``d``, so a point left in cannot carry a
    kink error much above ``KINK_SHARE`` of the budget (the seed-18 zhou input pixel
    whose undetected kink gave 9.5e-7 relative is caught by (c)). The budget is the
    derivations check's (``parity.tolerances.DERIVATIONS_FLOAT64``).
    """
    tol = tolerances.get("derivations", "float64")
    c1 = (losses[0] - losses[1]) / (2 * eps)
    c2 = (losses[2] - losses[3]) / (4 * eps)
    j1 = np.abs(losses[0] - 2 * base + losses[1]) / eps
    j2 = np.abs(losses[2] - 2 * base + losses[3]) / (2 * eps)
    scale = np.abs(c1).max(initial=0.0)
    ulp = np.spacing(np.abs(base).max(initial=0.0)) / eps
    allow = KINK_SHARE * (tol.atol + tol.rtol * scale) + KINK_NOISE_ULPS * ulp
    kinks = (
        (j1 > KINK_JUMP * scale + allow)
        | (np.abs(c1 - c2) > allow)
        | (np.abs(j2 - 2 * j1) > allow + 4 * KINK_NOISE_ULPS * ulp)  # j2 - 2 j1: 5 ulp noise
    )
    return Differences(np.where(kinks, 0.0, c1), kinks)


def _check_eps(eps) -> None:
    if not (isinstance(eps, (int, float, np.floating)) and eps > 0):
        raise ValueError(
            "Invalid value for argument `eps`. Expected a strictly positive float. "
            f"Received eps={eps!r}."
        )
