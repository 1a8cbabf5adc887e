"""Evaluating a segmenter on a labeled dataset: per-image (or, for slices of volumes, per-volume) metrics
and their means; label maps (num_classes > 2) and volumes are scored per structure.

Per structure (3D volumes, or any dataset with num_classes > 2): each volume's label map (argmax of the
softmax, or the thresholded sigmoid of a binary head) is compared with the truth in the volume's own grid;
Dice of each structure 1..C-1 (:func:`~rndpo.metrics.structures.dice_per_class`) and HD95 in mm with the
dataset's spacing (:func:`~rndpo.metrics.structures.hd95_per_class`). A structure empty in truth and
prediction is left out of that structure's mean and counted, never scored 1; HD95 with one side empty is
counted apart. The headline Dice is the mean over structures of each structure's mean over the volumes
where it was scored; the per-volume Dice (for paired statistics) is each volume's mean over its scored
structures, and a volume with no scored structure is left out and counted (``n_excluded``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from rndpo.data import SegmentationDataset, VolumeSlices
from rndpo.inference import labels_from_probs, predict_probs, sliding_window_probs
from rndpo.metrics.segmentation import assd, dice, dice_from_counts, hd95, iou
from rndpo.metrics.structures import StructureSummary, dice_per_class, hd95_per_class, summarize_structures

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """float64 (M,) metrics of thresholded predictions, one per image, or one per volume for
    :class:`~rndpo.data.VolumeSlices`; ``means()`` gives their averages.

    volumes: the (M,) volume key of each entry when scored per volume (None: per image, M = N);
    n_excluded: volumes empty in both truth and prediction, left out of every array (not scored 1).
    structures: per-structure scoring (label maps, volumes): :class:`StructureSummary` of every
    volume's per-structure Dice (and HD95 in mm when distances were computed); ``means()`` then takes
    Dice and HD95 from it (the mean over structures), and ``assd`` is None.
    """

    dice: np.ndarray
    iou: np.ndarray
    hd95: np.ndarray | None = None
    assd: np.ndarray | None = None
    volumes: np.ndarray | None = None
    n_excluded: int = 0
    structures: StructureSummary | None = None

    def means(self) -> dict[str, float]:
        """{"dice": ..., "iou": ..., "hd95": ..., "assd": ...} (distances only when computed); nan when
        nothing was scored (every volume excluded). Per structure: the mean over structures."""

        def mean(x: np.ndarray) -> float:
            return float(x.mean()) if x.size else float("nan")

        out = {"dice": mean(self.dice), "iou": mean(self.iou)}
        if self.structures is not None:
            s = self.structures
            out["dice"] = float("nan") if s.mean_dice is None else s.mean_dice
            if s.mean_hd95 is not None or s.hd95 is not None:
                out["hd95"] = float("nan") if s.mean_hd95 is None else s.mean_hd95
            return out
        if self.hd95 is not None and self.assd is not None:
            out |= {"hd95": mean(self.hd95), "assd": mean(self.assd)}
        return out

    def dice_per_class(self) -> dict[str, float | None]:
        """{structure name: mean Dice over the volumes where it was scored} (per-structure scoring), or {}."""
        if self.structures is None:
            return {}
        return {n: _or_none(d) for n, d in zip(self.structures.names, self.structures.dice, strict=True)}

    def hd95_per_class(self) -> dict[str, float | None]:
        """{structure name: mean HD95 in mm over its scored volumes} when distances were computed, or {}."""
        s = self.structures
        if s is None or s.hd95 is None:
            return {}
        return {n: _or_none(d) for n, d in zip(s.names, s.hd95, strict=True)}


def _or_none(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def evaluate(
    model: nn.Module,
    data: SegmentationDataset,
    *,
    distances: bool = True,
    threshold: float = 0.5,
    spacing: tuple[float, float] = (1.0, 1.0),
    batch_size: int = 64,
    device: str = "cpu",
    roi_size: Sequence[int] | None = None,
) -> Evaluation:
    """Predict ``data`` in eval mode, threshold the foreground probability and score every image.

    A :class:`~rndpo.data.VolumeSlices` dataset (NIfTI volumes sliced to 2D) is scored per volume:
    intersections and sizes are summed over all of a volume's slices, empty ones included, before Dice
    and IoU, so a blob drawn on a slice without the structure counts; HD95 and ASSD are the mean over
    the volume's slices that hold foreground in truth or prediction of the 2D figure (in units of
    ``spacing``). A volume empty in truth and prediction is left out and counted (``n_excluded``).
    distances: also compute HD95 and ASSD (slower; see :mod:`rndpo.metrics.segmentation` for the
    empty-mask conventions).
    Volumes and label maps (``data.spatial_dims == 3`` or ``data.num_classes > 2``) are scored per
    structure (module docstring), predicted by sliding windows of ``roi_size`` (None: whole images), HD95
    in mm with ``data.spacing`` (1 mm when the dataset has none; ``spacing`` is for 2D images).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if data.spatial_dims == 3 or data.num_classes > 2:
        return _per_structure(model, data, distances, threshold, roi_size, device)
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


#: volumes predicted at once when scoring per structure (bounds the probabilities held in memory)
_VOLUMES_PER_CHUNK = 8


def _per_structure(
    model: nn.Module,
    data: SegmentationDataset,
    distances: bool,
    threshold: float,
    roi_size: Sequence[int] | None,
    device: str,
) -> Evaluation:
    """Per-structure scores of ``model`` on every image or volume of ``data`` (module docstring)."""
    n, c = len(data), data.num_classes
    roi = tuple(roi_size) if roi_size else tuple(int(x) for x in data.images.shape[2:])
    pred = np.empty(data.masks.shape, dtype=np.uint8)
    for start in range(0, n, _VOLUMES_PER_CHUNK):
        part = slice(start, start + _VOLUMES_PER_CHUNK)
        probs = sliding_window_probs(model, data.images[part], roi, device=device)
        if probs.shape[1] not in (1, c):
            raise ValueError(
                f"model has {probs.shape[1]} output channels, but data has num_classes = {c}"
                f" (expected {c}, or 1 for a binary model)"
            )
        pred[part] = labels_from_probs(probs, threshold=threshold)
    if isinstance(data, VolumeSlices):  # slices of volumes: each volume's slices stacked back, no HD95
        keys = np.unique(data.volumes)
        rows = [np.flatnonzero(data.volumes == key) for key in keys]
        dice_ = np.stack([dice_per_class(pred[r][None], data.masks[r][None], c)[0] for r in rows])
        return _structure_evaluation(dice_, None, data.structures, keys)
    dice_ = dice_per_class(pred, data.masks, c, spatial_dims=data.spatial_dims)
    hd = None
    if distances:
        spacing = data.spacing if data.spacing is not None else np.ones(data.spatial_dims)
        hd = hd95_per_class(pred, data.masks, c, spacing)
    return _structure_evaluation(dice_, hd, data.structures, data.ids)


def _structure_evaluation(
    dice_: np.ndarray, hd: np.ndarray | None, names: tuple[str, ...], keys: np.ndarray
) -> Evaluation:
    """The Evaluation of per-structure Dice float64 (M, C-1) (nan: structure empty in both) and HD95
    (M, C-1) or None, for the M volumes named by ``keys``."""
    scored = ~np.all(np.isnan(dice_), axis=1)
    with np.errstate(invalid="ignore"):
        per_volume = np.nanmean(dice_[scored], axis=1) if scored.any() else np.empty(0)
        iou_ = np.nanmean(dice_[scored] / (2.0 - dice_[scored]), axis=1) if scored.any() else np.empty(0)
    return Evaluation(
        per_volume.astype(np.float64),
        iou_.astype(np.float64),
        volumes=keys[scored],
        n_excluded=int(np.count_nonzero(~scored)),
        structures=summarize_structures(dice_, hd, names),
    )
