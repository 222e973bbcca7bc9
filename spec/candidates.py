"""Candidate layout mistakes of one layer, enumerated from its network description alone.

A layout diagnosis (``parity.diagnosis.layout``) asks of a failing layer: does Keras's
layer compute what the implementation's layer computes once the implementation's weights
reach it through one more transform? Each :class:`Candidate` is such a hypothesis, as
data: for each weight, ``spec.transforms`` records that map the Keras array (as the
description's layout converts it) to the array the implementation's layer really uses,
in Keras layout; or records applied to the layer's input batch (Keras layout). Each
carries a sentence about the implementation's layer and the fix.

Enumerated (numpy only, from the layer's kind and its inferred shapes):

- Conv2D kernel ``(kh, kw, C, F)``: both spatial axes flipped (a true convolution; Keras
  computes cross-correlation), one spatial axis flipped; every axis permutation that
  keeps the shape (rows and columns swapped when kh = kw, C and F swapped when C = F);
  for every other axis order P, a reshape where a transpose was needed, both ways (the
  conversion reshapes a P-ordered kernel, or the layer reshapes its P-ordered kernel);
  input or output channels in reverse order (channel order, e.g. BGR against RGB).
- Conv2D input: examples shifted along the batch axis (``np.pad(x, p)`` pads N and C too).
- Dense kernel ``(in, units)``: ``(units, in)`` used transposed (a permutation when
  square, else read by reshape, both ways); when its input is a Flatten of ``(H, W, C)``,
  rows in any other flatten order (CHW, WHC, ...), both ways.

Candidates with the same effect on every weight are kept once (the first, in the order
above: the commonest mistakes first); one with no effect (a flip of a unit axis) never.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from spec import transforms as T
from spec.network import Network

KERNEL_AXES = ("kh", "kw", "C", "F")  # Keras Conv2D kernel
# Common native kernel orders first (the dedupe keeps the first of equal effects):
# PyTorch / cs231n (F, C, kh, kw), channels-last filters (F, kh, kw, C), then the rest.
PREFERRED_ORDERS = (("F", "C", "kh", "kw"), ("F", "kh", "kw", "C"), ("C", "F", "kh", "kw"))
BATCH_SHIFTS = (1, 2)  # np.pad(x, p) on the batch axis shifts examples by p


@dataclass(frozen=True)
class Inverse:
    """The inverse of a transform record: Keras array = ``inner.from_keras(native)``."""

    inner: object

    def keras_shape(self, shape):
        return self.inner.native_shape(shape)

    def native_shape(self, shape):
        return self.inner.keras_shape(shape)

    def to_keras(self, a: np.ndarray) -> np.ndarray:
        return self.inner.from_keras(a)

    def from_keras(self, a: np.ndarray) -> np.ndarray:
        return self.inner.to_keras(a)


@dataclass(frozen=True)
class ShiftBatch:
    """Example ``n`` of the result is example ``n - steps`` of the batch (axis 0), the
    first ``steps`` examples zeros. Moves elements but loses the last ``steps``: one way
    only (``from_keras`` raises TransformError)."""

    steps: int

    def keras_shape(self, shape):
        return tuple(shape)

    native_shape = keras_shape

    def to_keras(self, a: np.ndarray) -> np.ndarray:
        out = np.zeros_like(a)
        out[self.steps :] = a[: max(len(a) - self.steps, 0)]
        return out

    def from_keras(self, a: np.ndarray) -> np.ndarray:
        raise T.TransformError(f"{self}: a shift of the batch axis cannot be undone.")


@dataclass(frozen=True)
class Candidate:
    """One hypothesis about a layer, as data.

    ``name``: a stable id (``true-convolution``, ``rows-CHW``, ...); ``family``: what it
    changes (``flip``, ``axes``, ``channels``, ``rows``, ``input``; pairs combine two
    families); ``sentence``: what the implementation's layer computes, in words;
    ``advice``: the fix; ``weights``: ``((weight, records), ...)``, records Keras -> Keras
    appended to that weight's layout; ``input``: records applied to the layer's input
    batch in Keras layout.
    """

    name: str
    family: str
    sentence: str
    advice: str
    weights: tuple = ()
    input: tuple = ()

    def transforms_of(self, weight: str) -> tuple:
        return dict(self.weights).get(weight, ())

    def then(self, other: Candidate) -> Candidate:
        """Both mistakes: ``self``'s records, then ``other``'s, on each weight."""
        names = dict.fromkeys(w for w, _ in (*self.weights, *other.weights))
        weights = tuple((w, self.transforms_of(w) + other.transforms_of(w)) for w in names)
        return Candidate(f"{self.name} + {other.name}", f"{self.family}+{other.family}",
                         f"{self.sentence}; and {other.sentence}",
                         f"{self.advice}; and {other.advice}", weights,
                         self.input + other.input)  # fmt: skip


def candidates(network: Network, layer: str) -> tuple[Candidate, ...]:
    """Every single candidate of ``layer`` (a layer name of ``network``), deduplicated;
    empty for a layer without weights."""
    item = network.layer(layer)
    weights = network.weight_shapes().get(layer, {})
    if item.kind == "Conv2D":
        found = _conv(weights)
    elif item.kind == "Dense":
        found = _dense(weights["kernel"], _flattened_grid(network, layer))
    else:
        found = []
    return _distinct(found, weights)


def pairs(network: Network, layer: str) -> tuple[Candidate, ...]:
    """Two weight candidates of different families composed, in both orders (a flip and a
    reshape do not commute), deduplicated (and distinct from every single candidate)."""
    singles = [c for c in candidates(network, layer) if not c.input]
    combined = [a.then(b) for a, b in itertools.permutations(singles, 2) if a.family != b.family]
    weights = network.weight_shapes().get(layer, {})
    seen = {_effect(c, weights) for c in singles}
    return tuple(c for c in _distinct(combined, weights) if _effect(c, weights) not in seen)


# -- effects and dedupe ------------------------------------------------------------------


def _effect(candidate: Candidate, shapes: dict) -> tuple:
    """Where each weight's elements go: the candidate applied to index arrays."""
    moved = []
    for weight, records in candidate.weights:
        index = np.arange(math.prod(shapes[weight]), dtype=np.float64).reshape(shapes[weight])
        out = T.to_keras(records, index)
        if out.shape != tuple(shapes[weight]):
            raise T.TransformError(f"{candidate.name}: {weight} {shapes[weight]} -> {out.shape}.")
        if not np.array_equal(out, index):
            moved.append((weight, out.tobytes()))
    return tuple(moved), candidate.input


def _distinct(found, shapes: dict) -> tuple[Candidate, ...]:
    kept, seen = [], {((), ())}  # the identity is no candidate
    for candidate in found:
        effect = _effect(candidate, shapes)
        if effect not in seen:
            seen.add(effect)
            kept.append(candidate)
    return tuple(kept)


def _names(axes, sizes: dict) -> str:
    """``(F, C, kh, kw)``, unit axes left out (a blog kernel is ``(F, kh, kw)``)."""
    return "(" + ", ".join(a for a in axes if sizes[a] != 1) + ")"


def _kernel(*records) -> tuple:
    return (("kernel", records),)


def _bias(shapes: dict, *records) -> tuple:
    return (("bias", records),) if "bias" in shapes else ()


# -- Conv2D ----------------------------------------------------------------------------


def _conv(shapes: dict) -> list[Candidate]:
    shape = shapes["kernel"]
    sizes = dict(zip(KERNEL_AXES, shape, strict=True))
    found = [
        Candidate("true-convolution", "flip",
                  "the kernel is flipped in both spatial axes: your layer computes a true "
                  "convolution; Keras computes cross-correlation",
                  "use the kernel as stored, out[i, j] = sum x[i + a, j + b] * w[a, b] "
                  "(no 180-degree rotation)", _kernel(T.Flip((0, 1)))),
        Candidate("kernel-rows-flipped", "flip", "the kernel is flipped upside down (its "
                  "rows reversed)", "do not reverse the kernel's rows", _kernel(T.Flip((0,)))),
        Candidate("kernel-columns-flipped", "flip", "the kernel is flipped left to right "
                  "(its columns reversed)", "do not reverse the kernel's columns",
                  _kernel(T.Flip((1,)))),
    ]  # fmt: skip
    keras = _names(KERNEL_AXES, sizes)
    orders = PREFERRED_ORDERS + tuple(itertools.permutations(KERNEL_AXES))
    for order in dict.fromkeys(orders):
        if order == KERNEL_AXES:
            continue
        perm = tuple(order.index(a) for a in KERNEL_AXES)  # P-ordered -> (kh, kw, C, F)
        p_shape = tuple(sizes[a] for a in order)
        p = _names(order, sizes)
        tag = p.strip("()").replace(", ", "-")
        if p_shape == shape:
            found.append(Candidate(
                f"axes-{tag}", "axes",
                f"your layer reads the kernel's axes in {p} order where Keras's are {keras}",
                f"index the kernel as {keras}: np.transpose(w, {perm})",
                _kernel(T.Permute(perm))))  # fmt: skip
        found.append(Candidate(
            f"converted-by-reshape-{tag}", "axes",
            f"the kernel is held as {p} and converted to Keras's {keras} by a reshape where "
            "a transpose is needed",
            f"transpose it, np.transpose(w, {perm}); a reshape keeps the memory order",
            _kernel(T.Reshape(shape, p_shape), T.Permute(perm))))  # fmt: skip
        found.append(Candidate(
            f"layer-reshapes-{tag}", "axes",
            f"your layer reshapes its {p} kernel into {keras} order where a transpose is "
            "needed",
            f"transpose it in the layer, np.transpose(w, {perm}); a reshape keeps the "
            "memory order",
            _kernel(Inverse(T.Permute(perm)), T.Reshape(p_shape, shape))))  # fmt: skip
    found += [
        Candidate("input-channels-reversed", "channels",
                  "your layer reads its input channels in reverse order",
                  "keep the channel order of the input (e.g. RGB, not BGR)", _kernel(T.Flip((2,)))),
        Candidate("output-channels-reversed", "channels",
                  "your layer writes its output channels (filters) in reverse order",
                  "keep filter f in output channel f",
                  _kernel(T.Flip((3,))) + _bias(shapes, T.Flip((0,)))),
    ]  # fmt: skip
    for steps in BATCH_SHIFTS:
        found.append(Candidate(
            f"batch-shifted-{steps}", "input",
            f"example n of your layer's output is computed from example n-{steps} (zeros "
            f"before the first): the batch axis is padded too, as np.pad(x, {steps}) pads "
            "every axis, not only H and W",
            f"pad the spatial axes only: np.pad(x, ((0, 0), (0, 0), ({steps}, {steps}), "
            f"({steps}, {steps}))) for NCHW", input=(ShiftBatch(steps),)))  # fmt: skip
    return found


# -- Dense -----------------------------------------------------------------------------


def _flattened_grid(network: Network, layer: str):
    """The ``(H, W, C)`` a Flatten just before ``layer`` flattens, or None."""
    names = [item.name for item in network.layers]
    i = names.index(layer)
    if i and network.layers[i - 1].kind == "Flatten":
        grid = network.shapes()[names[i - 1]][0]
        return grid if len(grid) == 3 else None
    return None


def _dense(shape: tuple, grid) -> list[Candidate]:
    inputs, units = shape
    found = []
    if inputs == units:
        found.append(Candidate("kernel-transposed", "axes",
                               "your layer uses its (units, inputs) kernel transposed",
                               "use w as (inputs, units): x @ w",
                               _kernel(T.Permute((1, 0)))))  # fmt: skip
    found += [
        Candidate("converted-by-reshape-units-inputs", "axes",
                  "the kernel is held as (units, inputs) and converted to Keras's (inputs, "
                  "units) by a reshape where a transpose is needed",
                  "transpose it, w.T; a reshape keeps the memory order",
                  _kernel(T.Reshape(shape, (units, inputs)), T.Permute((1, 0)))),
        Candidate("layer-reshapes-units-inputs", "axes",
                  "your layer reshapes its (units, inputs) kernel into (inputs, units) where "
                  "a transpose is needed", "transpose it in the layer, w.T",
                  _kernel(Inverse(T.Permute((1, 0))), T.Reshape((units, inputs), shape))),
    ]  # fmt: skip
    if grid is None:
        return found
    sizes = dict(zip(T.FLAT_AXES, grid, strict=True))
    hwc = ", ".join(T.FLAT_AXES)
    orders = ("CHW", "WHC", *("".join(p) for p in itertools.permutations(T.FLAT_AXES)))
    for order in dict.fromkeys(orders):
        if order == T.FLAT_AXES:
            continue
        record = T.FlattenOrder(0, order).bind(grid)
        named = ", ".join(order)
        shape_o = ", ".join(str(sizes[a]) for a in order)
        perm = ", ".join(str(order.index(a)) for a in T.FLAT_AXES)
        found.append(Candidate(
            f"rows-{order}", "rows",
            f"the kernel's rows follow the flatten order {named} of its {grid} input; "
            f"Keras's Flatten orders them {hwc}",
            f"permute the rows: w.reshape({shape_o}, {units}).transpose({perm}, 3)"
            f".reshape({inputs}, {units}), or flatten the input {hwc}",
            _kernel(record)))  # fmt: skip
        found.append(Candidate(
            f"rows-permuted-as-{order}", "rows",
            f"the kernel's rows are permuted as for the flatten order {named}, but your "
            f"layer flattens its input {hwc} as Keras does",
            "leave the rows in the order your layer flattens its input",
            _kernel(Inverse(record))))  # fmt: skip
    return found
