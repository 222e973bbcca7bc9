"""The channels-first networks ``chw-relu`` and ``chw``, and their harness adapter.

``chw-relu``: Conv(1, 8, 3) -> ReLU -> MaxPool2x2 -> Linear(13*13*8, 10) -> softmax loss;
``chw``: the same without ReLU. Inputs ``image / 255`` shaped ``(N, 1, 28, 28)``.

Layer names (Keras's, shared with the twin): ``conv2d``, ``re_lu`` (chw-relu only),
``max_pooling2d``, ``dense``, ``softmax``. Layouts stay native: activations
``(N, C, H, W)``, conv kernel ``(F, C, kh, kw)``, dense kernel ``(1352, 10)`` with rows in
C, H, W order. Conversions to Keras live in ``reference.layout``.
"""

from __future__ import annotations

import numpy as np

from scratch.chw import Conv, Linear, MaxPool2x2, ReLU, softmax, softmax_loss
from scratch.protocol import HarnessModel, Tree, check_dtype

IMAGE_SIDE = 28
NUM_FILTERS = 8
FILTER_SIZE = 3
NUM_CLASSES = 10
POOLED_SIDE = (IMAGE_SIDE - FILTER_SIZE + 1) // 2  # 13
DENSE_IN = NUM_FILTERS * POOLED_SIDE * POOLED_SIDE  # 1352


class ChwNet:
    """The document-style network: a list of layers and a separate softmax loss.

    Parameters
    ----------
    relu : bool
        Put a ReLU after the convolution (``chw-relu``) or not (``chw``).
    seed : int
        Seeds one generator that draws the conv filters, then the Linear weights.
    dtype : float32 or float64
    weight_scale : float
        Standard deviation of both weight initialisations (the document's 1e-3).
    """

    def __init__(self, relu=True, seed=0, dtype="float64", weight_scale=1e-3):
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        self.conv = Conv(1, NUM_FILTERS, FILTER_SIZE, weight_scale=weight_scale, rng=rng,
                         dtype=self.dtype)  # fmt: skip
        self.pool = MaxPool2x2(dtype=self.dtype)
        self.linear = Linear(DENSE_IN, NUM_CLASSES, weight_scale=weight_scale, rng=rng,
                             dtype=self.dtype)  # fmt: skip
        layers = [("conv2d", self.conv)]
        if relu:
            layers.append(("re_lu", ReLU(dtype=self.dtype)))
        layers += [("max_pooling2d", self.pool), ("dense", self.linear)]
        self.layers = tuple(layers)

    def forward(self, x) -> dict[str, np.ndarray]:
        """Every layer's output, ``{name: array}`` in forward order; ``dense`` = scores."""
        outputs = {}
        for name, layer in self.layers:
            x = layer.forward(x)
            outputs[name] = x
        return outputs

    def forward_from(self, name: str, h) -> np.ndarray:
        """The scores when ``h`` is fed as the input of layer ``name`` (``"softmax"``: ``h``)."""
        names = [n for n, _ in self.layers]
        start = names.index(name) if name in names else len(names)
        for _, layer in self.layers[start:]:
            h = layer.forward(h)
        return h

    def backward(self, dscores) -> dict[str, tuple]:
        """Backward through the cached forward: ``{name: (dx, dw, db)}`` or ``{name: dx}``."""
        results = {}
        d = dscores
        for name, layer in reversed(self.layers):
            result = layer.backward(d)
            results[name] = result
            d = result[0] if isinstance(result, tuple) else result
        return results

    def loss(self, x, y) -> tuple[float, dict[str, tuple]]:
        """Mean softmax cross-entropy over the batch and every layer's backward result."""
        scores = self.forward(x)["dense"]
        loss, dscores = softmax_loss(scores, y)
        return loss, self.backward(dscores)


class ChwModel(HarnessModel):
    """``ChwNet`` as the harness sees it (``scratch.protocol.HarnessModel``).

    ``forward`` -> ``{"conv2d": (N, 8, 26, 26), ["re_lu": (N, 8, 26, 26),]
    "max_pooling2d": (N, 8, 13, 13), "dense": scores (N, 10), "softmax": (N, 10)}``;
    ``gradients`` -> ``(mean loss, tree)`` with ``input`` for every layer (``softmax``'s
    is ``dscores``, ``dense``'s is ``(N, 8, 13, 13)``) and ``kernel``/``bias`` for
    ``conv2d`` (``(8, 1, 3, 3)``, ``(8,)``) and ``dense`` (``(1352, 10)``, ``(10,)``).
    """

    def __init__(self, relu=True, seed=0, dtype="float64"):
        self.name = "chw-relu" if relu else "chw"
        self.net = ChwNet(relu=relu, seed=seed, dtype=dtype)
        self.dtype = self.net.dtype

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.net.layers) + ("softmax",)

    def preprocess(self, images) -> np.ndarray:
        """``(N, 28, 28)`` uint8 -> ``image / 255`` as ``(N, 1, 28, 28)`` in ``dtype``."""
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise ValueError(
                "Invalid value for argument `images`. Expected shape (N, 28, 28). "
                f"Received images.shape={images.shape}."
            )
        # Divide in the target dtype: one correctly rounded division, no double rounding.
        return (images.astype(self.dtype) / self.dtype.type(255))[:, None]

    def _check_x(self, x) -> None:
        shape = np.shape(x)
        if len(shape) != 4 or shape[1:] != (1, IMAGE_SIDE, IMAGE_SIDE):
            raise ValueError(
                "Invalid value for argument `x`. Expected shape (N, 1, 28, 28) "
                f"(channels-first batch). Received x.shape={shape}."
            )

    def forward(self, x) -> dict[str, np.ndarray]:
        self._check_x(x)
        outputs = self.net.forward(x)
        outputs["softmax"] = softmax(outputs["dense"])  # the very function softmax_loss uses
        return outputs

    def gradients(self, x, labels) -> tuple[np.floating, Tree]:
        self._check_x(x)
        scores = self.net.forward(x)["dense"]
        loss, dscores = softmax_loss(scores, labels)
        tree: Tree = {"softmax": {"input": dscores}}
        for name, result in self.net.backward(dscores).items():
            if isinstance(result, tuple):
                dx, dw, db = result
                tree[name] = {"input": dx, "kernel": dw, "bias": db}
            else:
                tree[name] = {"input": result}
        loss = self.dtype.type(loss)  # computed in dtype: the cast is exact
        return loss, {name: tree[name] for name in self.layer_names}

    def loss_from(self, layer_name: str, h, labels) -> float:
        """Mean loss when ``h`` is fed as the input of ``layer_name`` (for finite differences)."""
        if layer_name not in self.layer_names:
            raise ValueError(
                f"Invalid value for argument `layer_name`. Expected one of {self.layer_names}. "
                f"Received layer_name={layer_name!r}."
            )
        return softmax_loss(self.net.forward_from(layer_name, h), labels)[0]

    def params(self) -> Tree:
        return {
            "conv2d": {"kernel": self.net.conv.filters, "bias": self.net.conv.bias},
            "dense": {"kernel": self.net.linear.weights, "bias": self.net.linear.bias},
        }


def build_chw_relu(seed=0, dtype="float64") -> ChwModel:
    """``chw-relu``: Conv(1, 8, 3) -> ReLU -> MaxPool2x2 -> Linear(1352, 10) -> softmax."""
    return ChwModel(relu=True, seed=seed, dtype=dtype)


def build_chw(seed=0, dtype="float64") -> ChwModel:
    """``chw``: Conv(1, 8, 3) -> MaxPool2x2 -> Linear(1352, 10) -> softmax."""
    return ChwModel(relu=False, seed=seed, dtype=dtype)
