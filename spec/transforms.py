"""Layout transforms: how a native array relates to its Keras array, as data.

Each record is a frozen dataclass (comparable, printable, enumerable: a later diagnosis
builds candidate layouts from the same primitives) that converts both ways:

- ``to_keras(a)``: the native array -> the Keras array;
- ``from_keras(a)``: the inverse, bit-exact (every primitive moves elements, none
  computes: a transpose, an added or removed unit axis, a flip, a regrouping of rows);
- ``keras_shape(shape)`` / ``native_shape(shape)``: the same maps on shapes, where
  ``None`` stands for the batch axis N.

A layout is a tuple of records applied in order from native to Keras
(:func:`to_keras`), in reverse from Keras to native (:func:`from_keras`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

Shape = tuple  # entries int, or None for the batch axis N


class TransformError(ValueError):
    """A transform applied to a shape it does not fit; the message names the rule."""


def _normalize(axis: int, ndim: int, record) -> int:
    if not -ndim <= axis < ndim:
        raise TransformError(f"{record}: axis {axis} is out of range for rank {ndim}.")
    return axis % ndim


@dataclass(frozen=True)
class Permute:
    """Keras array = ``native.transpose(axes)``, e.g. NCHW -> NHWC is ``(0, 2, 3, 1)``."""

    axes: tuple[int, ...]

    def __post_init__(self):
        if sorted(self.axes) != list(range(len(self.axes))):
            raise TransformError(
                f"Permute: expected `axes` to be a permutation of 0..{len(self.axes) - 1}. "
                f"Received axes={self.axes}."
            )

    def _check(self, shape: Shape) -> None:
        if len(shape) != len(self.axes):
            raise TransformError(
                f"{self}: expected a rank-{len(self.axes)} array, received shape {shape}."
            )

    def keras_shape(self, shape: Shape) -> Shape:
        self._check(shape)
        return tuple(shape[i] for i in self.axes)

    def native_shape(self, shape: Shape) -> Shape:
        self._check(shape)
        return tuple(shape[i] for i in np.argsort(self.axes))

    def to_keras(self, a: np.ndarray) -> np.ndarray:
        self._check(a.shape)
        return a.transpose(self.axes)

    def from_keras(self, a: np.ndarray) -> np.ndarray:
        self._check(a.shape)
        return a.transpose(np.argsort(self.axes))


@dataclass(frozen=True)
class ExpandDims:
    """Keras array = native with a unit axis inserted at ``axis`` (of the Keras array):
    the blog's images ``(N, 28, 28)`` are Keras's ``(N, 28, 28, 1)`` with ``axis=3``."""

    axis: int

    def keras_shape(self, shape: Shape) -> Shape:
        axis = _normalize(self.axis, len(shape) + 1, self)
        return tuple(shape[:axis]) + (1,) + tuple(shape[axis:])

    def native_shape(self, shape: Shape) -> Shape:
        axis = _normalize(self.axis, len(shape), self)
        if shape[axis] != 1:
            raise TransformError(
                f"{self}: expected size 1 on axis {axis} of the Keras array, received "
                f"shape {shape}."
            )
        return tuple(shape[:axis]) + tuple(shape[axis + 1 :])

    def to_keras(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(self.keras_shape(a.shape))

    def from_keras(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(self.native_shape(a.shape))


@dataclass(frozen=True)
class Squeeze:
    """Keras array = native without its unit axis ``axis`` (of the native array): the
    inverse of :class:`ExpandDims`, for a native side that carries an extra unit axis."""

    axis: int

    def keras_shape(self, shape: Shape) -> Shape:
        return ExpandDims(self.axis).native_shape(shape)

    def native_shape(self, shape: Shape) -> Shape:
        return ExpandDims(self.axis).keras_shape(shape)

    def to_keras(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(self.keras_shape(a.shape))

    def from_keras(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(self.native_shape(a.shape))


@dataclass(frozen=True)
class Flip:
    """Keras array = native reversed along ``axes`` (a convolution's kernel against
    Keras's cross-correlation: the spatial axes). Its own inverse."""

    axes: tuple[int, ...]

    def keras_shape(self, shape: Shape) -> Shape:
        for axis in self.axes:
            _normalize(axis, len(shape), self)
        return tuple(shape)

    native_shape = keras_shape

    def to_keras(self, a: np.ndarray) -> np.ndarray:
        self.keras_shape(a.shape)
        return np.flip(a, self.axes)

    from_keras = to_keras


FLAT_AXES = "HWC"  # Keras's Flatten order of an NHWC map


@dataclass(frozen=True)
class FlattenOrder:
    """Axis ``axis`` holds a flattened ``(H, W, C)`` map in the native ``order`` (a
    permutation of ``"HWC"``, e.g. ``"CHW"`` for a channels-first flatten); Keras holds it
    in ``HWC`` order. A permutation of that axis, not a reshape.

    ``grid`` is the Keras ``(H, W, C)`` of the flattened map; a network description
    leaves it ``None`` and binds it from its inferred shapes (:meth:`bind`).
    """

    axis: int
    order: str
    grid: tuple[int, int, int] | None = None

    def __post_init__(self):
        if sorted(self.order) != sorted(FLAT_AXES):
            raise TransformError(
                f"FlattenOrder: expected `order` to be a permutation of {FLAT_AXES!r}. "
                f"Received order={self.order!r}."
            )

    def bind(self, grid) -> FlattenOrder:
        return replace(self, grid=tuple(int(d) for d in grid))

    def _check(self, shape: Shape) -> int:
        if self.grid is None:
            raise TransformError(f"{self}: no grid bound (the (H, W, C) of the flattened map).")
        axis = _normalize(self.axis, len(shape), self)
        if shape[axis] != math.prod(self.grid):
            raise TransformError(
                f"{self}: expected {math.prod(self.grid)} = H*W*C elements on axis {axis}, "
                f"received shape {shape}."
            )
        return axis

    def keras_shape(self, shape: Shape) -> Shape:
        self._check(shape)
        return tuple(shape)

    native_shape = keras_shape

    def _regroup(self, a: np.ndarray, source: str, target: str) -> np.ndarray:
        axis = self._check(a.shape)
        moved = np.moveaxis(a, axis, -1)
        lead = moved.shape[:-1]
        sizes = dict(zip(FLAT_AXES, self.grid, strict=True))
        grid = moved.reshape(lead + tuple(sizes[c] for c in source))
        perm = tuple(range(len(lead))) + tuple(len(lead) + source.index(c) for c in target)
        flat = grid.transpose(perm).reshape(lead + (-1,))
        return np.moveaxis(flat, -1, axis)

    def to_keras(self, a: np.ndarray) -> np.ndarray:
        return self._regroup(a, self.order, FLAT_AXES)

    def from_keras(self, a: np.ndarray) -> np.ndarray:
        return self._regroup(a, FLAT_AXES, self.order)


@dataclass(frozen=True)
class Reshape:
    """Keras array = ``native.reshape(keras)``: a reshape where a transpose belongs is the
    commonest layout bug (the self-test plants it; a diagnosis proposes it)."""

    native: tuple[int, ...]
    keras: tuple[int, ...]

    def __post_init__(self):
        if math.prod(self.native) != math.prod(self.keras):
            raise TransformError(f"{self}: the two shapes hold different numbers of elements.")

    def keras_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.native:
            raise TransformError(f"{self}: expected native shape {self.native}, received {shape}.")
        return self.keras

    def native_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.keras:
            raise TransformError(f"{self}: expected Keras shape {self.keras}, received {shape}.")
        return self.native

    def to_keras(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(self.keras_shape(a.shape))

    def from_keras(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(self.native_shape(a.shape))


Transform = Permute | ExpandDims | Squeeze | Flip | FlattenOrder | Reshape


def to_keras(transforms: tuple, a) -> np.ndarray:
    """Apply ``transforms`` in order, native -> Keras; a fresh C-contiguous array."""
    a = np.asarray(a)
    for t in transforms:
        a = t.to_keras(a)
    return np.array(a, order="C", copy=True)


def from_keras(transforms: tuple, a) -> np.ndarray:
    """The inverse of :func:`to_keras`: Keras -> native, bit-exact; a fresh array."""
    a = np.asarray(a)
    for t in reversed(transforms):
        a = t.from_keras(a)
    return np.array(a, order="C", copy=True)


def keras_shape(transforms: tuple, shape: Shape) -> Shape:
    for t in transforms:
        shape = t.keras_shape(tuple(shape))
    return tuple(shape)


def native_shape(transforms: tuple, shape: Shape) -> Shape:
    for t in reversed(transforms):
        shape = t.native_shape(tuple(shape))
    return tuple(shape)
