"""A stack of NHWC layers as a ``HarnessModel``.

``Sequential(layers, input_shape, seed=0, dtype="float64")`` builds every layer in
order from one seeded ``numpy.random.Generator`` and names unnamed layers like Keras
(``conv2d``, ``conv2d_1``, ...). The last layer must be ``Softmax`` for the loss: the
loss is the mean categorical cross-entropy computed from its probabilities, and its
gradient is chained back through every layer's ``backward`` (the hand derivations
under test). Gradients and updates are separate steps: ``gradients`` updates nothing;
an optimizer (``scratch.optim``) or ``train_step`` (plain SGD) updates in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import spec
from scratch import activations as A
from scratch import layers as L
from scratch.dropout import Dropout
from scratch.layer_base import Layer, check_batch, invalid_argument
from scratch.layers import Softmax
from scratch.losses import categorical_crossentropy, check_labels, count_correct
from scratch.normalization import BatchNormalization
from scratch.padding import ZeroPadding2D
from scratch.pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPool2D
from scratch.protocol import REQUIRED, Capability, HarnessModel, Tree, check_dtype

# spec kind -> (scratch class, hyperparameters it takes under the same names). The one
# table both ways: a network description builds layers, a stack of layers describes itself.
LAYERS = {
    "Conv2D": (L.Conv2D, ("filters", "kernel_size", "strides", "padding", "use_bias")),
    "MaxPooling2D": (MaxPool2D, ("pool_size", "strides", "padding")),
    "AveragePooling2D": (AveragePooling2D, ("pool_size", "strides", "padding")),
    "GlobalAveragePooling2D": (GlobalAveragePooling2D, ()),
    "ZeroPadding2D": (ZeroPadding2D, ("padding",)),
    "Flatten": (L.Flatten, ()),
    "Dense": (L.Dense, ("units", "use_bias")),
    "ReLU": (L.ReLU, ()),
    "LeakyReLU": (A.LeakyReLU, ("negative_slope",)),
    "Tanh": (A.Tanh, ()),
    "Sigmoid": (A.Sigmoid, ()),
    "Softmax": (L.Softmax, ()),
    "BatchNormalization": (BatchNormalization, ("momentum", "epsilon")),
    "Dropout": (Dropout, ("rate",)),
}
MODAL = (BatchNormalization, Dropout)  # layers with a ``training`` flag


class Sequential(HarnessModel):
    """Layers applied in order to a batch-first input.

    Parameters
    ----------
    layers : sequence of scratch.layers.Layer
        Unbuilt layers; they are built here.
    input_shape : tuple of int
        Per-example input shape, e.g. ``(28, 28, 1)``.
    seed : int, default 0
        Seeds the generator that initialises every layer, in order.
    dtype : {"float64", "float32"}
    name : str, default "sequential"
        The registry sets it to the model's registry name.

    Capabilities: the required ones, its own SGD step (``train_step``), the loss from
    any layer (``loss_from``) and training/inference modes (``set_training``,
    ``set_masks``; batch norm and dropout). A model is built in training mode: its
    gradients are training mode's (batch statistics, the dropout masks), and every
    training-mode forward pass updates the moving statistics, as Keras's does.
    """

    capabilities = REQUIRED | {Capability.TRAIN_STEP, Capability.LOSS_FROM, Capability.MODES}

    def __init__(
        self,
        layers: Sequence[Layer],
        input_shape,
        seed: int = 0,
        dtype="float64",
        name: str = "sequential",
        network: spec.Network | None = None,
    ):
        self._network = network
        self.dtype = check_dtype(dtype)
        self.name = name
        self.layers = _check_layers(layers)
        _assign_names(self.layers)
        rng = np.random.default_rng(seed)
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else input_shape
        self.input_shape = shape
        for layer in self.layers:
            shape = layer.build(shape, rng, self.dtype)
        self.input_shape = self.layers[0].input_shape
        self.output_shape = shape
        self._by_name = {layer.name: layer for layer in self.layers}
        self.set_training(True)

    @classmethod
    def from_network(cls, network: spec.Network, seed: int = 0, dtype="float64") -> Sequential:
        """The network description ``network`` built from scratch layers (:data:`LAYERS`).

        Raises ValueError naming the layer for a kind with no scratch layer or a folded one
        (this family folds nothing)."""
        stack = []
        for item in network.layers:
            if item.kind not in LAYERS or item.folded:
                raise ValueError(
                    f"Network `{network.name}`: {item.label} has no scratch NHWC layer "
                    f"(kinds: {sorted(LAYERS)}, none folded). Received folded={item.folded}."
                )
            cls_, names = LAYERS[item.kind]
            stack.append(cls_(**{n: getattr(item, n) for n in names}, name=item.name))
        return cls(stack, network.input_shape, seed, dtype, network.name, network)

    @property
    def spec(self) -> spec.Network:
        """The network description this model was built from, or that its layers give."""
        if self._network is None:
            self._network = spec.Network(self.name, self.input_shape, self._describe())
        return self._network

    def _describe(self) -> tuple[spec.Layer, ...]:
        kinds = {cls_: (kind, names) for kind, (cls_, names) in LAYERS.items()}
        out = []
        for layer in self.layers:
            if type(layer) not in kinds:
                raise spec.SpecError(
                    f"Model `{self.name}`: scratch layer `{layer.name}` "
                    f"({type(layer).__name__}) has no kind in the network description; "
                    f"known classes: {sorted(c.__name__ for c in kinds)}."
                )
            kind, names = kinds[type(layer)]
            out.append(spec.Layer(kind, layer.name, **{n: getattr(layer, n) for n in names}))
        return tuple(out)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def layer(self, name: str) -> Layer:
        """The layer called ``name``."""
        if name not in self._by_name:
            raise invalid_argument("name", f"one of {self.layer_names}", name)
        return self._by_name[name]

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` pixels in 0..255 -> the description's formula with a channel axis,
        ``(image / divisor + offset)[..., None]`` (``spec.Preprocess``; a stack of layers
        without a description: the blog's ``image / 255 - 0.5``) in dtype.

        Computed in float64 and rounded once to ``dtype``.
        """
        images = np.asarray(images)
        height, width, channels = self.input_shape
        if images.ndim != 3 or images.shape[1:] != (height, width) or channels != 1:
            raise ValueError(
                f"Invalid value for argument `images`. Expected a (N, {height}, {width}) "
                f"array of single-channel images for input shape {self.input_shape}. "
                f"Received images with shape {images.shape}."
            )
        return self.spec.preprocess.apply(images, self.dtype)[..., None]

    def params(self) -> Tree:
        return {layer.name: dict(layer.params) for layer in self.layers if layer.params}

    def state(self) -> Tree:
        return {layer.name: dict(layer.state) for layer in self.layers
                if isinstance(layer, BatchNormalization)}  # fmt: skip

    def set_training(self, training: bool) -> None:
        if not isinstance(training, bool):
            raise invalid_argument("training", "a bool", training)
        self.training = training
        for layer in self.layers:
            if isinstance(layer, MODAL):
                layer.training = training

    def set_masks(self, masks: dict[str, np.ndarray]) -> None:
        """``{dropout layer name: keep mask}``, bool ``(N, *input shape)``; every dropout
        layer must be named (a stale mask must never be reused silently)."""
        dropouts = [layer for layer in self.layers if isinstance(layer, Dropout)]
        if sorted(masks) != sorted(layer.name for layer in dropouts):
            raise invalid_argument(
                "masks", f"one mask per dropout layer {[d.name for d in dropouts]}", sorted(masks)
            )
        for layer in dropouts:
            mask = np.asarray(masks[layer.name])
            if mask.dtype != bool or mask.shape[1:] != layer.input_shape:
                raise invalid_argument(
                    f"masks[{layer.name!r}]", f"a bool array (N, *{layer.input_shape})",
                    f"<{mask.dtype} array of shape {mask.shape}>",
                )  # fmt: skip
            layer.mask = mask.copy()

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = self._check_x(x)
        outputs = {}
        for layer in self.layers:
            x = layer._forward(x)
            outputs[layer.name] = x
        return outputs

    def gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.floating, Tree]:
        loss, grads, _ = self.gradients_and_probabilities(x, labels)
        return self.dtype.type(loss), grads  # computed in dtype: the cast is exact

    def gradients_and_probabilities(self, x, labels, need_input_grad: bool = True):
        """``(loss, grads, probs)``: ``gradients`` plus the forward pass's probabilities.

        With ``need_input_grad=False`` the first layer's ``input`` gradient is skipped
        (a training step does not need it) and absent from ``grads``.
        """
        probs = self.forward(x)[self.layers[-1].name]
        labels = self._check_labels(labels, probs)
        loss, dout = categorical_crossentropy(probs, labels)
        grads: Tree = {}
        for position in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[position]
            need_dx = need_input_grad or position > 0
            dout = layer._backward(dout, need_dx)
            grads[layer.name] = dict(layer.grads)
            if need_dx:
                grads[layer.name]["input"] = dout
        ordered = {name: grads[name] for name in self.layer_names}
        return loss, ordered, probs

    def train_step(self, x, labels, learning_rate) -> tuple[float, int]:
        """One plain-SGD step ``w -= lr * g`` (lr in the model's dtype), in place.

        Returns the batch's mean loss and number of correct predictions, both from
        the forward pass before the update. Same arithmetic as ``optim.SGD``.
        """
        loss, grads, probs = self.gradients_and_probabilities(x, labels, need_input_grad=False)
        lr = self.dtype.type(learning_rate)
        for layer in self.layers:
            for weight, array in layer.params.items():
                np.subtract(array, lr * grads[layer.name][weight], out=array)
        return loss, count_correct(probs, labels)

    def loss_from(self, layer_name: str, h: np.ndarray, labels) -> float:
        """Mean loss when ``h`` is fed as the input of ``layer_name`` (for finite differences)."""
        start = self.layer_names.index(self.layer(layer_name).name)
        first = self.layers[start]
        check_batch(np.asarray(h), first.input_shape, self.dtype, f"layer `{first.name}`")
        for layer in self.layers[start:]:
            h = layer._forward(h)
        return categorical_crossentropy(h, self._check_labels(labels, h))[0]

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x)
        check_batch(x, self.input_shape, self.dtype, f"model `{self.name}`")
        return x

    def _check_labels(self, labels, probs):
        if not isinstance(self.layers[-1], Softmax):
            raise ValueError(
                f"Model `{self.name}` cannot compute the loss: expected the last layer to "
                f"be a Softmax (the loss is cross-entropy from its probabilities). "
                f"Received last layer `{self.layers[-1].name}` "
                f"({type(self.layers[-1]).__name__})."
            )
        return check_labels(labels, probs.shape[0], probs.shape[1])


def _check_layers(layers) -> list[Layer]:
    layers = list(layers) if isinstance(layers, (list, tuple)) else None
    if not layers or not all(isinstance(layer, Layer) for layer in layers):
        raise invalid_argument(
            "layers", "a non-empty list of scratch.layers.Layer instances", layers
        )
    for layer in layers:
        if layer.built:
            raise ValueError(
                f"Invalid value for argument `layers`. Expected unbuilt layers (Sequential "
                f"builds them). Received layer `{layer.label}`, already built for input "
                f"shape {layer.input_shape}."
            )
    if len({id(layer) for layer in layers}) != len(layers):
        raise ValueError(
            "Invalid value for argument `layers`. Expected each layer once. Received the "
            "same layer instance more than once."
        )
    return layers


def _assign_names(layers: list[Layer]) -> None:
    """Keras-style defaults for unnamed layers: ``conv2d``, ``conv2d_1``, ..."""
    given = [layer.name for layer in layers if layer.name is not None]
    duplicates = sorted({name for name in given if given.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Invalid value for argument `layers`. Expected unique layer names. "
            f"Received duplicate name(s) {duplicates}."
        )
    taken, counters = set(given), {}
    for layer in layers:
        if layer.name is not None:
            continue
        count = counters.get(layer.base_name, 0)
        while (candidate := layer.base_name + (f"_{count}" if count else "")) in taken:
            count += 1
        layer.name = candidate
        taken.add(candidate)
        counters[layer.base_name] = count + 1
