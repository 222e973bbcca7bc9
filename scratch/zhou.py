"""The blog's layers, "CNNs, Part 2: Training a Convolutional Neural Network" (Victor Zhou):
its conv.py, maxpool.py and softmax.py (the network, its cnn.py, is ``scratch.zhou_cnn``).

Three layers with the blog's API, one image at a time, activations HWC:

    image (28, 28) -> Conv3x3(8) -> (26, 26, 8) -> MaxPool2 -> (13, 13, 8)
                   -> Softmax(13 * 13 * 8, 10) -> probabilities (10,)

Each layer has ``forward(input)`` and ``backprop(d_L_d_out, learn_rate)``: the
blog's plain SGD step on its own weights, returning the loss gradient of its
input. The harness reads every gradient from ``backprop``, the method users write
(``scratch.blog_api``, the same code that reads a user's classes).
``backward(d_L_d_out)`` is its gradient part without the update: it stores the
weight gradients (``d_L_d_filters``, ``d_L_d_w``, ``d_L_d_b``) and returns the
input gradient. ``backprop`` is ``backward`` then the update, so the input
gradient comes from the old weights, as in the blog; ``parity_tests/
test_blog_api.py`` shows ``backward`` and the gradients read from ``backprop``
equal bit for bit.

Written from the blog's formulas and independent of ``scratch.layers`` on
purpose: the two implementations check each other. Vectorized (no Python loop
over pixels, windows or filters): the blog's ``iterate_regions`` loops become a
precomputed gather (im2col) and one matmul; 2x2 pooling is a gather and a max.

Differences from the blog, each for a reason given where it happens: seeded
``numpy.random.Generator`` initialisation; max-pool backprop routes a window's
gradient to its first maximum only; ``Conv3x3.backprop`` returns the input
gradient (the blog's exercise); the softmax is computed stably.
"""

from __future__ import annotations

import math

import numpy as np

from scratch.protocol import check_dtype

NUM_FILTERS = 8
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
# MaxPool2.backward's weight of window position k = 2 * di + dj: 4 - k, (4, 1) uint8.
_FIRST_MAX_WEIGHT = np.array([[4], [3], [2], [1]], dtype=np.uint8)


def _generator(rng) -> np.random.Generator:
    # The blog draws from the global np.random state; a Generator (or a seed for
    # one) makes every run repeat. None gives a fresh unseeded Generator.
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive integer. "
            f"Received {name}={value!r}."
        )
    return int(value)


def check_rank(x: np.ndarray, ndim: int, layout: str, name: str) -> None:
    if x.ndim != ndim:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a {ndim}-D array {layout}. "
            f"Received shape {x.shape}."
        )


def check_finite(x: np.ndarray, name: str) -> None:
    # One sum is the cheap test (a NaN or an infinity makes it non-finite); only
    # when it fails, or overflows on huge finite values, is the array scanned.
    if math.isfinite(x.sum()):
        return
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected finite values. Received "
            f"{int(bad.sum())} non-finite value(s), the first at index {first}: {x[first]}."
        )


def _check_shape(x: np.ndarray, expected: tuple, name: str) -> None:
    if x.shape != expected:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected shape {expected} (the shape "
            f"of the last forward output). Received shape {x.shape}."
        )


def _check_forward_called(layer, attribute: str) -> None:
    if getattr(layer, attribute, None) is None:
        raise RuntimeError(f"{type(layer).__name__}: call forward before backward.")


def softmax_probabilities(totals: np.ndarray) -> np.ndarray:
    """``exp(totals) / sum(exp(totals))`` for one vector of totals (logits), stably.

    The same arithmetic as ``Softmax.forward`` (which inlines it to check its input).
    """
    exp = np.exp(totals - totals.max())
    return exp / exp.sum()


class Conv3x3:
    """A convolution layer with 3x3 filters, stride 1, no padding and no bias.

    Parameters
    ----------
    num_filters : int
        Number of filters F (the blog uses 8).
    rng : numpy.random.Generator, int or None
        Source of the initial filters (a seed is turned into a Generator).
    dtype : float32 or float64
        Dtype of the filters, outputs and gradients.

    Attributes
    ----------
    filters : ndarray (F, 3, 3)
        Initialised standard normal / 9, as in the blog.
    d_L_d_filters : ndarray (F, 3, 3)
        Loss gradient of the filters from the last ``backward`` (or ``backprop``).

    ``forward`` takes a 2-D image ``(H, W)`` and returns ``(H - 2, W - 2, F)``
    (cross-correlation, like the blog and Keras).
    """

    def __init__(self, num_filters, rng=None, dtype=np.float64):
        self.num_filters = _positive_int(num_filters, "num_filters")
        self.dtype = check_dtype(dtype)
        # The blog: np.random.randn(num_filters, 3, 3) / 9.
        draw = _generator(rng).standard_normal((self.num_filters, 3, 3)) / 9
        self.filters = draw.astype(self.dtype)
        self.d_L_d_filters = np.zeros_like(self.filters)
        self.last_input = None
        self.last_regions = None
        self._gather = {}  # (H, W) -> (9, P) flat pixel indices, region p in column p

    def _regions_index(self, h: int, w: int) -> np.ndarray:
        # Row p = i * (W - 2) + j lists the 9 flat pixels of the region at (i, j),
        # in the blog's iterate_regions order (row-major regions, row-major pixels):
        # (P, 9), a view of the contiguous (9, P) array the gather uses.
        key = (h, w)
        if key not in self._gather:
            corners = np.arange(h - 2)[:, None] * w + np.arange(w - 2)[None, :]
            offsets = np.arange(3)[:, None] * w + np.arange(3)[None, :]
            index = offsets.reshape(9, 1) + corners.reshape(1, -1)  # (9, P)
            self._gather[key] = index.astype(np.intp)
        return self._gather[key].T

    def check_input(self, input) -> np.ndarray:
        """``input`` as an array of the layer's dtype, or ValueError naming the rule broken."""
        x = np.asarray(input, dtype=self.dtype)
        check_rank(x, 2, "(H, W)", "input")
        if x.shape[0] < 3 or x.shape[1] < 3:
            raise ValueError(
                "Invalid value for argument `input`. Expected height and width >= 3 for a "
                f"3x3 filter. Received shape {x.shape}."
            )
        check_finite(x, "input")
        return x

    def forward(self, input):
        """Convolve a 2-D image ``(H, W)``; returns ``(H - 2, W - 2, F)``."""
        return self._forward(self.check_input(input))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        # x: a checked (H, W) array of the layer's dtype.
        h, w = x.shape
        # regions[p] is the blog's im_region at (i, j), flattened: (P, 9), stored
        # column-major (gathered as (9, P)): the matmuls below are ~15% faster so.
        regions = x.reshape(-1).take(self._regions_index(h, w).T).T
        self.last_input = x
        self.last_regions = regions
        # Blog: output[i, j] = np.sum(im_region * self.filters, axis=(1, 2)) for every
        # region; all regions at once is (P, 9) @ (9, F). The kernel is a transposed
        # view of filters: against column-major regions a contiguous copy gains nothing.
        out = regions @ self.filters.reshape(self.num_filters, 9).T
        return out.reshape(h - 2, w - 2, self.num_filters)

    def backward(self, d_L_d_out, input_grad=True):
        """Store ``d_L_d_filters``; return the input gradient ``(H, W)`` (None if not asked)."""
        _check_forward_called(self, "last_regions")
        h, w = self.last_input.shape
        d = np.asarray(d_L_d_out, dtype=self.dtype)
        _check_shape(d, (h - 2, w - 2, self.num_filters), "d_L_d_out")
        d = d.reshape(-1, self.num_filters)  # (P, F)
        # Blog: d_L_d_filters[f] += d_L_d_out[i, j, f] * im_region over all regions;
        # summed over the P regions at once, (F, P) @ (P, 9).
        self.d_L_d_filters = (d.T @ self.last_regions).reshape(self.num_filters, 3, 3)
        if not input_grad:
            return None
        # The blog's exercise: region (i, j) sends d_L_d_out[i, j, :] @ filters back
        # to its 9 pixels; bincount adds up the overlapping regions.
        per_region = d @ self.filters.reshape(self.num_filters, 9)  # (P, 9)
        index = self._regions_index(h, w)
        d_input = np.bincount(index.reshape(-1), per_region.reshape(-1), h * w)
        return d_input.reshape(h, w).astype(self.dtype, copy=False)

    def backprop(self, d_L_d_out, learn_rate, input_grad=True):
        """``backward``, then the blog's SGD step ``filters -= learn_rate * d_L_d_filters``.

        Returns the input gradient (computed with the filters before the step), or
        None with ``input_grad=False`` (the blog returns None: nothing uses it).
        """
        d_input = self.backward(d_L_d_out, input_grad)
        self.filters -= self.dtype.type(learn_rate) * self.d_L_d_filters
        return d_input


class MaxPool2:
    """Max pooling over 2x2 windows, stride 2, on an HWC volume.

    ``forward`` maps ``(H, W, C)`` to ``(H // 2, W // 2, C)``; an odd last row or
    column is dropped, as in the blog (and Keras 'valid').
    """

    def __init__(self):
        self.last_input_shape = None
        self.last_windows = None
        self.last_output = None
        self._tables = {}  # (H, W, C) -> gather and scatter indices (see _index_tables)

    def forward(self, input):
        """Max of each 2x2 window: ``(H, W, C) -> (H // 2, W // 2, C)``."""
        x = np.asarray(input)
        check_rank(x, 3, "(H, W, C)", "input")
        h, w, c = x.shape
        nh, nw = h // 2, w // 2
        if nh == 0 or nw == 0:
            raise ValueError(
                "Invalid value for argument `input`. Expected height and width >= 2 for a "
                f"2x2 pool. Received shape {x.shape}."
            )
        # windows[k] holds window element k = 2 * di + dj (row-major inside the
        # window) of every window, windows flattened in (i, j, c) order: (4, nh*nw*C).
        # One gather (a dropped odd row or column is never indexed): ~1 us faster
        # than the transposing copy of the (nh, 2, nw, 2, C) view.
        windows = x.reshape(-1).take(self._index_tables(h, w, c)[2])
        out = windows.max(axis=0)
        self.last_input_shape = x.shape
        self.last_windows = windows
        self.last_output = out
        return out.reshape(nh, nw, c)

    def backward(self, d_L_d_out):
        """Route each window's gradient to its first maximum; returns ``(H, W, C)``."""
        _check_forward_called(self, "last_windows")
        h, w, c = self.last_input_shape
        nh, nw = h // 2, w // 2
        d = np.asarray(d_L_d_out, dtype=self.last_output.dtype)
        _check_shape(d, (nh, nw, c), "d_L_d_out")
        # The blog copies the gradient to every element equal to the window's max.
        # MNIST's black background makes most windows tie, and the max has a
        # subgradient, not a sum of them: the blog's rule over-counts. TensorFlow
        # sends it to the first maximum in row-major order; so do we.
        is_max = self.last_windows == self.last_output  # (4, n), window position k first
        # The first maximum without argmax (8.5 us on (4, n), the whole backward is less):
        # weight position k by 4 - k; the largest weight among the maxima is 4 - k_first.
        weighted = is_max.view(np.uint8)
        weighted *= _FIRST_MAX_WEIGHT
        corner, _, _, offset_by_weight = self._index_tables(h, w, c)
        d_input = np.zeros(h * w * c, dtype=d.dtype)  # a dropped odd row/column gets 0
        d_input[corner + offset_by_weight.take(weighted.max(axis=0))] = d.reshape(-1)
        return d_input.reshape(h, w, c)

    def _index_tables(self, h: int, w: int, c: int):
        # corner[(i, j, ch)]: flat HWC index of window (i, j)'s top-left element in
        # channel ch; step[k]: offset of window position k = 2 * di + dj from it;
        # windows (4, n): step[k] + corner, the flat index of every window element;
        # offset_by_weight[4 - k] = step[k] (index 0 unused: every window has a max).
        key = (h, w, c)
        if key not in self._tables:
            rows = np.arange(h // 2)[:, None, None] * (2 * w * c)
            cols = np.arange(w // 2)[None, :, None] * (2 * c)
            corner = (rows + cols + np.arange(c)[None, None, :]).reshape(-1).astype(np.intp)
            step = np.array([0, c, w * c, w * c + c], dtype=np.intp)
            windows = step[:, None] + corner[None, :]
            offset_by_weight = np.concatenate([[0], step[::-1]]).astype(np.intp)
            self._tables[key] = (corner, step, windows, offset_by_weight)
        return self._tables[key]

    def _scatter_index(self, h: int, w: int, c: int):
        """``(corner, step)``: window (i, j, ch)'s element k is at ``corner + step[k]``."""
        return self._index_tables(h, w, c)[:2]

    def backprop(self, d_L_d_out, learn_rate=None):
        """The blog's ``backprop(d_L_d_out)``; ``learn_rate`` is ignored (no weights)."""
        return self.backward(d_L_d_out)


class Softmax:
    """A dense layer with softmax activation: flatten, ``x @ weights + biases``, softmax.

    Parameters
    ----------
    input_len : int
        Length of the flattened input (13 * 13 * 8 = 1352 in the blog).
    nodes : int
        Number of classes (10).
    rng : numpy.random.Generator, int or None
        Source of the initial weights.
    dtype : float32 or float64

    Attributes
    ----------
    weights : ndarray (input_len, nodes)
        Initialised standard normal / input_len, as in the blog; rows in the
        flattened input's order (HWC for the blog's pooled volume).
    biases : ndarray (nodes,)
        Initialised to zeros.
    d_L_d_w, d_L_d_b : ndarray
        Gradients from the last ``backward``; ``d_L_d_t`` is the gradient of the
        totals (logits), ``last_totals`` the logits themselves.
    """

    def __init__(self, input_len, nodes, rng=None, dtype=np.float64):
        self.input_len = _positive_int(input_len, "input_len")
        self.nodes = _positive_int(nodes, "nodes")
        self.dtype = check_dtype(dtype)
        # The blog: np.random.randn(input_len, nodes) / input_len, biases zeros.
        draw = _generator(rng).standard_normal((self.input_len, self.nodes)) / self.input_len
        # Column-major storage (same shape and values): x @ weights, weights @ d and
        # the outer product below are ~2x faster with the 10 columns contiguous.
        self.weights = np.asfortranarray(draw, dtype=self.dtype)
        self._step = np.empty_like(self.weights)  # learn_rate * d_L_d_w, reused
        self.biases = np.zeros(self.nodes, dtype=self.dtype)
        self.d_L_d_w = np.zeros_like(self.weights)
        self.d_L_d_b = np.zeros_like(self.biases)
        self.d_L_d_t = None
        self.last_input_shape = None
        self.last_input = None
        self.last_totals = None
        self.last_output = None

    def forward(self, input):
        """Probabilities ``(nodes,)`` for one input of ``input_len`` values (any shape)."""
        x = np.asarray(input, dtype=self.dtype)
        if x.size != self.input_len:
            raise ValueError(
                f"Invalid value for argument `input`. Expected {self.input_len} values "
                f"(input_len). Received shape {x.shape}."
            )
        flat = x.reshape(-1)
        totals = flat @ self.weights
        totals += self.biases
        # The blog's exp(totals) overflows past totals ~ 709 (float64); shifting by the
        # max leaves the ratio unchanged and keeps every exponent <= 0.
        exp = np.exp(totals - totals.max())
        total = exp.sum()  # in [1, nodes] unless a NaN or inf input reached the totals
        if not math.isfinite(total):
            check_finite(x, "input")
        out = exp / total
        self.last_input_shape = x.shape
        self.last_input = flat
        self.last_totals = totals
        self.last_output = out
        return out

    def backward(self, d_L_d_out):
        """Store ``d_L_d_w``, ``d_L_d_b``, ``d_L_d_t``; return d_L_d_input (input shape)."""
        _check_forward_called(self, "last_output")
        g = np.asarray(d_L_d_out, dtype=self.dtype)
        _check_shape(g, (self.nodes,), "d_L_d_out")
        p = self.last_output
        # The blog: for the class i whose gradient is nonzero (the label, -1 / p_i),
        #   d_out_i/d_t_k = -p_i p_k (k != i),  p_i (1 - p_i) (k == i),
        # row i of the softmax Jacobian diag(p) - p p^T, and d_L_d_t = gradient * that
        # row. Summing over all rows covers any d_L_d_out and, for the blog's one
        # nonzero entry, is the blog's formula: d_L_d_t = p * (g - g . p).
        d_L_d_t = p * (g - g @ p)
        self.d_L_d_t = d_L_d_t
        # d_t/d_w = input (outer product), d_t/d_b = 1, d_t/d_input = weights. The
        # outer product as a k=1 matmul (BLAS, exact x_i * t_k), written transposed
        # so that d_L_d_w is column-major like the weights: ~3x faster than
        # broadcasting multiply.
        self.d_L_d_w = np.dot(d_L_d_t[:, None], self.last_input[None, :]).T
        self.d_L_d_b = d_L_d_t
        d_L_d_inputs = self.weights @ d_L_d_t
        return d_L_d_inputs.reshape(self.last_input_shape)

    def backprop(self, d_L_d_out, learn_rate):
        """``backward``, then the blog's SGD step on weights and biases; returns d_L_d_input."""
        d_input = self.backward(d_L_d_out)
        # weights -= learn_rate * d_L_d_w, the same arithmetic without a new 1352x10
        # temporary each step.
        learn_rate = self.dtype.type(learn_rate)  # the step is computed in the layer's dtype
        step = np.multiply(self.d_L_d_w, learn_rate, out=self._step)
        np.subtract(self.weights, step, out=self.weights)
        self.biases -= learn_rate * self.d_L_d_b
        return d_input
