"""The one interface every scratch model family shows the harness.

A family (the blog network in ``zhou.py``, the NHWC ``Sequential`` layers, the
channels-first family) keeps its own API for its users, and exposes itself to
the harness through a ``HarnessModel``. Names are Keras's (layer names such as
``conv2d``, ``max_pooling2d``, ``dense``, ``softmax``; weight names ``kernel``
and ``bias``); layouts stay native to the family (the blog's filters stay
``(F, 3, 3)``, channels-first activations stay ``(N, C, H, W)``). Every layout
conversion to Keras lives in ``reference.layout``, derived from the model's network
description ``spec`` (a ``spec.Network``: its layers, Keras's names and the family's
native layouts as data).

Nested dictionaries are keyed ``{layer_name: {quantity: array}}`` where the
quantity is a weight name (``kernel``, ``bias``) or ``input`` (the loss gradient
with respect to that layer's input).

What an implementation can do is declared, not probed: ``HarnessModel.capabilities``
names its :class:`Capability` members. Every model has the four the base class requires
(:data:`REQUIRED`); a family adds the optional ones it implements (its own training step,
the loss from an intermediate layer). The base class defines every method of every
capability, so the harness never looks an attribute up: an optional method a model does
not provide raises :class:`CapabilityError` naming the capability, and the harness asks
``model.provides(capability)`` to pick a path. A subclass whose declaration and methods
disagree is a TypeError when the class is defined.
"""

from __future__ import annotations

import abc
import enum

import numpy as np

from spec import Network

Tree = dict[str, dict[str, np.ndarray]]

SUPPORTED_DTYPES = ("float32", "float64")


def check_dtype(dtype) -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise ValueError."""
    name = np.dtype(dtype).name if _is_dtype_like(dtype) else repr(dtype)
    if name not in SUPPORTED_DTYPES:
        raise ValueError(
            f"Invalid value for argument `dtype`. Expected one of {SUPPORTED_DTYPES}. "
            f"Received dtype={dtype!r}."
        )
    return np.dtype(name)


def _is_dtype_like(dtype) -> bool:
    try:
        np.dtype(dtype)
    except TypeError:
        return False
    return True


class Capability(enum.StrEnum):
    """What an implementation under test provides to the harness (issue 12 item 3)."""

    LAYER_OUTPUTS = "layer outputs"  # forward(x): every layer's output
    GRADIENTS = "gradients"  # gradients(x, labels): loss and every gradient, no update
    WEIGHTS = "weights"  # params() / set_params(values): read and write the weights
    SNAPSHOT = "snapshot"  # snapshot() / restore(copies): the weights, bit for bit
    TRAIN_STEP = "train step"  # train_step(x, labels, lr): one SGD step, its own update
    LOSS_FROM = "loss from a layer"  # loss_from(layer, h, labels): h fed to that layer
    # set_training(flag) / set_masks(masks): training mode (batch statistics, dropout masks
    # injected by the harness) or inference mode (moving statistics, no dropout)
    MODES = "training and inference modes"


REQUIRED = frozenset(
    {Capability.LAYER_OUTPUTS, Capability.GRADIENTS, Capability.WEIGHTS, Capability.SNAPSHOT}
)
# Optional capability -> the base-class method a model that declares it overrides.
OPTIONAL = {
    Capability.TRAIN_STEP: "train_step",
    Capability.LOSS_FROM: "loss_from",
    Capability.MODES: "set_training",
}


class CapabilityError(NotImplementedError):
    """A model was asked for a capability it does not declare."""


class HarnessModel(abc.ABC):
    """A scratch model as the harness sees it.

    Attributes
    ----------
    name : str
        Registry name (``zhou``, ``two-conv``, ``chw``, ``chw-relu``).
    dtype : numpy.dtype
        float32 or float64; parameters, activations and gradients all use it.
    spec : spec.Network
        What the model is: layers, names, hyperparameters and native layouts. The Keras
        twin, the layout conversions and the pools and kinks the checks visit come from it.
    capabilities : frozenset of Capability
        What the model provides: :data:`REQUIRED` and the optional ones it implements. A
        class attribute; a subclass declares exactly the optional methods it overrides
        (checked when the class is defined: TypeError otherwise).
    """

    name: str
    dtype: np.dtype
    spec: Network
    capabilities: frozenset[Capability] = REQUIRED

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declared = frozenset(cls.capabilities)
        if not REQUIRED <= declared:
            raise TypeError(
                f"{cls.__name__}.capabilities must include every required capability "
                f"{sorted(map(str, REQUIRED))}. Received {sorted(map(str, declared))}."
            )
        for capability, method in OPTIONAL.items():
            overridden = any(method in vars(k) for k in cls.__mro__[:-1] if k is not HarnessModel)
            if overridden != (capability in declared):
                raise TypeError(
                    f"{cls.__name__}: capability `{capability}` is "
                    f"{'declared' if capability in declared else 'not declared'} but "
                    f"`{method}` is {'defined' if overridden else 'not defined'}; declare "
                    f"the capability exactly when the class defines `{method}`."
                )

    def provides(self, capability: Capability) -> bool:
        """Whether this model declares ``capability``."""
        return capability in self.capabilities

    def require(self, capability: Capability) -> None:
        """Raise :class:`CapabilityError` naming ``capability`` unless it is declared."""
        if capability not in self.capabilities:
            raise CapabilityError(
                f"Model `{self.name}` ({type(self).__name__}) does not provide the capability "
                f"`{capability}`; it provides {sorted(map(str, self.capabilities))}. "
                f"Ask `model.provides(Capability.{capability.name})` before using it."
            )

    @property
    @abc.abstractmethod
    def layer_names(self) -> tuple[str, ...]:
        """Layer names in forward order; the last one outputs the probabilities."""

    @abc.abstractmethod
    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Raw MNIST ``(N, 28, 28)`` uint8 -> the family's input batch in ``dtype``."""

    @abc.abstractmethod
    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's output for the batch ``x``, batch-first, native layout."""

    @abc.abstractmethod
    def gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.floating, Tree]:
        """Mean categorical cross-entropy over the batch and its gradients.

        Returns ``(loss, grads)``: ``loss`` a numpy scalar in ``dtype`` (a float32 model's
        loss is float32, as Keras's is); ``grads[layer]["input"]`` for every layer and
        ``grads[layer][weight]`` for every weight. Nothing is updated.
        """

    @abc.abstractmethod
    def params(self) -> Tree:
        """The live weight arrays (not copies), ``{layer: {weight: array}}``."""

    def not_provided(self) -> dict[tuple[str, str], str]:
        """``{(layer, quantity): reason}`` the implementation does not produce by design
        (e.g. a first layer whose backward pass returns no input gradient); the checks
        report these NOT_PROVIDED. Known once ``gradients`` ran; empty by default."""
        return {}

    def modified_inputs(self) -> dict[tuple[str, str], str]:
        """``{(layer, call): message}``: calls (``forward``, ``backward``) found writing
        into the array they were given (a ReLU clipping the caller's array in place); the
        gradients check reports each as a FAIL. Empty when nothing was found, or when the
        adapter does not watch (by default)."""
        return {}

    def set_params(self, values: Tree) -> None:
        """Copy ``values`` into the live weights; shapes must match exactly."""
        _copy_into(self.params(), values, "weight")

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The model's output probabilities ``(N, 10)``."""
        return self.forward(x)[self.layer_names[-1]]

    def gradients_and_probabilities(self, x, labels, need_input_grad: bool = True):
        """``(loss, grads, probabilities)``: :meth:`gradients` and the probabilities of the
        same weights. By default two passes (``probabilities``, then ``gradients``; the
        first layer's ``input`` gradient is computed whatever ``need_input_grad`` says); a
        family overrides it to take both from one forward pass."""
        probs = self.probabilities(x)
        loss, grads = self.gradients(x, labels)
        return loss, grads, probs

    def state(self) -> Tree:
        """The live non-trainable state (not copies), ``{layer: {name: array}}``: batch
        norm's ``moving_mean`` and ``moving_variance`` (Keras's names). Updated by a
        training-mode forward pass, read in inference mode, never differentiated. Empty
        by default (a model without such layers)."""
        return {}

    def set_state(self, values: Tree) -> None:
        """Copy ``values`` into the live state (:meth:`state`); shapes must match exactly.
        Keys of ``values`` that are not state (weights of a snapshot) are ignored."""
        _copy_into(self.state(), values, "state")

    # -- snapshot and restore (every model) ---------------------------------------------

    def snapshot(self) -> Tree:
        """Copies of every weight and state array, ``{layer: {name: array}}`` (native
        layout, own dtype): what training changes."""
        out: Tree = {}
        for tree in (self.params(), self.state()):
            for layer, ws in tree.items():
                out.setdefault(layer, {}).update({w: np.array(a, copy=True) for w, a in ws.items()})
        return out

    def restore(self, snapshot: Tree) -> None:
        """Write a :meth:`snapshot` back into the live weights and state, bit for bit."""
        self.set_params(snapshot)
        self.set_state(snapshot)

    # -- optional capabilities: defined here, raising CapabilityError unless declared --

    def train_step(self, x, labels, learning_rate) -> tuple[float, int]:
        """``Capability.TRAIN_STEP``: one plain-SGD step ``w -= lr * g`` on the batch's
        mean loss through the implementation's own update path, in place; returns
        ``(loss, correct predictions)`` of the forward pass before the update.

        Raises
        ------
        CapabilityError
            The model does not declare ``Capability.TRAIN_STEP``.
        """
        self.require(Capability.TRAIN_STEP)
        raise CapabilityError(f"{type(self).__name__} declares `train step` without it.")

    def set_training(self, training: bool) -> None:
        """``Capability.MODES``: ``True``, training mode (batch statistics, each dropout
        layer multiplies by its mask, moving statistics updated by every forward pass);
        ``False``, inference mode (moving statistics, dropout the identity).

        Raises
        ------
        CapabilityError
            The model does not declare ``Capability.MODES``.
        """
        self.require(Capability.MODES)
        raise CapabilityError(f"{type(self).__name__} declares `{Capability.MODES}` without it.")

    def set_masks(self, masks: dict[str, np.ndarray]) -> None:
        """``Capability.MODES``: ``{dropout layer: keep mask}`` (bool, the layer's input
        shape for the next batch, native layout) used by the next training-mode calls.

        Raises
        ------
        CapabilityError
            The model does not declare ``Capability.MODES``.
        """
        self.require(Capability.MODES)
        raise CapabilityError(f"{type(self).__name__} declares `{Capability.MODES}` without it.")

    def drawn_masks(self) -> dict[str, np.ndarray] | None:
        """``Capability.MODES``: None when the dropout layers use the masks given to
        ``set_masks``; else (a user's cs231n ``Dropout`` draws its own) ``{dropout layer:
        keep mask}``, bool, native layout, that the layers drew for the batch of the last
        ``set_masks``, which the twin must then use."""
        return None

    def loss_from(self, layer_name: str, h, labels) -> float:
        """``Capability.LOSS_FROM``: the mean loss when ``h`` (``(N, ...)``, native layout
        of ``layer_name``'s input) is fed as the input of ``layer_name`` (finite
        differences of input gradients, and of weights from their layer onward).

        Raises
        ------
        CapabilityError
            The model does not declare ``Capability.LOSS_FROM``.
        """
        self.require(Capability.LOSS_FROM)
        raise CapabilityError(f"{type(self).__name__} declares `loss from a layer` without it.")


def _copy_into(live: Tree, values: Tree, what: str) -> None:
    """Copy ``values[layer][name]`` into every live array; shapes must match exactly."""
    for layer, arrays in live.items():
        for name, array in arrays.items():
            new = np.asarray(values[layer][name])
            if new.shape != array.shape:
                raise ValueError(
                    f"Layer `{layer}` {what} `{name}`: expected shape "
                    f"{array.shape}, received {new.shape}."
                )
            array[...] = new
