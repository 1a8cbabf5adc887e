"""The (image, mask) container :class:`SegmentationDataset` and its seeded, group-aware splits.

Shapes: images are float32 (N, C, H, W) with any finite values (the one image rule, see
:mod:`rndpo.data`); masks are uint8 (N, H, W) with values {0, 1}; ids are str (N,); groups, when set,
are (N,) keys that must never be split across labeled/val/test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DatasetSplits", "SegmentationDataset", "split_dataset"]


@dataclass(frozen=True)
class SegmentationDataset:
    """A set of 2D images with binary masks.

    images: float32 (N, C, H, W), any finite values; masks: uint8 (N, H, W) in {0, 1}; ids: str (N,);
    groups: optional (N,) keys that must not be split across labeled/val/test (e.g. patient ids).
    """

    images: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None = None
    name: str = "dataset"

    def __post_init__(self) -> None:
        im, mk = self.images, self.masks
        if not isinstance(im, np.ndarray) or im.ndim != 4:
            raise ValueError(f"images must be a 4-D array (N, C, H, W), got {_describe(im)}")
        if im.dtype != np.float32:
            raise TypeError(f"images must have dtype float32, got {im.dtype}")
        if not isinstance(mk, np.ndarray) or mk.ndim != 3:
            raise ValueError(f"masks must be a 3-D array (N, H, W), got {_describe(mk)}")
        if mk.dtype != np.uint8:
            raise TypeError(f"masks must have dtype uint8, got {mk.dtype}")
        n, _, h, w = im.shape
        if mk.shape != (n, h, w):
            raise ValueError(f"masks must have shape (N, H, W) = {(n, h, w)} to match images, got {mk.shape}")
        if im.size:
            lo, hi = float(np.min(im)), float(np.max(im))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"images must be finite values, got range [{lo}, {hi}]")
        if mk.size and int(np.max(mk)) > 1:
            raise ValueError(f"masks must be binary with values {{0, 1}}, got values {_some_values(mk)}")
        ids = self.ids
        if not isinstance(ids, np.ndarray) or ids.shape != (n,):
            raise ValueError(f"ids must be an array of shape (N,) = ({n},), got {_describe(ids)}")
        if ids.dtype.kind not in "UO":
            raise TypeError(f"ids must be strings (dtype str or object), got dtype {ids.dtype}")
        if self.groups is not None and (not isinstance(self.groups, np.ndarray) or self.groups.shape != (n,)):
            raise ValueError(
                f"groups must be None or an array of shape (N,) = ({n},), got {_describe(self.groups)}"
            )
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> SegmentationDataset:
        """Rows `index` (int array (M,)) as a new dataset."""
        index = np.asarray(index, dtype=np.int64)
        groups = None if self.groups is None else self.groups[index]
        return SegmentationDataset(self.images[index], self.masks[index], self.ids[index], groups, self.name)


@dataclass(frozen=True)
class DatasetSplits:
    """Disjoint splits of one dataset: labeled (the label budget), unlabeled, val and test."""

    labeled: SegmentationDataset
    unlabeled: SegmentationDataset
    val: SegmentationDataset
    test: SegmentationDataset


# ---
# helpers for messages


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def _some_values(x: np.ndarray, limit: int = 6) -> str:
    values = np.unique(x)
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    return "{" + shown + (", ..." if values.size > limit else "") + "}"


# ---
# splits


def _take_groups(order: np.ndarray, sizes: np.ndarray, target: int) -> int:
    """How many groups (a prefix of `order`) bring the image count closest to `target`, at least one."""
    if order.size == 0:
        return 0
    cum = np.cumsum(sizes[order])
    return int(np.argmin(np.abs(cum - target))) + 1


def split_dataset(
    ds: SegmentationDataset,
    *,
    label_budget: float | int = 0.1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetSplits:
    """Seeded labeled / unlabeled / val / test splits of ``ds``.

    Test and val are carved out first (shares of all images), then the labeled set is taken from the
    remaining train pool: ``label_budget`` is a share of that pool (float in (0, 1]) or a count (int >= 1);
    the rest is unlabeled. With ``ds.groups`` set, whole groups go to one split, so counts are as close to
    the targets as group sizes allow. The same seed gives the same splits; test and val do not depend on
    the label budget, and a smaller budget gives a subset of a larger one's labeled set.
    Each split keeps the dataset's row order.
    """
    if not isinstance(ds, SegmentationDataset):
        raise TypeError(f"ds must be a SegmentationDataset, got {type(ds).__name__}")
    for arg, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
            raise ValueError(f"{arg} must be a number in [0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            "val_fraction + test_fraction must be < 1 to leave a train pool,"
            f" got {val_fraction} + {test_fraction}"
        )
    if isinstance(label_budget, bool) or not isinstance(label_budget, (int, float, np.integer, np.floating)):
        raise TypeError(f"label_budget must be a float in (0, 1] or an int >= 1, got {label_budget!r}")
    if isinstance(label_budget, (float, np.floating)) and not 0.0 < label_budget <= 1.0:
        raise ValueError(f"label_budget as a fraction must be in (0, 1], got {label_budget}")
    if isinstance(label_budget, (int, np.integer)) and label_budget < 1:
        raise ValueError(f"label_budget as a count must be >= 1, got {label_budget}")
    n = len(ds)
    if n < 1:
        raise ValueError("ds must hold at least one image, got an empty dataset")

    keys = np.arange(n) if ds.groups is None else ds.groups
    unique, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(unique.size)
    start = 0
    parts: dict[str, np.ndarray] = {}
    for part, frac in (("test", test_fraction), ("val", val_fraction)):
        if frac == 0.0:
            parts[part] = order[:0]
            continue
        k = _take_groups(order[start:], sizes, round(frac * n))
        parts[part] = order[start : start + k]
        start += k
    pool = order[start:]
    pool_size = int(sizes[pool].sum())
    if pool_size == 0:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no train pool"
            f" for {n} images in {unique.size} groups"
        )
    if isinstance(label_budget, (int, np.integer)):
        if label_budget > pool_size:
            raise ValueError(
                f"label_budget={label_budget} exceeds the train pool of {pool_size} images"
                f" ({n} images minus val and test)"
            )
        target = int(label_budget)
    else:
        target = max(1, round(float(label_budget) * pool_size))
    k = pool.size if target >= pool_size else _take_groups(pool, sizes, target)
    parts["labeled"] = pool[:k]
    parts["unlabeled"] = pool[k:]

    def rows(group_ids: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(inverse, group_ids))

    return DatasetSplits(
        labeled=ds.subset(rows(parts["labeled"])),
        unlabeled=ds.subset(rows(parts["unlabeled"])),
        val=ds.subset(rows(parts["val"])),
        test=ds.subset(rows(parts["test"])),
    )
