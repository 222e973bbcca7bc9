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

The file may also define ``BatchNorm``, ``SpatialBatchNorm`` and ``Dropout``
(``scratch.user_cs231n_norm``), built and checked with the other classes (bad input, exit
2). A file that defines all three runs in the network ``cs231n-3layer-chw``
(``spec.networks.CS231N_3LAYER_CHW``, :func:`network_for`): ``Conv(1, 8, 3)`` ->
``SpatialBatchNorm(8)`` -> ``ReLU`` -> ``MaxPool2x2`` -> ``Linear(1352, 32)`` ->
``BatchNorm(32)`` -> ``ReLU`` -> ``Dropout(0.5)`` -> ``Linear(32, 10)`` -> ``softmax_loss``,
so every check judges them in place (the batch norms and the dropout get the whole batch,
the other classes one image at a time). The description gives the conv and the first
Linear no bias (a batch norm follows): the user's ``bias`` there is held at zero and its
``db`` not compared. The user's ``Dropout`` draws its own masks: the harness reads each
batch's ``mask``, gives it to the Keras twin and replays the draw wherever it runs that
batch again (``scratch.user_cs231n_draws``). With only some of the three, the fixed
network above runs and those classes are judged alone (``parity.checks.modal``, which
runs on every file that defines any of them).
"""

from __future__ import annotations

import numpy as np

from scratch.chw_model import ChwNet
from scratch.cs231n_api import WEIGHTS, ChannelsFirstModel
from scratch.cs231n_modes import STATE
from scratch.protocol import check_dtype
from scratch.user_api import check_array, check_function, check_signature, construct
from scratch.user_code import UserCode, UserCodeError, load
from scratch.user_cs231n_draws import Draws
from scratch.user_cs231n_norm import NORM_CLASSES, NORM_LAYERS, build_checked
from spec import Network
from spec.networks import CHW, CHW_RELU, CS231N_3LAYER_CHW, NETWORKS

# Layer kind -> the user's class (or function) for it; the loss is the Softmax layer.
USER_KINDS = {
    "Conv2D": "Conv", "ReLU": "ReLU", "MaxPooling2D": "MaxPool2x2", "Dense": "Linear",
    "Softmax": "softmax_loss",
}  # fmt: skip
# The API's words for each class (issue 13, the cs231n API), quoted in messages.
API = {
    "Conv": "the cs231n API: Conv(in_channels, out_channels, filter_size, pad=0, stride=1) "
    "holds `filters` (F, C, k, k) and `bias` (F,)",
    "Linear": "the cs231n API: Linear(in_features, out_features) holds `weights` (in, out) "
    "and `bias` (out,)",
    "MaxPool2x2": "the cs231n API: MaxPool2x2() with forward(x) and backward(dout)",
    "ReLU": "the cs231n API: ReLU() with forward(x) and backward(dout)",
}
STATE_ATTRIBUTES = tuple(attribute for _, attribute in STATE["BatchNormalization"])
METHODS = {"forward": ("x",), "backward": ("dout",)}  # every layer's, called with one image
LOSS_ARGUMENTS = ("scores", "y")  # softmax_loss(scores, y)
LOSS_API = "the cs231n API: softmax_loss(scores (N, classes), y (N,)) -> (mean loss, dscores)"
# Keras layer name -> the user's class behind it, for reports: the fixed networks' and
# cs231n-3layer-chw's (whose names extend chw-relu's; the batch norms and the dropout are
# NORM_LAYERS's, the same names in the network and alone in parity.checks.modal).
USER_CLASSES = {
    **{item.name: USER_KINDS[item.kind] for network in (CS231N_3LAYER_CHW, CHW_RELU)
       for item in network.layers if item.kind in USER_KINDS and not item.folded},
    **{layer.name: layer.cls for layer in NORM_LAYERS},
}  # fmt: skip


def network_for(found: dict) -> Network:
    """The description a cs231n file runs in: ``cs231n-3layer-chw`` when it defines
    ``SpatialBatchNorm``, ``BatchNorm`` and ``Dropout``; else ``chw-relu`` with a ``ReLU``,
    ``chw`` without."""
    if all(cls in found for cls in NORM_CLASSES):
        return CS231N_3LAYER_CHW
    return CHW_RELU if "ReLU" in found else CHW


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
    scratch.user_code.UserCodeError
        A constructor that raises, a weight attribute missing or of the wrong shape, a
        method missing or whose signature cannot take the API's call: bad input (exit 2),
        naming the class's file and line, the class, the attribute, the rule and the value.
    """

    per_image = True  # the API's forward takes one image (C, H, W)

    def __init__(self, found: dict, seed: int = 0, dtype="float64", name="user",
                 network: Network | None = None):  # fmt: skip
        self.spec = network or network_for(found)
        self.name = name
        self.dtype = check_dtype(dtype)
        self.loss_function = found["softmax_loss"]
        check_function(self.loss_function, LOSS_ARGUMENTS, LOSS_API)
        reference = ChwNet(self.spec, seed=seed, dtype=self.dtype)
        # built and checked now (exit 2 before anything runs): the network's, if it has
        # them, and parity.checks.modal's (which builds its own)
        self.norm_layers = build_checked(found) if network is None else {}
        self._layers = tuple(
            (item_name, self.norm_layers[item_name] if item_name in self.norm_layers
             else self._construct(found, item_name, shipped))
            for item_name, shipped in reference.layers
        )  # fmt: skip
        self._adapter_state(Draws(self.spec, self.dtype))  # its Dropout draws its masks
        self.class_names = {**{item.name: USER_KINDS[item.kind] for item in self.spec.layers
                               if item.kind in USER_KINDS and not item.folded},
                            **{layer.name: layer.cls for layer in NORM_LAYERS}}  # fmt: skip
        for (layer_name, layer), (_, shipped) in zip(self._layers, reference.layers, strict=True):
            _start_from(layer, shipped, self.spec.layer(layer_name).kind)

    @property
    def layers(self) -> tuple:
        return self._layers

    def _construct(self, found: dict, layer_name: str, shipped):
        """The user's class for ``layer_name``, built with the shipped layer's arguments;
        its weight attributes checked against the shipped layer's shapes."""
        kind = self.spec.layer(layer_name).kind
        cls = USER_KINDS[kind]
        if cls not in found:  # a description with a ReLU, a file without one
            raise UserCodeError(
                f"Network `{self.spec.name}` layer `{layer_name}` is a {kind}: the file "
                f"defines no `{cls}`."
            )
        if kind == "Conv2D":
            args = (shipped.in_channels, shipped.out_channels, shipped.filter_size)
            kwargs = dict(pad=shipped.pad, stride=shipped.stride)
        elif kind == "Dense":
            args, kwargs = (shipped.in_features, shipped.out_features), {}
        else:
            args, kwargs = (), {}
        layer = construct(found[cls], args, kwargs, API[cls])
        call = ", ".join([*map(str, args), *(f"{k}={v}" for k, v in kwargs.items())])
        for attribute in WEIGHTS.get(kind, ()):
            check_array(layer, attribute, _api_shape(shipped, attribute), f"{cls}({call})",
                        API[cls])  # fmt: skip
        for method, arguments in METHODS.items():
            check_signature(layer, method, arguments, API[cls])
        return layer


def _api_shape(shipped, attribute: str) -> tuple:
    """The API's shape of a Conv's or Linear's ``attribute`` (its bias too, when the shipped
    layer has none: the API's classes always hold one)."""
    if attribute == "bias" and shipped.bias is None:
        return (getattr(shipped, "out_channels", None) or shipped.out_features,)
    return getattr(shipped, attribute).shape


def _start_from(user, shipped, kind: str) -> None:
    """The user's layer gets the shipped layer's starting weights (and a batch norm's
    running statistics) as copies in the shipped dtype; a bias the description leaves out
    is held at zero."""
    attributes = WEIGHTS.get(kind, ()) + (STATE_ATTRIBUTES if kind in STATE else ())
    for attribute in attributes:
        value = getattr(shipped, attribute)
        if value is None:  # no bias in the description: zeros, never stepped or compared
            value = np.zeros(_api_shape(shipped, attribute), shipped.dtype)
        setattr(user, attribute, value.copy())


def build_user_cs231n(code: UserCode, seed: int = 0, dtype="float64") -> UserCs231nModel:
    """The user's cs231n-style file, loaded from ``code.path``, as a ``HarnessModel``
    (on ``code.network`` when it names a description)."""
    network = NETWORKS[code.network] if code.network else None
    return UserCs231nModel(load(code), seed=seed, dtype=dtype, name=code.name, network=network)
