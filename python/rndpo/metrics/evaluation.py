"""Evaluating a segmenter on a labeled dataset: per-image metrics and their means."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from rndpo.data import SegmentationDataset
from rndpo.inference import predict_probs
from rndpo.metrics.segmentation import assd, dice, hd95, iou

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """Per-image float64 (N,) metrics of thresholded predictions; ``means()`` gives their averages."""

    dice: np.ndarray
    iou: np.ndarray
    hd95: np.ndarray | None = None
    assd: np.ndarray | None = None

    def means(self) -> dict[str, float]:
        """{"dice": ..., "iou": ..., "hd95": ..., "assd": ...} (distances only when computed)."""
        out = {"dice": float(self.dice.mean()), "iou": float(self.iou.mean())}
        if self.hd95 is not None and self.assd is not None:
            out |= {"hd95": float(self.hd95.mean()), "assd": float(self.assd.mean())}
        return out


def evaluate(
    model: nn.Module,
    data: SegmentationDataset,
    *,
    distances: bool = True,
    threshold: float = 0.5,
    spacing: tuple[float, float] = (1.0, 1.0),
    batch_size: int = 64,
    device: str = "cpu",
) -> Evaluation:
    """Predict ``data`` in eval mode, threshold the foreground probability and score every image.

    distances: also compute HD95 and ASSD (slower; see :mod:`rndpo.metrics.segmentation` for the
    empty-mask conventions).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    pred = predict_probs(model, data.images, batch_size=batch_size, device=device) > threshold
    masks = data.masks
    dice_, iou_ = np.asarray(dice(pred, masks)), np.asarray(iou(pred, masks))  # (N,) float64
    if not distances:
        return Evaluation(dice_, iou_)
    return Evaluation(
        dice_,
        iou_,
        np.asarray(hd95(pred, masks, spacing=spacing)),
        np.asarray(assd(pred, masks, spacing=spacing)),
    )
