"""rndpo.metrics.structures: per-structure Dice / HD95 of label maps against closed forms, slow loops, the
binary metrics and MONAI (2D and 3D, anisotropic spacing), their summary, and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics import DiceMetric, compute_hausdorff_distance
from scipy import ndimage

from rndpo.metrics import (
    StructureSummary,
    dice,
    dice_per_class,
    hd95,
    hd95_per_class,
    summarize_structures,
)

# MONAI 1.6 passes its own deprecated argument internally, and warns on every empty structure
_MONAI_DEPRECATION = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")
_MONAI_EMPTY = pytest.mark.filterwarnings(
    "ignore:the (ground truth|prediction) of class .* is all 0:UserWarning"
)

_HIPPOCAMPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "msd_hippocampus" / "data.npz"


def _label_maps(seed: int, n: int, shape: tuple[int, ...], num_classes: int, drop: float) -> np.ndarray:
    """uint8 (n, *shape) blob label maps 0..C-1; each structure is left out of a map with probability drop."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((n, num_classes, *shape)), (0, 0) + (1.0,) * len(shape))
    field[:, 0] += 0.02  # a little more background
    gone = rng.random((n, num_classes)) < drop
    gone[:, 0] = False
    field[gone] = -np.inf
    return field.argmax(axis=1).astype(np.uint8)


def _pair(seed: int, n: int, shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target): overlapping but different maps, with structures missing in one, the other or both."""
    target = _label_maps(seed, n, shape, num_classes, drop=0.3)
    other = _label_maps(seed + 1, n, shape, num_classes, drop=0.3)
    rng = np.random.default_rng(seed + 2)
    pred = np.where(rng.random(target.shape) < 0.3, other, target).astype(np.uint8)
    swap = rng.random(n) < 0.3  # some whole maps replaced: structures present on one side only
    pred[swap] = other[swap]
    return pred, target


def _slow_dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C-1) by counting voxel by voxel; nan where a structure is in neither map."""
    out = np.full((pred.shape[0], num_classes - 1), np.nan)
    for i in range(pred.shape[0]):
        for k in range(1, num_classes):
            inter = size_p = size_t = 0
            for p, t in zip(pred[i].ravel().tolist(), target[i].ravel().tolist(), strict=True):
                inter += p == k and t == k
                size_p += p == k
                size_t += t == k
            if size_p + size_t:
                out[i, k - 1] = 2 * inter / (size_p + size_t)
    return out


def _slow_hd95(pred: np.ndarray, target: np.ndarray, num_classes: int, spacing: np.ndarray) -> np.ndarray:
    """(N, C-1): binary hd95 per structure (brute-force-tested in test_metrics); nan / inf if empty."""
    out = np.empty((pred.shape[0], num_classes - 1))
    for i in range(pred.shape[0]):
        for k in range(1, num_classes):
            p, t = pred[i] == k, target[i] == k
            if not p.any() and not t.any():
                out[i, k - 1] = np.nan
            elif not p.any() or not t.any():
                out[i, k - 1] = np.inf
            else:
                out[i, k - 1] = hd95(p, t, tuple(spacing[i]))
    return out


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """float32 (N, C, *S) one-hot of (N, *S) labels, MONAI's layout."""
    x = torch.from_numpy(labels.astype(np.int64))
    return torch.nn.functional.one_hot(x, num_classes).movedim(-1, 1).float()


_SHAPES = st.one_of(
    st.tuples(st.integers(4, 16), st.integers(4, 16)),
    st.tuples(st.integers(3, 8), st.integers(3, 8), st.integers(3, 8)),
)


def _spacing(seed: int, n: int, dims: int) -> np.ndarray:
    return np.random.default_rng(seed + 3).uniform(0.3, 3.0, (n, dims))


# --- closed forms ---


@pytest.mark.parametrize("shape", [(12, 10), (5, 7, 6)])
def test_identical_maps_score_one_and_zero_on_present_structures_nan_on_absent(
    shape: tuple[int, ...],
) -> None:
    labels = np.zeros((2, *shape), dtype=np.uint8)
    labels[0, 1:4, 1:4] = 1
    labels[0, 3:, 4:] = 3
    labels[1, 2:5, 2:] = 3  # structure 2 in no map, structure 1 only in map 0
    spacing = (0.8,) * len(shape)
    d = dice_per_class(labels, labels, 4)
    h = hd95_per_class(labels, labels, 4, spacing)
    np.testing.assert_array_equal(d, [[1.0, np.nan, 1.0], [np.nan, np.nan, 1.0]])
    np.testing.assert_array_equal(h, [[0.0, np.nan, 0.0], [np.nan, np.nan, 0.0]])
    s = summarize_structures(d, h, ["a", "b", "c"])
    np.testing.assert_array_equal(s.empty_both, [1, 2, 0])
    np.testing.assert_array_equal(s.dice_scored, [1, 0, 2])
    assert s.mean_dice == 1.0 and s.mean_hd95 == 0.0
    assert s.dice_unscored == ("b",) and s.hd95_unscored == ("b",)


def test_disjoint_structures_score_dice_zero_and_their_distance() -> None:
    pred = np.zeros((1, 4, 9, 9), dtype=np.uint8)
    target = np.zeros_like(pred)
    pred[0, 1, 2, 2] = 1  # single voxels: all boundary
    target[0, 3, 2, 6] = 1
    pred[0, 0, 8, 8] = 2  # structure 2 only in pred
    spacing = (2.0, 0.5, 0.75)
    np.testing.assert_array_equal(dice_per_class(pred, target, 3), [[0.0, 0.0]])
    np.testing.assert_allclose(
        hd95_per_class(pred, target, 3, spacing), [[math.hypot(2 * 2.0, 4 * 0.75), np.inf]]
    )


def test_a_single_map_gives_one_row() -> None:
    pred, target = _pair(5, 3, (6, 7, 5), 4)
    spacing = np.array([1.5, 0.5, 0.9])
    batch_d = dice_per_class(pred, target, 4)
    batch_h = hd95_per_class(pred, target, 4, spacing)
    for i in range(3):
        d = dice_per_class(pred[i], target[i], 4, spatial_dims=3)
        h = hd95_per_class(pred[i], target[i], 4, spacing)
        assert d.shape == h.shape == (3,) and d.dtype == h.dtype == np.float64
        np.testing.assert_array_equal(d, batch_d[i])
        np.testing.assert_array_equal(h, batch_h[i])
    # a 2D image; a 3-D array without spatial_dims is a batch of 2D images
    np.testing.assert_array_equal(
        dice_per_class(pred[0, 2], target[0, 2], 4), _slow_dice(pred[0, 2][None], target[0, 2][None], 4)[0]
    )
    np.testing.assert_array_equal(dice_per_class(pred[0], target[0], 4), _slow_dice(pred[0], target[0], 4))


def test_per_map_spacing_equals_one_call_per_map() -> None:
    pred, target = _pair(9, 3, (5, 6, 7), 3)
    spacing = np.array([[1.0, 1.0, 1.0], [3.0, 0.5, 0.5], [0.4, 2.0, 1.2]])
    got = hd95_per_class(pred, target, 3, spacing)
    for i in range(3):
        np.testing.assert_array_equal(got[i], hd95_per_class(pred[i], target[i], 3, spacing[i]))


def test_two_classes_give_the_binary_dice_where_the_structure_is_present() -> None:
    pred, target = _pair(13, 8, (10, 11), 2)
    pred[:2] = target[:2] = 0  # the structure in neither map
    target[2] = 0  # only in pred
    per_class = dice_per_class(pred, target, 2)[:, 0]
    binary = np.asarray(dice(pred, target))
    present = (pred == 1).any(axis=(1, 2)) | (target == 1).any(axis=(1, 2))
    assert present.any() and not present.all()
    np.testing.assert_array_equal(per_class[present], binary[present])
    assert np.isnan(per_class[~present]).all() and (binary[~present] == 1.0).all()  # never 1 here
    # a volume: the binary dice of its voxels read as one flat image
    vp, vt = _pair(14, 1, (4, 6, 5), 2)
    assert dice_per_class(vp[0], vt[0], 2, spatial_dims=3)[0] == dice(
        vp[0].reshape(4 * 6, 5), vt[0].reshape(4 * 6, 5)
    )


# --- slow loops and MONAI ---


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 3), shape=_SHAPES, num_classes=st.integers(2, 5))
def test_per_class_metrics_match_slow_loops(
    seed: int, n: int, shape: tuple[int, ...], num_classes: int
) -> None:
    pred, target = _pair(seed, n, shape, num_classes)
    spacing = _spacing(seed, n, len(shape))
    np.testing.assert_allclose(
        dice_per_class(pred, target, num_classes), _slow_dice(pred, target, num_classes)
    )
    np.testing.assert_array_equal(
        hd95_per_class(pred, target, num_classes, spacing), _slow_hd95(pred, target, num_classes, spacing)
    )
    # other integer dtypes and bool (two classes) give the same values
    np.testing.assert_array_equal(
        dice_per_class(pred.astype(np.int64), target.astype(np.int16), num_classes),
        dice_per_class(pred, target, num_classes),
    )


@_MONAI_DEPRECATION
@_MONAI_EMPTY
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 3), shape=_SHAPES, num_classes=st.integers(2, 5))
def test_per_class_metrics_match_monai(seed: int, n: int, shape: tuple[int, ...], num_classes: int) -> None:
    pred, target = _pair(seed, n, shape, num_classes)
    spacing = _spacing(seed, n, len(shape))
    p, t = _one_hot(pred, num_classes), _one_hot(target, num_classes)
    got_d = dice_per_class(pred, target, num_classes)
    got_h = hd95_per_class(pred, target, num_classes, spacing)
    in_p = p[:, 1:].flatten(2).any(-1).numpy()
    in_t = t[:, 1:].flatten(2).any(-1).numpy()
    neither, both = ~in_p & ~in_t, in_p & in_t

    ref = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p, t).numpy()
    np.testing.assert_allclose(got_d[~neither], ref[~neither], rtol=1e-6)
    assert np.isnan(got_d[neither]).all() and (ref[neither] == 1.0).all()  # MONAI scores 1, we exclude
    ref_ignore = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p, t).numpy()
    np.testing.assert_allclose(got_d[in_t], ref_ignore[in_t], rtol=1e-6)

    ref_h = compute_hausdorff_distance(
        p, t, include_background=False, percentile=95, spacing=[tuple(s) for s in spacing]
    ).numpy()
    np.testing.assert_allclose(got_h[both], ref_h[both], rtol=1e-4, atol=1e-4)
    assert np.isnan(got_h[neither]).all() and np.isnan(ref_h[neither]).all()
    one = in_p ^ in_t
    assert np.isposinf(got_h[one]).all() and not np.isfinite(ref_h[one]).any()  # MONAI: inf or nan


@_MONAI_DEPRECATION
@_MONAI_EMPTY
@pytest.mark.skipif(not _HIPPOCAMPUS.exists(), reason="MSD hippocampus data absent")
def test_hippocampus_volumes_match_monai_in_mm() -> None:
    with np.load(_HIPPOCAMPUS) as data:
        target = data["masks"][:3].astype(np.uint8)
        spacing = data["spacing"][:3].astype(np.float64) * [[1.0, 1.0, 1.0], [2.0, 0.7, 1.3], [0.5, 1.0, 3.0]]
    pred = np.roll(target, 1, axis=1)  # off by one voxel in depth
    pred[1] = ndimage.binary_erosion(target[1] > 0) * target[1]  # eroded
    pred[2][pred[2] == 2] = 0  # one structure missing in the prediction
    p, t = _one_hot(pred, 3), _one_hot(target, 3)
    got_d = dice_per_class(pred, target, 3)
    got_h = hd95_per_class(pred, target, 3, spacing)
    ref_d = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p, t).numpy()
    ref_h = compute_hausdorff_distance(
        p, t, include_background=False, percentile=95, spacing=[tuple(s) for s in spacing]
    ).numpy()
    np.testing.assert_allclose(got_d, ref_d, rtol=1e-6)
    np.testing.assert_allclose(got_h[:2], ref_h[:2], rtol=1e-4)
    assert got_h[2, 0] == pytest.approx(float(ref_h[2, 0]), rel=1e-4) and np.isposinf(got_h[2, 1])
    # a one-voxel shift in depth: every boundary voxel has its shifted copy one depth spacing away
    assert (got_h[0] <= spacing[0, 0] + 1e-9).all()


# --- the summary ---


def test_summary_of_a_known_table() -> None:
    nan, inf = np.nan, np.inf
    d = np.array([[1.0, 0.5, nan], [0.0, nan, nan], [0.5, 0.7, nan]])
    h = np.array([[0.0, 2.0, nan], [inf, nan, nan], [4.0, inf, nan]])
    s = summarize_structures(d, h, ["liver", "kidney", "spleen"])
    assert isinstance(s, StructureSummary) and s.num_volumes == 3
    np.testing.assert_allclose(s.dice, [0.5, 0.6, nan])
    np.testing.assert_array_equal(s.dice_scored, [3, 2, 0])
    np.testing.assert_array_equal(s.empty_both, [0, 1, 3])
    np.testing.assert_allclose(s.hd95, [2.0, 2.0, nan])
    np.testing.assert_array_equal(s.hd95_scored, [2, 1, 0])
    np.testing.assert_array_equal(s.hd95_one_empty, [1, 1, 0])
    assert s.mean_dice == pytest.approx(0.55) and s.mean_hd95 == pytest.approx(2.0)
    assert s.dice_unscored == ("spleen",) and s.hd95_unscored == ("spleen",)
    out = s.as_dict()
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["structures"]["spleen"] == {
        "dice": None,
        "dice_volumes": 0,
        "empty_both": 3,
        "hd95": None,
        "hd95_volumes": 0,
        "hd95_one_empty": 0,
    }
    assert out["structures"]["kidney"]["hd95_one_empty"] == 1
    assert out["unscored"] == {"dice": ["spleen"], "hd95": ["spleen"]}
    # without HD95, and with nothing scored at all
    s = summarize_structures(d[:, 2:], None, ["spleen"])
    assert s.hd95 is None and s.mean_dice is None and s.mean_hd95 is None and s.dice_unscored == ("spleen",)
    out = s.as_dict()
    assert json.dumps(out, allow_nan=False) and "hd95" not in out["structures"]["spleen"]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 4), num_classes=st.integers(2, 5))
def test_summary_matches_a_slow_loop(seed: int, n: int, num_classes: int) -> None:
    pred, target = _pair(seed, n, (6, 5, 4), num_classes)
    spacing = _spacing(seed, n, 3)
    d = dice_per_class(pred, target, num_classes)
    h = hd95_per_class(pred, target, num_classes, spacing)
    assert d.shape == h.shape == (n, num_classes - 1)
    names = [f"s{k}" for k in range(1, num_classes)]
    s = summarize_structures(d, h, names)
    means_d, means_h = [], []
    for k, name in enumerate(names):
        scored = [d[i, k] for i in range(n) if not math.isnan(d[i, k])]
        finite = [h[i, k] for i in range(n) if math.isfinite(h[i, k])]
        row = s.as_dict()["structures"][name]  # type: ignore[index]
        assert row["dice_volumes"] == len(scored) and row["empty_both"] == n - len(scored)
        assert row["hd95_volumes"] == len(finite) and row["hd95_one_empty"] == sum(
            h[i, k] == math.inf for i in range(n)
        )
        assert row["dice"] == (pytest.approx(sum(scored) / len(scored)) if scored else None)
        assert row["hd95"] == (pytest.approx(sum(finite) / len(finite)) if finite else None)
        means_d += [sum(scored) / len(scored)] if scored else []
        means_h += [sum(finite) / len(finite)] if finite else []
    assert s.mean_dice == (pytest.approx(sum(means_d) / len(means_d)) if means_d else None)
    assert s.mean_hd95 == (pytest.approx(sum(means_h) / len(means_h)) if means_h else None)
    assert len(s.dice_unscored) == len(names) - len(means_d)


# --- errors ---


def test_bad_label_maps_raise_naming_the_argument() -> None:
    good = np.zeros((2, 6, 6), dtype=np.uint8)
    for fn, extra in ((dice_per_class, ()), (hd95_per_class, ((1.0, 1.0),))):
        with pytest.raises(
            ValueError, match=r"target must have the same shape as pred \(2, 6, 6\), got \(2, 6, 7\)"
        ):
            fn(good, np.zeros((2, 6, 7), dtype=np.uint8), 3, *extra)
        with pytest.raises(
            ValueError, match=r"pred must hold labels 0 to 2 \(num_classes = 3\), got values from 0 to 3"
        ):
            fn(good + 3 * (np.arange(6) == 1), good, 3, *extra)
        with pytest.raises(
            ValueError, match=r"target must hold labels 0 to 1 \(num_classes = 2\), got values from -1 to 0"
        ):
            fn(good.astype(np.int8), -good.astype(np.int8) - (np.arange(6) == 0), 2, *extra)
        with pytest.raises(ValueError, match="num_classes must be >= 2"):
            fn(good, good, 1, *extra)
        with pytest.raises(TypeError, match=r"num_classes must be an int >= 2, got 2\.0"):
            fn(good, good, 2.0, *extra)
        with pytest.raises(TypeError, match=r"pred must be an integer .* label map, got dtype float32"):
            fn(good.astype(np.float32), good, 3, *extra)
    with pytest.raises(
        ValueError, match=r"pred must have shape \(H, W\), \(N, H, W\) or \(N, D, H, W\).* got ndim 5"
    ):
        dice_per_class(good[None, None], good[None, None], 3)
    with pytest.raises(
        ValueError, match=r"pred must have shape \(N, D, H, W\) or \(D, H, W\) for 3 spatial dims, got ndim 2"
    ):
        dice_per_class(good[0], good[0], 3, spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims must be None, 2 or 3, got 4"):
        dice_per_class(good, good, 3, spatial_dims=4)


def test_bad_spacing_raises_naming_spacing() -> None:
    maps = np.zeros((2, 4, 5, 6), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"spacing must have shape \(2,\) or \(3,\) .* got shape \(4,\)"):
        hd95_per_class(maps, maps, 3, (1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing must have shape .* got shape \(2, 2, 3\)"):
        hd95_per_class(maps, maps, 3, np.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="spacing must be finite and > 0"):
        hd95_per_class(maps, maps, 3, (1.0, -1.0, 1.0))
    with pytest.raises(
        ValueError,
        match=r"spacing of shape \(N, 3\) needs label maps \(N, \*S\) with the same N, got spacing of shape"
        r" \(3, 3\) for pred of shape \(2, 4, 5, 6\)",
    ):
        hd95_per_class(maps, maps, 3, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"spacing of shape \(N, 3\) needs .* for pred of shape \(4, 5, 6\)"):
        hd95_per_class(maps[0], maps[0], 3, np.ones((1, 3)))
    with pytest.raises(
        ValueError, match=r"pred must have shape \(N, H, W\) or \(H, W\) for 2 spatial dims, got ndim 4"
    ):
        hd95_per_class(maps, maps, 3, (1.0, 1.0))
    with pytest.raises(TypeError, match="spacing must be numbers"):
        hd95_per_class(maps, maps, 3, ("a", "b", "c"))


def test_bad_summary_inputs_raise() -> None:
    d = np.array([[1.0, np.nan]])
    with pytest.raises(ValueError, match=r"dice must be a 2-D array \(N, C-1\), got shape \(2,\)"):
        summarize_structures(d[0], None, ["a", "b"])
    with pytest.raises(ValueError, match="names must be 2 strings"):
        summarize_structures(d, None, ["a"])
    with pytest.raises(ValueError, match="names must be distinct"):
        summarize_structures(d, None, ["a", "a"])
    with pytest.raises(ValueError, match=r"dice must hold values in \[0, 1\]"):
        summarize_structures(d * 2, None, ["a", "b"])
    with pytest.raises(ValueError, match=r"hd95 must have the shape of dice \(1, 2\), got \(1, 3\)"):
        summarize_structures(d, np.zeros((1, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="hd95 must be nan exactly where dice is nan"):
        summarize_structures(d, np.zeros((1, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="hd95 must hold values >= 0"):
        summarize_structures(d, np.array([[-1.0, np.nan]]), ["a", "b"])
