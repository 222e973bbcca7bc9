"""Inverted dropout (numpy only), with a mask that can be read and injected.

Keras's ``Dropout(rate)``: ``rate`` is the DROP probability; in training mode each
element is kept with probability ``1 - rate`` and kept elements are scaled by
``1 / (1 - rate)`` (TensorFlow multiplies by the precomputed scale, then zeroes the
dropped elements); in inference mode it is the identity. cs231n's ``p`` is the KEEP
probability: ``rate = 1 - p``.

So that the scratch side and Keras see the same mask, the mask is data: set ``mask``
(bool, the input's shape) before ``forward`` to inject one; it is used by every
training-mode ``forward`` until ``mask`` is set again (finite differences call forward
many times on one mask), and an injected mask of another shape than the input is a
ValueError, never replaced by a fresh draw (the other side would still apply the injected
one). Otherwise (``mask`` None) ``forward`` draws one from the layer's seeded generator and
leaves it in ``mask``; a drawn mask is redrawn when the input's shape changes.
"""

from __future__ import annotations

import numpy as np

from scratch.layer_base import Layer, invalid_argument


class Dropout(Layer):
    """Inverted dropout; ``training`` selects dropping (True) or the identity (False).

    Parameters
    ----------
    rate : float in [0, 1), the drop probability (Keras)
    seed : int, default 0
        Seeds the masks drawn when none is injected.
    name : str, optional

    Attributes
    ----------
    mask : numpy.ndarray of bool or None
        Kept elements of the last training-mode forward (or the injected mask).

    Raises
    ------
    ValueError
        In ``forward``, an injected ``mask`` whose shape is not the input's (naming the
        layer, the expected and the received shape).
    """

    base_name = "dropout"

    def __init__(self, rate, seed=0, name=None):
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise invalid_argument("rate", "a float in [0, 1)", rate)
        self.rate = float(rate)
        self.training = False
        self._mask: np.ndarray | None = None
        self._injected = False  # `mask` was set from outside (not drawn by forward)
        self._rng = np.random.default_rng(seed)

    @property
    def mask(self) -> np.ndarray | None:
        return self._mask

    @mask.setter
    def mask(self, value) -> None:
        """Injects ``value`` (None: forward draws its own again)."""
        self._mask, self._injected = value, value is not None

    def _forward(self, x):
        if not self.training:
            self._keep(x.shape[0], (None, None))  # the identity
            return x.copy()
        if self._injected and self._mask.shape != x.shape:
            raise ValueError(
                f"Layer `{self.label}`: expected an injected dropout mask of the input's shape "
                f"{x.shape}. Received a mask of shape {self._mask.shape}."
            )
        if self._mask is None or self._mask.shape != x.shape:
            self._mask = self._rng.random(x.shape) >= self.rate  # drawn, not injected
        scale = self.dtype.type(1 / (1 - self.rate))
        self._keep(x.shape[0], (self.mask, scale))
        return np.where(self.mask, x * scale, self.dtype.type(0))

    def _backward(self, dout, need_dx=True):
        self.grads = {}
        if not need_dx:
            return None
        mask, scale = self._cache
        if mask is None:
            return dout.copy()
        return np.where(mask, dout * scale, self.dtype.type(0))
