"""A user's cs231n ``Dropout`` inside a network: the mask it draws, read and replayed.

cs231n's ``Dropout.forward(x, "train")`` draws a fresh mask at every call (``mask =
(np.random.rand(*x.shape) < p) / p``) and caches it in ``mask`` for ``backward``. In a
network (``cs231n-3layer-chw``) the harness lets the user's layer draw its own mask, reads
it, gives the same mask to the Keras twin, and makes the draw repeat wherever it runs the
same batch again (:class:`Draws`):

- A batch's draw is named by the masks the harness gives for it (``set_masks``: their
  shape is the batch's; their values only name the draw). The first time, the harness
  records the random state (:class:`RandomSources`: numpy's global state and every
  ``np.random.Generator``/``RandomState`` held by the layer or defined in its module),
  calls ``forward(ones, "train")`` on an array of the batch's shape and dtype, and reads
  ``mask`` (:func:`scratch.user_cs231n_norm.read_mask`). So the draw must depend on x's
  shape and dtype only, as ``np.random.rand(*x.shape) < p`` does.
- Every training-mode forward of that batch (the checked pass, each finite difference,
  the isolated layers, lockstep's re-sync, a diagnosis) runs with that state restored and
  the state put back afterwards (a replay never advances the user's random stream: the
  next batch still draws a fresh mask), and the mask it leaves is compared with the
  recorded one: another mask is an ``ApiError`` ("not reproducible"), never a comparison
  of two different masks.
- The same masks given again (the harness's, or the ones the layer drew) replay the
  draw; new masks start a fresh one. Every draw is kept (a diagnosis may go back to any
  training step): about 3 KB per batch.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import numpy as np

from scratch.user_api import ApiError, source_of
from scratch.user_cs231n_norm import read_mask

_SOURCES = (np.random.Generator, np.random.RandomState)


class RandomSources:
    """The state of every random source a user's layer may draw from: numpy's global
    state (``np.random.rand``, ``np.random.binomial``, ...) and each ``Generator`` or
    ``RandomState`` that is an attribute of the layer or a global of its class's module."""

    def __init__(self, layer):
        # the legacy global state IS what np.random.rand draws from: saved on purpose
        self.global_state = np.random.get_state()  # noqa: NPY002
        self.held = [(source, _get(source)) for source in _held(layer)]

    def restore(self) -> None:
        np.random.set_state(self.global_state)  # noqa: NPY002
        for source, state in self.held:
            _set(source, state)

    @contextlib.contextmanager
    def replaying(self, layer):
        """Inside the block the sources are as recorded; after it, as they were before."""
        now = RandomSources(layer)
        self.restore()
        try:
            yield
        finally:
            now.restore()


def _held(layer) -> list:
    forward = getattr(type(layer), "forward", None)
    module = getattr(forward, "__globals__", {})
    found = {id(v): v for v in (*vars(layer).values(), *module.values()) if isinstance(v, _SOURCES)}
    return list(found.values())


def _get(source):
    return source.bit_generator.state if isinstance(source, np.random.Generator) else (
        source.get_state())  # fmt: skip


def _set(source, state) -> None:
    if isinstance(source, np.random.Generator):
        source.bit_generator.state = state
    else:
        source.set_state(state)


@dataclass
class Draw:
    """One dropout layer's draw for one batch: the random state before it, the keep mask
    read after it (bool ``(N, ...)`` channels-first), or the exception that drawing raised
    (raised again at every training-mode forward of that batch)."""

    sources: RandomSources
    keep: np.ndarray | None = None
    error: Exception | None = None


class Draws:
    """The draws of a network's dropout layers (``network.masked()``), keyed by batch."""

    def __init__(self, network, dtype):
        self.network, self.dtype = network, np.dtype(dtype)
        self._batches: dict[tuple, dict[str, Draw]] = {}
        self._current: dict[str, Draw] = {}
        self._given: dict[str, np.ndarray] = {}

    def start(self, masks: dict[str, np.ndarray], layers: dict) -> None:
        """The batch named by ``masks`` (bool, channels-first, already validated): its
        recorded draws, or each layer's first draw now (:class:`Draw`)."""
        key = _key(masks)
        if key not in self._batches:
            draws = {name: self._first(name, layers[name], masks[name].shape)
                     for name in self.network.masked()}  # fmt: skip
            self._batches[key] = draws
            if all(draw.keep is not None for draw in draws.values()):
                self._batches.setdefault(_key({n: d.keep for n, d in draws.items()}), draws)
        self._current, self._given = self._batches[key], masks

    def drawn(self) -> dict[str, np.ndarray]:
        """``{dropout layer: keep mask}`` of the current batch, channels-first: the user's
        layer's draw (the given mask where drawing raised: its forward raises again)."""
        return {name: self._given[name] if draw.keep is None else draw.keep
                for name, draw in self._current.items()}  # fmt: skip

    def _first(self, name: str, layer, shape: tuple) -> Draw:
        draw = Draw(RandomSources(layer))
        try:
            layer.forward(np.ones(shape, self.dtype), "train")
            draw.keep = read_mask(layer, shape, name)
        except Exception as exc:  # the user's code: raised where the batch runs
            draw.error = exc
        return draw

    def forward(self, name: str, layer, h) -> np.ndarray:
        """``layer.forward(h, "train")`` replaying this batch's draw, checked to be it."""
        draw = self._current.get(name)
        if draw is None or (draw.keep is not None and draw.keep.shape != np.shape(h)):
            raise ValueError(
                f"Layer `{name}`: no dropout draw for a batch of shape {np.shape(h)} in "
                f"training mode (the masks given: "
                f"{None if draw is None else self._given[name].shape}); call set_masks first."
            )
        if draw.error is not None:
            raise draw.error
        with draw.sources.replaying(layer):
            out = layer.forward(h, "train")
        self.check_replay(name, layer, read_mask(layer, np.shape(h), name), draw.keep)
        return out

    @staticmethod
    def check_replay(name: str, layer, keep: np.ndarray, first: np.ndarray) -> None:
        """Raise ``ApiError`` at the user's ``forward`` if a replayed draw ``keep`` is not
        the ``first`` draw of the batch."""
        if np.array_equal(keep, first):
            return
        raise ApiError(
            f"your Dropout's mask is not reproducible: layer `{name}` "
            f"({type(layer).__name__}) drew a `mask` that differs from its first draw "
            f"for this batch in {np.count_nonzero(keep != first)} of {keep.size} "
            "elements, with numpy's global random state and the layer's own "
            "Generator/RandomState restored. The harness gives Keras the mask your "
            "layer drew first and replays that draw whenever it runs the batch again "
            "(finite differences, isolation, lockstep), so draw from np.random or "
            "from a Generator/RandomState held by the layer (e.g. `self.rng`) or "
            "defined in its module, from x's shape only.",
            source_of(layer, "forward"),
        )


def _key(masks: dict[str, np.ndarray]) -> tuple:
    """The identity of a set of masks: each name, shape and a digest of the bits."""
    return tuple((name, masks[name].shape,
                  hashlib.blake2b(np.packbits(masks[name]).tobytes(), digest_size=16).digest())
                 for name in sorted(masks))  # fmt: skip
