"""rndpo.metrics.evaluation: evaluate() scores thresholded predictions with rndpo.metrics, image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rndpo.data import SegmentationDataset
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
