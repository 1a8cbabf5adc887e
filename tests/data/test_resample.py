"""Resampling volumes to a target spacing: shapes, interpolation, labels by nearest neighbour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rndpo.data import resample_to_shape, resampled_shape


def test_the_new_shape_keeps_the_physical_extent() -> None:
    assert resampled_shape((40, 64, 50), (3.0, 1.0, 0.8), (1.5, 2.0, 1.0)) == (80, 32, 40)
    assert resampled_shape((1, 3, 3), (1.0, 1.0, 1.0), (9.0, 9.0, 9.0)) == (1, 1, 1)
    with pytest.raises(ValueError, match="target spacing must be positive finite mm"):
        resampled_shape((4, 4, 4), (1.0, 1.0, 1.0), (1.0, 0.0, 1.0))


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)), seed=st.integers(0, 2**31 - 1)
)
def test_labels_doubled_then_halved_come_back(shape: tuple[int, int, int], seed: int) -> None:
    labels = np.random.default_rng(seed).integers(0, 4, shape, dtype=np.uint8)
    up = resample_to_shape(labels, tuple(2 * s for s in shape), labels=True)
    np.testing.assert_array_equal(up, labels.repeat(2, 0).repeat(2, 1).repeat(2, 2))  # nearest: blocks
    np.testing.assert_array_equal(resample_to_shape(up, shape, labels=True), labels)
    assert set(np.unique(up).tolist()) <= set(np.unique(labels).tolist())


def test_images_are_interpolated_linearly_per_channel() -> None:
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], (2, 8, 4, 4)).copy()
    ramp[1] *= -1
    out = resample_to_shape(ramp, (16, 4, 4))
    assert out.shape == (2, 16, 4, 4) and out.dtype == np.float32
    inner = out[0, 1:-1, 0, 0]  # away from the edges: a ramp of half the slope
    np.testing.assert_allclose(np.diff(inner), 0.5, atol=1e-5)
    np.testing.assert_allclose(out[1], -out[0])
