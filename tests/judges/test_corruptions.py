"""Tests of rndpo.judges.corruptions: the reported Dice against an independent numpy formula for every kind
(hypothesis), seeding, shapes and dtypes, the even spread of corruption_set, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rndpo.judges.corruptions import CORRUPTION_KINDS, corrupt_mask, corruption_set


def _numpy_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool).ravel(), b.astype(bool).ravel()
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)


masks_st = st.builds(
    _ellipse,
    st.just(24),
    st.just(28),
    st.floats(4, 20),
    st.floats(4, 24),
    st.floats(0.5, 10),
    st.floats(0.5, 10),
)


@settings(max_examples=30, deadline=None)
@given(mask=masks_st, kind=st.sampled_from(CORRUPTION_KINDS), seed=st.integers(0, 2**32 - 1))
def test_reported_dice_matches_numpy(mask: np.ndarray, kind: str, seed: int) -> None:
    out, d = corrupt_mask(mask, kind, np.random.default_rng(seed))
    assert out.shape == mask.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1}
    assert d == pytest.approx(_numpy_dice(out, mask), abs=1e-12)


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_each_kind_changes_the_mask_and_is_seeded(kind: str) -> None:
    mask = _ellipse(32, 32, 16, 15, 8, 6)
    a = [corrupt_mask(mask, kind, np.random.default_rng(s)) for s in range(6)]
    b = [corrupt_mask(mask, kind, np.random.default_rng(s)) for s in range(6)]
    for (ma, da), (mb, db) in zip(a, b, strict=True):
        assert np.array_equal(ma, mb) and da == db
    assert any(d < 1.0 for _, d in a)  # the kind really damages the mask
    assert len({m.tobytes() for m, _ in a}) > 1  # different seeds differ


def test_kinds_move_the_mask_the_right_way() -> None:
    mask = _ellipse(32, 32, 16, 16, 9, 7)
    rng = np.random.default_rng(0)
    eroded, _ = corrupt_mask(mask, "erode", rng)
    dilated, _ = corrupt_mask(mask, "dilate", rng)
    holed, _ = corrupt_mask(mask, "holes", rng)
    blobbed, _ = corrupt_mask(mask, "blobs", rng)
    assert np.all(eroded <= mask) and eroded.sum() < mask.sum()
    assert np.all(dilated >= mask) and dilated.sum() > mask.sum()
    assert np.all(holed <= mask) and np.all(blobbed >= mask)


def test_corruption_set_spreads_dice_and_is_seeded() -> None:
    mask = _ellipse(48, 48, 24, 22, 12, 9)
    ms, d = corruption_set(mask, 30, np.random.default_rng(3))
    ms2, d2 = corruption_set(mask, 30, np.random.default_rng(3))
    ms3, _ = corruption_set(mask, 30, np.random.default_rng(4))
    assert ms.shape == (30, 48, 48) and ms.dtype == np.uint8 and d.shape == (30,) and d.dtype == np.float64
    assert np.array_equal(ms, ms2) and np.array_equal(d, d2) and not np.array_equal(ms, ms3)
    np.testing.assert_allclose(d, [_numpy_dice(m, mask) for m in ms], atol=1e-12)
    counts = np.histogram(d, bins=5, range=(0, 1))[0]
    assert counts.min() >= 3  # every fifth of [0, 1] is represented (uniform would be 6 each)
    assert np.histogram(d, bins=2, range=(0, 1))[0].min() >= 10


def test_empty_mask_is_handled() -> None:
    empty = np.zeros((16, 16), dtype=np.uint8)
    for kind in CORRUPTION_KINDS:
        out, d = corrupt_mask(empty, kind, np.random.default_rng(1))
        assert d == pytest.approx(_numpy_dice(out, empty))


def test_bad_arguments_raise() -> None:
    rng = np.random.default_rng(0)
    mask = _ellipse(16, 16, 8, 8, 4, 4)
    with pytest.raises(ValueError, match="mask must be a 2-D"):
        corrupt_mask(mask[None], "erode", rng)
    with pytest.raises(ValueError, match="mask must be bool or uint8"):
        corrupt_mask(mask.astype(np.float32), "erode", rng)
    with pytest.raises(ValueError, match="mask must be at least 4x4"):
        corrupt_mask(mask[:3, :3], "erode", rng)
    with pytest.raises(ValueError, match="kind must be one of"):
        corrupt_mask(mask, "melt", rng)
    with pytest.raises(ValueError, match=r"rng must be a numpy\.random\.Generator, got int"):
        corrupt_mask(mask, "erode", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        corruption_set(mask, 0, rng)
    with pytest.raises(ValueError, match="kinds must be a non-empty tuple"):
        corruption_set(mask, 2, rng, kinds=("melt",))
    with pytest.raises(ValueError, match="n_bins must be a positive int"):
        corruption_set(mask, 2, rng, n_bins=0)
    with pytest.raises(ValueError, match="oversample must be a positive int"):
        corruption_set(mask, 2, rng, oversample=0)
