"""Planted bugs: picklable model hooks for ``RunConfig.model_hooks``.

A hook runs on every freshly built scratch model, in the dtype's child process too,
so a test can break scratch code and watch the matching check fail end to end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScaleGradient:
    """Multiply the scratch gradient ``grads[layer][quantity]`` by ``factor``."""

    layer: str
    quantity: str
    factor: float

    def __call__(self, model) -> None:
        original = model.gradients
        layer, quantity, factor = self.layer, self.quantity, self.factor

        def gradients(x, labels):
            loss, grads = original(x, labels)
            grads[layer][quantity] = grads[layer][quantity] * grads[layer][quantity].dtype.type(
                factor
            )
            return loss, grads

        model.gradients = gradients


@dataclass(frozen=True)
class BlogAllTiesMaxPool:
    """Model ``zhou``: the blog's ``MaxPool2.backprop``, gradient to EVERY tied maximum."""

    def __call__(self, model) -> None:
        import numpy as np

        pool = model.net.pool

        def backward(d_L_d_out):
            h, w, c = pool.last_input_shape
            nh, nw = h // 2, w // 2
            d = np.asarray(d_L_d_out, dtype=pool.last_output.dtype).reshape(-1)
            routed = (pool.last_windows == pool.last_output) * d  # (4, windows)
            out = np.zeros((h, w, c), dtype=d.dtype)  # window element k = 2*di + dj
            out[: 2 * nh, : 2 * nw] = (
                routed.reshape(2, 2, nh, nw, c).transpose(2, 0, 3, 1, 4).reshape(2 * nh, 2 * nw, c)
            )
            return out

        pool.backward = backward


@dataclass(frozen=True)
class ScaleOutput:
    """Multiply the scratch forward output of ``layer`` by ``factor`` (later layers see
    the unscaled value: a wrong activation reported for one layer)."""

    layer: str
    factor: float

    def __call__(self, model) -> None:
        original = model.forward
        layer, factor = self.layer, self.factor

        def forward(x):
            outputs = dict(original(x))
            outputs[layer] = outputs[layer] * outputs[layer].dtype.type(factor)
            return outputs

        model.forward = forward


@dataclass(frozen=True)
class Raise:
    """Make the scratch model's method ``method`` raise ``ZeroDivisionError`` (a crash in
    the code under test: an ERROR row, never a FAIL)."""

    method: str

    def __call__(self, model) -> None:
        def crash(*args, **kwargs):
            return 1 / 0

        setattr(model, self.method, crash)


@dataclass(frozen=True)
class ColumnBias:
    """Model ``zhou``: the blog Softmax's biases stored as a column ``(10, 1)``, a shape
    mistake the harness must report as an ERROR or a shape FAIL, never a traceback."""

    def __call__(self, model) -> None:
        softmax = model.net.softmax
        softmax.biases = softmax.biases.reshape(-1, 1).copy()


@dataclass(frozen=True)
class CastLoss:
    """Return the scratch loss cast to ``dtype`` (e.g. float64 from a float32 model)."""

    dtype: str

    def __call__(self, model) -> None:
        import numpy as np

        original = model.gradients
        cast = np.dtype(self.dtype).type

        def gradients(x, labels):
            loss, grads = original(x, labels)
            return cast(loss), grads

        model.gradients = gradients
