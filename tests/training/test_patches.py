"""rndpo.training.patches.sample_patches: shapes, crops equal to their source region, zero padding,
foreground oversampling at the asked share, determinism under a seed, 2D and 3D, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rndpo.training import sample_patches


def _coded(n: int, spatial: tuple[int, ...], channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every voxel holds a unique code (image, channel, position), so a crop's location can
    be read back from its values; masks with a few sparse foreground voxels of classes 1 and 2."""
    size = int(np.prod(spatial))
    codes = np.arange(n * channels * size, dtype=np.float32).reshape(n, channels, *spatial) + 1
    masks = np.zeros((n, *spatial), np.uint8)
    rng = np.random.default_rng(0)
    for i in range(n):
        flat = masks[i].reshape(-1)
        flat[rng.choice(size, 3, replace=False)] = [1, 2, 2]
    return codes, masks


def _locate(patch: np.ndarray, images: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """The (image, start) a crop of ``images`` came from, read off its first voxel's code."""
    code = int(patch[(0,) * patch.ndim]) - 1
    _, c, *spatial = images.shape
    row, rest = divmod(code, c * int(np.prod(spatial)))
    return row, tuple(int(v) for v in np.unravel_index(rest % int(np.prod(spatial)), spatial))


@pytest.mark.parametrize(
    ("spatial", "patch"), [((12, 15), (5, 7)), ((9, 10, 11), (4, 5, 3)), ((6, 6, 6), (6, 6, 6))]
)
def test_patches_are_their_source_region(spatial: tuple[int, ...], patch: tuple[int, ...]) -> None:
    images, masks = _coded(3, spatial)
    gen = torch.Generator().manual_seed(1)
    x, y = sample_patches(images, masks, patch, 16, gen, 0.5)
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    assert x.shape == (16, 2, *patch) and y.shape == (16, *patch)
    assert x.dtype == images.dtype and y.dtype == masks.dtype
    for b in range(16):
        row, start = _locate(x[b], images)
        region = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
        np.testing.assert_array_equal(x[b], images[row][(slice(None), *region)])
        np.testing.assert_array_equal(y[b], masks[row][region])


def test_an_image_smaller_than_the_patch_is_centred_and_zero_padded() -> None:
    images, masks = _coded(1, (3, 8, 4), channels=1)
    x, y = sample_patches(images, masks, (6, 5, 4), 3, torch.Generator().manual_seed(0), 0.0)
    for b in range(3):
        # axis 0: 3 < 6, placed at (6 - 3) // 2 = 1; axis 1: a crop of 5 of 8; axis 2: all 4
        assert not x[b, :, 0].any() and not x[b, :, 4:].any() and not y[b, 0].any() and not y[b, 4:].any()
        start = (int(x[b, 0, 1, 0, 0]) - 1) // 4 % 8
        np.testing.assert_array_equal(x[b, :, 1:4], images[0, :, :, start : start + 5])
        np.testing.assert_array_equal(y[b, 1:4], masks[0, :, start : start + 5])


@pytest.mark.parametrize("fraction", [0.0, 0.33, 0.5, 1.0])
def test_foreground_share_is_honoured(fraction: float) -> None:
    """Foreground in two corner voxels only: a random 5^3 crop of 10 x 20 x 10 holds one with probability
    2 / (6 * 16 * 6) < 0.4%, a forced one always does, so the share of patches with foreground is the
    asked fraction (its expectation: floor(B f) forced plus one with probability frac(B f))."""
    spatial = (10, 20, 10)
    masks = np.zeros((4, *spatial), np.uint8)
    masks[:, 0, 0, 0], masks[:, -1, -1, -1] = 1, 2
    images = np.zeros((4, 1, *spatial), np.float32)
    gen = torch.Generator().manual_seed(3)
    batches = [sample_patches(images, masks, (5, 5, 5), 3, gen, fraction)[1] for _ in range(300)]
    has_fg = np.array([[patch.any() for patch in y] for y in batches])
    assert abs(has_fg.mean() - fraction) <= 0.04
    if fraction == 1.0:
        assert has_fg.all()
    # the forced patches come first: the first of a batch is forced with probability min(1, 3 f)
    assert abs(has_fg[:, 0].mean() - min(1.0, 3 * fraction)) <= 0.05


def test_forced_patches_pick_present_classes_evenly() -> None:
    """A random present class first, then a voxel of it (nnU-Net): class 1 (1 voxel) and class 2 (200
    voxels) are each centred about half of the time, not in proportion to their sizes."""
    masks = np.zeros((1, 30, 30), np.uint8)
    masks[0, 2, 2] = 1
    masks[0, 15:25, 10:30] = 2
    images = np.zeros((1, 1, 30, 30), np.float32)
    gen = torch.Generator().manual_seed(0)
    _, y = sample_patches(images, masks, (3, 3), 400, gen, 1.0)
    with_one = float(np.mean([(p == 1).any() for p in y]))
    assert 0.4 < with_one < 0.6


def test_index_chooses_the_source_images_and_torch_stays_torch() -> None:
    images, masks = _coded(4, (8, 9))
    x, y = sample_patches(
        torch.from_numpy(images), torch.from_numpy(masks), (4, 4), 3, torch.Generator(), 0.0, index=[3, 0, 3]
    )
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and y.dtype == torch.uint8
    assert [_locate(p, images)[0] for p in x.numpy()] == [3, 0, 3]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), fraction=st.floats(0, 1), batch=st.integers(1, 5))
def test_same_seed_same_patches(seed: int, fraction: float, batch: int) -> None:
    images, masks = _coded(3, (7, 8, 9), channels=1)
    a = sample_patches(images, masks, (4, 4, 4), batch, torch.Generator().manual_seed(seed), fraction)
    b = sample_patches(images, masks, (4, 4, 4), batch, torch.Generator().manual_seed(seed), fraction)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patch_size": (4,)}, ValueError, r"patch_size must be 2 positive ints"),
        ({"patch_size": (4, 0)}, ValueError, r"patch_size must be 2 positive ints"),
        ({"batch": 0}, ValueError, r"batch must be a positive int, got 0"),
        ({"foreground_fraction": 1.5}, ValueError, r"foreground_fraction must be a number in \[0, 1\]"),
        ({"index": [0, 5]}, ValueError, r"index must hold batch = 2 integer image indices in \[0, 3\)"),
        ({"masks": np.zeros((3, 8, 7), np.uint8)}, ValueError, r"masks must have shape \(N, \*S\)"),
        ({"masks": torch.zeros(3, 8, 8)}, TypeError, "must both be numpy arrays or both torch tensors"),
        ({"generator": np.random.default_rng(0)}, TypeError, "generator must be a torch.Generator"),
    ],
)
def test_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    args: dict[str, object] = {
        "images": np.zeros((3, 1, 8, 8), np.float32),
        "masks": np.zeros((3, 8, 8), np.uint8),
        "patch_size": (4, 4),
        "batch": 2,
        "generator": torch.Generator(),
    }
    with pytest.raises(error, match=match):
        sample_patches(**{**args, **kwargs})  # type: ignore[call-overload]
