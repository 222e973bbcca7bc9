"""Every layout conversion between a scratch model family and its Keras twin.

numpy only (importable without TensorFlow). Two levels:

- pure conversion functions, one per layout change, with the shapes on the ``def`` line
  and a shape assertion naming where the array came from, what was expected and what
  was received;
- one :class:`Layout` per model family (``layout_for(model)``): a table from each
  scratch key ``(layer, quantity)`` to the Keras key that holds the same numbers and
  the two conversions between them. Quantities: ``output`` (forward), ``input``
  (gradient of the loss w.r.t. the layer's input, laid out like that input), and the
  weight names ``kernel``/``bias`` (weights and their gradients share a layout).

Every conversion is a transpose, an added/removed unit axis or a row permutation, so
round trips are bit-exact. Results are fresh contiguous arrays, never views of the input.

Families:

- ``blog`` (model ``zhou``): filters ``(F, 3, 3)`` <-> Keras ``(3, 3, 1, F)``; images
  ``(N, 28, 28)`` <-> ``(N, 28, 28, 1)``. The blog's activations are HWC per image,
  batch-stacked NHWC, and its ``Softmax`` flattens HWC like Keras: no other change.
- ``nhwc`` (scratch Sequential: ``two-conv``, ``zhou-seq``): Keras layouts already.
- ``chw`` (``chw``, ``chw-relu``): filters ``(F, C, kh, kw)`` <-> ``(kh, kw, C, F)``;
  activations NCHW <-> NHWC; the Linear rows in C,H,W flatten order <-> Keras's H,W,C
  order (a permutation, not a reshape); the scratch ``dense`` input ``(N, C, H, W)`` is
  Keras's ``flatten`` input (the twin has a Flatten layer the scratch side has not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Tree = dict[str, dict[str, np.ndarray]]
Shape = tuple  # an array shape; ``None`` stands for the batch axis N
Convert = Callable[[np.ndarray, str], np.ndarray]

IMAGE_SIDE = 28  # MNIST
WEIGHT_NAMES = ("kernel", "bias")


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


def _fresh(array: np.ndarray) -> np.ndarray:
    return np.array(array, order="C", copy=True)


# -- pure conversions ---------------------------------------------------------------


def blog_filters_to_keras(filters, where: str) -> np.ndarray:  # (F, 3, 3) -> (3, 3, 1, F)
    filters = check_shape(filters, (None, 3, 3), where)
    return _fresh(filters.transpose(1, 2, 0)[:, :, None, :])


def keras_to_blog_filters(kernel, where: str) -> np.ndarray:  # (3, 3, 1, F) -> (F, 3, 3)
    kernel = check_shape(kernel, (3, 3, 1, None), where)
    return _fresh(kernel[:, :, 0, :].transpose(2, 0, 1))


def chw_filters_to_keras(filters, where: str) -> np.ndarray:  # (F, C, kh, kw) -> (kh, kw, C, F)
    filters = check_shape(filters, (None, None, None, None), where)
    return _fresh(filters.transpose(2, 3, 1, 0))


def keras_to_chw_filters(kernel, where: str) -> np.ndarray:  # (kh, kw, C, F) -> (F, C, kh, kw)
    kernel = check_shape(kernel, (None, None, None, None), where)
    return _fresh(kernel.transpose(3, 2, 0, 1))


def chw_rows_to_hwc(kernel, chw: Shape, where: str) -> np.ndarray:  # (C*H*W, U) -> (H*W*C, U)
    c, h, w = chw
    kernel = check_shape(kernel, (c * h * w, None), where)
    units = kernel.shape[1]
    # row c*H*W + h*W + w  ->  row h*W*C + w*C + c
    return _fresh(kernel.reshape(c, h, w, units).transpose(1, 2, 0, 3).reshape(h * w * c, units))


def hwc_rows_to_chw(kernel, chw: Shape, where: str) -> np.ndarray:  # (H*W*C, U) -> (C*H*W, U)
    c, h, w = chw
    kernel = check_shape(kernel, (h * w * c, None), where)
    units = kernel.shape[1]
    return _fresh(kernel.reshape(h, w, c, units).transpose(2, 0, 1, 3).reshape(c * h * w, units))


def chw_vectors_to_hwc(v, chw: Shape, where: str) -> np.ndarray:  # (N, C*H*W) -> (N, H*W*C)
    c, h, w = chw
    v = check_shape(v, (None, c * h * w), where)
    return _fresh(v.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(-1, h * w * c))


def hwc_vectors_to_chw(v, chw: Shape, where: str) -> np.ndarray:  # (N, H*W*C) -> (N, C*H*W)
    c, h, w = chw
    v = check_shape(v, (None, h * w * c), where)
    return _fresh(v.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(-1, c * h * w))


def nchw_to_nhwc(a, where: str) -> np.ndarray:  # (N, C, H, W) -> (N, H, W, C)
    a = check_shape(a, (None, None, None, None), where)
    return _fresh(a.transpose(0, 2, 3, 1))


def nhwc_to_nchw(a, where: str) -> np.ndarray:  # (N, H, W, C) -> (N, C, H, W)
    a = check_shape(a, (None, None, None, None), where)
    return _fresh(a.transpose(0, 3, 1, 2))


def images_to_nhwc(a, where: str) -> np.ndarray:  # (N, H, W) -> (N, H, W, 1)
    a = check_shape(a, (None, None, None), where)
    return _fresh(a[..., None])


def nhwc_to_images(a, where: str) -> np.ndarray:  # (N, H, W, 1) -> (N, H, W)
    a = check_shape(a, (None, None, None, 1), where)
    return _fresh(a[..., 0])


def identity(a, where: str) -> np.ndarray:  # same layout on both sides
    return _fresh(np.asarray(a))


# -- per-family tables --------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """How one scratch key maps to a Keras key.

    ``scratch_shape``/``keras_shape`` are checked on every conversion (``None`` = the
    batch axis; a shape of ``None`` as a whole = not checked, for identity layouts).
    """

    keras_layer: str
    keras_quantity: str
    scratch_shape: Shape | None
    keras_shape: Shape | None
    to_keras: Convert
    from_keras: Convert


class Layout:
    """The conversions of one model family, both ways, keyed by scratch names.

    Parameters
    ----------
    family : str
        ``blog``, ``nhwc`` or ``chw``.
    model_name : str
        For messages.
    rules : dict
        ``{(layer, quantity): Rule}`` for every scratch key.
    layer_names : tuple of str
        Scratch layer names in forward order (the first one's ``input`` is the batch).
    """

    def __init__(self, family: str, model_name: str, rules: dict, layer_names: tuple):
        self.family = family
        self.model_name = model_name
        self.rules = dict(rules)
        self.layer_names = tuple(layer_names)

    def __repr__(self) -> str:
        return f"Layout(family={self.family!r}, model={self.model_name!r})"

    def rule(self, layer: str, quantity: str) -> Rule:
        try:
            return self.rules[(layer, quantity)]
        except KeyError:
            raise NoKerasCounterpart(
                f"Model `{self.model_name}` (layout family `{self.family}`): scratch layer "
                f"`{layer}` quantity `{quantity}` has no Keras counterpart. Known keys: "
                f"{sorted(self.rules)}."
            ) from None

    def keras_key(self, layer: str, quantity: str) -> tuple[str, str]:
        rule = self.rule(layer, quantity)
        return rule.keras_layer, rule.keras_quantity

    def to_keras(self, layer: str, quantity: str, array) -> np.ndarray:
        """Scratch array of ``(layer, quantity)`` -> the Keras array of its Keras key."""
        rule = self.rule(layer, quantity)
        where = f"{self.model_name}: scratch layer `{layer}` {quantity}"
        if rule.scratch_shape is not None:
            check_shape(array, rule.scratch_shape, where)
        return rule.to_keras(array, where)

    def from_keras(self, layer: str, quantity: str, array) -> np.ndarray:
        """Keras array of the Keras key of ``(layer, quantity)`` -> scratch layout."""
        rule = self.rule(layer, quantity)
        where = (
            f"{self.model_name}: Keras layer `{rule.keras_layer}` {rule.keras_quantity} "
            f"(for scratch layer `{layer}` {quantity})"
        )
        if rule.keras_shape is not None:
            check_shape(array, rule.keras_shape, where)
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


def _same(layer: str, quantity: str, shape: Shape | None = None) -> Rule:
    return Rule(layer, quantity, shape, shape, identity, identity)


def _chw_rule(layer: str, quantity: str, chw: Shape) -> Rule:
    c, h, w = chw
    return Rule(layer, quantity, (None, c, h, w), (None, h, w, c), nchw_to_nhwc, nhwc_to_nchw)


def blog_layout(
    model_name: str, layer_names: tuple, filters_shape: Shape, dense_shape: Shape
) -> Layout:
    """Model ``zhou``: conv2d (no bias) -> max_pooling2d -> flatten -> dense -> softmax."""
    f, kh, kw = filters_shape
    side = (IMAGE_SIDE - kh + 1) // 2  # 13
    flat, units = side * side * f, dense_shape[1]  # 1352, 10
    rules = {
        ("conv2d", "input"): Rule(
            "conv2d",
            "input",
            (None, IMAGE_SIDE, IMAGE_SIDE),
            (None, IMAGE_SIDE, IMAGE_SIDE, 1),
            images_to_nhwc,
            nhwc_to_images,
        ),
        ("conv2d", "kernel"): Rule(
            "conv2d",
            "kernel",
            (f, kh, kw),
            (kh, kw, 1, f),
            blog_filters_to_keras,
            keras_to_blog_filters,
        ),
        ("conv2d", "output"): _same("conv2d", "output", (None, 2 * side, 2 * side, f)),
        ("max_pooling2d", "input"): _same("max_pooling2d", "input", (None, 2 * side, 2 * side, f)),
        ("max_pooling2d", "output"): _same("max_pooling2d", "output", (None, side, side, f)),
        ("flatten", "input"): _same("flatten", "input", (None, side, side, f)),
        ("flatten", "output"): _same("flatten", "output", (None, flat)),  # HWC order both
        ("dense", "input"): _same("dense", "input", (None, flat)),
        ("dense", "kernel"): _same("dense", "kernel", (flat, units)),
        ("dense", "bias"): _same("dense", "bias", (units,)),
        ("dense", "output"): _same("dense", "output", (None, units)),
        ("softmax", "input"): _same("softmax", "input", (None, units)),
        ("softmax", "output"): _same("softmax", "output", (None, units)),
    }
    return Layout("blog", model_name, rules, layer_names)


def chw_layout(
    model_name: str,
    layer_names: tuple,
    filters_shape: Shape,
    dense_shape: Shape,
    pad: int = 0,
    stride: int = 1,
) -> Layout:
    """Models ``chw``/``chw-relu``: conv2d -> [re_lu] -> max_pooling2d -> dense -> softmax."""
    f, c, kh, kw = filters_shape
    ho = (IMAGE_SIDE + 2 * pad - kh) // stride + 1  # 26
    wo = (IMAGE_SIDE + 2 * pad - kw) // stride + 1
    pooled = (f, ho // 2, wo // 2)  # (8, 13, 13), C,H,W
    flat, units = f * (ho // 2) * (wo // 2), dense_shape[1]
    rules = {
        ("conv2d", "input"): _chw_rule("conv2d", "input", (c, IMAGE_SIDE, IMAGE_SIDE)),
        ("conv2d", "kernel"): Rule(
            "conv2d",
            "kernel",
            (f, c, kh, kw),
            (kh, kw, c, f),
            chw_filters_to_keras,
            keras_to_chw_filters,
        ),
        ("conv2d", "bias"): _same("conv2d", "bias", (f,)),
        ("conv2d", "output"): _chw_rule("conv2d", "output", (f, ho, wo)),
        ("max_pooling2d", "input"): _chw_rule("max_pooling2d", "input", (f, ho, wo)),
        ("max_pooling2d", "output"): _chw_rule("max_pooling2d", "output", pooled),
        # The Linear flattens inside; its input is Keras's Flatten input.
        ("dense", "input"): _chw_rule("flatten", "input", pooled),
        ("dense", "kernel"): Rule(
            "dense",
            "kernel",
            (flat, units),
            (flat, units),
            lambda k, where: chw_rows_to_hwc(k, pooled, where),
            lambda k, where: hwc_rows_to_chw(k, pooled, where),
        ),
        ("dense", "bias"): _same("dense", "bias", (units,)),
        ("dense", "output"): _same("dense", "output", (None, units)),
        ("softmax", "input"): _same("softmax", "input", (None, units)),
        ("softmax", "output"): _same("softmax", "output", (None, units)),
    }
    if "re_lu" in layer_names:
        rules[("re_lu", "input")] = _chw_rule("re_lu", "input", (f, ho, wo))
        rules[("re_lu", "output")] = _chw_rule("re_lu", "output", (f, ho, wo))
    return Layout("chw", model_name, rules, layer_names)


def nhwc_layout(model_name: str, layer_names: tuple, params: Tree) -> Layout:
    """A scratch Sequential: Keras layouts and names already; every rule is the identity."""
    rules = {}
    for layer in layer_names:
        for quantity in ("input", "output", *params.get(layer, {})):
            shape = None
            if quantity in WEIGHT_NAMES:
                shape = tuple(np.shape(params[layer][quantity]))
            rules[(layer, quantity)] = _same(layer, quantity, shape)
    return Layout("nhwc", model_name, rules, layer_names)


BLOG_MODELS = ("zhou",)
CHW_MODELS = ("chw", "chw-relu")


def layout_for(model) -> Layout:
    """The :class:`Layout` of a scratch ``HarnessModel`` (dispatch on ``model.name``, or on
    the family the model declares in ``layout_family``: a user's blog code is ``blog``)."""
    params = model.params()
    names = tuple(model.layer_names)
    if model.name in BLOG_MODELS or getattr(model, "layout_family", None) == "blog":
        return blog_layout(
            model.name,
            names,
            _weight_shape(params, "conv2d", "kernel", model.name),
            _weight_shape(params, "dense", "kernel", model.name),
        )
    if model.name in CHW_MODELS:
        conv = getattr(getattr(model, "net", None), "conv", None)
        return chw_layout(
            model.name,
            names,
            _weight_shape(params, "conv2d", "kernel", model.name),
            _weight_shape(params, "dense", "kernel", model.name),
            pad=getattr(conv, "pad", 0),
            stride=getattr(conv, "stride", 1),
        )
    return nhwc_layout(model.name, names, params)


def _weight_shape(params: Tree, layer: str, weight: str, model_name: str) -> Shape:
    try:
        return tuple(np.shape(params[layer][weight]))
    except KeyError:
        raise NoKerasCounterpart(
            f"Model `{model_name}`: expected scratch weight `{layer}` `{weight}`, "
            f"params has {_keys(params)}."
        ) from None
