"""The base of every NHWC layer (``scratch.layers`` and the layers beside it): argument
checks with Keras-style messages (argument, rule, value received), Keras's glorot uniform
initialiser, the ``Layer`` life cycle (``build``, ``forward``, ``backward``, ``params``,
``grads``) and the batch checks every ``forward``/``backward`` runs (rank, shape, dtype,
finite values). numpy only.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from scratch.protocol import check_dtype

# ----------------------------------------------------------------------------------
# Argument checks shared by the layers (Keras-style messages: argument, rule, value).


def invalid_argument(argument: str, rule: str, value) -> ValueError:
    """``ValueError`` naming the argument, the rule and the value received."""
    return ValueError(
        f"Invalid value for argument `{argument}`. Expected {rule}. Received {argument}={value!r}."
    )


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(argument: str, value) -> int:
    """``value`` as an int if it is a strictly positive integer, else ValueError."""
    if not _is_int(value) or value <= 0:
        raise invalid_argument(argument, "a strictly positive integer", value)
    return int(value)


def int_pair(argument: str, value) -> tuple[int, int]:
    """An int or a pair of ints, all strictly positive, as ``(rows, cols)``."""
    pair = (value, value) if _is_int(value) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(_is_int(v) and v > 0 for v in pair)
    ):
        raise invalid_argument(
            argument, "a strictly positive integer or a tuple of 2 of them", value
        )
    return int(pair[0]), int(pair[1])


def _check_name(name):
    if name is not None and (not isinstance(name, str) or not name):
        raise invalid_argument("name", "a non-empty string or None", name)
    return name


def _as_generator(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if _is_int(rng):
        return np.random.default_rng(int(rng))
    raise invalid_argument("rng", "a numpy.random.Generator, an integer seed or None", rng)


def glorot_uniform(rng, shape, fan_in: int, fan_out: int, dtype) -> np.ndarray:
    """Keras's GlorotUniform: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


# ----------------------------------------------------------------------------------
# The base class.


class Layer:
    """Base class: name, weights, gradients, shapes and the input checks.

    Attributes
    ----------
    name : str or None
        Layer name (``Sequential`` assigns a Keras-style default when None).
    params : dict[str, numpy.ndarray]
        Live weights, ``kernel`` and ``bias`` (empty for layers without weights).
    grads : dict[str, numpy.ndarray]
        Loss gradient of each weight from the last ``backward``, keys as ``params``.
    input_shape, output_shape : tuple[int, ...]
        Per-example shapes (no batch axis), set by ``build``.
    """

    base_name = "layer"
    input_rank: int | None = None  # per-example rank the layer requires; None = any >= 1

    def __init__(self, name: str | None = None):
        self.name = _check_name(name)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.built = False
        self.dtype: np.dtype | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self._cache = None

    @property
    def label(self) -> str:
        return self.name or self.base_name

    def build(self, input_shape, rng=None, dtype="float64") -> tuple[int, ...]:
        """Create the weights for per-example ``input_shape``; return the output shape."""
        dtype = check_dtype(dtype)
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
        if shape is None or not shape or not all(_is_int(d) and d > 0 for d in shape):
            raise invalid_argument(
                "input_shape", "a non-empty tuple of strictly positive integers", input_shape
            )
        shape = tuple(int(d) for d in shape)
        if self.input_rank is not None and len(shape) != self.input_rank:
            raise ValueError(
                f"Input 0 of layer `{self.label}` is incompatible with the layer: expected "
                f"ndim={self.input_rank + 1} (batch included), found ndim={len(shape) + 1}. "
                f"Full shape received: (None, {', '.join(map(str, shape))})"
            )
        self.dtype, self.input_shape = dtype, shape
        self.output_shape = self._build(shape, _as_generator(rng))
        self.built = True
        return self.output_shape

    def _build(self, shape, rng) -> tuple[int, ...]:
        return shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Validate ``x`` (batch first), compute the output, keep what backward needs."""
        x = np.asarray(x)
        if not self.built and x.ndim >= 1 and x.dtype.kind == "f":
            self.build(x.shape[1:], None, x.dtype)
        self.check_input(x)
        return self._forward(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Return the loss gradient of the last input; fill ``grads``."""
        if self._cache is None:
            raise RuntimeError(f"Layer `{self.label}`: backward called before forward.")
        dout = np.asarray(dout)
        expected = (self._batch,) + self.output_shape
        if dout.shape != expected:
            raise ValueError(
                f"Invalid value for argument `dout` of layer `{self.label}`. Expected shape "
                f"{expected} (the last output's). Received dout with shape {dout.shape}."
            )
        if dout.dtype != self.dtype:
            raise ValueError(
                f"Invalid value for argument `dout` of layer `{self.label}`. Expected dtype "
                f"{self.dtype} (the layer's). Received dout with dtype {dout.dtype}."
            )
        return self._backward(dout)

    def check_input(self, x: np.ndarray) -> None:
        """Raise ValueError unless ``x`` is a finite batch of the built shape and dtype."""
        if not self.built:
            raise ValueError(
                f"Invalid input to layer `{self.label}`. Expected a floating-point batch to "
                f"build from. Received an array of shape {x.shape} and dtype {x.dtype}."
            )
        check_batch(x, self.input_shape, self.dtype, f"layer `{self.label}`")

    @property
    def _batch(self) -> int:
        return self._cache_batch

    def _keep(self, batch: int, cache) -> None:
        self._cache_batch, self._cache = batch, cache


def check_batch(x: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    """Raise ValueError unless ``x`` is a finite ``(N,) + shape`` batch of ``dtype``."""
    full = "(None, " + ", ".join(map(str, shape)) + ")"
    if x.ndim != len(shape) + 1:
        raise ValueError(
            f"Input 0 of {where} is incompatible with the layer: expected ndim="
            f"{len(shape) + 1}, found ndim={x.ndim}. Full shape received: {x.shape}"
        )
    if x.shape[-1] != shape[-1]:
        raise ValueError(
            f"Input 0 of {where} is incompatible with the layer: expected axis -1 of input "
            f"shape to have value {shape[-1]}, but received input with shape {x.shape}"
        )
    if x.shape[1:] != shape:
        raise ValueError(
            f"Input 0 of {where} is incompatible with the layer: expected shape={full}, "
            f"found shape={x.shape}"
        )
    if x.dtype != dtype:
        raise ValueError(
            f"Invalid input to {where}. Expected dtype {dtype} (the layer's dtype). "
            f"Received an input of dtype {x.dtype}."
        )
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))
        first = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"Invalid input to {where}. Expected finite values. Received {len(bad)} "
            f"non-finite value(s), the first at index {first}: {x[first]!r}."
        )
