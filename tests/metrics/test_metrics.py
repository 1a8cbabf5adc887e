"""rndpo.metrics: closed-form cases, brute-force oracles, MONAI agreement, empty-mask conventions, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
)
from scipy import ndimage, stats

from oracles import oracle_assd, oracle_hd95, oracle_metric_dice, oracle_metric_iou
from rndpo.metrics import MetricSummary, assd, dice, dice_from_counts, hd95, iou, kendall, spearman, summarize

# MONAI 1.6 passes its own deprecated argument internally (get_mask_edges(always_return_as_numpy=...))
_MONAI_WARNING = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")


def _square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[top : top + side, left : left + side] = 1
    return m


def _random_masks(seed: int, n: int, h: int, w: int, smooth: float, level: float) -> np.ndarray:
    """bool (n, h, w): thresholded smoothed noise, blob-like at smooth > 0."""
    rng = np.random.default_rng(seed)
    field = (
        ndimage.gaussian_filter(rng.random((n, h, w)), (0, smooth, smooth))
        if smooth
        else rng.random((n, h, w))
    )
    field = (field - field.mean(axis=(1, 2), keepdims=True)) / (field.std(axis=(1, 2), keepdims=True) + 1e-12)
    return field > level


# --- closed forms ---


@pytest.mark.parametrize(("side", "shift"), [(8, 0), (8, 1), (8, 3), (10, 5), (6, 6), (6, 9)])
def test_dice_iou_of_shifted_squares(side: int, shift: int) -> None:
    a = _square((24, 24), 4, 2, side)
    b = _square((24, 24), 4, 2 + shift, side)
    overlap = side * max(side - shift, 0)
    assert dice(a, b) == pytest.approx(2 * overlap / (2 * side * side))
    assert iou(a, b) == pytest.approx(overlap / (2 * side * side - overlap))


@pytest.mark.parametrize(
    ("p1", "p2", "spacing"),
    [
        ((3, 3), (3, 7), (1.0, 1.0)),
        ((0, 0), (5, 12), (1.0, 1.0)),
        ((2, 9), (6, 1), (0.5, 2.0)),
        ((4, 4), (4, 4), (3, 1)),
    ],
)
def test_surface_distances_of_single_pixels(p1: tuple[int, int], p2: tuple[int, int], spacing: tuple) -> None:
    a = np.zeros((8, 16), dtype=bool)
    b = np.zeros((8, 16), dtype=bool)
    a[p1] = True
    b[p2] = True
    expected = math.hypot((p1[0] - p2[0]) * spacing[0], (p1[1] - p2[1]) * spacing[1])
    assert hd95(a, b, spacing) == pytest.approx(expected)
    assert assd(a, b, spacing) == pytest.approx(expected)


@pytest.mark.parametrize(("offset", "col_spacing"), [(1, 1.0), (4, 1.0), (3, 0.7), (7, 2.5)])
def test_parallel_lines_are_offset_apart(offset: int, col_spacing: float) -> None:
    # a 1-pixel-wide line is all boundary; each point's nearest point on the other line is straight across
    a = np.zeros((20, 20), dtype=bool)
    b = np.zeros((20, 20), dtype=bool)
    a[3:15, 5] = True
    b[3:15, 5 + offset] = True
    assert hd95(a, b, (1.0, col_spacing)) == pytest.approx(offset * col_spacing)
    assert assd(a, b, (1.0, col_spacing)) == pytest.approx(offset * col_spacing)
    assert dice(a, b) == 0.0


def test_identical_masks_are_perfect() -> None:
    m = _random_masks(3, 4, 16, 16, 1.5, 0.3)
    np.testing.assert_array_equal(dice(m, m), 1.0)
    np.testing.assert_array_equal(iou(m, m), 1.0)
    np.testing.assert_array_equal(hd95(m, m), 0.0)
    np.testing.assert_array_equal(assd(m, m), 0.0)


def test_border_pixels_are_boundary() -> None:
    # the full image's boundary is its frame; a full image against a one-pixel-smaller square at the corner
    full = np.ones((6, 6), dtype=bool)
    inner = np.zeros((6, 6), dtype=bool)
    inner[:5, :5] = True
    # boundary of `inner`: rows 0 and 4, cols 0 and 4 inside [0,5)^2; of `full`: rows/cols 0 and 5
    assert hd95(full, full) == 0.0
    assert hd95(full, inner) == pytest.approx(oracle_hd95(full, inner))
    assert assd(full, inner) == pytest.approx(oracle_assd(full, inner))
    assert assd(full, inner) > 0.0


# --- empty masks ---


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0)])
def test_empty_mask_conventions(spacing: tuple[float, float]) -> None:
    empty = np.zeros((2, 10, 14), dtype=bool)
    some = empty.copy()
    some[:, 2:5, 3:9] = True
    diag = math.hypot(10 * spacing[0], 14 * spacing[1])
    # both empty
    np.testing.assert_array_equal(dice(empty, empty), 1.0)
    np.testing.assert_array_equal(iou(empty, empty), 1.0)
    np.testing.assert_array_equal(hd95(empty, empty, spacing), 0.0)
    np.testing.assert_array_equal(assd(empty, empty, spacing), 0.0)
    # exactly one empty, either way round: finite worst case
    for a, b in ((empty, some), (some, empty)):
        np.testing.assert_array_equal(dice(a, b), 0.0)
        np.testing.assert_array_equal(iou(a, b), 0.0)
        np.testing.assert_allclose(hd95(a, b, spacing), diag)
        np.testing.assert_allclose(assd(a, b, spacing), diag)


def test_mixed_batch_keeps_per_image_conventions() -> None:
    pred = np.zeros((3, 8, 8), dtype=np.uint8)
    target = np.zeros((3, 8, 8), dtype=np.uint8)
    pred[1, 2:4, 2:4] = 1  # image 1: target empty
    pred[2, 2:4, 2:4] = 1
    target[2, 2:4, 3:5] = 1  # image 2: a one-pixel shift
    np.testing.assert_allclose(dice(pred, target), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(hd95(pred, target), [0.0, math.hypot(8, 8), 1.0])


# --- oracles, MONAI ---


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 3),
    h=st.integers(3, 14),
    w=st.integers(3, 14),
    smooth=st.sampled_from([0.0, 1.0, 2.0]),
    level=st.floats(-1.0, 2.5),
    spacing=st.tuples(st.floats(0.25, 3.0), st.floats(0.25, 3.0)),
)
def test_metrics_match_brute_force_oracles(
    seed: int, n: int, h: int, w: int, smooth: float, level: float, spacing: tuple[float, float]
) -> None:
    pred = _random_masks(seed, n, h, w, smooth, level)
    target = _random_masks(seed + 1, n, h, w, smooth, level)
    np.testing.assert_allclose(
        dice(pred, target), [oracle_metric_dice(p, t) for p, t in zip(pred, target, strict=True)]
    )
    np.testing.assert_allclose(
        iou(pred, target), [oracle_metric_iou(p, t) for p, t in zip(pred, target, strict=True)]
    )
    np.testing.assert_allclose(
        hd95(pred, target, spacing),
        [oracle_hd95(p, t, spacing) for p, t in zip(pred, target, strict=True)],
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        assd(pred, target, spacing),
        [oracle_assd(p, t, spacing) for p, t in zip(pred, target, strict=True)],
        rtol=1e-9,
    )


def _monai(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float]) -> dict[str, np.ndarray]:
    p = torch.from_numpy(pred[:, None].astype(np.float32))
    t = torch.from_numpy(target[:, None].astype(np.float32))
    return {
        "dice": compute_dice(p, t, include_background=True).numpy()[:, 0],
        "iou": compute_iou(p, t, include_background=True).numpy()[:, 0],
        "hd95": compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=spacing
        ).numpy()[:, 0],
        "assd": compute_average_surface_distance(
            p, t, include_background=True, symmetric=True, spacing=spacing
        ).numpy()[:, 0],
    }


@_MONAI_WARNING
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(6, 32),
    w=st.integers(6, 32),
    smooth=st.sampled_from([0.0, 1.0, 2.5]),
    level=st.floats(-0.5, 1.5),
    spacing=st.tuples(st.floats(0.2, 4.0), st.floats(0.2, 4.0)),
)
def test_metrics_match_monai_on_random_masks(
    seed: int, h: int, w: int, smooth: float, level: float, spacing: tuple[float, float]
) -> None:
    pred = _random_masks(seed, 4, h, w, smooth, level)
    target = _random_masks(seed + 7, 4, h, w, smooth, level)
    keep = pred.any(axis=(1, 2)) & target.any(axis=(1, 2))  # MONAI warns and gives inf/nan on empty masks
    assume(keep.any())  # a drawn case without a scorable image is discarded, not passed
    pred, target = pred[keep], target[keep]
    ref = _monai(pred, target, spacing)
    np.testing.assert_allclose(dice(pred, target), ref["dice"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(iou(pred, target), ref["iou"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hd95(pred, target, spacing), ref["hd95"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(assd(pred, target, spacing), ref["assd"], rtol=1e-4, atol=1e-4)


# table cases from MONAI-style fixtures: squares and discs with known overlaps, compared with MONAI
_DISC = np.hypot(*np.meshgrid(np.arange(32) - 15.5, np.arange(32) - 15.5, indexing="ij"))
TABLE_CASES = [
    ("shifted squares", _square((32, 32), 5, 5, 12), _square((32, 32), 8, 9, 12), (1.0, 1.0)),
    ("nested squares", _square((32, 32), 4, 4, 20), _square((32, 32), 9, 9, 8), (1.0, 1.0)),
    ("discs anisotropic", (_DISC < 10).astype(np.uint8), (_DISC < 7).astype(np.uint8), (0.8, 1.7)),
    ("disjoint", _square((32, 32), 0, 0, 6), _square((32, 32), 25, 20, 7), (1.0, 1.0)),
    ("touching border", _square((32, 32), 0, 0, 32), _square((32, 32), 3, 0, 20), (2.0, 0.5)),
]


@_MONAI_WARNING
@pytest.mark.parametrize(("name", "pred", "target", "spacing"), TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_table_cases_against_monai(name: str, pred: np.ndarray, target: np.ndarray, spacing: tuple) -> None:
    ref = _monai(pred[None], target[None], spacing)
    assert dice(pred, target) == pytest.approx(float(ref["dice"][0]), rel=1e-5)
    assert iou(pred, target) == pytest.approx(float(ref["iou"][0]), rel=1e-5)
    assert hd95(pred, target, spacing) == pytest.approx(float(ref["hd95"][0]), rel=1e-5)
    assert assd(pred, target, spacing) == pytest.approx(float(ref["assd"][0]), rel=1e-5)


def test_single_image_gives_float_equal_to_batch_entry() -> None:
    pred = _random_masks(11, 3, 12, 12, 1.0, 0.2)
    target = _random_masks(12, 3, 12, 12, 1.0, 0.2)
    for fn in (dice, iou, hd95, assd):
        batch = fn(pred, target)
        assert isinstance(batch, np.ndarray) and batch.dtype == np.float64 and batch.shape == (3,)
        single = fn(pred[1], target[1])
        assert isinstance(single, float)
        assert single == batch[1]


def test_accepts_uint8_float_and_bool() -> None:
    pred = _random_masks(5, 2, 10, 10, 1.0, 0.0)
    target = _random_masks(6, 2, 10, 10, 1.0, 0.0)
    for fn in (dice, iou, hd95, assd):
        expected = fn(pred, target)
        np.testing.assert_array_equal(fn(pred.astype(np.uint8), target.astype(np.float32)), expected)


# --- errors ---


@pytest.mark.parametrize("fn", [dice, iou, hd95, assd])
def test_bad_inputs_raise_clear_errors(fn) -> None:
    good = np.zeros((2, 8, 8), dtype=np.uint8)
    with pytest.raises(
        ValueError, match=r"target must have the same shape as pred \(2, 8, 8\), got \(2, 8, 9\)"
    ):
        fn(good, np.zeros((2, 8, 9), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"pred must be binary .* got values \{0, 2\}"):
        fn(np.full((2, 8, 8), 2, dtype=np.uint8) * (np.arange(8) % 2), good)
    with pytest.raises(ValueError, match=r"target must be binary .*0\.5"):
        fn(good, np.full((2, 8, 8), 0.5))
    with pytest.raises(ValueError, match=r"pred must have shape \(N, H, W\) or \(H, W\), got ndim 4"):
        fn(good[None], good[None])
    with pytest.raises(ValueError, match=r"target must have shape \(N, H, W\) or \(H, W\), got ndim 1"):
        fn(good, np.zeros(8))
    with pytest.raises(TypeError, match="pred must be a bool or numeric array"):
        fn(np.full((8, 8), "a"), good[0])


@pytest.mark.parametrize("fn", [hd95, assd])
def test_bad_spacing_raises(fn) -> None:
    m = np.zeros((8, 8), dtype=bool)
    with pytest.raises(ValueError, match=r"spacing must have length 2 \(row, column\), got length 3"):
        fn(m, m, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing must be finite and > 0"):
        fn(m, m, (1.0, -1.0))
    with pytest.raises(ValueError, match="spacing must be finite and > 0"):
        fn(m, m, (float("nan"), 1.0))


# --- summaries ---


def test_summarize_known_values() -> None:
    s = summarize(np.array([1.0, 2.0, 3.0]))
    assert s == MetricSummary(
        mean=2.0, std=pytest.approx(math.sqrt(2 / 3)), n=3, improved=None, degraded=None
    )
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.5, 4.0 + 1e-9]))
    assert (s.improved, s.degraded, s.n) == (0.25, 0.25, 4)  # +0.5 improved, -1 degraded, 0 and -1e-9 neither
    s = summarize(np.array([1.0, 2.0]), np.array([0.0, 0.0]), tol=1.5)
    assert (s.improved, s.degraded) == (0.5, 0.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=30))
def test_summarize_matches_numpy(pairs: list[tuple[float, float]]) -> None:
    values = np.array([p[0] for p in pairs])
    base = np.array([p[1] for p in pairs])
    s = summarize(values, base, tol=1e-6)
    assert s.mean == pytest.approx(float(np.mean(values)))
    assert s.std == pytest.approx(float(np.std(values)), abs=1e-12)
    assert s.n == len(pairs)
    assert s.improved == pytest.approx(sum(v - b > 1e-6 for v, b in pairs) / len(pairs))
    assert s.degraded == pytest.approx(sum(v - b < -1e-6 for v, b in pairs) / len(pairs))
    assert s.improved + s.degraded <= 1.0


def test_summarize_errors() -> None:
    with pytest.raises(ValueError, match=r"values must be a non-empty 1-D array \(N,\), got shape \(0,\)"):
        summarize(np.array([]))
    with pytest.raises(ValueError, match=r"values must be a non-empty 1-D array \(N,\), got shape \(2, 2\)"):
        summarize(np.ones((2, 2)))
    with pytest.raises(ValueError, match="values must be finite, got 1 non-finite"):
        summarize(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=r"baseline must have the shape of values \(2,\), got \(3,\)"):
        summarize(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="baseline must be finite"):
        summarize(np.ones(2), np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="tol must be finite and >= 0"):
        summarize(np.ones(2), np.ones(2), tol=-1.0)


# --- the one home of Dice from counts and of rank correlations ----------------------------------------


def test_dice_from_counts_broadcasts_and_scores_two_empty_masks_one() -> None:
    inter = np.array([[0, 2], [3, 0]])
    got = dice_from_counts(inter, np.array([[0], [4]]), np.array([[0, 4]]))
    np.testing.assert_array_equal(got, [[1.0, 4 / 4], [6 / 4, 0.0]])
    assert got.dtype == np.float64


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.tuples(st.integers(-3, 3), st.floats(-5, 5, allow_nan=False)), min_size=0, max_size=30)
)
def test_rank_correlations_equal_scipy_or_are_none_where_undefined(values) -> None:
    a = np.array([v[0] for v in values], dtype=np.float64)
    b = np.array([v[1] for v in values], dtype=np.float64)
    defined = a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0
    rho, tau = spearman(a, b), kendall(a, b)
    if not defined:
        assert rho is None and tau is None
        return
    assert rho == pytest.approx(float(stats.spearmanr(a, b).statistic), abs=1e-12)
    assert tau == pytest.approx(float(stats.kendalltau(a, b).statistic), abs=1e-12)


def test_spearman_compares_flat_and_rejects_unequal_sizes() -> None:
    a = np.arange(6.0).reshape(2, 3)
    assert spearman(a, a.ravel()[::-1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="as many values"):
        spearman(np.arange(3.0), np.arange(4.0))


# --- N-D surface distances: the length of spacing says 2D or 3D ---------------------------------------


def _random_volumes(
    seed: int, n: int, shape: tuple[int, int, int], smooth: float, level: float
) -> np.ndarray:
    """bool (n, D, H, W): thresholded smoothed noise, blob-like at smooth > 0."""
    rng = np.random.default_rng(seed)
    field = rng.random((n, *shape))
    if smooth:
        field = ndimage.gaussian_filter(field, (0, smooth, smooth, smooth))
    axes = (1, 2, 3)
    field = (field - field.mean(axis=axes, keepdims=True)) / (field.std(axis=axes, keepdims=True) + 1e-12)
    return field > level


def _oracle_surface_nd(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Brute force in any dimension: boundary voxels (a face neighbour outside the mask or the image), then
    every pairwise distance; returns [pred->target, target->pred] (both masks non-empty)."""

    def boundary(m: np.ndarray) -> np.ndarray:
        points = []
        for idx in np.ndindex(*m.shape):
            if not m[idx]:
                continue
            for axis in range(m.ndim):
                for step in (-1, 1):
                    nb = list(idx)
                    nb[axis] += step
                    if not 0 <= nb[axis] < m.shape[axis] or not m[tuple(nb)]:
                        points.append(idx)
                        break
                else:
                    continue
                break
        return np.array(points, dtype=np.float64) * np.asarray(spacing)

    bp, bt = boundary(pred), boundary(target)
    dist = np.sqrt(((bp[:, None, :] - bt[None, :, :]) ** 2).sum(-1))
    return [dist.min(axis=1), dist.min(axis=0)]


def _oracle_nd(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """(hd95, assd) by brute force, with the module's empty-mask conventions."""
    if not pred.any() and not target.any():
        return 0.0, 0.0
    if not pred.any() or not target.any():
        diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing, strict=True)))
        return diag, diag
    d = _oracle_surface_nd(pred, target, spacing)
    return max(np.percentile(d[0], 95), np.percentile(d[1], 95)), float(np.concatenate(d).mean())


_SPACING_3D = st.tuples(st.floats(0.2, 4.0), st.floats(0.2, 4.0), st.floats(0.2, 4.0))


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)),
    smooth=st.sampled_from([0.0, 1.0]),
    level=st.floats(-1.0, 2.0),
    spacing=_SPACING_3D,
)
def test_3d_metrics_match_brute_force_oracle(
    seed: int, shape: tuple[int, int, int], smooth: float, level: float, spacing: tuple[float, float, float]
) -> None:
    pred = _random_volumes(seed, 2, shape, smooth, level)
    target = _random_volumes(seed + 1, 2, shape, smooth, level)
    ref = np.array([_oracle_nd(p, t, spacing) for p, t in zip(pred, target, strict=True)])
    np.testing.assert_allclose(hd95(pred, target, spacing), ref[:, 0], rtol=1e-9)
    np.testing.assert_allclose(assd(pred, target, spacing), ref[:, 1], rtol=1e-9)


@_MONAI_WARNING
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(4, 14), st.integers(4, 14), st.integers(4, 14)),
    smooth=st.sampled_from([0.0, 1.0, 2.0]),
    level=st.floats(-0.5, 1.5),
    spacing=_SPACING_3D,
)
def test_3d_metrics_match_monai_with_anisotropic_spacing(
    seed: int, shape: tuple[int, int, int], smooth: float, level: float, spacing: tuple[float, float, float]
) -> None:
    pred = _random_volumes(seed, 3, shape, smooth, level)
    target = _random_volumes(seed + 7, 3, shape, smooth, level)
    keep = pred.any(axis=(1, 2, 3)) & target.any(axis=(1, 2, 3))  # MONAI gives inf/nan on empty masks
    assume(keep.any())
    pred, target = pred[keep], target[keep]
    p = torch.from_numpy(pred[:, None].astype(np.float32))
    t = torch.from_numpy(target[:, None].astype(np.float32))
    ref_hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)
    ref_assd = compute_average_surface_distance(
        p, t, include_background=True, symmetric=True, spacing=spacing
    )
    np.testing.assert_allclose(hd95(pred, target, spacing), ref_hd.numpy()[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(assd(pred, target, spacing), ref_assd.numpy()[:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("v1", "v2", "spacing"),
    [
        ((1, 2, 3), (4, 2, 3), (2.5, 1.0, 1.0)),
        ((0, 0, 0), (5, 6, 7), (3.0, 0.5, 0.7)),
        ((2, 2, 2), (2, 2, 2), (1, 2, 3)),
    ],
)
def test_3d_single_voxels_are_their_scaled_distance_apart(
    v1: tuple[int, int, int], v2: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    a = np.zeros((6, 8, 9), dtype=bool)
    b = np.zeros((6, 8, 9), dtype=bool)
    a[v1] = True
    b[v2] = True
    expected = math.sqrt(sum(((i - j) * s) ** 2 for i, j, s in zip(v1, v2, spacing, strict=True)))
    assert hd95(a, b, spacing) == pytest.approx(expected)
    assert assd(a, b, spacing) == pytest.approx(expected)


@pytest.mark.parametrize(("offset", "depth_spacing"), [(1, 1.0), (3, 2.5), (5, 0.4)])
def test_parallel_slabs_are_offset_times_depth_spacing_apart(offset: int, depth_spacing: float) -> None:
    # one-voxel-thick slabs are all boundary; in 3D the nearest point is straight across in depth, whereas
    # reading the volume as a batch of 2D slices would give the image diagonal (slices with one empty mask)
    a = np.zeros((10, 12, 12), dtype=bool)
    b = np.zeros((10, 12, 12), dtype=bool)
    a[2, 2:10, 3:9] = True
    b[2 + offset, 2:10, 3:9] = True
    spacing = (depth_spacing, 0.8, 1.1)
    assert hd95(a, b, spacing) == pytest.approx(offset * depth_spacing)
    assert assd(a, b, spacing) == pytest.approx(offset * depth_spacing)
    np.testing.assert_allclose(hd95(a, b, spacing[1:])[[2, 2 + offset]], math.hypot(12 * 0.8, 12 * 1.1))


def test_the_length_of_spacing_decides_batch_of_slices_or_volume() -> None:
    pred = _random_volumes(21, 2, (5, 9, 8), 1.0, 0.2)
    target = _random_volumes(22, 2, (5, 9, 8), 1.0, 0.2)
    for fn in (hd95, assd):
        # 3-D array, 2-element spacing: a batch of 2D slices, each scored on its own
        slices = fn(pred[0], target[0], (0.7, 1.3))
        assert isinstance(slices, np.ndarray) and slices.shape == (5,)
        np.testing.assert_array_equal(
            slices, [fn(p, t, (0.7, 1.3)) for p, t in zip(pred[0], target[0], strict=True)]
        )
        # 3-D array, 3-element spacing: one volume, a float; 4-D: a batch of volumes
        batch = fn(pred, target, (2.0, 0.7, 1.3))
        assert isinstance(batch, np.ndarray) and batch.dtype == np.float64 and batch.shape == (2,)
        for i in range(2):
            single = fn(pred[i], target[i], np.array([2.0, 0.7, 1.3]))
            assert isinstance(single, float) and single == batch[i]


def test_3d_empty_volumes_follow_the_conventions() -> None:
    empty = np.zeros((2, 4, 10, 14), dtype=bool)
    some = empty.copy()
    some[:, 1:3, 2:5, 3:9] = True
    spacing = (3.0, 0.5, 2.0)
    diag = math.sqrt((4 * 3.0) ** 2 + (10 * 0.5) ** 2 + (14 * 2.0) ** 2)
    for fn in (hd95, assd):
        np.testing.assert_array_equal(fn(empty, empty, spacing), 0.0)
        np.testing.assert_allclose(fn(empty, some, spacing), diag)
        np.testing.assert_allclose(fn(some, empty, spacing), diag)


@pytest.mark.parametrize("fn", [hd95, assd])
def test_mask_and_spacing_combinations_that_do_not_fit_raise(fn) -> None:
    m2, m3, m4, m5 = (np.zeros((4,) * k, dtype=bool) for k in (2, 3, 4, 5))
    with pytest.raises(
        ValueError,
        match=r"spacing must have length 2 \(row, column\), got length 3 for pred of shape \(4, 4\)",
    ):
        fn(m2, m2, (1.0, 1.0, 1.0))
    with pytest.raises(
        ValueError,
        match=r"pred must have shape \(N, H, W\) or \(H, W\), got ndim 4 with shape \(4, 4, 4, 4\), for"
        r" spacing of length 2; a batch of volumes \(N, D, H, W\) needs a 3-element spacing",
    ):
        fn(m4, m4, (1.0, 1.0))
    with pytest.raises(
        ValueError,
        match=r"pred must have shape \(N, D, H, W\) or \(D, H, W\), got ndim 5 .* spacing of length 3",
    ):
        fn(m5, m5, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"target must have shape \(N, D, H, W\) or \(D, H, W\), got ndim 2"):
        fn(m3, m2, (1.0, 1.0, 1.0))
    with pytest.raises(
        ValueError,
        match=r"spacing must have length 2 \(row, column\) or 3 \(depth, row, column\), got length 4",
    ):
        fn(m4, m4, (1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing must have length 2 .* got length 1"):
        fn(m2, m2, (1.0,))
    with pytest.raises(ValueError, match="spacing must be finite and > 0"):
        fn(m3, m3, (1.0, 0.0, 1.0))
    with pytest.raises(TypeError, match="spacing must be a sequence of 2 numbers"):
        fn(m3, m3, 1.0)
    with pytest.raises(
        ValueError, match=r"target must have the same shape as pred \(4, 4, 4\), got \(4, 4, 5\)"
    ):
        fn(m3, np.zeros((4, 4, 5), dtype=bool), (1.0, 1.0, 1.0))
