"""Segmentation datasets: the (image, mask) container, a built-in synthetic default, loaders and splits.

Shapes: images are float32 (N, C, H, W) scaled to [0, 1]; masks are uint8 (N, H, W) with values {0, 1}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SegmentationDataset"]


@dataclass(frozen=True)
class SegmentationDataset:
    """A set of 2D images with binary masks.

    images: float32 (N, C, H, W) in [0, 1]; masks: uint8 (N, H, W) in {0, 1}; ids: str (N,);
    groups: optional (N,) keys that must not be split across labeled/val/test (e.g. patient ids).
    """

    images: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None = None
    name: str = "dataset"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> SegmentationDataset:
        """Rows `index` (int array) as a new dataset."""
        index = np.asarray(index, dtype=np.int64)
        groups = None if self.groups is None else self.groups[index]
        return SegmentationDataset(self.images[index], self.masks[index], self.ids[index], groups, self.name)
