"""The channels-first networks ``chw-relu`` and ``chw``, and their harness adapter.

``chw-relu``: Conv(1, 8, 3) -> ReLU -> MaxPool2x2 -> Linear(13*13*8, 10) -> softmax loss;
``chw``: the same without ReLU. Inputs ``image / 255`` shaped ``(N, 1, 28, 28)``.

Both are built from their network descriptions (``spec.networks.CHW``, ``CHW_RELU``)
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
from scratch.cs231n_api import ChannelsFirstModel
from scratch.protocol import REQUIRED, Capability, check_dtype
from spec import Network
from spec.networks import CHW, CHW_ODD, CHW_RELU


def _conv(item, shapes, pad, rng, dtype, scale) -> Conv:
    (kh, kw), (sh, sw) = item.kernel_size, item.strides
    if kh != kw or sh != sw or item.padding != "valid" or not item.use_bias:
        raise item.error(
            "has no channels-first Conv (square kernel and strides, padding 'valid' after "
            "an optional folded ZeroPadding2D, with bias)",
            f"kernel_size={item.kernel_size}, strides={item.strides}, "
            f"padding={item.padding!r}, use_bias={item.use_bias}",
        )
    channels = shapes[item.name][0][-1]
    return Conv(
        channels, item.filters, kh, pad=pad, stride=sh, weight_scale=scale, rng=rng, dtype=dtype
    )


def _pool(item, dtype) -> MaxPool2x2:
    if item.pool_size != (2, 2) or item.strides != (2, 2) or item.padding != "valid":
        raise item.error(
            "has no channels-first pool but MaxPool2x2 (pool 2, strides 2, 'valid')",
            f"pool_size={item.pool_size}, strides={item.strides}, padding={item.padding!r}",
        )
    return MaxPool2x2(dtype=dtype)


def make_layers(network: Network, rng, dtype, weight_scale) -> tuple:
    """``((name, layer), ...)``: the channels-first layers of ``network`` (the Softmax,
    which is the loss, left out), weights drawn from ``rng`` in forward order.

    One table of kind -> layer: Conv2D -> ``Conv`` (a folded ZeroPadding2D just before it
    is its ``pad``), ReLU -> ``ReLU``, MaxPooling2D -> ``MaxPool2x2``, a folded Flatten
    then a Dense -> ``Linear`` (which flattens in C, H, W order). Anything else raises
    SpecError naming the layer."""
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
        elif item.kind == "ReLU":
            layer = ReLU(dtype=dtype)
        elif item.kind == "MaxPooling2D":
            layer = _pool(item, dtype)
        elif item.kind == "Dense" and item.use_bias:
            features = int(np.prod(shapes[item.name][0]))
            layer = Linear(features, item.units, weight_scale=weight_scale, rng=rng, dtype=dtype)
        else:
            raise item.error(
                "has no channels-first layer (Conv2D, ReLU, MaxPooling2D, Dense with bias, "
                "a folded ZeroPadding2D before a Conv2D, a folded Flatten before a Dense)",
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

    def forward_from(self, name: str, h) -> np.ndarray:
        """The scores when ``h`` is fed as the input of layer ``name`` (``"softmax"``: ``h``)."""
        names = [n for n, _ in self.layers]
        start = names.index(name) if name in names else len(names)
        for _, layer in self.layers[start:]:
            h = layer.forward(h)
        return h


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
    capabilities = REQUIRED | {Capability.LOSS_FROM}  # its own forward_from; no SGD step
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

    def loss_from(self, layer_name: str, h, labels) -> float:
        """Mean loss when ``h`` is fed as the input of ``layer_name`` (for finite differences)."""
        if layer_name not in self.layer_names:
            raise ValueError(
                f"Invalid value for argument `layer_name`. Expected one of {self.layer_names}. "
                f"Received layer_name={layer_name!r}."
            )
        return softmax_loss(self.net.forward_from(layer_name, h), labels)[0]


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
