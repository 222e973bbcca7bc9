"""The channels-first networks (``chw-relu``, ``chw``, ``chw-odd``, ``lenet5-chw``,
``chw-same``), and their harness adapter.

``chw-relu``: Conv(1, 8, 3) -> ReLU -> MaxPool2x2 -> Linear(13*13*8, 10) -> softmax loss;
``chw``: the same without ReLU. Inputs ``image / 255`` shaped ``(N, 1, 28, 28)``.

All are built from their network descriptions (``spec.networks.CHW``, ``CHW_RELU``, ...)
through one table of layer kind -> channels-first layer (:func:`make_layers`), so any
description within this family's layers is a model. Layer names are Keras's, shared with
the twin: ``conv2d``, ``re_lu`` (chw-relu only), ``max_pooling2d``, ``dense``,
``softmax``. Layouts stay native: activations ``(N, C, H, W)``, conv kernel
``(F, C, kh, kw)``, dense kernel ``(1352, 10)`` with rows in C, H, W order; the
description states them and ``reference.layout`` converts.
"""

from __future__ import annotations

import numpy as np

from scratch.chw import Conv, Linear, MaxPool2x2, ReLU, softmax_loss
from scratch.chw_layers import AvgPool, GlobalAvgPool, LeakyReLU, Sigmoid, Tanh
from scratch.chw_norm import BatchNorm, Dropout, SpatialBatchNorm
from scratch.cs231n_api import ChannelsFirstModel
from scratch.protocol import check_dtype
from spec import Network
from spec.networks import CHW, CHW_ODD, CHW_RELU, CHW_SAME, CS231N_3LAYER_CHW, LENET5_CHW


def _conv(item, shapes, pad, rng, dtype, scale) -> Conv:
    (kh, kw), (sh, sw) = item.kernel_size, item.strides
    same = item.padding == "same"
    if kh != kw or sh != sw or (same and pad):
        raise item.error(
            "has no channels-first Conv (square kernel and strides, padding 'valid' after "
            "an optional folded ZeroPadding2D or 'same' without one)",
            f"kernel_size={item.kernel_size}, strides={item.strides}, "
            f"padding={item.padding!r} after a folded padding of {pad}",
        )
    channels = shapes[item.name][0][-1]
    return Conv(
        channels, item.filters, kh, pad="same" if same else pad, stride=sh,
        weight_scale=scale, rng=rng, dtype=dtype, use_bias=item.use_bias,
    )  # fmt: skip


def _pool(item, dtype) -> MaxPool2x2 | AvgPool:
    (p, q), (sh, sw) = item.pool_size, item.strides
    if item.kind == "AveragePooling2D" and p == q and sh == sw and item.padding == "valid":
        return AvgPool(p, sh, dtype=dtype)
    if item.kind == "MaxPooling2D" and (p, q, sh, sw) == (2, 2, 2, 2) and item.padding == "valid":
        return MaxPool2x2(dtype=dtype)
    raise item.error(
        "has no channels-first pool (MaxPool2x2: pool 2, strides 2; AvgPool: square pool "
        "and strides; both 'valid')",
        f"pool_size={item.pool_size}, strides={item.strides}, padding={item.padding!r}",
    )


# Kinds whose channels-first layer takes only the dtype.
_PLAIN = {"ReLU": ReLU, "Tanh": Tanh, "Sigmoid": Sigmoid, "GlobalAveragePooling2D": GlobalAvgPool}


def _modal(item, per_example: tuple, dtype):
    """cs231n's classes for a Keras BatchNormalization (SpatialBatchNorm on (H, W, C) maps,
    BatchNorm on (D,) vectors, Keras's momentum and epsilon as cs231n's momentum and eps:
    the same rule, spec.networks) or Dropout (keep p = 1 - rate; the harness injects its
    masks). No weights are drawn: the layers after it get the draws they would without it."""
    if item.kind == "Dropout":
        return Dropout(1 - item.rate, dtype=dtype)
    cls = SpatialBatchNorm if len(per_example) == 3 else BatchNorm
    return cls(per_example[-1], eps=item.epsilon, momentum=item.momentum, dtype=dtype)


def make_layers(network: Network, rng, dtype, weight_scale) -> tuple:
    """``((name, layer), ...)``: the channels-first layers of ``network`` (the Softmax,
    which is the loss, left out), weights drawn from ``rng`` in forward order.

    One table of kind -> layer: Conv2D -> ``Conv`` ('valid' with the pad of a folded
    ZeroPadding2D just before it, or 'same'; ``use_bias`` as described), ReLU -> ``ReLU``,
    Tanh -> ``Tanh``, Sigmoid -> ``Sigmoid``, LeakyReLU -> ``LeakyReLU(negative_slope)``,
    MaxPooling2D(2) -> ``MaxPool2x2``, AveragePooling2D -> ``AvgPool(pool_size, stride)``,
    GlobalAveragePooling2D -> ``GlobalAvgPool``, a Dense (after a folded Flatten or a flat
    input) -> ``Linear`` (which flattens in C, H, W order), BatchNormalization ->
    ``SpatialBatchNorm``/``BatchNorm``, Dropout -> ``Dropout`` (``scratch.chw_norm``).
    Anything else raises SpecError naming the layer."""
    shapes, layers, pad = network.shapes(), [], 0
    for i, item in enumerate(network.layers[:-1]):
        following = network.layers[i + 1]
        if item.folded and item.kind == "ZeroPadding2D" and following.kind == "Conv2D":
            pad = item.padding
            continue
        if item.folded and item.kind == "Flatten" and following.kind == "Dense":
            continue
        if item.kind == "Conv2D":
            layer, pad = _conv(item, shapes, pad, rng, dtype, weight_scale), 0
        elif item.kind in _PLAIN:
            layer = _PLAIN[item.kind](dtype=dtype)
        elif item.kind == "LeakyReLU":
            layer = LeakyReLU(item.negative_slope, dtype=dtype)
        elif item.kind in ("MaxPooling2D", "AveragePooling2D"):
            layer = _pool(item, dtype)
        elif item.kind == "Dense":
            features = int(np.prod(shapes[item.name][0]))
            layer = Linear(features, item.units, weight_scale=weight_scale, rng=rng, dtype=dtype,
                           use_bias=item.use_bias)  # fmt: skip
        elif item.kind in ("BatchNormalization", "Dropout"):
            layer = _modal(item, shapes[item.name][0], dtype)
        else:
            raise item.error(
                "has no channels-first layer (Conv2D, ReLU, Tanh, Sigmoid, LeakyReLU, "
                "MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Dense, "
                "BatchNormalization, Dropout, a folded ZeroPadding2D before a Conv2D, a folded "
                "Flatten before a Dense)",
                f"folded={item.folded}",
            )
        layers.append((item.name, layer))
    return tuple(layers)


class ChwNet:
    """The document-style network: a list of layers and a separate softmax loss (called
    through ``scratch.cs231n_api``, as a user's own layers are).

    Parameters
    ----------
    network : spec.Network
        The description to build (default ``spec.networks.CHW_RELU``).
    seed : int
        Seeds one generator that draws every weight in forward order (the conv filters,
        then the Linear weights).
    dtype : float32 or float64
    weight_scale : float
        Standard deviation of every weight initialisation (the document's 1e-3).

    ``conv``, ``pool`` and ``linear`` are the first Conv, the first pool and the last
    Linear (the self-test plants bugs there).
    """

    def __init__(self, network: Network = CHW_RELU, seed=0, dtype="float64", weight_scale=1e-3):
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        self.layers = make_layers(network, rng, self.dtype, weight_scale)
        found = {
            cls: [layer for _, layer in self.layers if isinstance(layer, cls)]
            for cls in (Conv, MaxPool2x2, Linear)
        }
        self.conv = found[Conv][0] if found[Conv] else None
        self.pool = found[MaxPool2x2][0] if found[MaxPool2x2] else None
        self.linear = found[Linear][-1] if found[Linear] else None


class ChwModel(ChannelsFirstModel):
    """``ChwNet`` as the harness sees it, through the channels-first adapter every such
    implementation goes through, a user's own file included (``scratch.cs231n_api``): its
    layers' own ``forward``/``backward`` and ``softmax_loss``, the whole batch at once
    (these classes take batches).

    For ``chw-relu``: ``forward`` -> ``{"conv2d": (N, 8, 26, 26), "re_lu": (N, 8, 26, 26),
    "max_pooling2d": (N, 8, 13, 13), "dense": scores (N, 10), "softmax": (N, 10)}``;
    ``gradients`` -> ``(mean loss, tree)`` with ``input`` for every layer (``softmax``'s
    is ``dscores``, ``dense``'s is ``(N, 8, 13, 13)``) and ``kernel``/``bias`` for
    ``conv2d`` (``(8, 1, 3, 3)``, ``(8,)``) and ``dense`` (``(1352, 10)``, ``(10,)``).
    Any description that :func:`make_layers` can build works the same way.
    """

    per_image = False  # scratch.chw's layers take (N, C, H, W)
    loss_function = staticmethod(softmax_loss)

    def __init__(self, network: Network = CHW_RELU, seed=0, dtype="float64"):
        self.spec = network
        self.name = network.name
        self.net = ChwNet(network, seed=seed, dtype=dtype)
        self.dtype = self.net.dtype
        self._adapter_state()

    @property
    def layers(self) -> tuple:
        return self.net.layers


def build_chw_relu(seed=0, dtype="float64") -> ChwModel:
    """``chw-relu``: Conv(1, 8, 3) -> ReLU -> MaxPool2x2 -> Linear(1352, 10) -> softmax."""
    return ChwModel(CHW_RELU, seed=seed, dtype=dtype)


def build_chw(seed=0, dtype="float64") -> ChwModel:
    """``chw``: Conv(1, 8, 3) -> MaxPool2x2 -> Linear(1352, 10) -> softmax."""
    return ChwModel(CHW, seed=seed, dtype=dtype)


def build_chw_odd(seed=0, dtype="float64") -> ChwModel:
    """``spec.networks.CHW_ODD``: Conv(1, 6, 4, pad=1, stride=2) -> Conv(6, 10, 2) ->
    MaxPool2x2 on 13x13 -> Linear(360, 10) -> softmax."""
    return ChwModel(CHW_ODD, seed=seed, dtype=dtype)


def build_cs231n_3layer_chw(seed=0, dtype="float64") -> ChwModel:
    """``spec.networks.CS231N_3LAYER_CHW``: Conv(1, 8, 3, no bias) -> SpatialBatchNorm(8) ->
    ReLU -> MaxPool2x2 -> Linear(1352, 32, no bias) -> BatchNorm(32) -> ReLU -> Dropout(0.5)
    -> Linear(32, 10) -> softmax; built in training mode."""
    return ChwModel(CS231N_3LAYER_CHW, seed=seed, dtype=dtype)


def build_lenet5_chw(seed=0, dtype="float64") -> ChwModel:
    """``spec.networks.LENET5_CHW``: LeNet-5 channels-first, Conv(1, 6, 5, pad=2) -> Tanh ->
    AvgPool(2) -> Conv(6, 16, 5) -> Tanh -> AvgPool(2) -> Linear(400, 120) -> Tanh ->
    Linear(120, 84) -> Tanh -> Linear(84, 10) -> softmax."""
    return ChwModel(LENET5_CHW, seed=seed, dtype=dtype)


def build_chw_same(seed=0, dtype="float64") -> ChwModel:
    """``spec.networks.CHW_SAME``: 'same' convolutions at stride 2 (asymmetric padding),
    LeakyReLU, Sigmoid and a global average pool before the Linear."""
    return ChwModel(CHW_SAME, seed=seed, dtype=dtype)
