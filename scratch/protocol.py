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
"""

from __future__ import annotations

import abc

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
    """

    name: str
    dtype: np.dtype
    spec: Network

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
        live = self.params()
        for layer, weights in live.items():
            for weight, array in weights.items():
                new = np.asarray(values[layer][weight])
                if new.shape != array.shape:
                    raise ValueError(
                        f"Layer `{layer}` weight `{weight}`: expected shape "
                        f"{array.shape}, received {new.shape}."
                    )
                array[...] = new

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The model's output probabilities ``(N, 10)``."""
        return self.forward(x)[self.layer_names[-1]]
