"""What the tests share: one check wrapper over ``parity.compare`` and the FD helpers.

numpy only (no TensorFlow), like ``parity.finite_diff`` underneath: the unit tests of the
scratch layers use it. Tests call :func:`check` instead of ``assert_allclose``, so every
failure names the layer, the quantity, both sides and the worst element; gradients are
checked against central finite differences with :func:`check_gradients`.
"""

from __future__ import annotations

import numpy as np

from parity import tolerances
from parity.checks.common import mean_loss
from parity.compare import Comparison, compare
from parity.finite_diff import central_difference
from scratch.protocol import Capability

EXACT = 0.0  # the same arithmetic on both sides
FD_EPS = 1e-6  # the tests' central step: their objectives are O(1) and their inputs kink-free
# by construction (kept >= 1e-3 from a ReLU zero or a max-pool tie); truncation O(eps^2
# f''') ~ 1e-12, rounding ~ 1e-16 |f| / eps ~ 1e-10 absolute
FD_RTOL = tolerances.DERIVATIONS_FLOAT64.rtol  # the derivations check's rtol, with atol 0
# (stricter: no round-off floor). Measured worst norm-wise errors at FD_EPS, float64: layer
# probes 5.0e-9 (NHWC conv2d input), chw layers 2.4e-9 (Conv dx), networks 2.1e-8 (two-conv
# conv2d input), 9.0e-9 (chw-relu softmax input at O(1) weights), zhou trained 8.4e-9.


def check(
    actual, desired, rtol: float, layer: str, quantity: str, desired_side: str = "fd",
    *, actual_side: str = "scratch", atol: float = 0.0,
) -> Comparison:  # fmt: skip
    """``parity.compare`` (shape, dtype, values) and assert it passed; returns the record.

    The assertion message is the record's: layer, quantity, both sides, the rule, the
    worst element and both values there.
    """
    record = compare(
        actual, desired, layer=layer, quantity=quantity, atol=atol, rtol=rtol,
        actual_side=actual_side, desired_side=desired_side,
    )  # fmt: skip
    assert record.passed, record.message
    return record


def probe(forward, x, v):
    """The objective ``sum(forward(x) * v)``: its gradient w.r.t. the output is ``v``, so a
    layer's backward of ``v`` is the gradient of this objective. ``() -> float``."""
    return lambda: float(np.sum(forward(x) * v))


def check_gradients(
    objective, gradients: dict, arrays: dict, layer: str, rtol: float = FD_RTOL,
    eps: float = FD_EPS,
) -> None:  # fmt: skip
    """Each ``gradients[name]`` against central differences of ``objective()`` w.r.t. the
    array ``arrays[name]`` (perturbed in place, restored bit-exactly). A name of
    ``arrays`` missing from ``gradients`` fails, naming it."""
    missing = sorted(set(arrays) - set(gradients))
    assert not missing, f"layer `{layer}`: no gradient for {missing}"
    for name, array in arrays.items():
        numeric = central_difference(objective, array, eps)
        check(gradients[name], numeric, rtol, layer, name)


def model_difference(model, x, labels, layer: str, quantity: str, eps: float = FD_EPS,
                     indices=None) -> np.ndarray:  # fmt: skip
    """Central differences of a ``HarnessModel``'s mean loss w.r.t. ``layer``'s ``quantity``.

    ``quantity`` is a weight name (the live weight is perturbed and restored) or
    ``input``: the model input ``x`` for the first layer (a copy is perturbed), and for a
    later layer the activation feeding it, through the model's ``loss_from``. Returns
    ``x.shape``-like float64 (or ``(len(indices),)``). ValueError names the argument;
    ``scratch.protocol.CapabilityError`` when a later layer's input is asked of a model
    without ``Capability.LOSS_FROM``.
    """
    names = tuple(model.layer_names)
    if layer not in names:
        raise ValueError(
            f"Invalid value for argument `layer`. Expected one of {names}. Received "
            f"layer={layer!r}."
        )
    if quantity != "input":
        weights = model.params().get(layer, {})
        if quantity not in weights:
            raise ValueError(
                f"Invalid value for argument `quantity`. Expected 'input' or a weight of "
                f"layer `{layer}` {tuple(weights)}. Received quantity={quantity!r}."
            )
        return central_difference(lambda: mean_loss(model, x, labels), weights[quantity],
                                  eps, indices)  # fmt: skip
    if layer == names[0]:
        probe_x = np.array(x, copy=True)
        return central_difference(lambda: mean_loss(model, probe_x, labels), probe_x, eps,
                                  indices)  # fmt: skip
    model.require(Capability.LOSS_FROM)
    h = np.array(model.forward(x)[names[names.index(layer) - 1]], copy=True)
    return central_difference(lambda: model.loss_from(layer, h, labels), h, eps, indices)


def planted_copy(source, folder, *edits):
    """A copy of the user file ``source`` written to ``folder`` under its own name, with each
    ``(old, new)`` of ``edits`` applied once: how tests plant a mistake in a shipped example.
    AssertionError if an ``old`` is not in the file exactly once (the edit would plant
    nothing, or somewhere else). Returns the copy's path."""
    from pathlib import Path

    text = Path(source).read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = Path(folder) / Path(source).name
    path.write_text(text)
    return path
