"""Training mode on both sides: the dropout masks the harness draws, and the mode switch.

Batch norm and dropout compute something else in training mode (batch statistics; a
random mask) than in inference mode (moving statistics; the identity). The checks run
both sides in training mode, the mode whose gradients matter, with ONE keep mask per
dropout layer and call drawn here and given to both sides (scratch: ``set_masks``; the
twin: ``reference.modal_layers.set_masks``), so forward and backward compare exactly;
inference mode is judged by its own forward rows (``parity.checks.forward``).

A user's cs231n ``Dropout`` draws its own mask instead (``scratch.user_cs231n_draws``):
:func:`inject` then gives the twin the mask the user's layer drew, and returns it for
lockstep's Keras step.

Masks are drawn in Keras layout from ``numpy.random.default_rng([seed, MASK_STREAM,
*key])``: element kept where ``uniform[0, 1) >= rate`` (probability ``1 - rate``, Keras's
convention: ``rate`` drops), and converted to the model's layout for the scratch side.
"""

from __future__ import annotations

import contextlib

import numpy as np

from scratch.protocol import Capability

MASK_STREAM = 11  # keeps the masks apart from every other use of the seed


def modal(model) -> bool:
    """Whether ``model`` has training and inference modes (batch norm, dropout)."""
    return model.provides(Capability.MODES) and bool(model.spec.modal())


def draw(network, batch: int, seed: int, *key: int) -> dict[str, np.ndarray]:
    """``{dropout layer: keep mask}``, bool ``(batch, *input shape)`` in Keras layout."""
    rng = np.random.default_rng([seed, MASK_STREAM, *key])
    shapes = network.shapes()
    return {name: rng.random((batch, *shapes[name][0])) >= network.layer(name).rate
            for name in network.masked()}  # fmt: skip


def to_scratch(model, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras-layout masks -> the model's layout (a dropout layer's input layout)."""
    from reference.layout import layout_for

    layout = layout_for(model)
    return {name: layout.from_keras(name, "input", mask) for name, mask in masks.items()}


def inject(model, masks: dict[str, np.ndarray], keras_model=None) -> dict[str, np.ndarray]:
    """Give the Keras-layout ``masks`` to the scratch model and, if given, the twin;
    returns the masks both sides use, Keras layout: ``masks``, or, for a model whose
    dropout layers draw their own (``HarnessModel.drawn_masks``: a user's cs231n file),
    the masks they drew for this batch (``masks`` then only name the batch: the same
    ones again replay the same draw)."""
    if not model.spec.masked():
        return masks
    model.set_masks(to_scratch(model, masks))
    drawn = model.drawn_masks()
    if drawn is not None:
        layout = _layout(model)
        masks = {name: layout.to_keras(name, "input", mask) for name, mask in drawn.items()}
    if keras_model is not None:
        from reference.modal_layers import set_masks

        layout = _layout(model)
        set_masks(keras_model, {layout.keras_key(n, "input")[0]: m for n, m in masks.items()})
    return masks


def rows(masks: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """The masks of the first ``count`` examples (a sub-batch of the check batch)."""
    return {name: mask[:count] for name, mask in masks.items()}


def set_training(model, keras_model, training: bool) -> None:
    """Both sides in training (``True``) or inference mode."""
    model.set_training(training)
    if keras_model is not None:
        from reference.modal_layers import set_training as keras_set

        keras_set(keras_model, training)


@contextlib.contextmanager
def inference(model, keras_model=None):
    """Both sides in inference mode inside the block, training mode after it."""
    set_training(model, keras_model, False)
    try:
        yield
    finally:
        set_training(model, keras_model, True)


def _layout(model):
    from reference.layout import layout_for

    return layout_for(model)
