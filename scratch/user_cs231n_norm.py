"""A user's cs231n-style batch norm and dropout classes (``parity check --api cs231n``).

The API (cs231n assignment 2's ``batchnorm_forward``/``dropout_forward`` as classes, the
same as the project's own ``scratch.chw_norm``):

- ``BatchNorm(D, eps=1e-5, momentum=0.9)`` on ``(N, D)`` and ``SpatialBatchNorm(C,
  eps=1e-5, momentum=0.9)`` on ``(N, C, H, W)`` (each channel over N, H and W): hold
  ``gamma``, ``beta``, ``running_mean`` and ``running_var``, all ``(D,)`` (or ``(C,)``);
  ``forward(x, mode)`` with ``mode`` ``"train"`` (batch statistics, running statistics
  updated) or ``"test"`` (running statistics); ``backward(dout) -> (dx, dgamma, dbeta)``
  for the last forward's mode.
- ``Dropout(p)``, ``p`` the KEEP probability; ``forward(x, mode)`` keeps the mask it drew
  in ``mask`` (``x``'s shape: bool, or cs231n's ``(rand < p) / p``; an element is kept
  where ``mask != 0``); ``backward(dout) -> dx``.

Each class is built at the size its layer has in ``spec.networks.CS231N_3LAYER`` (the
Keras names ``batch_normalization``, ``batch_normalization_1``, ``dropout``), with that
description's momentum and epsilon passed explicitly and ``p = 1 - rate``
(:data:`NORM_LAYERS`), and checked before anything runs (:func:`build_checked`: bad input,
exit 2). The methods are called through :func:`call_forward`/:func:`call_backward`, which
check what they return (:class:`scratch.user_api.ApiError`, an ERROR row placed at the
user's method).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scratch.user_api import ApiError, check_array, check_signature, construct, source_of
from spec.networks import CS231N_3LAYER

NORM_CLASSES = ("SpatialBatchNorm", "BatchNorm", "Dropout")
STATISTICS = ("gamma", "beta", "running_mean", "running_var")  # every (D,) array of a batch norm
MODES = ("train", "test")
METHODS = {"forward": ("x", "mode"), "backward": ("dout",)}
API = {
    "BatchNorm": "the cs231n API: BatchNorm(D, eps=1e-5, momentum=0.9) holds `gamma`, `beta`, "
    "`running_mean`, `running_var` (D,); forward(x (N, D), mode='train'|'test'); "
    "backward(dout) -> (dx, dgamma, dbeta)",
    "SpatialBatchNorm": "the cs231n API: SpatialBatchNorm(C, eps=1e-5, momentum=0.9) holds "
    "`gamma`, `beta`, `running_mean`, `running_var` (C,); forward(x (N, C, H, W), "
    "mode='train'|'test'); backward(dout) -> (dx, dgamma, dbeta)",
    "Dropout": "the cs231n API: Dropout(p), p the keep probability; forward(x, mode='train'|"
    "'test') keeps its `mask` (x's shape, kept where mask != 0); backward(dout) -> dx",
}


@dataclass(frozen=True)
class NormLayer:
    """One user class as one layer of ``CS231N_3LAYER``: Keras ``name``, user ``cls``, the
    constructor's ``args``/``kwargs`` (cs231n's names, Keras's values) and ``input_shape``
    ``(N, ...)`` channels-first, N the network's training batch."""

    name: str
    cls: str
    args: tuple
    kwargs: dict
    input_shape: tuple

    @property
    def call(self) -> str:
        """``SpatialBatchNorm(8, eps=1e-05, momentum=0.9)``."""
        parts = [*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"{self.cls}({', '.join(parts)})"

    @property
    def is_batch_norm(self) -> bool:
        return self.cls != "Dropout"


def _norm_layers(network=CS231N_3LAYER) -> tuple[NormLayer, ...]:
    """The batch norms and dropouts of ``network``, mapped to the cs231n classes: Keras's
    ``momentum``/``epsilon`` ARE cs231n's ``momentum``/``eps`` (same update rule, the
    biased variance: ``spec.networks``), cs231n's keep ``p = 1 - rate``."""
    shapes, batch, found = network.shapes(), network.training_batch, []
    for item in network.layers:
        per_example = shapes[item.name][0]  # Keras layout: (H, W, C) or (D,)
        native = (per_example[-1], *per_example[:-1])  # channels-first: (C, H, W) or (D,)
        if item.kind == "BatchNormalization":
            cls = "SpatialBatchNorm" if len(native) == 3 else "BatchNorm"
            kwargs = dict(eps=item.epsilon, momentum=item.momentum)
            found.append(NormLayer(item.name, cls, (native[0],), kwargs, (batch, *native)))
        elif item.kind == "Dropout":
            found.append(NormLayer(item.name, "Dropout", (1 - item.rate,), {}, (batch, *native)))
    return tuple(found)


NORM_LAYERS = _norm_layers()


def build_checked(found: dict) -> dict[str, object]:
    """``{Keras layer name: the user's layer}`` for every class of :data:`NORM_CLASSES`
    in ``found`` (``{name: class}`` of a cs231n file), built as :data:`NORM_LAYERS` says.

    Raises
    ------
    scratch.user_code.UserCodeError
        A constructor that raises; ``gamma``, ``beta``, ``running_mean`` or
        ``running_var`` missing or not a ``(D,)`` array; ``forward``/``backward`` missing
        or unable to take ``forward(x, mode)``/``backward(dout)``: naming the class's
        file and line, the class, the attribute, the rule and what was found.
    """
    built = {}
    for layer in NORM_LAYERS:
        if layer.cls not in found:
            continue
        user = construct(found[layer.cls], layer.args, layer.kwargs, API[layer.cls])
        if layer.is_batch_norm:
            for attribute in STATISTICS:
                check_array(user, attribute, layer.args, layer.call, API[layer.cls])
        for method, arguments in METHODS.items():
            check_signature(user, method, arguments, API[layer.cls])
        built[layer.name] = user
    return built


def call_forward(user, x: np.ndarray, mode: str) -> np.ndarray:
    """``user.forward(x, mode)`` on a copy of ``x``; a copy of its output, which must be
    an array of ``x``'s shape (else :class:`ApiError` at the user's ``forward``)."""
    out = user.forward(np.array(x, copy=True), mode)
    if not isinstance(out, np.ndarray) or out.shape != x.shape:
        raise ApiError(
            f"{type(user).__name__}.forward(x, {mode!r}) returned {_describe(out)} for x of "
            f"shape {x.shape}; the API returns an array shaped like x.",
            source_of(user, "forward"),
        )
    return out.copy()


def read_mask(user, shape: tuple, layer: str = "") -> np.ndarray:
    """The keep mask the user's ``Dropout`` drew in its last training-mode ``forward``:
    bool ``shape``, ``mask != 0``. ``mask`` must be an array of x's ``shape`` holding a
    bool mask or numbers that are 0 where dropped and one common nonzero finite value
    where kept (0/1, or cs231n's ``(rand < p) / p``); else :class:`ApiError` at the user's
    ``forward`` naming ``layer`` (if given), the attribute and what it holds."""
    mask = getattr(user, "mask", None)
    where = f"layer `{layer}`: " if layer else ""
    problem = ""
    if not isinstance(mask, np.ndarray) or mask.shape != shape:
        problem = f"left `mask` {_describe(mask)} for x of shape {shape}"
    elif mask.dtype != bool:
        kept = np.unique(mask[mask != 0]) if mask.dtype.kind in "iuf" else None
        if kept is None or kept.size > 1 or not np.isfinite(kept).all():
            values = "of dtype " + mask.dtype.name if kept is None else (
                f"with {kept.size} distinct nonzero values (e.g. {kept[:3].tolist()})")  # fmt: skip
            problem = f"left `mask` {values}"
    if problem:
        raise ApiError(
            f"{where}{type(user).__name__}.forward(x, 'train') {problem}; the API keeps the "
            "mask drawn in `mask`, shaped like x: bool, or 0 where dropped and one value "
            f"where kept, e.g. (rand < p) / p ({API['Dropout']}).",
            source_of(user, "forward"),
        )
    return mask != 0


def call_backward(user, dout: np.ndarray, batch_norm: bool) -> dict[str, np.ndarray]:
    """``user.backward(dout)`` (on a copy) -> ``{"input": dx}`` and, for a batch norm,
    ``"gamma"``, ``"beta"`` (Keras's weight names); copies. A result of another form is an
    :class:`ApiError` at the user's ``backward``."""
    result = user.backward(np.array(dout, copy=True))
    cls = type(user).__name__
    if not batch_norm:
        if not isinstance(result, np.ndarray):
            raise ApiError(
                f"{cls}.backward returned {_describe(result)}; the API returns dx alone.",
                source_of(user, "backward"),
            )
        return {"input": result.copy()}
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise ApiError(
            f"{cls}.backward returned {_describe(result)}; the API returns (dx, dgamma, dbeta).",
            source_of(user, "backward"),
        )
    return {
        k: np.array(v, copy=True) for k, v in zip(("input", "gamma", "beta"), result, strict=True)
    }


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"
