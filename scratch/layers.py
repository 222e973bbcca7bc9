"""General batch-first NHWC layers with hand-derived backward passes (numpy only).

Keras layout and names: a convolution kernel is ``(kh, kw, c_in, c_out)``, a dense
kernel ``(in_features, units)``, biases ``(c_out,)`` / ``(units,)``; weight names
``kernel`` and ``bias``; default layer names (``conv2d``, ``max_pooling2d``, ``dense``,
``flatten``, ``re_lu``, ``softmax``) are given by ``Sequential`` when none is passed.

Every layer has the same life cycle:

* ``build(input_shape, rng, dtype)`` fixes the per-example input shape (no batch
  axis), creates the weights (glorot uniform kernels, zero biases, drawn from the
  seeded ``numpy.random.Generator``) and returns the per-example output shape. An
  unbuilt layer builds itself on its first ``forward`` (seed 0, the input's dtype).
* ``forward(x)`` validates ``x`` (rank, shape, dtype, finite values), computes the
  output and keeps what ``backward`` needs.
* ``backward(dout)`` returns ``dx`` (the loss gradient of the input) and fills
  ``grads`` with the gradient of every weight, keyed like ``params``. Each call
  binds fresh arrays: gradients are overwritten, never accumulated.

No Python loop over pixels, windows or filters: convolutions gather their patches
with precomputed indices (built once from ``sliding_window_view`` over an index
image) and use one matrix product; the adjoint gather (the input gradient) is a
``bincount`` scatter over the same indices.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's 'same' padding: ``(out, before, after)`` along one axis.

    out = ceil(size / stride); total = max((out - 1) * stride + kernel - size, 0);
    before (top/left) = total // 2, after (bottom/right) = the rest.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


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


# ----------------------------------------------------------------------------------
# Gather / scatter over precomputed window indices (the vectorized core).


def window_indices(
    height: int, width: int, channels: int, window: tuple[int, int], strides, out_hw
) -> np.ndarray:
    """Flat indices into one ``(height, width, channels)`` image of every window.

    Returns ``(oh, ow, kh, kw, channels)`` int64: entry ``[i, j, a, b, c]`` is the flat
    position of pixel ``(i*sh + a, j*sw + b, c)``, i.e. Keras's kernel order
    ``(kh, kw, c_in)`` inside each window.
    """
    image = np.arange(height * width * channels, dtype=np.int64).reshape(height, width, channels)
    views = sliding_window_view(image, window, axis=(0, 1))  # (H', W', C, kh, kw)
    views = views[:: strides[0], :: strides[1]][: out_hw[0], : out_hw[1]]
    return np.ascontiguousarray(views.transpose(0, 1, 3, 4, 2))


def gather(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``x`` ``(N, ...)`` -> ``(N,) + indices.shape`` by flat per-example indices."""
    return x.reshape(x.shape[0], -1)[:, indices]


def scatter_add(values: np.ndarray, indices: np.ndarray, size: int, dtype) -> np.ndarray:
    """Adjoint of ``gather``: ``(N, size)`` with ``values`` summed at their indices."""
    n = values.shape[0]
    offsets = (np.arange(n, dtype=np.int64) * size).reshape((n,) + (1,) * indices.ndim)
    flat = (indices[None] + offsets).ravel()
    summed = np.bincount(flat, weights=values.ravel(), minlength=n * size)
    return summed.reshape(n, size).astype(dtype, copy=False)


# ----------------------------------------------------------------------------------
# Layers.


class Conv2D(Layer):
    """2-D cross-correlation, NHWC, Keras layout and TensorFlow's padding rule.

    Parameters
    ----------
    filters : int
        Output channels ``c_out``.
    kernel_size : int or (int, int)
        ``(kh, kw)``.
    strides : int or (int, int), default 1
    padding : {"valid", "same"}, default "valid"
        "same" pads like TensorFlow: total = max((ceil(in/s) - 1)*s + k - in, 0),
        total // 2 at top/left and the rest at bottom/right.
    use_bias : bool, default True
    name : str, optional

    Shapes: input ``(N, H, W, c_in)``; kernel ``(kh, kw, c_in, c_out)``; bias
    ``(c_out,)``; output ``(N, oh, ow, c_out)``.
    """

    base_name = "conv2d"
    input_rank = 3

    def __init__(self, filters, kernel_size, strides=1, padding="valid", use_bias=True, name=None):
        super().__init__(name)
        self.filters = positive_int("filters", filters)
        self.kernel_size = int_pair("kernel_size", kernel_size)
        self.strides = int_pair("strides", strides)
        if padding not in ("valid", "same"):
            raise invalid_argument("padding", "one of ('valid', 'same')", padding)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise invalid_argument("use_bias", "a bool", use_bias)
        self.padding, self.use_bias = padding, bool(use_bias)

    def _build(self, shape, rng):
        height, width, channels = shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "same":
            oh, top, bottom = same_padding(height, kh, sh)
            ow, left, right = same_padding(width, kw, sw)
        else:
            if kh > height or kw > width:
                raise invalid_argument(
                    "kernel_size",
                    f"a kernel no larger than the padded input {(height, width)} "
                    f"(padding='valid', layer `{self.label}`)",
                    self.kernel_size,
                )
            oh, ow, top, bottom, left, right = (
                (height - kh) // sh + 1,
                (width - kw) // sw + 1,
                0,
                0,
                0,
                0,
            )
        self._pads = ((0, 0), (top, bottom), (left, right), (0, 0))
        self._padded = (height + top + bottom, width + left + right, channels)
        self._indices = window_indices(*self._padded, (kh, kw), (sh, sw), (oh, ow))
        fan_in, fan_out = kh * kw * channels, kh * kw * self.filters
        self.params = {
            "kernel": glorot_uniform(
                rng, (kh, kw, channels, self.filters), fan_in, fan_out, self.dtype
            )
        }
        if self.use_bias:
            self.params["bias"] = np.zeros(self.filters, dtype=self.dtype)
        return (oh, ow, self.filters)

    def _pad(self, x):
        if self._padded == self.input_shape:
            return x
        (_, _), (top, _), (left, _), _ = self._pads
        height, width, _ = self.input_shape
        padded = np.zeros((x.shape[0],) + self._padded, dtype=x.dtype)  # np.pad is slower
        padded[:, top : top + height, left : left + width] = x
        return padded

    def _forward(self, x):
        n, (oh, ow, f) = x.shape[0], self.output_shape
        cols = gather(self._pad(x), self._indices).reshape(n * oh * ow, -1)  # (N*oh*ow, kh*kw*c)
        out = cols @ self.params["kernel"].reshape(-1, f)
        if self.use_bias:
            out += self.params["bias"]
        self._keep(n, cols)
        return out.reshape(n, oh, ow, f)

    def _backward(self, dout, need_dx=True):
        cols, kernel = self._cache, self.params["kernel"]
        d2 = dout.reshape(-1, self.filters)  # (N*oh*ow, c_out)
        grads = {"kernel": (cols.T @ d2).reshape(kernel.shape)}
        if self.use_bias:
            grads["bias"] = d2.sum(axis=0)
        self.grads = grads
        if not need_dx:
            return None
        n = dout.shape[0]
        dcols = (d2 @ kernel.reshape(-1, self.filters).T).reshape((n,) + self._indices.shape)
        dxp = scatter_add(dcols, self._indices, math.prod(self._padded), self.dtype)
        dxp = dxp.reshape((n,) + self._padded)
        (_, _), (top, bottom), (left, right), _ = self._pads
        return dxp[:, top : top + self.input_shape[0], left : left + self.input_shape[1]]


class Dense(Layer):
    """Fully connected: ``x @ kernel + bias``.

    Shapes: input ``(N, D)``; kernel ``(D, units)``; bias ``(units,)``; output
    ``(N, units)``.
    """

    base_name = "dense"
    input_rank = 1

    def __init__(self, units, use_bias=True, name=None):
        super().__init__(name)
        self.units = positive_int("units", units)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise invalid_argument("use_bias", "a bool", use_bias)
        self.use_bias = bool(use_bias)

    def _build(self, shape, rng):
        (features,) = shape
        self.params = {
            "kernel": glorot_uniform(rng, (features, self.units), features, self.units, self.dtype)
        }
        if self.use_bias:
            self.params["bias"] = np.zeros(self.units, dtype=self.dtype)
        return (self.units,)

    def _forward(self, x):
        out = x @ self.params["kernel"]
        if self.use_bias:
            out += self.params["bias"]
        self._keep(x.shape[0], x)
        return out

    def _backward(self, dout, need_dx=True):
        grads = {"kernel": self._cache.T @ dout}
        if self.use_bias:
            grads["bias"] = dout.sum(axis=0)
        self.grads = grads
        return dout @ self.params["kernel"].T if need_dx else None


class Flatten(Layer):
    """``(N, H, W, C)`` -> ``(N, H*W*C)`` in NHWC order (Keras's Flatten)."""

    base_name = "flatten"

    def _build(self, shape, rng):
        return (math.prod(shape),)

    def _forward(self, x):
        self._keep(x.shape[0], True)
        return x.reshape(x.shape[0], -1)

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        return dout.reshape((dout.shape[0],) + self.input_shape) if need_dx else None


class ReLU(Layer):
    """``max(x, 0)``; the gradient at exactly 0 is 0 (TensorFlow's rule)."""

    base_name = "re_lu"

    def _forward(self, x):
        positive = x > 0
        self._keep(x.shape[0], positive)
        return np.where(positive, x, self.dtype.type(0))

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        return np.where(self._cache, dout, self.dtype.type(0)) if need_dx else None


class Softmax(Layer):
    """Softmax over the last axis, stable (the row maximum is subtracted first).

    Backward: ``dx = p * (dout - sum(dout * p, axis=-1))``.
    """

    base_name = "softmax"

    def _forward(self, x):
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
        self._keep(x.shape[0], probs)
        return probs

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        probs = self._cache
        return probs * (dout - (dout * probs).sum(axis=-1, keepdims=True))
