"""load_nifti(..., labels=[...]) keeps each structure as its own class; slices are scored per volume."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from rndpo.data import VolumeSlices, load_nifti
from rndpo.metrics import evaluate


def _write(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    seg = np.zeros((10, 12, 6), np.uint8)  # (i, j, k): sliced along k
    seg[2:5, 3:7, 1:3] = 1
    seg[5:8, 3:7, 2:4] = 2
    seg[0, 0, 5] = 7  # a value not asked for: background
    image = seg.astype(np.float32) * 50 + 1
    nib.Nifti1Image(image, np.eye(4)).to_filename(tmp_path / "img.nii.gz")
    nib.Nifti1Image(seg, np.eye(4)).to_filename(tmp_path / "seg.nii.gz")
    return tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz", seg


def test_labels_keep_each_structure_as_a_class(tmp_path: Path) -> None:
    img, seg_path, seg = _write(tmp_path)
    ds = load_nifti([img], [seg_path], labels=[2, 1])
    assert isinstance(ds, VolumeSlices) and ds.num_classes == 3 and ds.label_values == (0, 2, 1)
    expected = np.moveaxis(np.select([seg == 2, seg == 1], [1, 2], 0), 2, 0)
    np.testing.assert_array_equal(ds.masks, expected)
    one = load_nifti([img], [seg_path], labels=[1])
    assert one.num_classes == 2 and one.masks.max() == 1  # one structure: a binary mask, as before
    with pytest.raises(ValueError, match="labels must be 1 to 254 distinct positive label values"):
        load_nifti([img], [seg_path], labels=[1, 1])


def test_slices_of_label_maps_are_scored_per_volume(tmp_path: Path) -> None:
    img, seg_path, _ = _write(tmp_path)
    ds = load_nifti([img], [seg_path], labels=[1, 2])

    class Echo(nn.Module):
        """Predicts the truth (written into the image as 50 * label + 1), plus, with ``blob``, class 2
        in one corner of every slice, empty ones included."""

        def __init__(self, blob: bool) -> None:
            super().__init__()
            self.blob = blob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            labels = ((x[:, 0] - 1) / 50).round().long().clamp(0, 2)
            if self.blob:
                labels[:, :2, :2] = 2
            return torch.movedim(nn.functional.one_hot(labels, 3).float() * 10, -1, 1)

    # the slices are normalised to [0, 1] by their percentiles: undo that for the echo model
    raw = VolumeSlices(
        (ds.masks[:, None] * 50 + 1).astype(np.float32), ds.masks, ds.ids, ds.groups, num_classes=3
    )
    perfect = evaluate(Echo(False), raw)
    assert perfect.dice.tolist() == [1.0] and perfect.dice_per_class() == {"class_1": 1.0, "class_2": 1.0}
    blobs = evaluate(Echo(True), raw)
    size_2 = int((ds.masks == 2).sum())
    drawn = 4 * len(ds)  # a 2x2 blob on every slice of the volume
    overlap = int((ds.masks[:, :2, :2] == 2).sum())
    want = 2 * size_2 / (size_2 + size_2 + drawn - overlap)
    assert blobs.dice_per_class()["class_2"] == pytest.approx(want)
