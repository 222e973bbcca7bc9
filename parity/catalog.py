"""The self-test catalog: real backprop mistakes the harness must catch.

Each :class:`Entry` is one small, named, documented deviation from the correct code,
planted by a picklable hook ``hook(model)`` (as in ``parity.plant``) on a freshly built
scratch model of the entry's ``model``. The faulty code lives here only, never in
``scratch/``. Three kinds of hook:

- a faulty method swapped onto the model's own layer objects (instance attributes:
  nothing outside that model changes);
- a faulty weight transfer: the hook marks the model, and ``reference.layout.layout_for``
  is wrapped (once per process) to hand a marked model a corrupted :class:`Layout`;
  unmarked models get the real one;
- a faulty optimizer (training only): a class-level patch of ``scratch.optim``, undone by
  :func:`restore_globals` after each entry (the self-test runs many entries per process).

``Entry.claims`` says which values the bug changes (``forward:<layer>``,
``gradient:<layer>/<quantity>``, ``keras_weight:<layer>/<weight>``, ``training``,
``large_logits:<layer>`` or ``large_logits:loss``: where that value is finite at the
large-logits state, ``parity.checks.large_logits``); :func:`changed_values` measures
them against the correct model (numpy only), so a hook that changes nothing fails a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from parity import catalog_modes as M
from parity import runner
from parity.plant import BlogAllTiesMaxPool
from reference import backend

# -- global patches, undone after every entry ---------------------------------------------

_UNDO: list[tuple[object, str, object]] = []  # (owner, attribute, original value)


def _patch(owner, attribute: str, value) -> None:
    _UNDO.append((owner, attribute, getattr(owner, attribute)))
    setattr(owner, attribute, value)


def restore_globals() -> None:
    """Undo every class/module patch a hook made in this process (latest first)."""
    while _UNDO:
        owner, attribute, original = _UNDO.pop()
        setattr(owner, attribute, original)


backend.after_each_task(restore_globals)  # a kept process (backend.KeptProcesses) undoes them too


# -- zhou (the blog network) ----------------------------------------------------------------


@dataclass(frozen=True)
class TieToLastMax:
    """``zhou``: ``MaxPool2.backprop``, the method users write and train with, routes each
    window's gradient to its LAST maximum (``backward``, the blog class's gradient-only
    twin, stays right: only a harness that reads ``backprop`` sees the bug)."""

    def __call__(self, model) -> None:
        pool = model.net.pool

        def backprop(d_L_d_out, learn_rate=None):
            h, w, c = pool.last_input_shape
            d = np.asarray(d_L_d_out, dtype=pool.last_output.dtype)
            is_max = pool.last_windows == pool.last_output  # (4, windows)
            last = 3 - np.argmax(is_max[::-1], axis=0)  # the bug: last max, not first
            corner, step = pool._scatter_index(h, w, c)
            out = np.zeros(h * w * c, dtype=d.dtype)
            out[corner + step.take(last)] = d.reshape(-1)
            return out.reshape(h, w, c)

        pool.backprop = backprop


@dataclass(frozen=True)
class TrueConvolution:
    """``zhou``: forward flips the kernel (true convolution, not cross-correlation)."""

    def __call__(self, model) -> None:
        conv = model.net.conv

        def _forward(x):
            h, w = x.shape
            regions = x.reshape(-1).take(conv._regions_index(h, w))
            conv.last_input, conv.last_regions = x, regions
            flipped = conv.filters[:, ::-1, ::-1]  # the bug: rotated 180 degrees
            kernel = np.ascontiguousarray(flipped.reshape(conv.num_filters, 9).T)
            return (regions @ kernel).reshape(h - 2, w - 2, conv.num_filters)

        conv._forward = _forward


@dataclass(frozen=True)
class OffByOneWindow:
    """``zhou``: the filter gradient reads each 3x3 patch one column to the right."""

    def __call__(self, model) -> None:
        conv = model.net.conv
        original = conv.backward

        def backward(d_L_d_out, input_grad=True):
            h, w = conv.last_input.shape
            # The bug: image[i:i+3, j+1:j+4] (np.roll wraps the last column around).
            shifted = np.roll(conv.last_input, -1, axis=1).reshape(-1)
            saved, conv.last_regions = conv.last_regions, shifted.take(conv._regions_index(h, w))
            try:
                return original(d_L_d_out, input_grad)
            finally:
                conv.last_regions = saved

        conv.backward = backward


def _zhou_softmax_backward(layer, jacobian):
    """The blog's Softmax backward with ``d_L_d_t = g @ jacobian(layer)``."""

    def backward(d_L_d_out):
        g = np.asarray(d_L_d_out, dtype=layer.dtype)
        layer.d_L_d_t = d_L_d_t = g @ jacobian(layer)
        layer.d_L_d_w = np.asfortranarray(np.outer(layer.last_input, d_L_d_t))
        layer.d_L_d_b = d_L_d_t
        return (layer.weights @ d_L_d_t).reshape(layer.last_input_shape)

    return backward


def _jacobian_wrong_sign(layer):
    p = layer.last_output
    jac = p[:, None] * p[None, :]  # the bug: +p_i p_k off the diagonal (should be -)
    np.fill_diagonal(jac, p * (1 - p))
    return jac


def _jacobian_missing_square(layer):
    t = layer.last_totals
    e = np.exp(t - t.max())
    s = e.sum()
    jac = -(e[:, None] * e[None, :]) / s  # the bug: / S, the blog's formula has / S**2
    np.fill_diagonal(jac, e * (s - e) / s)
    return jac


@dataclass(frozen=True)
class SoftmaxJacobianWrongSign:
    """``zhou``: d out_i / d t_k = +p_i p_k for k != i (the sign of -p_i p_k lost)."""

    def __call__(self, model) -> None:
        model.net.softmax.backward = _zhou_softmax_backward(model.net.softmax,
                                                            _jacobian_wrong_sign)  # fmt: skip


@dataclass(frozen=True)
class SoftmaxJacobianMissingSquare:
    """``zhou``: the blog's ``exp(t_c) exp(t) / S**2`` written ``/ S`` (exps shifted by max)."""

    def __call__(self, model) -> None:
        model.net.softmax.backward = _zhou_softmax_backward(model.net.softmax,
                                                            _jacobian_missing_square)  # fmt: skip


@dataclass(frozen=True)
class UpdateBeforeInputGradient:
    """``zhou``: Softmax.backprop steps the weights, THEN computes d_L_d_input from the
    updated weights (the blog computes it from the old ones)."""

    def __call__(self, model) -> None:
        layer = model.net.softmax

        def backprop(d_L_d_out, learn_rate):
            layer.backward(d_L_d_out)
            lr = layer.dtype.type(learn_rate)
            np.subtract(layer.weights, lr * layer.d_L_d_w, out=layer.weights)
            layer.biases -= lr * layer.d_L_d_b
            return (layer.weights @ layer.d_L_d_t).reshape(layer.last_input_shape)  # the bug

        layer.backprop = backprop


class BlogUpdatePlusEquals:
    """``zhou``: Softmax.backprop takes the input gradient from the old weights, as the
    blog does, then updates with ``+=`` (gradient ascent)."""

    def __call__(self, model) -> None:
        layer = model.net.softmax

        def backprop(d_L_d_out, learn_rate):
            layer.backward(d_L_d_out)
            d_L_d_input = (layer.weights @ layer.d_L_d_t).reshape(layer.last_input_shape)
            lr = layer.dtype.type(learn_rate)
            np.add(layer.weights, lr * layer.d_L_d_w, out=layer.weights)  # the bug: +=
            layer.biases += lr * layer.d_L_d_b  # the bug
            return d_L_d_input

        layer.backprop = backprop


# -- two-conv (general NHWC layers) ---------------------------------------------------------


@dataclass(frozen=True)
class MissingBiasGradient:
    """A layer's backward never computes its bias gradient (left at zeros)."""

    layer: str

    def __call__(self, model) -> None:
        layer = model.layer(self.layer)
        original = layer._backward

        def _backward(dout, need_dx=True):
            dx = original(dout, need_dx)
            layer.grads = {**layer.grads, "bias": np.zeros_like(layer.params["bias"])}
            return dx

        layer._backward = _backward


@dataclass(frozen=True)
class GradientBufferNeverReset:
    """A layer adds each backward's weight gradients to a buffer it never zeroes."""

    layer: str

    def __call__(self, model) -> None:
        layer = model.layer(self.layer)
        original = layer._backward
        buffer: dict = {}

        def _backward(dout, need_dx=True):
            dx = original(dout, need_dx)
            for name, grad in layer.grads.items():
                buffer[name] = buffer[name] + grad if name in buffer else grad.copy()  # the bug
            layer.grads = {name: buffer[name].copy() for name in layer.grads}
            return dx

        layer._backward = _backward


@dataclass(frozen=True)
class BiasGradientAveraged:
    """A conv bias gradient averaged over batch and positions where it must be summed."""

    layer: str

    def __call__(self, model) -> None:
        layer = model.layer(self.layer)
        original = layer._backward

        def _backward(dout, need_dx=True):
            dx = original(dout, need_dx)
            mean = dout.reshape(-1, layer.filters).mean(axis=0)  # the bug: mean, not sum
            layer.grads = {**layer.grads, "bias": mean}
            return dx

        layer._backward = _backward


@dataclass(frozen=True)
class ReluDropsUpstream:
    """ReLU backward returns its local derivative (the mask), not mask * upstream."""

    layer: str

    def __call__(self, model) -> None:
        layer = model.layer(self.layer)

        def _backward(dout, need_dx=True):
            layer.grads = {}
            return layer._cache.astype(layer.dtype) if need_dx else None  # the bug

        layer._backward = _backward


@dataclass(frozen=True)
class StrideIgnoredInBackward:
    """A strided conv's input gradient scattered as if the stride were 1."""

    layer: str

    def __call__(self, model) -> None:
        from scratch.layers import scatter_add, window_indices

        layer = model.layer(self.layer)
        original = layer._backward
        oh, ow, f = layer.output_shape
        unit = window_indices(*layer._padded, layer.kernel_size, (1, 1), (oh, ow))  # the bug

        def _backward(dout, need_dx=True):
            original(dout, need_dx=False)  # weight gradients are right
            if not need_dx:
                return None
            n, kernel = dout.shape[0], layer.params["kernel"]
            dcols = (dout.reshape(-1, f) @ kernel.reshape(-1, f).T).reshape((n,) + unit.shape)
            dxp = scatter_add(dcols, unit, math.prod(layer._padded), layer.dtype)
            dxp = dxp.reshape((n,) + layer._padded)
            (_, _), (top, _), (left, _), _ = layer._pads
            height, width, _ = layer.input_shape
            return dxp[:, top : top + height, left : left + width]

        layer._backward = _backward


# -- lenet5 (average pooling, tanh) ---------------------------------------------------------


@dataclass(frozen=True)
class AveragePoolNotDivided:
    """AveragePooling2D backward hands each window's upstream gradient WHOLE to every
    pixel of the window: ``dout`` instead of ``dout / (p*q)`` (the forward's mean is
    right). The input gradient is ``p*q`` times too large: 4 for a 2x2 pool."""

    layer: str

    def __call__(self, model) -> None:
        from scratch.layers import scatter_add

        layer = model.layer(self.layer)

        def _backward(dout, need_dx=True):
            layer.grads = {}
            if not need_dx:
                return None
            n = dout.shape[0]
            share = np.broadcast_to(dout[:, None], (n,) + layer._indices.shape)  # the bug
            dx = scatter_add(share, layer._indices, math.prod(layer.input_shape), layer.dtype)
            return dx.reshape((n,) + layer.input_shape)

        layer._backward = _backward


@dataclass(frozen=True)
class TanhDerivativeFromInput:
    """Tanh backward computes ``1 - x**2`` from the layer's INPUT ``x`` (the
    pre-activation) where the derivative is ``1 - tanh(x)**2``, from its output. Close for
    small ``x`` (the difference is about ``2 x**4 / 3``), negative for ``|x| > 1``."""

    layer: str

    def __call__(self, model) -> None:
        layer = model.layer(self.layer)
        original = layer._forward

        def _forward(x):
            layer.selftest_input = x
            return original(x)

        def _backward(dout, need_dx=True):
            layer.grads = {}
            if not need_dx:
                return None
            x = layer.selftest_input
            return dout * (1 - x * x)  # the bug: from the input, not the output

        layer._forward, layer._backward = _forward, _backward


# -- chw (channels-first family) ------------------------------------------------------------


@dataclass(frozen=True)
class ConvInputGradientNoFlip:
    """``chw``: the conv input gradient correlates dout with the UNflipped filters."""

    def __call__(self, model) -> None:
        from numpy.lib.stride_tricks import sliding_window_view

        from scratch.chw import _columns

        conv = model.net.conv

        def _input_gradient(d, xp_shape):
            n, f, ho, wo = d.shape
            k, s, p = conv.filter_size, conv.stride, conv.pad
            dilated = np.zeros((n, f, (ho - 1) * s + 1, (wo - 1) * s + 1), dtype=conv.dtype)
            dilated[:, :, ::s, ::s] = d
            framed = np.pad(dilated, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
            windows = sliding_window_view(framed, (k, k), axis=(2, 3))
            w_cf = conv.filters.transpose(1, 0, 2, 3).reshape(conv.in_channels, -1)  # the bug
            dxp = (w_cf @ _columns(windows)).reshape(conv.in_channels, n, *xp_shape[2:])
            dxp = dxp.transpose(1, 0, 2, 3)
            return np.ascontiguousarray(dxp[:, :, p : xp_shape[2] - p, p : xp_shape[3] - p])

        conv._input_gradient = _input_gradient


class _PaddedValidConv:
    """``conv2d`` computed as ``Conv(pad=1)`` and cropped to the valid region.

    Same values as pad=0 for any input (padded output ``(i+1, j+1)`` is valid output
    ``(i, j)``), so the twin of the model's network description (pad 0) still mirrors it,
    yet the pad > 0 code path runs.
    """

    def __init__(self, inner):
        self.inner = inner

    @property
    def filters(self):
        return self.inner.filters

    @property
    def bias(self):
        return self.inner.bias

    def forward(self, x):
        return self.inner.forward(x)[..., 1:-1, 1:-1]

    def backward(self, dout):
        dout = np.asarray(dout)
        full = np.zeros(dout.shape[:-2] + (dout.shape[-2] + 2, dout.shape[-1] + 2), dout.dtype)
        full[..., 1:-1, 1:-1] = dout
        return self.inner.backward(full)


def _document_pad_conv_class():
    from scratch.chw import Conv, _as_image_batch

    class DocumentPadConv(Conv):
        """The document's ``x_pad = np.pad(x, self.pad)``: N and C are padded too.

        Its loops run over the ORIGINAL ``n < N`` and read ``x_pad[n, :]``: image
        ``n - pad`` (a zero image for ``n < pad``), all ``C + 2 pad`` channels
        broadcast against ``w[f]`` (works only for C = 1; zero channels add nothing).
        """

        def forward(self, x):
            xb, _ = _as_image_batch(x, self.dtype)
            p = self.pad
            x_pad = np.pad(xb, p)  # the bug: pads every axis, (N+2p, C+2p, H+2p, W+2p)
            mixed = x_pad[: len(xb)].sum(axis=1, keepdims=True)  # x_pad[n, :] * w[f], C = 1
            self.pad = 0  # `mixed` is already padded
            try:
                return super().forward(mixed)
            finally:
                self.pad = p

    return DocumentPadConv


def _swap_conv(model, conv_class) -> None:
    net, old = model.net, model.net.conv
    base = old.inner if isinstance(old, _PaddedValidConv) else old
    inner = conv_class(base.in_channels, base.out_channels, base.filter_size, pad=1,
                       stride=1, dtype=base.dtype)  # fmt: skip
    inner.filters, inner.bias = base.filters, base.bias  # the live arrays stay the model's
    net.conv = _PaddedValidConv(inner)
    net.layers = tuple((n, net.conv if layer is old else layer) for n, layer in net.layers)


@dataclass(frozen=True)
class PadThenCrop:
    """``chw`` variant (correct): conv2d through the pad=1 path, cropped to valid."""

    def __call__(self, model) -> None:
        from scratch.chw import Conv

        _swap_conv(model, Conv)


@dataclass(frozen=True)
class PadAllAxes:
    """``chw`` + :class:`PadThenCrop`: the pad=1 conv pads with ``np.pad(x, self.pad)``."""

    def __call__(self, model) -> None:
        _swap_conv(model, _document_pad_conv_class())


# -- faulty weight transfers (reference.layout) ---------------------------------------------


def _install_layout_dispatch() -> None:
    """Wrap ``reference.layout.layout_for`` so a marked model gets a corrupted layout."""
    from reference import layout as layout_module

    if getattr(layout_module.layout_for, "selftest_dispatch", False):
        return
    original = layout_module.layout_for

    def layout_for(model):
        layout = original(model)
        bug = getattr(model, "selftest_layout_bug", None)
        return layout if bug is None else bug.corrupt(layout)

    layout_for.selftest_dispatch = True
    _patch(layout_module, "layout_for", layout_for)


@dataclass(frozen=True)
class FiltersReshapeNotTranspose:
    """``zhou``: blog filters (F, 3, 3) moved to Keras (3, 3, 1, F) by reshape."""

    def __call__(self, model) -> None:
        _install_layout_dispatch()
        model.selftest_layout_bug = self

    def corrupt(self, layout):
        from spec import Reshape

        rule = layout.rule("conv2d", "kernel")  # the bug: reshape, no transpose
        return layout.with_transforms(
            "conv2d", "kernel", (Reshape(rule.scratch_shape, rule.keras_shape),)
        )


@dataclass(frozen=True)
class ChwRowsNotPermuted:
    """``chw``: the Linear kernel (C*H*W rows) copied to Keras's Dense (H*W*C rows) as is."""

    def __call__(self, model) -> None:
        _install_layout_dispatch()
        model.selftest_layout_bug = self

    def corrupt(self, layout):
        # the bug: a reshape to (1352, 10) is no change at all, the identity
        return layout.with_transforms("dense", "kernel", ())


# -- the update rule (training only: the gradients are right) ------------------------------


def _sgd_update(w, lr, g) -> None:
    np.subtract(w, lr * g, out=w)  # correct: scratch.optim.SGD, Keras's SGD


def _update_sign_flipped(w, lr, g) -> None:
    np.add(w, lr * g, out=w)  # the bug: w += lr * g (gradient ascent)


def _learning_rate_twice(w, lr, g) -> None:
    np.subtract(w, lr * (lr * g), out=w)  # the bug: a gradient already scaled by lr


def _never_updated(w, lr, g) -> None:
    pass  # the bug: the update of this weight was never written


FAULTY_UPDATES = {"sign": _update_sign_flipped, "learning-rate-twice": _learning_rate_twice,
                  "never": _never_updated}  # fmt: skip


@dataclass(frozen=True)
class FaultyUpdate:
    """The model's own SGD step (``train_step``, what ``scratch.train`` calls for SGD)
    updates one layer's weights by a wrong rule; every other weight, and every gradient,
    is right. ``weights``: the layer's weights it applies to (empty: all of them).
    ``rule``: a key of :data:`FAULTY_UPDATES`."""

    layer: str
    rule: str
    weights: tuple[str, ...] = ()

    def __call__(self, model) -> None:
        faulty = FAULTY_UPDATES[self.rule]

        def train_step(x, labels, learning_rate):
            loss, grads, probs = model.gradients_and_probabilities(x, labels, False)
            lr = model.dtype.type(learning_rate)
            for layer, weights in model.params().items():
                for weight, w in weights.items():
                    bad = layer == self.layer and (not self.weights or weight in self.weights)
                    update = faulty if bad else _sgd_update
                    update(w, lr, grads[layer][weight])
            return loss, int(np.count_nonzero(probs.argmax(axis=1) == labels))

        model.train_step = train_step


# -- optimizer (training only) --------------------------------------------------------------


def _epsilon_inside_sqrt(adam, v, epsilon):
    return np.sqrt(v + epsilon)  # the bug; Keras: np.sqrt(v) + epsilon


@dataclass(frozen=True)
class AdamEpsilonInsideSqrt:
    """scratch Adam with ``sqrt(v + eps)`` instead of Keras's ``sqrt(v) + eps``.

    Only ``scratch.optim.Adam._denominator`` is swapped: the moments, the step size and
    Keras's float32-rounded beta powers stay scratch's own. ``inside_sqrt=False`` is the
    same hook with the bug removed (scratch's own denominator): a control that must pass.
    """

    inside_sqrt: bool = True

    def __call__(self, model) -> None:
        from scratch import optim

        correct = optim.Adam._denominator
        _patch(optim.Adam, "_denominator", _epsilon_inside_sqrt if self.inside_sqrt else correct)


def _velocity_sign_flipped(sgd, m, g, lr, mu):
    return m * mu + g * lr  # the bug; Keras: m * mu - g * lr (then w = w + m)


@dataclass(frozen=True)
class MomentumVelocitySignFlipped:
    """scratch SGD with momentum keeping ``m = mu * m + lr * g`` (then ``w = w + m``, as
    Keras) where Keras keeps ``m = mu * m - lr * g``: the velocity's sign flipped, so the
    step climbs the loss. Only ``scratch.optim.SGD._velocity`` is swapped."""

    def __call__(self, model) -> None:
        from scratch import optim

        _patch(optim.SGD, "_velocity", _velocity_sign_flipped)


def _epsilon_outside_sqrt(rmsprop, v, epsilon):
    return np.sqrt(v) + epsilon  # the bug (cs231n's form); Keras: np.sqrt(v + epsilon)


@dataclass(frozen=True)
class RmspropEpsilonOutsideSqrt:
    """scratch RMSprop dividing by ``sqrt(v) + eps`` (cs231n's ``rmsprop``) where Keras 3
    divides by ``sqrt(v + eps)`` (keras/src/optimizers/rmsprop.py). Only
    ``scratch.optim.RMSprop._denominator`` is swapped; its velocity stays right."""

    def __call__(self, model) -> None:
        from scratch import optim

        _patch(optim.RMSprop, "_denominator", _epsilon_outside_sqrt)


# -- softmax without max subtraction (seen at the large-logits state only) ---------------------


@dataclass(frozen=True)
class SoftmaxWithoutMaxSubtraction:
    """``zhou``: the blog's published ``Softmax.forward``, ``exp(totals) / sum(exp(totals))``
    with no shift: right at O(1) logits, inf / inf = nan past 709.78 (float64), 88.72
    (float32). Everything else as ``scratch.zhou.Softmax.forward``."""

    def __call__(self, model) -> None:
        layer = model.net.softmax

        def forward(input):
            x = np.asarray(input, dtype=layer.dtype)
            flat = x.reshape(-1)
            totals = flat @ layer.weights
            totals += layer.biases
            exp = np.exp(totals)  # the bug: totals - totals.max() would keep exponents <= 0
            out = exp / exp.sum()
            layer.last_input_shape, layer.last_input = x.shape, flat
            layer.last_totals, layer.last_output = totals, out
            return out

        layer.forward = forward


def _softmax_loss_unshifted(scores, y):
    s = np.asarray(scores)
    rows, n = np.arange(len(s)), len(s)
    exp = np.exp(s)  # the bug: no s - s.max(axis=1, keepdims=True)
    p = exp / exp.sum(axis=1, keepdims=True)
    loss = -np.log(p[rows, y]).mean()
    p[rows, y] -= 1
    return float(loss), p / s.dtype.type(n)


@dataclass(frozen=True)
class SoftmaxLossWithoutMaxSubtraction:
    """``chw``: ``softmax_loss`` with ``exp(scores)`` unshifted: its loss is nan past 709.78
    (float64), 88.72 (float32). The probabilities the model reports are the harness's own
    ``scratch.chw.softmax``, so only the loss shows it."""

    def __call__(self, model) -> None:
        model.loss_function = _softmax_loss_unshifted


# -- the catalog ----------------------------------------------------------------------------


# A short training run for a bug seen in training: the run schedule of ``parity run``
# (``runner.TrainingOptions``), cut down to one epoch over a few images, tape path only.
Training = runner.TrainingOptions


@dataclass(frozen=True)
class Entry:
    name: str
    model: str
    description: str
    hook: object
    claims: tuple[str, ...]
    # A short training run: the catch when the static checks pass (training-only bugs,
    # e.g. Adam's epsilon), and part of the correct code's sweep for this model.
    training: Training | None = None
    base_hooks: tuple = ()  # the correct variant the bug is planted on (pad > 0 path)
    # The dtypes whose budgets can resolve the bug: a bug below float32's rounding budget
    # (batchnorm-variance-unbiased, ~2e-5 relative) is run and claimed in float64 only.
    dtypes: tuple[str, ...] = ("float64", "float32")


SGD_RUN = Training(epochs=1, train_size=40, test_size=100, keras_paths=("tape",))
# cs231n-3layer: batches of 32 (batch norm), lockstep only (dropout: runner.TrainingOptions)
BATCHNORM_RUN = Training(learning_rate=0.01, batch_size=32, epochs=1, train_size=96,
                         test_size=100, keras_paths=())  # fmt: skip
ADAM_RUN = Training(optimizer="adam", learning_rate=0.001, batch_size=32, epochs=1,
                    train_size=96, test_size=100, keras_paths=("tape",))  # fmt: skip
MOMENTUM_RUN = Training(optimizer="momentum", learning_rate=0.0005, epochs=1, train_size=40,
                        test_size=100, keras_paths=("tape",))  # fmt: skip
RMSPROP_RUN = Training(optimizer="rmsprop", learning_rate=0.001, batch_size=32, epochs=1,
                       train_size=96, test_size=100, keras_paths=("tape",))  # fmt: skip

ENTRIES: tuple[Entry, ...] = (
    Entry("blog-all-ties-maxpool", "zhou",
          "The blog's MaxPool2.backprop: the gradient is copied to EVERY tied maximum of a "
          "window (MNIST's flat background ties most windows); TF routes to the first.",
          BlogAllTiesMaxPool(), ("gradient:max_pooling2d/input", "gradient:conv2d/kernel")),
    Entry("tie-to-last-max", "zhou",
          "MaxPool2.backprop routes a tied window to its LAST maximum instead of the first "
          "(row-major). Invisible in the conv filter gradient over flat background (equal "
          "patches), visible in the pooled layer's input gradient.",
          TieToLastMax(), ("gradient:max_pooling2d/input",)),
    Entry("true-convolution", "zhou",
          "Forward uses true convolution (kernel rotated 180 degrees) instead of "
          "cross-correlation.",
          TrueConvolution(), ("forward:conv2d",)),
    Entry("filters-reshape-not-transpose", "zhou",
          "Weight transfer: blog filters (F,3,3) moved to Keras (3,3,1,F) with reshape "
          "instead of a transpose.",
          FiltersReshapeNotTranspose(), ("keras_weight:conv2d/kernel",)),
    Entry("chw-rows-not-permuted", "chw",
          "Weight transfer: the channels-first Linear kernel (rows in C,H,W order) copied "
          "to Keras's Dense (rows in H,W,C order) without permuting its rows.",
          ChwRowsNotPermuted(), ("keras_weight:dense/kernel",)),
    Entry("softmax-jacobian-wrong-sign", "zhou",
          "Softmax backward: off-diagonal Jacobian d out_i/d t_k written +p_i p_k instead "
          "of -p_i p_k.",
          SoftmaxJacobianWrongSign(), ("gradient:softmax/input", "gradient:dense/kernel")),
    Entry("softmax-jacobian-missing-square", "zhou",
          "Softmax backward: the blog's exp(t_c) exp(t_k) / S^2 written with / S (the "
          "square of the exp sum missing).",
          SoftmaxJacobianMissingSquare(), ("gradient:softmax/input", "gradient:dense/bias")),
    Entry("missing-bias-gradient", "two-conv",
          "Dense backward never computes its bias gradient (left at zero: the bias never "
          "learns).",
          MissingBiasGradient("dense"), ("gradient:dense/bias",)),
    Entry("conv-input-grad-no-flip", "chw",
          "Conv input gradient: full correlation of dout with the filters NOT rotated 180 "
          "degrees.",
          ConvInputGradientNoFlip(), ("gradient:conv2d/input",)),
    Entry("relu-drops-upstream", "two-conv",
          "ReLU backward returns its local derivative (the 0/1 mask) and ignores the "
          "upstream gradient's scale and sign (chain rule forgotten).",
          ReluDropsUpstream("re_lu_1"), ("gradient:re_lu_1/input", "gradient:conv2d_1/kernel")),
    Entry("gradient-buffer-never-reset", "two-conv",
          "The second conv adds every backward's kernel and bias gradients to a buffer that "
          "is never zeroed: the first call is right, every later one returns the running "
          "sum (training drifts from the first step).",
          GradientBufferNeverReset("conv2d_1"), ("training",), training=SGD_RUN),
    Entry("bias-grad-averaged", "two-conv",
          "Strided conv's bias gradient averaged over batch and output positions where it "
          "must be summed.",
          BiasGradientAveraged("conv2d_1"), ("gradient:conv2d_1/bias",)),
    Entry("stride-ignored-in-backward", "two-conv",
          "The stride-2 conv's input gradient scattered with stride-1 windows (stride "
          "ignored in backward; forward is right).",
          StrideIgnoredInBackward("conv2d_1"), ("gradient:conv2d_1/input",
                                                "gradient:conv2d/kernel")),
    Entry("off-by-one-window", "zhou",
          "Conv filter gradient reads each 3x3 patch one column to the right "
          "(image[i:i+3, j+1:j+4]).",
          OffByOneWindow(), ("gradient:conv2d/kernel",)),
    Entry("pad-all-axes", "chw",
          "The channels-first document's x_pad = np.pad(x, self.pad): batch and channel "
          "axes padded too; its loops then read image n-pad. Needs pad > 0: run on chw "
          "with conv2d through the pad=1 path cropped to valid (same values as pad=0, "
          "which the twin mirrors; the twin has no pad > 0).",
          PadAllAxes(), ("forward:conv2d",), base_hooks=(PadThenCrop(),)),
    Entry("update-before-input-grad", "zhou",
          "Softmax.backprop updates its weights and THEN computes the input gradient from "
          "them: wrong whenever learn_rate != 0, in training and in the gradients read "
          "from backprop (backward is right).",
          UpdateBeforeInputGradient(), ("gradient:flatten/input", "training"),
          training=SGD_RUN),
    Entry("blog-update-plus-equals", "zhou",
          "Softmax.backprop updates with += (gradient ascent) where the blog has -=: the "
          "gradients read from backprop come out negated, and training climbs the loss.",
          BlogUpdatePlusEquals(), ("gradient:dense/kernel", "gradient:dense/bias")),
    Entry("avg-pool-backward-not-divided", "lenet5",
          "AveragePooling2D backward: every pixel of a window gets the window's whole "
          "upstream gradient, not 1/(pool area) of it (forward's mean is right): the input "
          "gradient is 4 times too large for a 2x2 pool.",
          AveragePoolNotDivided("average_pooling2d"),
          ("gradient:average_pooling2d/input", "gradient:conv2d/kernel")),
    Entry("tanh-derivative-from-input", "lenet5",
          "Tanh backward: the derivative 1 - x^2 computed from the pre-activation x (the "
          "layer's input) instead of 1 - tanh(x)^2 from its output. Nearly right for small "
          "x (the difference is about 2x^4/3), wrong sign for |x| > 1.",
          TanhDerivativeFromInput("tanh"), ("gradient:tanh/input", "gradient:conv2d/kernel")),
    Entry("update-sign-flipped", "two-conv",
          "Training only: the first conv's SGD update written w += lr * g instead of "
          "w -= lr * g (gradient ascent on that layer); its gradients are right.",
          FaultyUpdate("conv2d", "sign"), ("training",), training=SGD_RUN),
    Entry("learning-rate-twice", "two-conv",
          "Training only: the dense layer's update multiplies by the learning rate twice, "
          "w -= lr * (lr * g) (a gradient already scaled by lr handed to the update).",
          FaultyUpdate("dense", "learning-rate-twice"), ("training",), training=SGD_RUN),
    Entry("bias-never-updated", "two-conv",
          "Training only: the strided conv's bias is never updated (its gradient is right; "
          "the update loop skips it).",
          FaultyUpdate("conv2d_1", "never", ("bias",)), ("training",), training=SGD_RUN),
    Entry("adam-epsilon-inside-sqrt", "chw",
          "Training only: Adam's step m_hat / sqrt(v_hat + eps) instead of Keras's "
          "m_hat / (sqrt(v_hat) + eps).",
          AdamEpsilonInsideSqrt(), ("training",), training=ADAM_RUN),
    Entry("momentum-velocity-sign-flipped", "two-conv",
          "Training only: SGD with momentum keeps the velocity v = mu*v + lr*g and steps "
          "w += v, where Keras keeps v = mu*v - lr*g (the velocity's sign flipped: gradient "
          "ascent); its gradients are right.",
          MomentumVelocitySignFlipped(), ("training",), training=MOMENTUM_RUN),
    Entry("rmsprop-epsilon-outside-sqrt", "chw",
          "Training only: RMSprop's step lr*g / (sqrt(v) + eps) (cs231n's form) where Keras "
          "divides by sqrt(v + eps); differs where |g| is below ~sqrt(eps) = 3e-4: O(1) "
          "there, so float32 catches it too (its lockstep update 1.06 off at step 1).",
          RmspropEpsilonOutsideSqrt(), ("training",), training=RMSPROP_RUN),
    # Seen only at the large-logits state (parity.checks.large_logits), named by the
    # signature softmax-overflow (parity/diagnosis/signatures.py).
    Entry("softmax-without-max-subtraction", "zhou",
          "The blog's Softmax.forward: exp(totals) / sum(exp(totals)) without subtracting "
          "the maximum first; exact at O(1) logits, nan once a logit passes 709.78 "
          "(float64) or 88.72 (float32).",
          SoftmaxWithoutMaxSubtraction(), ("large_logits:softmax",)),
    Entry("softmax-loss-without-max-subtraction", "chw",
          "softmax_loss takes exp(scores) without subtracting each row's maximum: its loss "
          "(and dscores) are nan once a score passes 709.78 (float64) or 88.72 (float32).",
          SoftmaxLossWithoutMaxSubtraction(), ("large_logits:loss",)),
)  # fmt: skip

# Batch norm and dropout (cs231n-3layer; hooks in parity/catalog_modes.py).
ENTRIES += (
    Entry("batchnorm-backward-no-mean-term", "cs231n-3layer",
          "BatchNorm backward (training mode) without the mean term: dx = (M dxhat - xhat "
          "sum(dxhat xhat)) / (M std), the - sum(dxhat) from d mean / dx left out.",
          M.BatchNormBackwardNoMeanTerm("batch_normalization_1"),
          ("gradient:batch_normalization_1/input", "gradient:dense/kernel")),
    Entry("batchnorm-variance-unbiased", "cs231n-3layer",
          "Spatial batch norm divides the batch variance by M - 1 (np.var(ddof=1)) instead "
          "of M: about 1/(2M) = 2.3e-5 relative at M = 21,632 elements per channel, below "
          "float32's budgets: float64 only.",
          M.BatchNormUnbiasedVariance("batch_normalization"), ("forward:batch_normalization",),
          dtypes=("float64",)),
    Entry("batchnorm-momentum-reversed", "cs231n-3layer",
          "Training only: the moving averages written momentum * batch + (1 - momentum) * "
          "moving (the weights swapped); training mode's output never reads them.",
          M.BatchNormMomentumReversed("batch_normalization"), ("training",),
          training=BATCHNORM_RUN),
    Entry("batchnorm-training-uses-moving", "cs231n-3layer",
          "BatchNorm's training-mode forward normalizes with the moving statistics (the "
          "test-mode formula) instead of the batch's.",
          M.BatchNormTrainingUsesMoving("batch_normalization_1"),
          ("forward:batch_normalization_1",)),
    Entry("dropout-not-scaled", "cs231n-3layer",
          "Inverted dropout without the 1 / (1 - rate) scale (cs231n: / p), forward and "
          "backward.",
          M.DropoutNotScaled("dropout"), ("forward:dropout",)),
    Entry("dropout-mask-not-reused", "cs231n-3layer",
          "Dropout backward draws a fresh mask instead of reusing its forward pass's.",
          M.DropoutMaskNotReused("dropout"), ("gradient:dropout/input",)),
)  # fmt: skip

BY_NAME = {entry.name: entry for entry in ENTRIES}

# Correct variants the false-alarm sweep also runs (besides the registered models).
CORRECT_VARIANTS = (("chw", "pad-then-crop", (PadThenCrop(),)),)


def hooks_of(entry: Entry) -> tuple:
    return (*entry.base_hooks, entry.hook)


# -- what a hook changes (numpy only, for tests) -------------------------------------------


def changed_values(entry: Entry, dtype: str = "float64", images=None, labels=None,
                   seed: int = 0) -> dict[str, float]:  # fmt: skip
    """``{claim: max |faulty - correct|}`` for each of ``entry.claims``, on the batch
    ``images``/``labels`` at random O(1) weights (``parity.checks.common.randomize``).

    The correct model's values are all taken before the faulty model is built (a hook may
    patch a class, e.g. Adam, for the whole process until :func:`restore_globals`).
    """
    from parity.checks.common import randomize
    from scratch.models import build

    def built(hooks):
        model = build(entry.model, seed=seed, dtype=dtype)
        for hook in hooks:
            hook(model)
        randomize(model, seed)
        return model

    try:
        good = [_claim_values(c, entry, built(entry.base_hooks), images, labels)
                for c in entry.claims]  # fmt: skip
        bad = built(hooks_of(entry))
        return {c: _max_diff(g, _claim_values(c, entry, bad, images, labels))
                for c, g in zip(entry.claims, good, strict=True)}  # fmt: skip
    finally:
        restore_globals()


def _claim_values(claim, entry, model, images, labels) -> np.ndarray:
    kind, _, key = claim.partition(":")
    layer, _, quantity = key.partition("/")
    if kind == "keras_weight":
        from reference.layout import layout_for

        return layout_for(model).to_keras(layer, quantity, model.params()[layer][quantity])
    x = model.preprocess(images)
    if kind == "large_logits":
        return _finite_at_large_logits(model, x, layer)
    if kind == "forward":
        return model.forward(x)[layer]
    if kind == "gradient":
        return model.gradients(x, labels)[1][layer][quantity]
    return _trained_weights(entry.training, model, x, labels)


def _finite_at_large_logits(model, x, layer: str) -> np.ndarray:
    """1 where ``layer``'s output (``loss``: the loss) is finite at the large-logits state,
    else 0; the state built from the model's own logits (numpy only: no twin here)."""
    from parity.checks import large_logits

    labels = large_logits.shift_bias(model, model.forward(x)[large_logits.logits_layer(model)])
    with large_logits.quiet():
        value = model.gradients(x, labels)[0] if layer == "loss" else model.forward(x)[layer]
    return np.isfinite(value).astype(np.float64)


def _trained_weights(spec: Training, model, x, labels) -> np.ndarray:
    """Every weight and state array (batch norm's moving statistics), flattened, after one
    epoch over the batch with ``spec``'s optimizer."""
    from reference.optimizers import scratch_optimizer
    from scratch.train import train

    optimizer = scratch_optimizer(spec.optimizer, spec.learning_rate)
    batch = spec.batch_size or model.spec.training_batch  # None: the network's own
    train(model, x, labels, optimizer, epochs=1, batch_size=batch,
          orders=[np.arange(len(x))])  # fmt: skip
    return np.concatenate([w.ravel() for ws in model.snapshot().values() for w in ws.values()])


def _max_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b), initial=0.0))
