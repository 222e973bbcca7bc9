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
(``scratch.user_cs231n_norm``): built and checked here with the other classes (bad input,
exit 2), kept in ``norm_layers``, judged alone by ``parity.checks.modal``; they are not
part of the fixed network.
"""

from __future__ import annotations

from scratch.chw_model import ChwNet
from scratch.cs231n_api import WEIGHTS, ChannelsFirstModel
from scratch.protocol import check_dtype
from scratch.user_api import check_array, check_function, check_signature, construct
from scratch.user_code import UserCode, UserCodeError, load
from scratch.user_cs231n_norm import NORM_LAYERS, build_checked
from spec import Network
from spec.networks import CHW, CHW_RELU, NETWORKS

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
METHODS = {"forward": ("x",), "backward": ("dout",)}  # every layer's, called with one image
LOSS_ARGUMENTS = ("scores", "y")  # softmax_loss(scores, y)
LOSS_API = "the cs231n API: softmax_loss(scores (N, classes), y (N,)) -> (mean loss, dscores)"
# Keras layer name -> the user's class behind it on the fixed networks, for reports.
USER_CLASSES = {
    **{item.name: USER_KINDS[item.kind] for item in CHW_RELU.layers if not item.folded},
    **{layer.name: layer.cls for layer in NORM_LAYERS},  # judged alone (parity.checks.modal)
}


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
        self.spec = network or (CHW_RELU if "ReLU" in found else CHW)
        self.name = name
        self.dtype = check_dtype(dtype)
        self.loss_function = found["softmax_loss"]
        check_function(self.loss_function, LOSS_ARGUMENTS, LOSS_API)
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
        # built and checked now (exit 2 before anything runs); judged by parity.checks.modal
        self.norm_layers = build_checked(found) if network is None else {}
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
            check_array(layer, attribute, getattr(shipped, attribute).shape, f"{cls}({call})",
                        API[cls])  # fmt: skip
        for method, arguments in METHODS.items():
            check_signature(layer, method, arguments, API[cls])
        return layer


def build_user_cs231n(code: UserCode, seed: int = 0, dtype="float64") -> UserCs231nModel:
    """The user's cs231n-style file, loaded from ``code.path``, as a ``HarnessModel``
    (on ``code.network`` when it names a description)."""
    network = NETWORKS[code.network] if code.network else None
    return UserCs231nModel(load(code), seed=seed, dtype=dtype, name=code.name, network=network)
