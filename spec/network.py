"""A network description: input, preprocessing, layers and native layouts, as data.

``Network`` is what a model IS, independent of who implements it: the Keras twin, every
layout conversion, the compared quantities and the pools and kinks the harness looks at
are all derived from it. Per-example shapes are Keras's (channels-last, no batch axis);
keys are ``(layer name, quantity)`` with quantity ``input``/``output`` (activations, and
their loss gradients, batch-first) or a weight name (``kernel``, ``bias``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from spec import transforms as T
from spec.layers import (
    COUPLED_KINDS,
    KINKED_KINDS,
    MASKED_KINDS,
    MODAL_KINDS,
    POOL_KINDS,
    Layer,
    SpecError,
)

ACTIVATIONS = ("input", "output")
FOLDABLE = ("Flatten", "ZeroPadding2D")  # weightless and linear: nothing to compare inside


@dataclass(frozen=True)
class Preprocess:
    """Raw pixels -> model input: ``image / divisor + offset`` (the blog: 255, -0.5)."""

    divisor: float = 255.0
    offset: float = -0.5

    def apply(self, images, dtype) -> np.ndarray:
        """``(N, H, W)`` pixels -> the formula in float64, rounded once to ``dtype``."""
        return (np.asarray(images, dtype=np.float64) / self.divisor + self.offset).astype(dtype)


@dataclass(frozen=True)
class Network:
    """One network, described.

    Parameters
    ----------
    name : str
    input_shape : tuple of int
        Per-example input on the Keras side, e.g. ``(28, 28, 1)``.
    layers : tuple of spec.Layer
        In forward order; the last is a Softmax (the loss is cross-entropy on it).
    preprocess : Preprocess
    layouts : dict
        ``{(layer, quantity): transforms}``: the native layout of that quantity relative
        to Keras's, as a tuple of ``spec.transforms`` records (native -> Keras). Keys name
        the implementation's layers (not folded ones). Missing keys: :attr:`activations`
        for batch activations of rank 4, else Keras's own layout.
    activations : tuple
        The layout of every rank-4 activation ``(N, H, W, C)`` not in ``layouts``, e.g.
        ``(Permute((0, 2, 3, 1)),)`` for an NCHW implementation.
    training_batch : int
        The mini-batch the network trains with when the user names none (1 for the blog's
        schedule; a network with batch normalization needs batches: at batch 1 a Dense's
        batch variance is 0 and its output is ``beta`` whatever the input).
    learning_rates : dict
        ``{optimizer name: learning rate}`` (names of ``reference.optimizers``): the rate
        the network trains with under that optimizer when the user names none, over the
        optimizer table's default (``reference.optimizers.default_learning_rate``; an
        explicit ``--lr`` wins). Empty: the table's for every optimizer.

    Raises
    ------
    SpecError
        Any layer whose shape rule fails (naming the layer, rule and value), duplicate
        names, a folded layer that cannot be folded, a layout that does not fit its key.
    """

    name: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    preprocess: Preprocess = Preprocess()
    layouts: dict = field(default_factory=dict)
    activations: tuple = ()
    training_batch: int = 1
    learning_rates: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "learning_rates", dict(self.learning_rates))
        self._check_structure()
        object.__setattr__(self, "_shapes", self._infer_shapes())  # frozen: computed once
        for (layer, quantity), transforms in self.layouts.items():
            if (layer, quantity) not in self.keys():
                raise SpecError(
                    f"Network `{self.name}`: layout key ({layer!r}, {quantity!r}) names no "
                    f"quantity of the implementation; its keys: {self.keys()}."
                )
            if not isinstance(transforms, tuple):
                raise SpecError(
                    f"Network `{self.name}`: layout of `{layer}` {quantity}: "
                    f"expected a tuple of transforms. Received {transforms!r}."
                )
        for layer, quantity in self.keys():
            self.native_shape(layer, quantity)  # every layout fits its key

    def _check_structure(self) -> None:
        if not all(isinstance(d, numbers.Integral) and d >= 1 for d in self.input_shape):
            raise SpecError(
                f"Network `{self.name}`: expected `input_shape` positive ints. "
                f"Received input_shape={self.input_shape}."
            )
        if not self.layers or not all(isinstance(layer, Layer) for layer in self.layers):
            raise SpecError(
                f"Network `{self.name}`: expected a non-empty tuple of spec.Layer. "
                f"Received layers={self.layers!r}."
            )
        for optimizer, rate in self.learning_rates.items():
            if not (
                isinstance(optimizer, str)
                and isinstance(rate, numbers.Real)
                and not isinstance(rate, bool)
                and math.isfinite(rate)
                and rate > 0
            ):
                raise SpecError(
                    f"Network `{self.name}`: expected `learning_rates` to map optimizer "
                    f"names to finite, strictly positive floats. Received "
                    f"{optimizer!r}: {rate!r}."
                )  # fmt: skip
        names = [layer.name for layer in self.layers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SpecError(
                f"Network `{self.name}`: layer names must be unique. "
                f"Received duplicates {duplicates}."
            )
        last = self.layers[-1]
        if last.kind != "Softmax" or last.folded:
            raise SpecError(
                f"Network `{self.name}`: the last layer must be an unfolded Softmax (the "
                f"loss is cross-entropy on its probabilities). Received {last.label}."
            )
        for layer in self.layers:
            if layer.folded and layer.kind not in FOLDABLE:
                raise layer.error(f"cannot be folded (only {FOLDABLE} can)", "folded=True")

    # -- shapes ------------------------------------------------------------------------

    def shapes(self) -> dict[str, tuple[tuple, tuple]]:
        """``{layer: (input shape, output shape)}`` per example, Keras layout, inferred layer
        by layer when the description was made (SpecError there if a rule fails)."""
        return dict(self._shapes)

    def _infer_shapes(self) -> dict[str, tuple[tuple, tuple]]:
        out, shape = {}, self.input_shape
        for layer in self.layers:
            new = layer.output_shape(shape)
            out[layer.name], shape = (shape, new), new
        return out

    def weight_shapes(self) -> dict[str, dict[str, tuple]]:
        """``{layer: {weight: Keras shape}}`` for every layer with trainable weights."""
        return self._per_layer(Layer.weight_shapes)

    def state_shapes(self) -> dict[str, dict[str, tuple]]:
        """``{layer: {state: Keras shape}}`` for every layer with non-trainable state
        (batch norm's ``moving_mean``, ``moving_variance``)."""
        return self._per_layer(Layer.state_shapes)

    def _per_layer(self, shapes_of) -> dict[str, dict[str, tuple]]:
        """``{layer: shapes_of(layer, its input shape)}`` for the layers where it is not
        empty."""
        shapes = self.shapes()
        found = {layer.name: shapes_of(layer, shapes[layer.name][0]) for layer in self.layers}
        return {name: value for name, value in found.items() if value}

    # -- names and keys ----------------------------------------------------------------

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise SpecError(
            f"Network `{self.name}`: no layer {name!r}; layers: "
            f"{[layer.name for layer in self.layers]}."
        )

    @property
    def native_names(self) -> tuple[str, ...]:
        """The implementation's layer names in forward order (folded layers left out)."""
        return tuple(layer.name for layer in self.layers if not layer.folded)

    def keys(self) -> list[tuple[str, str]]:
        """Every compared key of the implementation, in forward order: each layer's
        ``input``, its weights, its state, its ``output``."""
        weights, state = self.weight_shapes(), self.state_shapes()
        return [
            (name, q)
            for name in self.native_names
            for q in ("input", *weights.get(name, {}), *state.get(name, {}), "output")
        ]

    def pools(self) -> tuple[str, ...]:
        """Names of the max-pooling layers (by kind)."""
        return tuple(n for n in self.native_names if self.layer(n).kind in POOL_KINDS)

    def kinked(self) -> tuple[str, ...]:
        """Names of the layers whose backward pass jumps with their input (by kind)."""
        return tuple(n for n in self.native_names if self.layer(n).kind in KINKED_KINDS)

    def modal(self) -> tuple[str, ...]:
        """Names of the layers whose output depends on training vs inference mode."""
        return self._of_kinds(MODAL_KINDS)

    def coupled(self) -> tuple[str, ...]:
        """Names of the layers that couple a batch's examples in training mode."""
        return self._of_kinds(COUPLED_KINDS)

    def masked(self) -> tuple[str, ...]:
        """Names of the dropout layers (a mask per training-mode call)."""
        return self._of_kinds(MASKED_KINDS)

    def _of_kinds(self, kinds) -> tuple[str, ...]:
        return tuple(n for n in self.native_names if self.layer(n).kind in kinds)

    def keras_key(self, layer: str, quantity: str) -> tuple[str, str]:
        """The Keras key holding the same numbers as the implementation's key: a layer's
        ``input`` is that of the first of the folded layers just before it."""
        self.layer(layer)
        if quantity != "input":
            return layer, quantity
        names = [item.name for item in self.layers]
        i = names.index(layer)
        while i > 0 and self.layers[i - 1].folded:
            i -= 1
        return names[i], "input"

    # -- layouts -----------------------------------------------------------------------

    def keras_shape(self, layer: str, quantity: str) -> tuple:
        """Shape of the Keras array of the key; ``None`` first for batch activations."""
        k_layer, k_quantity = self.keras_key(layer, quantity)
        if k_quantity in ACTIVATIONS:
            given, made = self.shapes()[k_layer]
            return (None, *(given if k_quantity == "input" else made))
        try:
            own = {**self.weight_shapes().get(k_layer, {}), **self.state_shapes().get(k_layer, {})}
            return own[k_quantity]
        except KeyError:
            raise SpecError(
                f"Network `{self.name}`: layer `{layer}` has no weight {quantity!r}."
            ) from None

    def layout(self, layer: str, quantity: str) -> tuple:
        """The native layout of the key: transforms native -> Keras, grids bound."""
        if (layer, quantity) in self.layouts:
            transforms = self.layouts[(layer, quantity)]
        elif quantity in ACTIVATIONS and len(self.keras_shape(layer, quantity)) == 4:
            transforms = self.activations
        else:
            transforms = ()
        return tuple(self._bind(t, layer) for t in transforms)

    def native_shape(self, layer: str, quantity: str) -> tuple:
        """Shape of the implementation's array of the key (``None``: the batch axis)."""
        try:
            return T.native_shape(self.layout(layer, quantity), self.keras_shape(layer, quantity))
        except T.TransformError as error:
            raise SpecError(
                f"Network `{self.name}`: layout of layer `{layer}` {quantity} "
                f"(Keras shape {self.keras_shape(layer, quantity)}): {error}"
            ) from None

    def _bind(self, transform, layer: str):
        """A FlattenOrder gets the (H, W, C) of the last Flatten's input at or before
        ``layer``."""
        if not isinstance(transform, T.FlattenOrder) or transform.grid is not None:
            return transform
        names = [item.name for item in self.layers]
        flattens = [
            item for item in self.layers[: names.index(layer) + 1] if item.kind == "Flatten"
        ]
        grid = self.shapes()[flattens[-1].name][0] if flattens else ()
        if len(grid) != 3:
            raise SpecError(
                f"Network `{self.name}`: layout of layer `{layer}` uses {transform} "
                "but no Flatten of an (H, W, C) map comes at or before it."
            )
        return transform.bind(grid)
