"""Window geometry and the vectorized core of convolutions and pools (numpy only).

TensorFlow's 'same' padding along one axis (:func:`same_padding`); the flat indices of
every window of an image, built once from ``sliding_window_view`` over an index image
(:func:`window_indices`); the gather of every window of a batch by those indices, and its
adjoint, a ``bincount`` scatter-add (the input gradient of a gather). No Python loop over
pixels or windows.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's 'same' padding: ``(out, before, after)`` along one axis.

    out = ceil(size / stride); total = max((out - 1) * stride + kernel - size, 0);
    before (top/left) = total // 2, after (bottom/right) = the rest.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


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
