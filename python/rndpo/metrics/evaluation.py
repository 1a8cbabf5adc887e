"""Evaluating a segmenter on a labeled dataset: per-image (or, for slices of volumes, per-volume) metrics
and their means."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from rndpo.data import SegmentationDataset, VolumeSlices
from rndpo.inference import predict_probs
from rndpo.metrics.segmentation import assd, dice, dice_from_counts, hd95, iou

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """float64 (M,) metrics of thresholded predictions, one per image, or one per volume for
    :class:`~rndpo.data.VolumeSlices`; ``means()`` gives their averages.

    volumes: the (M,) volume key of each entry when scored per volume (None: per image, M = N);
    n_excluded: volumes empty in both truth and prediction, left out of every array (not scored 1).
    """

    dice: np.ndarray
    iou: np.ndarray
    hd95: np.ndarray | None = None
    assd: np.ndarray | None = None
    volumes: np.ndarray | None = None
    n_excluded: int = 0

    def means(self) -> dict[str, float]:
        """{"dice": ..., "iou": ..., "hd95": ..., "assd": ...} (distances only when computed); nan when
        nothing was scored (every volume excluded)."""

        def mean(x: np.ndarray) -> float:
            return float(x.mean()) if x.size else float("nan")

        out = {"dice": mean(self.dice), "iou": mean(self.iou)}
        if self.hd95 is not None and self.assd is not None:
            out |= {"hd95": mean(self.hd95), "assd": mean(self.assd)}
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

    A :class:`~rndpo.data.VolumeSlices` dataset (NIfTI volumes sliced to 2D) is scored per volume:
    intersections and sizes are summed over all of a volume's slices, empty ones included, before Dice
    and IoU, so a blob drawn on a slice without the structure counts; HD95 and ASSD are the mean over
    the volume's slices that hold foreground in truth or prediction of the 2D figure (in units of
    ``spacing``). A volume empty in truth and prediction is left out and counted (``n_excluded``).
    distances: also compute HD95 and ASSD (slower; see :mod:`rndpo.metrics.segmentation` for the
    empty-mask conventions).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    pred = predict_probs(model, data.images, batch_size=batch_size, device=device) > threshold
    masks = data.masks
    if isinstance(data, VolumeSlices):
        return _per_volume(pred, masks, data.volumes, distances=distances, spacing=spacing)
    dice_, iou_ = np.asarray(dice(pred, masks)), np.asarray(iou(pred, masks))  # (N,) float64
    if not distances:
        return Evaluation(dice_, iou_)
    return Evaluation(
        dice_,
        iou_,
        np.asarray(hd95(pred, masks, spacing=spacing)),
        np.asarray(assd(pred, masks, spacing=spacing)),
    )


def _per_volume(
    pred: np.ndarray,
    masks: np.ndarray,
    volumes: np.ndarray,
    *,
    distances: bool,
    spacing: tuple[float, float],
) -> Evaluation:
    """Per-volume scores of bool (N, H, W) predictions against uint8 (N, H, W) masks, volume key (N,)."""
    keys, index = np.unique(volumes, return_inverse=True)
    p, t = pred.reshape(len(pred), -1), masks.reshape(len(masks), -1) != 0

    def per_volume(per_slice: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=per_slice, minlength=keys.size)

    inter = per_volume(np.count_nonzero(p & t, axis=1))
    size_p, size_t = per_volume(np.count_nonzero(p, axis=1)), per_volume(np.count_nonzero(t, axis=1))
    union = size_p + size_t - inter
    scored = union > 0  # a volume empty in truth and prediction has no figure
    dice_ = dice_from_counts(inter[scored], size_p[scored], size_t[scored])
    iou_ = inter[scored] / union[scored]
    excluded = int(np.count_nonzero(~scored))
    if not distances:
        return Evaluation(dice_, iou_, volumes=keys[scored], n_excluded=excluded)
    active = p.any(axis=1) | t.any(axis=1)  # slices with foreground in truth or prediction
    count = per_volume(active.astype(np.float64))[scored]  # >= 1 in every scored volume

    def mean_over_active(metric: Callable[..., np.ndarray | float]) -> np.ndarray:
        values = np.zeros(len(pred), dtype=np.float64)
        if active.any():
            values[active] = metric(pred[active], masks[active], spacing=spacing)
        return per_volume(values)[scored] / count

    return Evaluation(dice_, iou_, mean_over_active(hd95), mean_over_active(assd), keys[scored], excluded)
