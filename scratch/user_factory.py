"""Any channels-first network of a user's, from a factory (``parity check PATH:FUNCTION``).

``PATH`` is a ``.py`` file and ``FUNCTION`` a function it defines. The harness calls
``FUNCTION(seed=seed, dtype=dtype)`` (``seed`` an int, ``dtype`` a ``numpy.dtype``,
float64 or float32) in every process that builds the model, and the factory returns a
:class:`Subject`: the network description and the user's own callables.

- ``network``: a ``spec.Network`` in the channels-first layouts, made with
  ``spec.networks.channels_first(name, spec.layers.stack(...))`` (activations NCHW,
  kernels ``(F, C, kh, kw)``, a Dense after a folded Flatten with rows in C, H, W
  order). The Keras twin, every layout conversion and the reference preprocessing come
  from it.
- ``layers``: the user's layer objects in forward order, one per layer of the
  description that is neither folded nor the final Softmax (a folded ZeroPadding2D is the
  next Conv's ``pad``, a folded Flatten is inside the next Linear), each with the cs231n
  API of ``scratch.user_cs231n``: ``forward(x)`` on one image ``(C, H, W)``,
  ``backward(dout)`` returning ``dx``, or ``(dx, dw, db)`` for a Conv2D (weights in
  ``filters`` (F, C, kh, kw) and ``bias`` (F,)) or a Dense (``weights`` (in, out) and
  ``bias`` (out,)). The weights are the factory's own (seed them from ``seed``, make
  them in ``dtype``); the harness checks their shapes and dtypes and never draws others.
- ``loss``: ``softmax_loss(scores (N, K), y (N,)) -> (mean loss, dscores / N)``.
- ``preprocess`` (optional): the user's ``(N, H, W)`` uint8 images -> ``(N, C, H, W)``
  model inputs. It is judged on its own against the description's reference
  (``parity.checks.preprocessing``); every other check feeds the reference to both sides,
  so a preprocessing fault is reported once, at ``preprocessing/input``. Without one, that
  row is NOT_PROVIDED: the description's documented preprocessing is assumed.

They are called through the adapter of every channels-first implementation
(``scratch.cs231n_api.ChannelsFirstModel``). Any fault in what the factory returns is a
:class:`scratch.user_code.UserCodeError` naming the attribute, the rule and the value
(``parity check`` exits 2 on it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scratch.cs231n_api import WEIGHTS, ChannelsFirstModel
from scratch.protocol import check_dtype
from scratch.user_api import check_function, check_signature
from scratch.user_code import UserCode, UserCodeError, load, where_raised
from scratch.user_cs231n import LOSS_API, LOSS_ARGUMENTS, METHODS
from spec import Network

NCHW_ACTIVATIONS = "spec.networks.NCHW"  # the only activation layout a factory may use


@dataclass(frozen=True)
class Subject:
    """What a factory returns: the description and the user's callables.

    Attributes
    ----------
    network : spec.Network
        Channels-first (``spec.networks.channels_first``); its last layer is the Softmax
        that ``loss`` computes.
    layers : sequence
        The user's layer objects, in forward order, one per layer of ``network`` that is
        neither folded nor the final Softmax.
    loss : callable
        ``softmax_loss(scores (N, K), y (N,)) -> (mean loss, dscores (N, K) / N)``.
    preprocess : callable, optional
        ``(N, H, W)`` uint8 -> ``(N, C, H, W)`` in the run's dtype; judged against
        ``network.preprocess`` (``image / divisor + offset``) on raw MNIST images.
    """

    network: Network
    layers: Sequence
    loss: Callable
    preprocess: Callable | None = None


def call_factory(code: UserCode, seed: int = 0, dtype="float64") -> Subject:
    """Import ``code.path``, call ``code.function(seed=seed, dtype=dtype)`` and validate
    what it returned (:func:`validate`); raises UserCodeError naming the file, function,
    attribute, rule and value."""
    dtype = check_dtype(dtype)
    factory = load(code)[code.function]
    where = f"{code.path}:{code.function}(seed={seed}, dtype={dtype.name})"
    try:
        subject = factory(seed=seed, dtype=dtype)
    except Exception as error:  # the factory is the user's code: say where it raised
        raise UserCodeError(
            f"{where} raised {type(error).__name__}: {error}"
            f"{where_raised(error, Path(code.path))}. Expected it to return a "
            "scratch.user_factory.Subject."
        ) from None
    validate(subject, where, dtype)
    return subject


def validate(subject, where: str, dtype) -> None:
    """The rules of :class:`Subject`, each failure a UserCodeError naming ``where`` (the
    call), the attribute, the rule and the value received."""
    from spec.networks import NCHW

    if not isinstance(subject, Subject):
        _fail(where, "the return value", "a scratch.user_factory.Subject", _kind(subject))
    network = subject.network
    if not isinstance(network, Network):
        _fail(where, "Subject.network", "a spec.Network", _kind(network))
    if network.activations != NCHW:
        _fail(where, "Subject.network", "a channels-first description (activations NCHW: "
              f"build it with spec.networks.channels_first) as {NCHW_ACTIVATIONS}",
              f"activations={network.activations!r}")  # fmt: skip
    expected = expected_layers(network)
    layers = subject.layers
    if isinstance(layers, (str, bytes, dict)) or not isinstance(layers, Sequence):
        _fail(where, "Subject.layers", "a list of layer objects in forward order", _kind(layers))
    if len(layers) != len(expected):
        wanted = ", ".join(f"{name} ({network.layer(name).kind})" for name in expected)
        given = ", ".join(type(x).__name__ for x in layers) or "none"
        _fail(where, "Subject.layers", f"{len(expected)} layers, one per layer of network "
              f"`{network.name}` but the folded ones and the Softmax: {wanted}",
              f"{len(layers)}: {given}")  # fmt: skip
    for i, (name, layer) in enumerate(zip(expected, layers, strict=True)):
        _check_layer(where, f"Subject.layers[{i}] ({type(layer).__name__}, layer `{name}`)",
                     network, name, layer, dtype)  # fmt: skip
    for attribute in ("loss", "preprocess"):
        value = getattr(subject, attribute)
        if not callable(value) and not (attribute == "preprocess" and value is None):
            _fail(where, f"Subject.{attribute}", "a function", _kind(value))
    _within(where, "Subject.loss", check_function, subject.loss, LOSS_ARGUMENTS, LOSS_API)


def expected_layers(network: Network) -> tuple[str, ...]:
    """The layer names a factory gives objects for: the native ones but the Softmax."""
    return network.native_names[:-1]


def _check_layer(where, label, network: Network, name: str, layer, dtype) -> None:
    for method, arguments in METHODS.items():
        if not callable(getattr(layer, method, None)):
            _fail(where, label, f"a `{method}` method (the cs231n API)", _kind(layer))
        _within(where, label, check_signature, layer, method, arguments, "the cs231n API")
    kind = network.layer(name).kind
    for keras, attribute in zip(("kernel", "bias"), WEIGHTS.get(kind, ()), strict=False):
        shape = network.native_shape(name, keras)
        array = getattr(layer, attribute, None)
        if not isinstance(array, np.ndarray):
            _fail(where, f"{label}.{attribute}", f"a numpy array of shape {shape} (a {kind}'s "
                  "weights, the cs231n API)", _kind(array))  # fmt: skip
        if array.shape != shape:
            _fail(where, f"{label}.{attribute}", f"shape {shape} (network `{network.name}`)",
                  f"shape {array.shape}")  # fmt: skip
        if array.dtype != dtype:
            _fail(where, f"{label}.{attribute}", f"dtype {dtype.name} (the `dtype` argument "
                  "the factory was called with)", f"dtype {array.dtype}")  # fmt: skip


def _within(where: str, attribute: str, check, *args) -> None:
    """``check(*args)`` (``scratch.user_api``), its UserCodeError said of ``attribute``."""
    try:
        check(*args)
    except UserCodeError as error:
        raise UserCodeError(f"{where}: invalid `{attribute}`. {error}") from None


def _fail(where: str, attribute: str, rule: str, received: str):
    raise UserCodeError(f"{where}: invalid `{attribute}`. Expected {rule}. Received {received}.")


def _kind(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    return "None" if value is None else f"a {type(value).__name__}"


class UserFactoryModel(ChannelsFirstModel):
    """A factory's :class:`Subject` behind ``HarnessModel``, through the channels-first
    adapter (one image at a time, as the cs231n API says).

    ``preprocess`` is the description's reference (``ChannelsFirstModel.preprocess``);
    the user's own, if any, is :attr:`user_preprocess`, judged by
    ``parity.checks.preprocessing``. ``class_names`` maps each layer to the user's class
    (the Softmax to the loss function's name) for reports.
    """

    per_image = True

    def __init__(self, subject: Subject, dtype="float64", name="user"):
        self.spec = subject.network
        self.name = name
        self.dtype = check_dtype(dtype)
        self.loss_function = subject.loss
        self.user_preprocess = subject.preprocess
        self._layers = tuple(zip(expected_layers(self.spec), subject.layers, strict=True))
        self._adapter_state()
        self.class_names = class_names(subject)

    @property
    def layers(self) -> tuple:
        return self._layers


def class_names(subject: Subject) -> dict[str, str]:
    """``{layer name: the user's class}``, the final Softmax -> the loss function's name."""
    names = dict(zip(expected_layers(subject.network), (type(x).__name__ for x in subject.layers),
                     strict=True))  # fmt: skip
    names[subject.network.layers[-1].name] = getattr(subject.loss, "__name__", "loss")
    return names


def build_user_factory(code: UserCode, seed: int = 0, dtype="float64") -> UserFactoryModel:
    """The factory ``code.path:code.function`` called with ``seed`` and ``dtype``, as a
    ``HarnessModel``."""
    return UserFactoryModel(call_factory(code, seed, dtype), dtype=dtype, name=code.name)
