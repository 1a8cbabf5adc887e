"""2D slices cut from 3D volumes (:func:`rndpo.data.load_nifti`): a :class:`SegmentationDataset` that
remembers which volume each slice comes from, so that figures on it can be per volume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from rndpo.data.dataset import SegmentationDataset

__all__ = ["VolumeSlices"]


@dataclass(frozen=True)
class VolumeSlices(SegmentationDataset):
    """A binary 2D dataset of slices: images float32 (N, C, H, W), masks uint8 (N, H, W), and ``groups``
    (required) the (N,) key of the volume each slice was cut from, so splits keep a volume whole.

    :func:`rndpo.metrics.evaluate` scores it per volume (intersections and sizes summed over a volume's
    slices), so a false positive on a slice without the structure lowers the volume's Dice. Subsets
    (:meth:`subset`, :func:`rndpo.data.split_dataset`) stay :class:`VolumeSlices`.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.images.ndim != 4:
            raise ValueError(f"images must be 2D slices (N, C, H, W), got shape {self.images.shape}")
        if self.groups is None:
            raise ValueError(
                "groups must hold the volume key of each slice, an array of shape (N,), got None"
            )

    @property
    def volumes(self) -> np.ndarray:
        """The (N,) volume key of each slice (the dataset's ``groups``)."""
        return cast(np.ndarray, self.groups)  # never None: checked on construction
