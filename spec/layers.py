"""One layer of a network description: its Keras kind, name and hyperparameters.

Kinds are Keras class names; an activation Keras has only as ``Activation(name)`` is the
kind of its name capitalised (``Softmax``, ``Tanh``, ``Sigmoid``), its own layer so that
its output and input gradient are keys of their own (a fused ``activation=`` would hide
the pre-activation, and a wrong activation derivative would be blamed on the conv).
Per-example shapes follow Keras (channels-last, no batch axis); :func:`output_shape` is
the one shape rule per kind, with errors that name the layer, the rule and the value
received. Sources: the Keras 3 layer docs for defaults
(``Conv2D``: strides 1, padding "valid", use_bias True; ``MaxPooling2D``: pool 2, strides
= pool_size; ``Dense``: use_bias True) and TensorFlow's padding rule ("same": output
``ceil(H / s)``; "valid": ``(H - k) // s + 1``, trailing rows that fit no window dropped).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

REQUIRED = object()  # marks a hyperparameter with no default

# kind -> {hyperparameter: default}; anything else on a layer of that kind is an error.
HYPERPARAMETERS: dict[str, dict] = {
    "Conv2D": {
        "filters": REQUIRED,
        "kernel_size": REQUIRED,
        "strides": (1, 1),
        "padding": "valid",
        "use_bias": True,
    },
    "MaxPooling2D": {"pool_size": (2, 2), "strides": None, "padding": "valid"},
    "AveragePooling2D": {"pool_size": (2, 2), "strides": None, "padding": "valid"},
    "GlobalAveragePooling2D": {},
    "ZeroPadding2D": {"padding": REQUIRED},
    "Flatten": {},
    "Dense": {"units": REQUIRED, "use_bias": True},
    "ReLU": {},
    "LeakyReLU": {"negative_slope": 0.3},
    "Tanh": {},
    "Sigmoid": {},
    "Softmax": {},
    # Keras's defaults; cs231n's are momentum 0.9, epsilon 1e-5 (spec.networks says which a
    # network uses, always explicitly: the twin passes both to Keras).
    "BatchNormalization": {"momentum": 0.99, "epsilon": 1e-3},
    "Dropout": {"rate": REQUIRED},  # the DROP probability (cs231n's p keeps: rate = 1 - p)
}
KINDS = tuple(HYPERPARAMETERS)
BASE_NAMES = {
    "Conv2D": "conv2d",
    "MaxPooling2D": "max_pooling2d",
    "AveragePooling2D": "average_pooling2d",
    "GlobalAveragePooling2D": "global_average_pooling2d",
    "ZeroPadding2D": "zero_padding2d",
    "Flatten": "flatten",
    "Dense": "dense",
    "ReLU": "re_lu",
    "LeakyReLU": "leaky_re_lu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "Softmax": "softmax",
    "BatchNormalization": "batch_normalization",
    "Dropout": "dropout",
}  # Keras's default names (an Activation layer's is "activation": ours name the function)
POOL_KINDS = ("MaxPooling2D",)  # a window's gradient is routed to its maximum (ties check)
# Backward jumps with the input: which element is a window's maximum, which side of 0 (ReLU:
# slope 0 or 1; LeakyReLU: negative_slope or 1). Average pooling, tanh and sigmoid are
# smooth (linear or analytic): finite differences hold at every point.
KINKED_KINDS = ("MaxPooling2D", "ReLU", "LeakyReLU")
ELEMENTWISE_KINDS = (
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "Softmax",
    "BatchNormalization",
    "Dropout",
)  # shape unchanged
# Output differs between training and inference mode (Keras's ``training`` argument).
MODAL_KINDS = ("BatchNormalization", "Dropout")
# In training mode an example's output depends on the other examples of the batch (the
# batch statistics): finite differences must perturb one example of the batch at a time.
COUPLED_KINDS = ("BatchNormalization",)
MASKED_KINDS = ("Dropout",)  # training mode multiplies by a random mask the harness draws
# Non-trainable state updated by a training-mode forward pass (Keras's weight names):
# copied both ways and compared after every training step, never differentiated.
STATE_WEIGHTS = {"BatchNormalization": ("moving_mean", "moving_variance")}
PADDINGS = ("valid", "same")


class SpecError(ValueError):
    """A network description that breaks a rule; the message names layer, rule, value."""


@dataclass(frozen=True)
class Layer:
    """One layer: ``kind`` (a Keras class name), ``name`` (Keras-style: ``conv2d``,
    ``conv2d_1``, ``max_pooling2d``, ...) and the hyperparameters of its kind.

    ``kernel_size``, ``strides`` and ``pool_size`` are stored as ``(rows, cols)`` pairs (an
    int means a square). ``padding`` is "valid"/"same" for Conv2D and the 2D pools, an int
    (symmetric rows and columns) for ZeroPadding2D. ``negative_slope`` (LeakyReLU) is a
    float >= 0 (Keras default 0.3). ``momentum`` in [0, 1) and ``epsilon`` > 0
    (BatchNormalization: ``moving = moving * momentum + batch * (1 - momentum)``, output
    ``gamma (x - mean) / sqrt(var + epsilon) + beta``); ``rate`` in [0, 1) (Dropout's drop
    probability).

    ``folded``: the implementation under test has no layer of its own here; the layer is
    part of the next one, whose input is this layer's input (a channels-first ``Linear``
    flattens inside; a ``Conv(pad=p)`` pads inside: ZeroPadding2D then a "valid" Conv2D).

    Raises
    ------
    SpecError
        Unknown kind, a hyperparameter the kind does not have, a missing or invalid value.
    """

    kind: str
    name: str
    filters: int | None = None
    kernel_size: tuple[int, int] | None = None
    strides: tuple[int, int] | None = None
    padding: str | int | None = None
    use_bias: bool | None = None
    pool_size: tuple[int, int] | None = None
    units: int | None = None
    negative_slope: float | None = None
    momentum: float | None = None
    epsilon: float | None = None
    rate: float | None = None
    folded: bool = False

    def __post_init__(self):
        if self.kind not in HYPERPARAMETERS:
            raise SpecError(f"Layer `{self.name}`: unknown kind {self.kind!r}; known: {KINDS}.")
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(
                f"Layer of kind {self.kind}: expected a non-empty name. "
                f"Received name={self.name!r}."
            )
        allowed = HYPERPARAMETERS[self.kind]
        for f in fields(self):
            if f.name in ("kind", "name", "folded"):
                continue
            value = getattr(self, f.name)
            if f.name not in allowed:
                if value is not None:
                    raise self.error(f"has no hyperparameter `{f.name}`", f"{f.name}={value!r}")
                continue
            if value is None:
                if allowed[f.name] is REQUIRED:
                    raise self.error(f"requires `{f.name}`", f"{f.name}=None")
                value = allowed[f.name]
                if value is None:  # MaxPooling2D strides: pool_size, below
                    continue
            object.__setattr__(self, f.name, self._checked(f.name, value))
        if "pool_size" in allowed and self.strides is None:  # Keras: strides = pool_size
            object.__setattr__(self, "strides", self.pool_size)

    @property
    def label(self) -> str:
        return f"Layer `{self.name}` ({self.kind})"

    def error(self, rule: str, received: str) -> SpecError:
        return SpecError(f"{self.label} {rule}. Received {received}.")

    def _checked(self, name: str, value):
        if name in ("kernel_size", "strides", "pool_size"):
            pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
            if len(pair) != 2 or not all(_positive(v) for v in pair):
                raise self.error(
                    f"expects `{name}` a positive int or pair of them", f"{name}={value!r}"
                )
            return tuple(int(v) for v in pair)
        if name in ("filters", "units"):
            if not _positive(value):
                raise self.error(f"expects `{name}` a positive int", f"{name}={value!r}")
            return int(value)
        if name == "negative_slope":
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not (real and math.isfinite(value) and value >= 0):
                rule = "expects `negative_slope` a finite float >= 0"
                raise self.error(rule, f"{name}={value!r}")
            return float(value)
        if name in ("momentum", "rate"):
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not (real and 0 <= value < 1):
                raise self.error(f"expects `{name}` a float in [0, 1)", f"{name}={value!r}")
            return float(value)
        if name == "epsilon":
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not (real and math.isfinite(value) and value > 0):
                raise self.error("expects `epsilon` a finite float > 0", f"epsilon={value!r}")
            return float(value)
        if name == "use_bias" and not isinstance(value, bool):
            raise self.error("expects `use_bias` a bool", f"use_bias={value!r}")
        if name == "padding":
            if self.kind == "ZeroPadding2D":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise self.error("expects `padding` a non-negative int", f"padding={value!r}")
            elif value not in PADDINGS:
                raise self.error(f"expects `padding` one of {PADDINGS}", f"padding={value!r}")
        return value

    def weight_shapes(self, input_shape: tuple) -> dict[str, tuple]:
        """Keras's trainable weight shapes for this per-example input: Conv2D ``kernel (kh,
        kw, C, F)`` and ``bias (F,)``; Dense ``kernel (D, units)`` and ``bias (units,)``;
        BatchNormalization ``gamma`` and ``beta`` ``(C,)`` (the last axis)."""
        if self.kind == "BatchNormalization":
            return {"gamma": (input_shape[-1],), "beta": (input_shape[-1],)}
        if self.kind == "Conv2D":
            shapes = {"kernel": (*self.kernel_size, input_shape[-1], self.filters)}
            width = self.filters
        elif self.kind == "Dense":
            shapes = {"kernel": (input_shape[-1], self.units)}
            width = self.units
        else:
            return {}
        if self.use_bias:
            shapes["bias"] = (width,)
        return shapes

    def state_shapes(self, input_shape: tuple) -> dict[str, tuple]:
        """Keras's non-trainable state for this per-example input (:data:`STATE_WEIGHTS`):
        BatchNormalization ``moving_mean`` and ``moving_variance`` ``(C,)``."""
        return {name: (input_shape[-1],) for name in STATE_WEIGHTS.get(self.kind, ())}

    def output_shape(self, shape: tuple) -> tuple:
        """The per-example Keras output shape for input ``shape``; SpecError if it breaks
        the kind's rule."""
        if self.kind in ELEMENTWISE_KINDS:
            return tuple(shape)
        if self.kind == "Flatten":
            return (math.prod(shape),)
        if self.kind == "Dense":
            if len(shape) != 1:
                raise self.error(
                    "expects a flat per-example input (features,); Keras's Dense would act "
                    "on the last axis only: put a Flatten before it",
                    f"input shape {shape}",
                )
            return (self.units,)
        if len(shape) != 3:
            raise self.error("expects a per-example input (H, W, C)", f"input shape {shape}")
        height, width, channels = shape
        if self.kind == "ZeroPadding2D":
            return (height + 2 * self.padding, width + 2 * self.padding, channels)
        if self.kind == "GlobalAveragePooling2D":
            return (channels,)
        window = self.kernel_size if self.kind == "Conv2D" else self.pool_size
        rows = self._size(height, window[0], self.strides[0], "rows", shape)
        cols = self._size(width, window[1], self.strides[1], "columns", shape)
        return (rows, cols, self.filters if self.kind == "Conv2D" else channels)

    def _size(self, size: int, window: int, stride: int, axis: str, shape: tuple) -> int:
        if self.padding == "same":
            return -(-size // stride)
        if window > size:
            what = "kernel_size" if self.kind == "Conv2D" else "pool_size"
            raise self.error(
                f"with padding='valid' needs a window no larger than its input ({axis}: "
                f"{what} {window} > {size})",
                f"input shape {shape}",
            )
        return (size - window) // stride + 1


def _positive(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def stack(*layers: tuple[str, dict]) -> tuple[Layer, ...]:
    """Layers from ``(kind, hyperparameters)`` pairs, named as Keras names them in one
    model: ``conv2d``, ``conv2d_1``, ``re_lu``, ``re_lu_1``, ... (a ``name`` in the
    hyperparameters wins)."""
    counts: dict[str, int] = {}
    out = []
    for kind, hyper in layers:
        base = BASE_NAMES.get(kind, kind)
        count = counts.get(base, 0)
        counts[base] = count + 1
        name = hyper.get("name", base + (f"_{count}" if count else ""))
        out.append(Layer(kind, **{**hyper, "name": name}))
    return tuple(out)
