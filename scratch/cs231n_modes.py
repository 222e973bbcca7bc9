"""Training and inference modes of a channels-first network (``scratch.cs231n_api``).

cs231n's batch norm and dropout take the mode as an argument, ``forward(x, mode)`` with
``mode`` ``"train"`` or ``"test"``; the harness switches modes for the whole model
(``HarnessModel.set_training``) and names each batch's dropout masks (``set_masks``,
``parity.modes``), so that the Keras twin multiplies by the very same mask.

:class:`Modes` holds the model's mode and masks and calls a modal layer:

- a batch norm: ``forward(x, mode)``; its ``running_mean`` and ``running_var`` are the
  model's state under Keras's names ``moving_mean`` and ``moving_variance`` (:data:`STATE`);
- a dropout in training mode, one of two ways:
  - the harness's masks (the shipped ``scratch.chw_norm.Dropout``): the keep mask is
    written into the layer's ``mask`` before ``forward(x, "train")``, which uses a mask
    it finds set, in the layer's own format (bool, or cs231n's ``(rand < p) / p``), and
    read back after it: a layer that drew another mask anyway is an ``ApiError`` at its
    ``forward`` (its output would not be the one the twin computes);
  - the layer's own draws (a user's cs231n file, ``scratch.user_cs231n_draws``): the
    layer draws its mask as cs231n's does, the harness reads it (:meth:`Modes.drawn_masks`)
    for the twin and replays that draw whenever it runs the batch again.
"""

from __future__ import annotations

import numpy as np

from scratch.protocol import Tree
from scratch.user_api import ApiError, source_of
from spec import Network

# Keras kind -> ((Keras state name, the API's attribute), ...)
STATE = {
    "BatchNormalization": (("moving_mean", "running_mean"), ("moving_variance", "running_var"))
}
MODES = ("train", "test")


class Modes:
    """The mode (training by default, as Keras's ``fit``) and the dropout masks of one
    channels-first model described by ``network``."""

    def __init__(self, network: Network, draws=None):
        """``draws``: a ``scratch.user_cs231n_draws.Draws`` when the dropout layers draw
        their own masks; None when they take the harness's."""
        self.network, self.draws = network, draws
        self.training = True
        self._masks: dict[str, np.ndarray] = {}

    def set_training(self, training: bool) -> None:
        if not isinstance(training, bool):
            raise ValueError(
                f"Invalid value for argument `training`. Expected a bool. Received "
                f"training={training!r}."
            )
        self.training = training

    def set_masks(self, masks: dict[str, np.ndarray], layers: dict) -> None:
        """``{dropout layer: keep mask}``, bool ``(N, *its input shape)`` channels-first;
        every dropout layer of the description must be named (a stale mask is never
        reused silently). With ``draws``, the masks name the batch whose draw the
        ``layers`` (``{name: layer}``) make or replay (their values are not used)."""
        expected = self.network.masked()
        if sorted(masks) != sorted(expected):
            raise ValueError(
                f"Invalid value for argument `masks`. Expected one mask per dropout layer "
                f"{list(expected)}. Received {sorted(masks)}."
            )
        for name in expected:
            mask, per_example = np.asarray(masks[name]), self.network.native_shape(name, "input")
            if mask.dtype != bool or mask.ndim != len(per_example) or (
                mask.shape[1:] != per_example[1:]
            ):  # fmt: skip
                raise ValueError(
                    f"Invalid value for argument `masks[{name!r}]`. Expected a bool array "
                    f"(N, *{per_example[1:]}). Received a {mask.dtype} array of shape "
                    f"{mask.shape}."
                )
        self._masks = {name: np.array(masks[name], copy=True) for name in expected}
        if self.draws is not None:
            self.draws.start(self._masks, layers)

    def drawn_masks(self) -> dict[str, np.ndarray] | None:
        """The current batch's masks as the layers drew them (channels-first bool), or
        None when the layers take the harness's masks."""
        return None if self.draws is None else self.draws.drawn()

    def state(self, layers: dict) -> Tree:
        """``{batch norm: {Keras state name: the layer's live array}}``."""
        return {name: {keras: getattr(layers[name], attribute)
                       for keras, attribute in STATE[self.network.layer(name).kind]}
                for name in self.network.state_shapes()}  # fmt: skip

    def call_forward(self, name: str, layer, h):
        """``layer.forward(h)``, or ``forward(h, mode)`` for a batch norm or dropout (the
        harness's mask given to a dropout in training mode)."""
        kind = self.network.layer(name).kind
        if kind == "Dropout" and self.training:
            if self.draws is not None:
                return self.draws.forward(name, layer, h)
            return self._dropout(name, layer, h)
        if kind in ("BatchNormalization", "Dropout"):
            return layer.forward(h, MODES[0] if self.training else MODES[1])
        return layer.forward(h)

    def _dropout(self, name: str, layer, h):
        keep = self._masks.get(name)
        if keep is None or keep.shape != np.shape(h):
            raise ValueError(
                f"Layer `{name}`: no dropout mask for a batch of shape {np.shape(h)} in "
                f"training mode (masks given: "
                f"{None if keep is None else keep.shape}); call set_masks first."
            )
        if not isinstance(getattr(layer, "mask", None), np.ndarray):
            layer.forward(np.array(h, copy=True), MODES[0])  # a draw of its own: its format
        layer.mask = _in_format(keep, getattr(layer, "mask", None))
        out = layer.forward(h, MODES[0])
        used = getattr(layer, "mask", None)
        if not isinstance(used, np.ndarray) or used.shape != keep.shape or not np.array_equal(
            used != 0, keep
        ):  # fmt: skip
            found = (f"{np.count_nonzero((used != 0) != keep)} of {keep.size} elements differ"
                     if isinstance(used, np.ndarray) and used.shape == keep.shape
                     else f"found {type(used).__name__} {getattr(used, 'shape', '')}")  # fmt: skip
            raise ApiError(
                f"{type(layer).__name__}.forward(x, 'train') replaced the mask the harness set "
                f"in `mask` ({found}): in a network the harness gives every dropout layer "
                "its mask, the one the Keras twin uses too, so forward must use a `mask` of "
                "x's shape that it finds set, and draw one only otherwise (e.g. `if "
                "self.mask is None or self.mask.shape != x.shape:`).",
                source_of(layer, "forward"),
            )
        return out


def _in_format(keep: np.ndarray, previous) -> np.ndarray:
    """The bool ``keep`` in the format of the layer's ``previous`` mask: bool, or cs231n's
    ``(rand < p) / p`` (kept elements hold ``1 / p``, read off the previous mask's nonzero
    value, in its dtype); bool when the previous one is bool (or none, or all dropped)."""
    if not isinstance(previous, np.ndarray) or previous.dtype == bool or not previous.any():
        return keep.copy()
    kept = previous[previous != 0].flat[0]
    return np.where(keep, kept, previous.dtype.type(0)).astype(previous.dtype)
