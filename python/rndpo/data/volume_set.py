"""Volumes of several cases at their own shapes (:class:`VolumeSet`), read from NIfTI dataset folders
(:mod:`rndpo.data.dataset_folder`), and the two per-volume rules used on the way in: images normalised
per channel (:func:`normalize_volume`) and label file values mapped to classes 0..C-1
(:func:`rndpo.data.label_scheme.map_label_values`).

Shapes: images float32 (C, z, y, x), masks uint8 (z, y, x), rndpo's array-axis order of NIfTI voxels
(see :mod:`rndpo.data.nifti_io`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rndpo.data.dataset import SegmentationDataset
from rndpo.data.loaders import scale_volume
from rndpo.data.nifti_io import VolumeInfo
from rndpo.data.resample import resample_to_shape, resampled_shape

__all__ = ["VolumeSet", "normalize_volume"]


@dataclass(frozen=True, eq=False)
class VolumeSet:
    """Volumes of several cases, each at its own shape.

    images: float32 (C, z, y, x) per case, normalised (:func:`normalize_volume`); masks: uint8 (z, y, x)
    class maps 0..num_classes-1 per case, or None (unlabeled); references: the header of each case's
    first image file (affine, header, spacing), the grid outputs are written on; image_paths / label_paths:
    the source files; class_names / label_values: from dataset.json (empty when unlabeled).
    """

    case_names: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray | None, ...]
    references: tuple[VolumeInfo, ...]
    image_paths: tuple[tuple[Path, ...], ...]
    label_paths: tuple[Path | None, ...]
    class_names: tuple[str, ...] = ()
    label_values: tuple[int, ...] = ()
    target_spacing: tuple[float, ...] | None = None  # set by :meth:`resampled`

    def __len__(self) -> int:
        return len(self.case_names)

    @property
    def affines(self) -> tuple[np.ndarray, ...]:
        """float64 (4, 4) per case."""
        return tuple(r.affine for r in self.references)

    @property
    def headers(self) -> tuple[Any, ...]:
        """The nibabel header of each case's first image file."""
        return tuple(r.header for r in self.references)

    @property
    def spacings(self) -> np.ndarray:
        """float64 (N, 3) voxel sizes in mm, (z, y, x)."""
        return np.array([r.spacing for r in self.references], dtype=np.float64).reshape(-1, 3)

    @property
    def shapes(self) -> np.ndarray:
        """int64 (N, 3): each case's (z, y, x)."""
        return np.array([im.shape[1:] for im in self.images], dtype=np.int64).reshape(-1, 3)

    def resampled(self, spacing: Sequence[float]) -> VolumeSet:
        """Every case resampled to ``spacing`` (z, y, x) mm (images linearly, labels by nearest
        neighbour; :mod:`rndpo.data.resample`); the references stay the files' own grids, and
        :meth:`to_dataset` of the result records ``spacing``."""
        target = tuple(float(s) for s in spacing)
        images, masks = [], []
        for im, mk, sp in zip(self.images, self.masks, self.spacings, strict=True):
            shape = resampled_shape(im.shape[1:], sp, target)
            images.append(resample_to_shape(im, shape))
            masks.append(None if mk is None else resample_to_shape(mk, shape, labels=True))
        return dataclasses.replace(self, images=tuple(images), masks=tuple(masks), target_spacing=target)

    def to_dataset(
        self, name: str, *, shape: Sequence[int] | None = None
    ) -> tuple[SegmentationDataset, np.ndarray]:
        """Zero-pad every case, centred, to one shape (the largest over cases, or ``shape`` (z, y, x)),
        as a 3-D :class:`SegmentationDataset` (ids = case names, spacing set; masks of unlabeled cases
        are all background), and the int64 (N, 3, 2) box (start, stop) per axis of each case inside the
        padded array: ``images[n][:, b[0, 0]:b[0, 1], b[1, 0]:b[1, 1], b[2, 0]:b[2, 1]]`` is the case."""
        if not self.case_names:
            raise ValueError("the volume set is empty: no case to put in a dataset")
        shapes = self.shapes
        target = shapes.max(axis=0) if shape is None else np.asarray(shape, dtype=np.int64).ravel()
        if target.shape != (3,) or (target < 1).any():
            raise ValueError(f"shape must be three sizes (z, y, x) >= 1, got {shape!r}")
        too_big = np.flatnonzero((shapes > target).any(axis=1))
        if too_big.size:
            i = int(too_big[0])
            raise ValueError(
                f"shape {tuple(target.tolist())} is smaller than case {self.case_names[i]}"
                f" of shape {tuple(shapes[i].tolist())}"
            )
        start = (target - shapes) // 2
        boxes = np.stack([start, start + shapes], axis=-1).astype(np.int64)
        channels = self.images[0].shape[0]
        n = len(self)
        images = np.zeros((n, channels, *target.tolist()), dtype=np.float32)
        masks = np.zeros((n, *target.tolist()), dtype=np.uint8)
        for i, (im, mk) in enumerate(zip(self.images, self.masks, strict=True)):
            if im.shape[0] != channels:
                raise ValueError(
                    f"case {self.case_names[i]} has {im.shape[0]} channels, the first has {channels}"
                )
            z, y, x = (slice(int(a), int(b)) for a, b in boxes[i])
            images[i, :, z, y, x] = im
            if mk is not None:
                masks[i, z, y, x] = mk
        num_classes = len(self.class_names) if self.class_names else 2
        dataset = SegmentationDataset(
            images,
            masks,
            np.array(self.case_names),
            None,
            name,
            num_classes=num_classes,
            class_names=self.class_names,
            label_values=self.label_values,
            spacing=self.spacings if self.target_spacing is None else np.tile(self.target_spacing, (n, 1)),
        )
        return dataset, boxes


def normalize_volume(data: np.ndarray, path: str | Path) -> np.ndarray:
    """Raw voxels (z, y, x) or (C, z, y, x), any real dtype -> float32 (C, z, y, x), each channel
    clipped to its own 0.5 and 99.5 percentiles and rescaled to [0, 1] (:func:`rndpo.data.scale_volume`)."""
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"image {path}: expected a volume (z, y, x) or (C, z, y, x), got shape {data.shape}")
    return np.stack([scale_volume(ch, None, Path(path)) for ch in data])
