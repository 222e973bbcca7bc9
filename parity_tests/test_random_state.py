import numpy as np
import pytest

from parity.checks import common
from scratch.models import build

SEEDS = range(8)  # pooled draws: 8 x 72 = 576 for the smallest kernel (3, 3, 1, 8)
KERNELS = [  # (model, layer, fan-in in Keras layout: kh*kw*C for a conv, rows for a dense)
    ("zhou", "conv2d", 9), ("zhou", "dense", 1352),
    ("two-conv", "conv2d", 9), ("two-conv", "conv2d_1", 72), ("two-conv", "dense", 784),
    ("chw", "conv2d", 9), ("chw", "dense", 1352),
    ("chw-relu", "conv2d", 9), ("chw-relu", "dense", 1352),
]  # fmt: skip


def scaled_rms(name: str, layer: str, fan_in: int) -> tuple[float, int]:
    """RMS of a random-state kernel times sqrt(fan_in), pooled over SEEDS; and the count."""
    model = build(name, seed=0, dtype="float64")
    draws = []
    for seed in SEEDS:
        common.randomize(model, seed)
        draws.append(model.params()[layer]["kernel"].ravel().copy())
    draws = np.concatenate(draws)
    return float(np.sqrt(np.mean(np.square(draws)) * fan_in)), draws.size


@pytest.mark.parametrize("shape, fan_in", [((3, 3, 1, 8), 9), ((3, 3, 8, 16), 72),
                                           ((1352, 10), 1352)],
                         ids=["k3_c1_f8", "k3_c8_f16", "dense_1352_10"])  # fmt: skip
def test_fan_in_of_a_keras_kernel_is_every_axis_but_the_last(shape, fan_in):
    assert common.keras_fan_in(shape) == fan_in


@pytest.mark.parametrize("name, layer, fan_in", KERNELS, ids=[f"{m}-{k}" for m, k, _ in KERNELS])
def test_random_state_kernel_has_std_one_over_sqrt_fan_in(name, layer, fan_in):
    rms, n = scaled_rms(name, layer, fan_in)
    assert abs(rms - 1) < 4 / np.sqrt(2 * n), rms  # 4 sigma: sample RMS of n normals, SE 1/sqrt(2n)
