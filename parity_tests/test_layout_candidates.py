"""Candidate layout mistakes enumerated from a network description (spec/candidates.py),
numpy only: each moves its weight, keeps the Keras shape, and undoes the mistake it names."""

import numpy as np
import pytest

from spec import FlattenOrder, Flip, Permute, Reshape
from spec import networks as N
from spec import transforms as T
from spec.candidates import Inverse, ShiftBatch, candidates, pairs
from spec.layers import stack
from spec.network import Network


def _weighted(network):
    return [(network, layer) for layer in network.weight_shapes()]


ALL = [pair for net in N.NETWORKS.values() for pair in _weighted(net)]


def _by_name(network, layer):
    return {c.name: c for c in candidates(network, layer)}


@pytest.mark.parametrize("network,layer", ALL, ids=[f"{n.name}-{lyr}" for n, lyr in ALL])
def test_every_candidate_moves_its_weight_and_keeps_the_keras_shape(network, layer):
    shapes = network.weight_shapes()[layer]
    effects = set()
    for c in candidates(network, layer) + pairs(network, layer):
        moved = []
        for weight, records in c.weights:
            index = np.arange(np.prod(shapes[weight]), dtype=float).reshape(shapes[weight])
            out = T.to_keras(records, index)
            assert out.shape == shapes[weight], c.name
            moved.append(out.tobytes())
        assert c.input or any(m != np.arange(len(m) // 8, dtype=float).tobytes() for m in moved)
        effects.add((tuple(moved), c.input))
    assert len(effects) == len(candidates(network, layer)) + len(pairs(network, layer))


def test_true_convolution_is_both_spatial_axes_flipped():
    found = _by_name(N.ZHOU, "conv2d")["true-convolution"]
    assert found.weights == (("kernel", (Flip((0, 1)),)),)
    assert "your layer computes a true convolution; Keras computes cross-correlation" in (
        found.sentence
    )


def test_reshape_candidate_undoes_a_reshape_where_a_transpose_was_needed():
    filters = np.random.default_rng(0).normal(size=(6, 4, 3, 3))  # (F, C, kh, kw)
    right = T.to_keras(N.CHW_FILTERS, filters)  # (kh, kw, C, F)
    wrong = (Reshape(filters.shape, right.shape),)
    spec_net = Network("t", (8, 8, 4), stack(("Conv2D", dict(filters=6, kernel_size=3)),
                                            ("Flatten", {}), ("Dense", dict(units=10)),
                                            ("Softmax", {})))  # fmt: skip
    fix = _by_name(spec_net, "conv2d")["converted-by-reshape-F-C-kh-kw"]
    np.testing.assert_array_equal(T.to_keras(wrong + fix.transforms_of("kernel"), filters), right)
    layer_side = _by_name(spec_net, "conv2d")["layer-reshapes-F-C-kh-kw"]
    used = T.to_keras(layer_side.transforms_of("kernel"), right)  # what a reshaping layer uses
    np.testing.assert_array_equal(used, filters.reshape(right.shape))


def test_channel_swap_and_dense_transpose_exist_only_where_shapes_allow():
    square = Network("t", (6, 6, 4), stack(("Conv2D", dict(filters=4, kernel_size=3)),
                                           ("Flatten", {}), ("Dense", dict(units=64)),
                                           ("Dense", dict(units=10)), ("Softmax", {})))  # fmt: skip
    assert _by_name(square, "conv2d")["axes-kh-kw-F-C"].weights == (
        ("kernel", (Permute((0, 1, 3, 2)),)),
    )
    assert "kernel-transposed" not in _by_name(square, "dense_1")  # (64, 10)
    assert _by_name(square, "dense")["kernel-transposed"]  # (64, 64)
    assert "axes-kh-kw-F-C" not in _by_name(N.NETWORKS["nhwc-odd"], "conv2d_1")  # C 6, F 10


def test_dense_rows_candidates_are_the_flatten_orders_of_its_input():
    found = _by_name(N.CHW, "dense")
    assert found["rows-CHW"].weights == (("kernel", (FlattenOrder(0, "CHW", (13, 13, 8)),)),)
    assert "rows-WHC" in found
    assert "rows-CHW" not in _by_name(N.NETWORKS["nhwc-odd"], "conv2d")  # no Flatten there


def test_inverse_and_batch_shift_records():
    a = np.arange(24.0).reshape(4, 6)
    record = Inverse(Reshape((6, 4), (4, 6)))
    assert record.to_keras(a).shape == (6, 4)
    np.testing.assert_array_equal(record.from_keras(record.to_keras(a)), a)
    shifted = ShiftBatch(1).to_keras(a)
    np.testing.assert_array_equal(shifted[1:], a[:-1])
    assert not shifted[0].any()
    with pytest.raises(T.TransformError, match="cannot be undone"):
        ShiftBatch(1).from_keras(a)


def test_the_console_prints_each_layout_candidate_of_a_layer_once():
    import pandas as pd

    from parity.cli import format_diagnosis

    row = dict(model="m", dtype="float64", state="random", layer="conv2d", signature="layout",
               evidence="e", advice="a")  # fmt: skip
    rows = [{**row, "transform": t} for t in ("true-convolution", "true-convolution", "x")]
    assert format_diagnosis(pd.DataFrame(rows)).count("conv2d: layout") == 2
