"""Central finite differences, the derivation-independent oracle for gradients.

``central_difference(f, x, eps)`` perturbs ``x`` in place, one element at a time,
``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``, and writes the original value back
after each element (bit-exact restore). ``model_difference`` does the same for a
``HarnessModel``'s mean loss with respect to one named weight or a layer's input.

Use float64: with ``eps = 1e-6`` the truncation error is O(eps^2 f''') ~ 1e-12 and
the rounding error about ``1e-16 * |f| / eps`` ~ 1e-10, far below the 1e-7 bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from scratch.layers import invalid_argument
from scratch.losses import categorical_crossentropy


def central_difference(
    f: Callable[[], float], x: np.ndarray, eps: float = 1e-6, indices: Iterable[int] | None = None
) -> np.ndarray:
    """Central differences of ``f()`` (which reads ``x``) with respect to ``x``.

    Parameters
    ----------
    f : callable () -> float
    x : numpy.ndarray
        Perturbed in place element by element and restored exactly.
    eps : float
    indices : iterable of int, optional
        Flat (C-order) indices to differentiate; default every element.

    Returns
    -------
    numpy.ndarray
        ``x.shape`` when ``indices`` is None, else ``(len(indices),)``; float64.
    """
    if not isinstance(x, np.ndarray) or not x.flags.writeable:
        raise invalid_argument("x", "a writeable numpy array (perturbed in place)", type(x))
    if not eps > 0:
        raise invalid_argument("eps", "a strictly positive float", eps)
    flat = range(x.size) if indices is None else [int(i) for i in indices]
    result = np.empty(len(flat), dtype=np.float64)
    for k, i in enumerate(flat):
        where = np.unravel_index(i, x.shape)
        original = x[where].copy()
        x[where] = original + eps
        plus = f()
        x[where] = original - eps
        minus = f()
        x[where] = original
        result[k] = (plus - minus) / (2 * eps)
    return result.reshape(x.shape) if indices is None else result


def model_loss(model, x: np.ndarray, labels: np.ndarray) -> float:
    """A HarnessModel's mean cross-entropy from its output probabilities."""
    return categorical_crossentropy(model.probabilities(x), labels)[0]


def model_difference(
    model,
    x: np.ndarray,
    labels: np.ndarray,
    layer: str,
    quantity: str,
    eps: float = 1e-6,
    indices: Iterable[int] | None = None,
) -> np.ndarray:
    """Finite differences of ``model``'s mean loss w.r.t. ``grads[layer][quantity]``.

    ``quantity`` is a weight name (the live weight is perturbed and restored) or
    ``input``: the model input ``x`` for the first layer (a copy is perturbed), and
    for a later layer the activation feeding it, which needs ``model.loss_from``
    (``Sequential`` has it).
    """
    if quantity != "input":
        weights = model.params().get(layer, {})
        if quantity not in weights:
            raise invalid_argument(
                "quantity", f"'input' or a weight of layer `{layer}` {tuple(weights)}", quantity
            )
        return central_difference(
            lambda: model_loss(model, x, labels), weights[quantity], eps, indices
        )
    names = tuple(model.layer_names)
    if layer not in names:
        raise invalid_argument("layer", f"one of {names}", layer)
    if layer == names[0]:
        probe = np.array(x, copy=True)
        return central_difference(lambda: model_loss(model, probe, labels), probe, eps, indices)
    if not hasattr(model, "loss_from"):
        raise ValueError(
            f"Invalid value for argument `layer`. Expected the first layer `{names[0]}` for "
            f"quantity 'input' (model `{model.name}` has no loss_from). Received layer={layer!r}."
        )
    previous = names[names.index(layer) - 1]
    h = np.array(model.forward(x)[previous], copy=True)
    return central_difference(lambda: model.loss_from(layer, h, labels), h, eps, indices)
