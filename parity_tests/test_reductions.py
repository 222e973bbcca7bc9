import numpy as np
import pytest

from scratch.reductions import channel_mean_var

# float32 batch statistics of a conv output the size of cs231n-3layer's (32 x 26 x 26 x 8,
# mean 5, std 3): pairwise sums measured 8e-8 relative off the float64 truth, numpy's
# running sum over the leading axes 6e-6 (scratch.reductions); 1e-6 tells them apart
PAIRWISE_RTOL = 1e-6


def _batch(channel_axis: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((32, 26, 26, 8)) * 3 + 5
    return np.moveaxis(x, -1, channel_axis).astype(np.float32)


@pytest.mark.parametrize("channel_axis", [-1, 1], ids=["nhwc", "nchw"])
def test_float32_channel_mean_and_variance_are_within_pairwise_rounding_of_float64(channel_axis):
    x = _batch(channel_axis)
    axes = tuple(a for a in range(4) if a != channel_axis % 4)
    truth = (x.astype(np.float64).mean(axis=axes), x.astype(np.float64).var(axis=axes))
    for got, want in zip(channel_mean_var(x, channel_axis), truth, strict=True):
        assert got.dtype == np.float32 and got.shape == (8,)
        assert np.max(np.abs(got - want) / np.abs(want)) < PAIRWISE_RTOL
