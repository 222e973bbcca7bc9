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
