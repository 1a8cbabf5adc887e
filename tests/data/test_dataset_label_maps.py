"""SegmentationDataset with label maps (num_classes > 2), 3D volumes, structure names and spacing."""

from __future__ import annotations

import numpy as np
import pytest

from rndpo.data import SegmentationDataset, split_dataset


def _volumes(n: int = 6, classes: int = 3) -> SegmentationDataset:
    rng = np.random.default_rng(0)
    return SegmentationDataset(
        rng.random((n, 1, 4, 5, 6), dtype=np.float32),
        rng.integers(0, classes, (n, 4, 5, 6), dtype=np.uint8),
        np.array([f"case{i}" for i in range(n)]),
        np.arange(n) // 2,
        "vols",
        num_classes=classes,
        class_names=("background", "anterior", "posterior")[:classes],
        label_values=(0, 1, 4)[:classes],
        spacing=np.tile([2.0, 1.0, 0.5], (n, 1)),
    )


def test_volumes_with_label_maps_keep_their_metadata_through_subset_and_split() -> None:
    ds = _volumes()
    assert ds.spatial_dims == 3 and ds.structures == ("anterior", "posterior")
    sub = ds.subset(np.array([4, 1]))
    assert sub.num_classes == 3 and sub.label_values == (0, 1, 4)
    np.testing.assert_array_equal(sub.masks, ds.masks[[4, 1]])
    np.testing.assert_array_equal(sub.spacing, ds.spacing[[4, 1]])
    splits = split_dataset(ds, label_budget=1, val_fraction=0.2, test_fraction=0.2, seed=0)
    got = sorted(i for part in (splits.labeled, splits.unlabeled, splits.val, splits.test) for i in part.ids)
    assert got == sorted(ds.ids.tolist())
    assert all(part.class_names == ds.class_names for part in (splits.labeled, splits.test))


def test_defaults_name_the_classes() -> None:
    rng = np.random.default_rng(1)
    im = rng.random((2, 1, 3, 3), dtype=np.float32)
    binary = SegmentationDataset(im, np.zeros((2, 3, 3), np.uint8), np.array(["a", "b"]))
    assert binary.class_names == ("background", "foreground") and binary.label_values == (0, 1)
    four = SegmentationDataset(im, np.full((2, 3, 3), 3, np.uint8), np.array(["a", "b"]), num_classes=4)
    assert four.structures == ("class_1", "class_2", "class_3") and four.spatial_dims == 2


def test_label_map_errors_name_the_argument() -> None:
    ds = _volumes()
    with pytest.raises(ValueError, match=r"masks must hold labels 0 to 1 \(num_classes = 2\)|binary"):
        SegmentationDataset(ds.images, ds.masks, ds.ids)
    with pytest.raises(
        ValueError, match=r"masks must hold labels 0 to 2 \(num_classes = 3\), got values \{0, 1, 3\}"
    ):
        SegmentationDataset(ds.images, ds.masks + (ds.masks == 2), ds.ids, num_classes=3)
    with pytest.raises(ValueError, match=r"num_classes must be an integer from 2 to 255, got 1"):
        SegmentationDataset(ds.images, ds.masks, ds.ids, num_classes=1)
    with pytest.raises(ValueError, match=r"masks must be a 4-D array \(N, D, H, W\)"):
        SegmentationDataset(ds.images, ds.masks[:, 0], ds.ids, num_classes=3)
    with pytest.raises(ValueError, match="class_names must be 3 distinct"):
        SegmentationDataset(ds.images, ds.masks, ds.ids, num_classes=3, class_names=("a", "a", "b"))
    with pytest.raises(ValueError, match="label_values must be 3 distinct"):
        SegmentationDataset(ds.images, ds.masks, ds.ids, num_classes=3, label_values=(0, 1))
    with pytest.raises(
        ValueError, match=r"spacing must be None or positive finite sizes in mm of shape \(N, 3\)"
    ):
        SegmentationDataset(ds.images, ds.masks, ds.ids, num_classes=3, spacing=np.ones((6, 2)))
    with pytest.raises(ValueError, match="spacing must be"):
        SegmentationDataset(ds.images, ds.masks, ds.ids, num_classes=3, spacing=np.zeros((6, 3)))
