"""A user's own channels-first classes as the harness sees them (``parity check --api cs231n``).

The file defines the seed document's ``Conv(in_channels, out_channels, filter_size, pad=0,
stride=1)`` (``filters`` (F, C, k, k), ``bias`` (F,)), ``MaxPool2x2()``, ``Linear(in_features,
out_features)`` (``weights`` (in, out), ``bias`` (out,)), optionally ``ReLU()``, and
``softmax_loss(scores, y) -> (mean loss, dscores / N)``. The network is ``Conv(1, 8, 3)`` ->
[``ReLU`` ->] ``MaxPool2x2`` -> ``Linear(1352, 10)`` -> ``softmax_loss``, the ReLU used when
the file defines it: the networks ``chw-relu`` and ``chw`` (``spec.networks.CHW_RELU``,
``CHW``: inputs ``image / 255``, NCHW, the Linear's rows in C, H, W order, which the twin's
Dense rows are permuted from), so a user's file starts from the very weights ``parity run
--models chw-relu`` (or ``chw``) starts from.

It is called through the same adapter as those shipped models (``scratch.cs231n_api``),
one image ``(C, H, W)`` at a time as the API says, ``softmax_loss`` on the whole batch.
"""

from __future__ import annotations

import numpy as np

from scratch.chw_model import ChwNet
from scratch.cs231n_api import WEIGHTS, ChannelsFirstModel
from scratch.protocol import check_dtype
from scratch.user_code import UserCode, load
from spec import Network
from spec.networks import CHW, CHW_RELU, NETWORKS

# Layer kind -> the user's class (or function) for it; the loss is the Softmax layer.
USER_KINDS = {
    "Conv2D": "Conv", "ReLU": "ReLU", "MaxPooling2D": "MaxPool2x2", "Dense": "Linear",
    "Softmax": "softmax_loss",
}  # fmt: skip
# Keras layer name -> the user's class behind it on the fixed networks, for reports.
USER_CLASSES = {item.name: USER_KINDS[item.kind] for item in CHW_RELU.layers if not item.folded}


class UserCs231nModel(ChannelsFirstModel):
    """The user's ``Conv``, [``ReLU``,] ``MaxPool2x2``, ``Linear`` and ``softmax_loss``
    behind ``HarnessModel``.

    The constructors run with the network's arguments (``Conv(1, 8, 3, pad=0, stride=1)``,
    ``Linear(1352, 10)``), the weight attributes are checked (names, shapes), then the
    weights are replaced by copies of model ``chw``'s seeded draws (N(0, 1e-3), biases 0)
    in ``dtype``: runs repeat, and start where ``parity run`` does.

    ``network``: another channels-first description to build the classes on (the fixed
    network by default); its Conv arguments come from it (``chw-odd``: ``Conv(1, 6, 4,
    pad=1, stride=2)``, ``Conv(6, 10, 2)``).

    Raises
    ------
    ValueError
        A weight attribute missing or of the wrong shape, naming the class and attribute.
    """

    per_image = True  # the API's forward takes one image (C, H, W)

    def __init__(self, found: dict, seed: int = 0, dtype="float64", name="user",
                 network: Network | None = None):  # fmt: skip
        self.spec = network or (CHW_RELU if "ReLU" in found else CHW)
        self.name = name
        self.dtype = check_dtype(dtype)
        self.loss_function = found["softmax_loss"]
        reference = ChwNet(self.spec, seed=seed, dtype=self.dtype)
        self._layers = tuple(
            (item_name, self._construct(found, item_name, shipped))
            for item_name, shipped in reference.layers
        )
        self._adapter_state()
        self.class_names = {
            item.name: USER_KINDS[item.kind] for item in self.spec.layers if not item.folded
        }
        shipped_params = dict(reference.layers)
        for layer_name, layer in self._layers:
            for attribute in WEIGHTS.get(self.spec.layer(layer_name).kind, ()):
                setattr(layer, attribute, getattr(shipped_params[layer_name], attribute).copy())

    @property
    def layers(self) -> tuple:
        return self._layers

    def _construct(self, found: dict, layer_name: str, shipped):
        """The user's class for ``layer_name``, built with the shipped layer's arguments;
        its weight attributes checked against the shipped layer's shapes."""
        kind = self.spec.layer(layer_name).kind
        cls = USER_KINDS[kind]
        if cls not in found:  # a description with a ReLU, a file without one
            raise ValueError(
                f"Network `{self.spec.name}` layer `{layer_name}` is a {kind}: the file "
                f"defines no `{cls}`."
            )
        if kind == "Conv2D":
            layer = found[cls](shipped.in_channels, shipped.out_channels, shipped.filter_size,
                               pad=shipped.pad, stride=shipped.stride)  # fmt: skip
        elif kind == "Dense":
            layer = found[cls](shipped.in_features, shipped.out_features)
        else:
            layer = found[cls]()
        for attribute in WEIGHTS.get(kind, ()):
            _check_weight(layer, attribute, getattr(shipped, attribute).shape)
        return layer


def _check_weight(layer, attribute: str, shape: tuple) -> None:
    cls = type(layer).__name__
    array = getattr(layer, attribute, None)
    if not isinstance(array, np.ndarray):
        raise ValueError(
            f"{cls} has no array attribute `{attribute}` after construction; the cs231n API "
            f"keeps its weights in `{attribute}` {shape}. Received {type(array).__name__}."
        )
    if array.shape != shape:
        raise ValueError(
            f"{cls}.{attribute}: expected shape {shape} (the cs231n API), received {array.shape}."
        )


def build_user_cs231n(code: UserCode, seed: int = 0, dtype="float64") -> UserCs231nModel:
    """The user's cs231n-style file, loaded from ``code.path``, as a ``HarnessModel``
    (on ``code.network`` when it names a description)."""
    network = NETWORKS[code.network] if code.network else None
    return UserCs231nModel(load(code), seed=seed, dtype=dtype, name=code.name, network=network)
