"""Network descriptions (numpy only): what a model is, from which the harness derives the
Keras twin, every layout conversion, the compared quantities and the pools and kinks.

Import direction: ``parity -> reference -> scratch -> spec``.
"""

from spec.layers import KINDS, Layer, SpecError
from spec.network import Network, Preprocess
from spec.transforms import ExpandDims, FlattenOrder, Flip, Permute, Reshape, Squeeze

__all__ = [
    "KINDS", "ExpandDims", "FlattenOrder", "Flip", "Layer", "Network", "Permute",
    "Preprocess", "Reshape", "SpecError", "Squeeze",
]  # fmt: skip
