"""rndpo.metrics.evaluation: evaluate() scores thresholded predictions with rndpo.metrics, image by image,
or volume by volume for slices of volumes (VolumeSlices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rndpo.data import SegmentationDataset, VolumeSlices
from rndpo.metrics import assd, dice, hd95, iou
from rndpo.metrics.evaluation import evaluate


class _ImageAsLogit(nn.Module):
    """Logit = 8 (x - 0.5) of the first channel: the foreground probability is known in closed form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * (x[:, :1] - 0.5)


def _data() -> SegmentationDataset:
    rng = np.random.default_rng(0)
    images = rng.random((5, 1, 24, 24), dtype=np.float32)
    masks = (rng.random((5, 24, 24)) < 0.4).astype(np.uint8)
    masks[0] = 0  # an empty target: the metrics' empty-mask conventions apply
    return SegmentationDataset(images, masks, np.array([f"img{i}" for i in range(5)]))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_evaluate_equals_the_metrics_of_the_thresholded_closed_form(threshold: float) -> None:
    data = _data()
    prob = 1.0 / (1.0 + np.exp(-8.0 * (data.images[:, 0].astype(np.float64) - 0.5)))
    pred = prob > threshold
    got = evaluate(_ImageAsLogit(), data, threshold=threshold, spacing=(2.0, 0.5))
    np.testing.assert_allclose(got.dice, dice(pred, data.masks))
    np.testing.assert_allclose(got.iou, iou(pred, data.masks))
    assert got.hd95 is not None and got.assd is not None
    np.testing.assert_allclose(got.hd95, hd95(pred, data.masks, spacing=(2.0, 0.5)))
    np.testing.assert_allclose(got.assd, assd(pred, data.masks, spacing=(2.0, 0.5)))
    means = got.means()
    assert means == pytest.approx(
        {
            k: float(np.mean(v))
            for k, v in {"dice": got.dice, "iou": got.iou, "hd95": got.hd95, "assd": got.assd}.items()
        }
    )


def test_evaluate_without_distances_reports_overlap_only() -> None:
    got = evaluate(_ImageAsLogit(), _data(), distances=False)
    assert got.hd95 is None and got.assd is None
    assert set(got.means()) == {"dice", "iou"}
    assert got.dice.shape == (5,) and got.dice.dtype == np.float64


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1])
def test_evaluate_rejects_a_threshold_outside_the_open_unit_interval(threshold: float) -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        evaluate(_ImageAsLogit(), _data(), threshold=threshold)


# --- slices of volumes (VolumeSlices): per-volume scores


def _slices(pred: np.ndarray, truth: np.ndarray, volumes: list[int]) -> VolumeSlices:
    """A dataset whose images are the predictions of _ImageAsLogit (1 -> foreground) and whose masks
    are the truth: bool/uint8 (N, H, W), volume key of each slice."""
    n = len(pred)
    return VolumeSlices(
        pred.astype(np.float32)[:, None],
        truth.astype(np.uint8),
        np.array([f"s{i}" for i in range(n)]),
        np.array(volumes, dtype=np.int64),
    )


def test_blobs_on_empty_slices_lower_the_per_volume_dice() -> None:
    truth = np.zeros((8, 16, 16), np.uint8)
    pred = np.zeros((8, 16, 16), np.uint8)
    # volume 0 (slices 0-3): the structure on slices 0 and 1 (16 pixels each), drawn exactly, and a 3x3
    # blob on each of its empty slices 2 and 3
    truth[0:2, 4:8, 4:8] = 1
    pred[0:2, 4:8, 4:8] = 1
    pred[2:4, 10:13, 10:13] = 1
    # volume 1 (slices 4-7): the structure on slice 4 (16 pixels), half of it drawn; slices 5-7 empty
    truth[4, 4:8, 4:8] = 1
    pred[4, 4:8, 4:6] = 1
    got = evaluate(_ImageAsLogit(), _slices(pred, truth, [0] * 4 + [1] * 4))
    # by hand: per slice, empty slices dropped (the old report): slices 0, 1 score 1, slice 4 2*8/24
    per_slice = (1.0 + 1.0 + 2 * 8 / 24) / 3
    # per volume: volume 0 has |P n T| = 32, |P| = 32 + 2 * 9, |T| = 32; volume 1 2*8/24
    volume0, volume1 = 2 * 32 / (50 + 32), 2 * 8 / (8 + 16)
    np.testing.assert_allclose(got.dice, [volume0, volume1])
    np.testing.assert_allclose(got.iou, [32 / 50, 8 / 16])
    assert got.means()["dice"] == pytest.approx((volume0 + volume1) / 2)
    assert got.means()["dice"] < per_slice - 0.15
    np.testing.assert_array_equal(got.volumes, [0, 1])
    assert got.n_excluded == 0
    # the old figure: a plain 2D dataset of the slices with foreground, scored image by image
    keep = truth.any(axis=(1, 2))
    ds = _slices(pred, truth, [0] * 8)
    old = evaluate(_ImageAsLogit(), SegmentationDataset(ds.images[keep], ds.masks[keep], ds.ids[keep]))
    assert old.volumes is None and old.means()["dice"] == pytest.approx(per_slice)


def test_a_volume_empty_in_truth_and_prediction_is_left_out_and_counted() -> None:
    truth = np.zeros((6, 8, 8), np.uint8)
    pred = np.zeros((6, 8, 8), np.uint8)
    truth[0, 2:4, 2:4] = 1  # volume 7: a perfect prediction
    pred[0, 2:4, 2:4] = 1
    pred[4, 0:2, 0:2] = 1  # volume 9: no structure, a false positive: Dice 0, counted
    got = evaluate(_ImageAsLogit(), _slices(pred, truth, [7, 7, 8, 8, 9, 9]))  # volume 8: empty in both
    np.testing.assert_array_equal(got.volumes, [7, 9])
    np.testing.assert_allclose(got.dice, [1.0, 0.0])
    assert got.n_excluded == 1
    assert got.hd95 is not None and got.hd95[0] == 0.0 and got.hd95[1] == pytest.approx(np.hypot(8, 8))
    nothing = evaluate(_ImageAsLogit(), _slices(pred[2:4], truth[2:4], [8, 8]))
    assert nothing.dice.size == 0 and nothing.n_excluded == 1
    assert all(np.isnan(v) for v in nothing.means().values())


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 9),
    n_volumes=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    fill=st.floats(0.0, 0.4),
)
def test_per_volume_scores_match_a_loop_over_volumes(n: int, n_volumes: int, seed: int, fill: float) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 10, 12)) < fill
    pred = rng.random((n, 10, 12)) < fill
    truth[rng.random(n) < 0.5] = False  # many empty slices
    pred[rng.random(n) < 0.5] = False
    volumes = rng.integers(0, n_volumes, n)
    got = evaluate(_ImageAsLogit(), _slices(pred, truth, volumes.tolist()), spacing=(2.0, 0.5))
    want: dict[str, list[float]] = {"dice": [], "iou": [], "hd95": [], "assd": []}
    kept, excluded = [], 0
    for v in sorted(set(volumes.tolist())):
        p, t = pred[volumes == v], truth[volumes == v]
        inter, size_p, size_t = int((p & t).sum()), int(p.sum()), int(t.sum())
        if size_p + size_t == 0:
            excluded += 1
            continue
        kept.append(v)
        want["dice"].append(2 * inter / (size_p + size_t))
        want["iou"].append(inter / (size_p + size_t - inter))
        active = [i for i in range(len(p)) if p[i].any() or t[i].any()]
        for name, metric in (("hd95", hd95), ("assd", assd)):
            want[name].append(float(np.mean([metric(p[i], t[i], spacing=(2.0, 0.5)) for i in active])))
    assert got.n_excluded == excluded
    np.testing.assert_array_equal(got.volumes, kept)
    for name, values in want.items():
        np.testing.assert_allclose(getattr(got, name), values, rtol=1e-12, err_msg=name)
