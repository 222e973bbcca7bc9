"""The channels-first family: the second seed document's layers, written natively CHW.

Activations are ``(N, C, H, W)`` (or one image ``(C, H, W)``), filters ``(F, C, kh, kw)``
with a bias ``(F,)``, and every ``backward(dout)`` returns what the document returns:
``(dx, dw, db)`` for ``Conv`` and ``Linear``, ``dx`` for ``ReLU`` and ``MaxPool2x2``.
The layers the document lacks (sigmoid, tanh, LeakyReLU, average pools) are in
``scratch.chw_layers``, in the same style.
``softmax_loss(scores, y)`` is the separate loss, averaged over the batch (defined in
``scratch.chw_loss``, importable from here; the argument checks are ``scratch.chw_checks``).

Nothing here is built on the NHWC layers (only TensorFlow's 'same' padding rule,
``scratch.windows.same_padding``, is shared): the convolution is a cross-correlation over
a strided window view of the channels-first input, its input gradient the full
correlation of the (stride-dilated) output gradient with the flipped filters.

Inputs are cast to the layer's dtype on entry (as Keras casts to a layer's compute
dtype); a batch of one is ``(1, C, H, W)``, a single image ``(C, H, W)`` gives outputs
and gradients without the batch axis.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from scratch.chw_checks import (
    _as_image_batch,
    _cast_finite,
    _check_dout,
    _check_int,
    _check_scale,
    _invalid,
    _rng,
)
from scratch.chw_loss import softmax, softmax_loss
from scratch.protocol import check_dtype
from scratch.windows import same_padding

__all__ = ["Conv", "Linear", "MaxPool2x2", "ReLU", "softmax", "softmax_loss"]


# ----------------------------------------------------------------------------- layers
class Conv:
    """2-D cross-correlation, channels-first, with bias, zero or "same" padding and stride.

    Parameters
    ----------
    in_channels, out_channels, filter_size : int
        ``C``, ``F`` and the square filter side ``k``.
    pad : int or "same"
        An int: zeros added on each side of H and W (never of N or C). ``"same"``:
        TensorFlow's rule (``scratch.windows.same_padding``), ``Ho = ceil(H / stride)``,
        ``total = max((Ho - 1)*stride + k - H, 0)`` zeros with ``total // 2`` at the top
        (left) and the rest at the bottom (right): asymmetric when ``total`` is odd, as
        measured against Keras's ``Conv2D(padding="same")``.
    stride : int
        Step in H and W. A stride that does not tile the padded input floors like Keras
        (``Ho = (H + 2*pad - k) // stride + 1``): the rows and columns past the last window
        are never read and get zero gradient.
    weight_scale : float
        ``filters = standard_normal((F, C, k, k)) * weight_scale`` (drawn in float64,
        then cast); ``bias = zeros(F)``.
    rng : None, int or numpy.random.Generator
        Source of the filters; ``None`` means seed 0.
    dtype : float32 or float64
    use_bias : bool
        ``False``: no bias (Keras's ``use_bias``); ``bias`` is ``None`` and ``backward``
        returns ``db = None``.

    Attributes
    ----------
    filters : ndarray (F, C, k, k)
    bias : ndarray (F,), or None without a bias

    Shapes: ``x (N, C, H, W) -> out (N, F, Ho, Wo)``,
    ``Ho = (H + 2*pad - k) // stride + 1`` (same for W), ``ceil(H / stride)`` for "same".

    Raises
    ------
    ValueError
        An argument out of its range (naming it and the value); in ``forward``, an input
        whose padded H or W is smaller than ``k``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        filter_size,
        pad=0,
        stride=1,
        weight_scale=1e-3,
        rng=None,
        dtype=np.float64,
        use_bias=True,
    ):
        self.in_channels = _check_int("in_channels", in_channels, 1)
        self.out_channels = _check_int("out_channels", out_channels, 1)
        self.filter_size = _check_int("filter_size", filter_size, 1)
        self.pad = _check_pad(pad)
        self.stride = _check_int("stride", stride, 1)
        self.dtype = check_dtype(dtype)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise _invalid("use_bias", "a bool", f"use_bias={use_bias!r}")
        self.use_bias = bool(use_bias)
        scale = _check_scale(weight_scale)
        shape = (self.out_channels, self.in_channels, self.filter_size, self.filter_size)
        self.filters = (_rng(rng).standard_normal(shape) * scale).astype(self.dtype)
        self.bias = np.zeros(self.out_channels, dtype=self.dtype) if self.use_bias else None
        self._cache = None

    def axis_padding(self, size: int, axis: str) -> tuple[int, int, int]:
        """``(output size, zeros before, zeros after)`` along H or W for input ``size``;
        raises when the filter does not fit the padded input."""
        k, s = self.filter_size, self.stride
        if self.pad == "same":
            return same_padding(size, k, s)
        p = self.pad
        padded = size + 2 * p
        if k > padded:
            raise _invalid(
                "x",
                f"{axis} + 2*pad >= filter_size={k} (the filter must fit the padded input)",
                f"{axis}={size} with pad={p}: {axis} + 2*pad = {padded}",
            )
        return (padded - k) // s + 1, p, p

    def output_size(self, size: int, axis: str) -> int:
        """Output height/width for input ``size``; raises when the filter does not fit."""
        return self.axis_padding(size, axis)[0]

    def forward(self, x) -> np.ndarray:
        """``x (N, C, H, W)`` or ``(C, H, W)`` -> ``out (N, F, Ho, Wo)`` or ``(F, Ho, Wo)``."""
        xb, single = _as_image_batch(x, self.dtype)
        if xb.shape[1] != self.in_channels:
            raise _invalid(
                "x",
                f"{self.in_channels} channel(s) on the channel axis (axis -3, channels-first)",
                f"x.shape={np.shape(x)}",
            )
        ho, top, bottom = self.axis_padding(xb.shape[2], "H")
        wo, left, right = self.axis_padding(xb.shape[3], "W")
        # Pad H and W only. The document's `np.pad(x, self.pad)` pads EVERY axis, the
        # batch and channel axes too (C -> C + 2*pad): a bug this line keeps out.
        xp = np.pad(xb, ((0, 0), (0, 0), (top, bottom), (left, right)))
        k, s = self.filter_size, self.stride
        # (N, C, Ho, Wo, k, k): a strided view of xp, no copy yet.
        windows = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        assert windows.shape[2:4] == (ho, wo)
        cols = _columns(windows)  # (C*k*k, N*Ho*Wo), im2col
        out = self.filters.reshape(self.out_channels, -1) @ cols  # (F, N*Ho*Wo)
        out = out.reshape(self.out_channels, xb.shape[0], ho, wo)
        if self.use_bias:
            out += self.bias[:, None, None, None]
        out = np.ascontiguousarray(out.transpose(1, 0, 2, 3))  # (N, F, Ho, Wo)
        self._cache = (xp.shape, (top, bottom, left, right), cols, single, out.shape)
        return out[0] if single else out

    def backward(self, dout) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``dout`` shaped like the last output -> ``(dx, dw, db)``.

        ``dx`` like the last input, ``dw (F, C, k, k)``, ``db (F,)`` (``None`` without a
        bias).
        """
        if self._cache is None:
            raise RuntimeError("Conv.backward called before Conv.forward.")
        xp_shape, _, cols, single, out_shape = self._cache
        want = out_shape[1:] if single else out_shape
        dout = _check_dout(dout, want, self.dtype, "Conv")
        d = dout[None] if single else dout  # (N, F, Ho, Wo)
        db = d.sum(axis=(0, 2, 3)) if self.use_bias else None
        d_fm = d.transpose(1, 0, 2, 3).reshape(d.shape[1], -1)  # (F, N*Ho*Wo)
        dw = (d_fm @ cols.T).reshape(self.filters.shape)  # (F, C, k, k)
        dx = self._input_gradient(d, xp_shape)
        return (dx[0] if single else dx), dw, db

    def _input_gradient(self, d: np.ndarray, xp_shape: tuple) -> np.ndarray:
        """Full correlation of the stride-dilated ``d`` with the flipped filters, cropped
        to the unpadded input (the last forward's padding). The self-test's catalog
        replaces this method, with this signature."""
        n = d.shape[0]
        top, bottom, left, right = self._cache[1]
        windows = window_sums_view(d, self.filter_size, self.stride, xp_shape[2:])
        flipped = self.filters[:, :, ::-1, ::-1]  # (F, C, k, k), rotated 180 degrees
        w_cf = flipped.transpose(1, 0, 2, 3).reshape(self.in_channels, -1)  # (C, F*k*k)
        dxp = (w_cf @ _columns(windows)).reshape(self.in_channels, n, *xp_shape[2:])
        dxp = dxp.transpose(1, 0, 2, 3)  # (N, C, Hp, Wp)
        return np.ascontiguousarray(
            dxp[:, :, top : xp_shape[2] - bottom, left : xp_shape[3] - right]
        )


def _check_pad(pad) -> int | str:
    if isinstance(pad, str) and pad == "same":
        return pad
    if isinstance(pad, numbers.Integral) and not isinstance(pad, bool) and pad >= 0:
        return int(pad)
    raise _invalid("pad", "a non-negative integer or 'same'", f"pad={pad!r}")


def window_sums_view(d: np.ndarray, k: int, stride: int, extent: tuple) -> np.ndarray:
    """The adjoint geometry of ``k x k`` windows taken every ``stride`` pixels.

    ``d (N, F, Ho, Wo)``: one value per window -> a ``(N, F, Hp, Wp, k, k)`` window view
    over ``extent = (Hp, Wp)``, the (padded) input the windows were taken from: entry
    ``[n, f, i, j, a, b]`` is the value of the window that holds pixel ``(i, j)`` at its
    cell ``(k-1-a, k-1-b)``, or 0 where no window does. So a sum over ``(a, b)`` against
    flipped weights is the input gradient of a cross-correlation (``Conv``), a plain sum
    that of a window sum (``AvgPool``). ``d`` is dilated by the stride and framed with
    ``k - 1`` zeros, more at the bottom/right when the stride does not tile the extent
    (the pixels past the last window get 0).
    """
    n, f, ho, wo = d.shape
    dilated = np.zeros((n, f, (ho - 1) * stride + 1, (wo - 1) * stride + 1), dtype=d.dtype)
    dilated[:, :, ::stride, ::stride] = d
    unread = (extent[0] - (ho - 1) * stride - k, extent[1] - (wo - 1) * stride - k)
    assert min(unread) >= 0, (d.shape, k, stride, extent)
    frame = ((0, 0), (0, 0), (k - 1, k - 1 + unread[0]), (k - 1, k - 1 + unread[1]))
    windows = sliding_window_view(np.pad(dilated, frame), (k, k), axis=(2, 3))
    assert windows.shape[2:4] == tuple(extent)
    return windows


def _columns(windows: np.ndarray) -> np.ndarray:
    """``(N, C, Ho, Wo, k, k)`` window view -> contiguous ``(C*k*k, N*Ho*Wo)`` columns."""
    n, c, ho, wo, kh, kw = windows.shape
    return np.ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3)).reshape(c * kh * kw, -1)


class MaxPool2x2:
    """Max pooling over 2x2 windows with stride 2, channels-first.

    An odd H or W drops its last row or column (Keras's ``padding="valid"``); that
    row or column gets zero gradient. ``backward`` routes each window's gradient to
    its FIRST maximum in row-major order (top-left, top-right, bottom-left,
    bottom-right), TensorFlow's rule, so tied maxima are not over-counted.

    Shapes: ``x (N, C, H, W) -> out (N, C, H // 2, W // 2)``.
    """

    def __init__(self, dtype=np.float64):
        self.dtype = check_dtype(dtype)
        self._cache = None

    def forward(self, x) -> np.ndarray:
        xb, single = _as_image_batch(x, self.dtype)
        n, c, h, w = xb.shape
        if h < 2 or w < 2:
            raise _invalid("x", "H >= 2 and W >= 2 for 2x2 pooling", f"x.shape={np.shape(x)}")
        ho, wo = h // 2, w // 2
        # (N, C, Ho, Wo, 4): each window's 4 values in row-major order.
        windows = (
            xb[:, :, : 2 * ho, : 2 * wo]
            .reshape(n, c, ho, 2, wo, 2)
            .transpose(0, 1, 2, 4, 3, 5)
            .reshape(n, c, ho, wo, 4)
        )
        first = windows.argmax(axis=-1)  # argmax returns the first maximum
        out = np.take_along_axis(windows, first[..., None], axis=-1)[..., 0]
        self._cache = (xb.shape, first, single)
        return out[0] if single else out

    def backward(self, dout) -> np.ndarray:
        """``dout (N, C, Ho, Wo)`` -> ``dx`` like the last input."""
        if self._cache is None:
            raise RuntimeError("MaxPool2x2.backward called before MaxPool2x2.forward.")
        shape, first, single = self._cache
        want = first.shape[1:] if single else first.shape
        dout = _check_dout(dout, want, self.dtype, "MaxPool2x2")
        d = dout[None] if single else dout
        n, c, ho, wo = first.shape
        routed = (first[..., None] == np.arange(4)) * d[..., None]  # (N, C, Ho, Wo, 4)
        routed = routed.reshape(n, c, ho, wo, 2, 2).transpose(0, 1, 2, 4, 3, 5)
        dx = np.zeros(shape, dtype=self.dtype)
        dx[:, :, : 2 * ho, : 2 * wo] = routed.reshape(n, c, 2 * ho, 2 * wo)
        return dx[0] if single else dx


class ReLU:
    """``max(x, 0)`` elementwise, any shape; the gradient at exactly 0 is 0."""

    def __init__(self, dtype=np.float64):
        self.dtype = check_dtype(dtype)
        self._mask = None

    def forward(self, x) -> np.ndarray:
        x = _cast_finite(x, self.dtype)
        self._mask = x > 0
        return np.where(self._mask, x, self.dtype.type(0))

    def backward(self, dout) -> np.ndarray:
        shape = None if self._mask is None else self._mask.shape
        dout = _check_dout(dout, shape, self.dtype, "ReLU")
        return np.where(self._mask, dout, self.dtype.type(0))


class Linear:
    """Fully connected layer that flattens its input in C, H, W order.

    Parameters
    ----------
    in_features, out_features : int
    weight_scale : float
        ``weights = standard_normal((in_features, out_features)) * weight_scale``
        (drawn in float64, then cast); ``bias = zeros(out_features)``.
    rng : None, int or numpy.random.Generator
        ``None`` means seed 0.
    dtype : float32 or float64
    use_bias : bool
        ``False``: no bias (``bias`` None, ``backward``'s ``db`` None), as ``Conv``.

    Attributes
    ----------
    weights : ndarray (in_features, out_features)
        Row ``c*H*W + h*W + w`` multiplies input ``(c, h, w)`` (CHW order; Keras's
        Flatten of NHWC is HWC order, so the twin needs these rows permuted).
    bias : ndarray (out_features,) or None

    Shapes: a batch ``x (N, *features)`` with ``prod(features) == in_features``
    -> ``(N, out_features)``; one example ``x (*features)`` -> ``(out_features,)``.
    A leading axis is the batch axis whenever the remaining axes hold ``in_features``.
    """

    def __init__(self, in_features, out_features, weight_scale=1e-3, rng=None, dtype=np.float64,
                 use_bias=True):  # fmt: skip
        self.in_features = _check_int("in_features", in_features, 1)
        self.out_features = _check_int("out_features", out_features, 1)
        self.dtype = check_dtype(dtype)
        scale = _check_scale(weight_scale)
        shape = (self.in_features, self.out_features)
        self.weights = (_rng(rng).standard_normal(shape) * scale).astype(self.dtype)
        self.bias = np.zeros(self.out_features, dtype=self.dtype) if use_bias else None
        self._cache = None

    def forward(self, x) -> np.ndarray:
        shape = np.shape(x)
        if len(shape) >= 2 and int(np.prod(shape[1:])) == self.in_features:
            single = False
        elif len(shape) >= 1 and int(np.prod(shape)) == self.in_features:
            single = True
        else:
            raise _invalid(
                "x",
                f"a batch (N, ...) whose non-batch axes hold in_features={self.in_features} "
                "values, or one example of that many values",
                f"x.shape={shape}",
            )
        x = _cast_finite(x, self.dtype)
        flat = x.reshape(1 if single else shape[0], self.in_features)  # C, H, W order
        out = flat @ self.weights
        if self.bias is not None:
            out = out + self.bias
        self._cache = (flat, shape, single)
        return out[0] if single else out

    def backward(self, dout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dout (N, out_features)`` -> ``(dx like the last input, dw, db)``."""
        if self._cache is None:
            raise RuntimeError("Linear.backward called before Linear.forward.")
        flat, shape, single = self._cache
        want = (self.out_features,) if single else (flat.shape[0], self.out_features)
        d = _check_dout(dout, want, self.dtype, "Linear").reshape(flat.shape[0], -1)
        dw = flat.T @ d  # (in_features, out_features)
        db = None if self.bias is None else d.sum(axis=0)
        dx = (d @ self.weights.T).reshape(shape)
        return dx, dw, db
