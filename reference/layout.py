"""Every layout conversion between an implementation and its Keras twin.

numpy only (importable without TensorFlow). The layouts themselves are data in the
network description (``spec``): each key ``(layer, quantity)`` has a tuple of
``spec.transforms`` records, native -> Keras. This module applies them:

- named pure conversions (the blog's filters, channels-first filters, rows and
  activations), each the spec's own records with the shapes on the ``def`` line and a
  shape assertion naming where the array came from, what was expected, what was received;
- :class:`Layout` (``layout_for(model)``): for every key of the model's network
  description, the Keras key that holds the same numbers, both shapes (checked on every
  conversion) and the transforms. Quantities: ``output`` (forward), ``input`` (gradient of
  the loss w.r.t. the layer's input, laid out like that input), and the weight names
  ``kernel``/``bias`` (weights and their gradients share a layout).

Every transform moves elements (a transpose, a unit axis, a flip, a row regrouping), so
round trips are bit-exact. Results are fresh contiguous arrays, never views of the input.
A folded layer (``spec.Layer.folded``: the channels-first Linear's Flatten) has no key of
its own: the next layer's ``input`` is the folded layer's Keras input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from spec import networks as N
from spec import transforms as T
from spec.network import Network

Tree = dict[str, dict[str, np.ndarray]]
Shape = tuple  # an array shape; ``None`` stands for the batch axis N


class LayoutError(ValueError):
    """An array whose shape does not fit the conversion; the message says where."""


class NoKerasCounterpart(KeyError):
    """A scratch key (layer, quantity) the twin has nothing for."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


def _format(shape: Shape) -> str:
    parts = ["N" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_shape(array: np.ndarray, expected: Shape, where: str) -> np.ndarray:
    """Return ``array`` as ndarray if its shape is ``expected`` (``None`` = any size)."""
    array = np.asarray(array)
    ok = array.ndim == len(expected) and all(
        e is None or e == d for e, d in zip(expected, array.shape, strict=False)
    )
    if not ok:
        raise LayoutError(
            f"{where}: expected shape {_format(expected)}, received {tuple(array.shape)}."
        )
    return array


# -- named pure conversions (the spec's records) ----------------------------------------


def blog_filters_to_keras(filters, where: str) -> np.ndarray:  # (F, 3, 3) -> (3, 3, 1, F)
    return T.to_keras(N.BLOG_FILTERS, check_shape(filters, (None, 3, 3), where))


def keras_to_blog_filters(kernel, where: str) -> np.ndarray:  # (3, 3, 1, F) -> (F, 3, 3)
    return T.from_keras(N.BLOG_FILTERS, check_shape(kernel, (3, 3, 1, None), where))


def chw_filters_to_keras(filters, where: str) -> np.ndarray:  # (F, C, kh, kw) -> (kh, kw, C, F)
    return T.to_keras(N.CHW_FILTERS, check_shape(filters, (None,) * 4, where))


def keras_to_chw_filters(kernel, where: str) -> np.ndarray:  # (kh, kw, C, F) -> (F, C, kh, kw)
    return T.from_keras(N.CHW_FILTERS, check_shape(kernel, (None,) * 4, where))


def _bound(records: tuple, chw: Shape) -> tuple:
    c, h, w = chw
    return tuple(r.bind((h, w, c)) for r in records)


def chw_rows_to_hwc(kernel, chw: Shape, where: str) -> np.ndarray:  # (C*H*W, U) -> (H*W*C, U)
    c, h, w = chw
    kernel = check_shape(kernel, (c * h * w, None), where)
    return T.to_keras(_bound(N.CHW_ROWS, chw), kernel)  # row c*H*W + h*W + w -> h*W*C + w*C + c


def hwc_rows_to_chw(kernel, chw: Shape, where: str) -> np.ndarray:  # (H*W*C, U) -> (C*H*W, U)
    c, h, w = chw
    return T.from_keras(_bound(N.CHW_ROWS, chw), check_shape(kernel, (h * w * c, None), where))


def chw_vectors_to_hwc(v, chw: Shape, where: str) -> np.ndarray:  # (N, C*H*W) -> (N, H*W*C)
    c, h, w = chw
    return T.to_keras(_bound(N.CHW_VECTORS, chw), check_shape(v, (None, c * h * w), where))


def hwc_vectors_to_chw(v, chw: Shape, where: str) -> np.ndarray:  # (N, H*W*C) -> (N, C*H*W)
    c, h, w = chw
    return T.from_keras(_bound(N.CHW_VECTORS, chw), check_shape(v, (None, h * w * c), where))


def nchw_to_nhwc(a, where: str) -> np.ndarray:  # (N, C, H, W) -> (N, H, W, C)
    return T.to_keras(N.NCHW, check_shape(a, (None,) * 4, where))


def nhwc_to_nchw(a, where: str) -> np.ndarray:  # (N, H, W, C) -> (N, C, H, W)
    return T.from_keras(N.NCHW, check_shape(a, (None,) * 4, where))


def images_to_nhwc(a, where: str) -> np.ndarray:  # (N, H, W) -> (N, H, W, 1)
    return T.to_keras(N.BLOG_IMAGES, check_shape(a, (None,) * 3, where))


def nhwc_to_images(a, where: str) -> np.ndarray:  # (N, H, W, 1) -> (N, H, W)
    return T.from_keras(N.BLOG_IMAGES, check_shape(a, (None, None, None, 1), where))


# -- the layout of one network --------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """How one scratch key maps to a Keras key: the Keras key, both shapes (``None`` =
    the batch axis; checked on every conversion) and the transforms native -> Keras."""

    keras_layer: str
    keras_quantity: str
    scratch_shape: Shape
    keras_shape: Shape
    transforms: tuple

    def to_keras(self, array, where: str) -> np.ndarray:
        return T.to_keras(self.transforms, check_shape(array, self.scratch_shape, where))

    def from_keras(self, array, where: str) -> np.ndarray:
        return T.from_keras(self.transforms, check_shape(array, self.keras_shape, where))


def rules_of(network: Network) -> dict[tuple[str, str], Rule]:
    """``{(layer, quantity): Rule}`` for every key of ``network`` (``Network.keys``)."""
    return {
        key: Rule(*network.keras_key(*key), network.native_shape(*key),
                  network.keras_shape(*key), network.layout(*key))
        for key in network.keys()
    }  # fmt: skip


class Layout:
    """The conversions of one network, both ways, keyed by the implementation's names.

    Parameters
    ----------
    network : spec.Network
        The description the rules are derived from.
    model_name : str, optional
        For messages (default: the network's name).
    rules : dict, optional
        ``{(layer, quantity): Rule}``; default :func:`rules_of` ``(network)``. The
        self-test passes corrupted rules (a planted layout bug).
    """

    def __init__(self, network: Network, model_name: str | None = None, rules=None):
        self.network = network
        self.model_name = model_name or network.name
        self.rules = dict(rules_of(network) if rules is None else rules)
        self.layer_names = network.native_names

    def __repr__(self) -> str:
        return f"Layout(network={self.network.name!r}, model={self.model_name!r})"

    def with_transforms(self, layer: str, quantity: str, transforms: tuple) -> Layout:
        """A copy whose key ``(layer, quantity)`` converts through ``transforms``."""
        rules = dict(self.rules)
        rules[(layer, quantity)] = replace(self.rule(layer, quantity), transforms=transforms)
        return Layout(self.network, self.model_name, rules)

    def rule(self, layer: str, quantity: str) -> Rule:
        try:
            return self.rules[(layer, quantity)]
        except KeyError:
            raise NoKerasCounterpart(
                f"Model `{self.model_name}` (network `{self.network.name}`): scratch layer "
                f"`{layer}` quantity `{quantity}` has no Keras counterpart. Known keys: "
                f"{sorted(self.rules)}."
            ) from None

    def keras_key(self, layer: str, quantity: str) -> tuple[str, str]:
        rule = self.rule(layer, quantity)
        return rule.keras_layer, rule.keras_quantity

    def to_keras(self, layer: str, quantity: str, array) -> np.ndarray:
        """Scratch array of ``(layer, quantity)`` -> the Keras array of its Keras key."""
        where = f"{self.model_name}: scratch layer `{layer}` {quantity}"
        return self.rule(layer, quantity).to_keras(array, where)

    def from_keras(self, layer: str, quantity: str, array) -> np.ndarray:
        """Keras array of the Keras key of ``(layer, quantity)`` -> scratch layout."""
        rule = self.rule(layer, quantity)
        where = (
            f"{self.model_name}: Keras layer `{rule.keras_layer}` {rule.keras_quantity} "
            f"(for scratch layer `{layer}` {quantity})"
        )
        return rule.from_keras(array, where)

    def input_to_keras(self, x) -> np.ndarray:
        """The scratch model's input batch -> the twin's NHWC input."""
        return self.to_keras(self.layer_names[0], "input", x)

    def weights_to_keras(self, params: Tree) -> Tree:
        """``{layer: {weight: scratch array}}`` -> ``{keras layer: {weight: keras array}}``."""
        out: Tree = {}
        for layer, weights in params.items():
            for weight, array in weights.items():
                k_layer, k_weight = self.keras_key(layer, weight)
                out.setdefault(k_layer, {})[k_weight] = self.to_keras(layer, weight, array)
        return out

    def weights_from_keras(self, keras_weights: Tree, scratch_keys: Tree) -> Tree:
        """Keras weights -> scratch layout, for every key of ``scratch_keys`` (params)."""
        out: Tree = {}
        for layer, weights in scratch_keys.items():
            for weight in weights:
                k_layer, k_weight = self.keras_key(layer, weight)
                try:
                    array = keras_weights[k_layer][k_weight]
                except KeyError:
                    raise NoKerasCounterpart(
                        f"Model `{self.model_name}`: Keras weights have no `{k_layer}` "
                        f"`{k_weight}` for scratch layer `{layer}` weight `{weight}`. "
                        f"Keras has {_keys(keras_weights)}."
                    ) from None
                out.setdefault(layer, {})[weight] = self.from_keras(layer, weight, array)
        return out


def _keys(tree: Tree) -> list[str]:
    return [f"{layer}/{q}" for layer, qs in tree.items() for q in qs]


def layout_for(model) -> Layout:
    """The :class:`Layout` of a scratch ``HarnessModel``, from its network description
    ``model.spec``; the model's layer names must be the description's (folded layers
    left out), else NoKerasCounterpart naming both."""
    network = model.spec
    if tuple(model.layer_names) != network.native_names:
        raise NoKerasCounterpart(
            f"Model `{model.name}`: layer names {list(model.layer_names)} differ from its "
            f"network description `{network.name}`: {list(network.native_names)}."
        )
    return Layout(network, model.name)
