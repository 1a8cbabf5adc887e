"""The (image, mask) container :class:`SegmentationDataset` and its seeded, group-aware splits.

Shapes: images are float32 (N, C, *S) with any finite values (the one image rule, see
:mod:`rndpo.data`), S two spatial dims (H, W) or three (D, H, W); masks are uint8 label maps (N, *S)
with values 0..num_classes-1 (binary {0, 1} when num_classes = 2); ids are str (N,); groups, when set,
are (N,) keys that must never be split across labeled/val/test; spacing, when set, is float64 (N, len(S))
voxel sizes in mm in array-axis order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["DatasetSplits", "SegmentationDataset", "split_dataset"]

MAX_CLASSES = 255


@dataclass(frozen=True)
class SegmentationDataset:
    """A set of 2D images or 3D volumes with integer label maps.

    images: float32 (N, C, *S), any finite values, S = (H, W) or (D, H, W); masks: uint8 (N, *S) with
    values 0..num_classes-1 (0 the background); ids: str (N,); groups: optional (N,) keys that must not
    be split across labeled/val/test (e.g. patient ids); num_classes: C_out >= 2 including the background
    (2 = binary); class_names: one name per class, background first (default ``("background",
    "foreground")`` for binary, ``("background", "class_1", ...)`` otherwise); label_values: the value
    each class has in the source files (default 0..num_classes-1), so outputs can be written back in the
    dataset's own values; spacing: optional float64 (N, len(S)) voxel sizes in mm, array-axis order.
    """

    images: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None = None
    name: str = "dataset"
    num_classes: int = 2
    class_names: tuple[str, ...] = field(default=())
    label_values: tuple[int, ...] = field(default=())
    spacing: np.ndarray | None = None

    def __post_init__(self) -> None:
        im, mk = self.images, self.masks
        if not isinstance(im, np.ndarray) or im.ndim not in (4, 5):
            raise ValueError(
                f"images must be a 4-D array (N, C, H, W) or a 5-D array (N, C, D, H, W), got {_describe(im)}"
            )
        if im.dtype != np.float32:
            raise TypeError(f"images must have dtype float32, got {im.dtype}")
        layout = "(N, H, W)" if im.ndim == 4 else "(N, D, H, W)"
        if not isinstance(mk, np.ndarray) or mk.ndim != im.ndim - 1:
            raise ValueError(f"masks must be a {im.ndim - 1}-D array {layout}, got {_describe(mk)}")
        if mk.dtype != np.uint8:
            raise TypeError(f"masks must have dtype uint8, got {mk.dtype}")
        n, spatial = im.shape[0], im.shape[2:]
        if mk.shape != (n, *spatial):
            raise ValueError(
                f"masks must have shape {layout} = {(n, *spatial)} to match images, got {mk.shape}"
            )
        if im.size:
            lo, hi = float(np.min(im)), float(np.max(im))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"images must be finite values, got range [{lo}, {hi}]")
        c = self.num_classes
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 2 <= c <= MAX_CLASSES:
            raise ValueError(f"num_classes must be an integer from 2 to {MAX_CLASSES}, got {c!r}")
        object.__setattr__(self, "num_classes", int(c))
        if mk.size and int(np.max(mk)) >= c:
            if c == 2:
                raise ValueError(f"masks must be binary with values {{0, 1}}, got values {_some_values(mk)}")
            raise ValueError(
                f"masks must hold labels 0 to {c - 1} (num_classes = {c}), got values {_some_values(mk)}"
            )
        self._check_class_metadata(c)
        ids = self.ids
        if not isinstance(ids, np.ndarray) or ids.shape != (n,):
            raise ValueError(f"ids must be an array of shape (N,) = ({n},), got {_describe(ids)}")
        if ids.dtype.kind not in "UO":
            raise TypeError(f"ids must be strings (dtype str or object), got dtype {ids.dtype}")
        if self.groups is not None and (not isinstance(self.groups, np.ndarray) or self.groups.shape != (n,)):
            raise ValueError(
                f"groups must be None or an array of shape (N,) = ({n},), got {_describe(self.groups)}"
            )
        if self.spacing is not None:
            sp = np.asarray(self.spacing, dtype=np.float64)
            if sp.shape != (n, len(spatial)) or (
                sp.size and not (np.all(np.isfinite(sp)) and np.all(sp > 0))
            ):
                raise ValueError(
                    f"spacing must be None or positive finite sizes in mm of shape (N, {len(spatial)})"
                    f" = ({n}, {len(spatial)}), got {_describe(self.spacing)}"
                )
            object.__setattr__(self, "spacing", sp)
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__}")

    def _check_class_metadata(self, c: int) -> None:
        names = tuple(self.class_names) or (
            ("background", "foreground") if c == 2 else ("background", *(f"class_{i}" for i in range(1, c)))
        )
        if len(names) != c or not all(isinstance(x, str) and x for x in names) or len(set(names)) != c:
            raise ValueError(
                f"class_names must be {c} distinct non-empty names (background first),"
                f" got {self.class_names!r}"
            )
        values = tuple(int(v) for v in self.label_values) or tuple(range(c))
        if len(values) != c or len(set(values)) != c or min(values) < 0:
            raise ValueError(
                f"label_values must be {c} distinct non-negative integers (the file value of each class),"
                f" got {self.label_values!r}"
            )
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "label_values", values)

    @property
    def spatial_dims(self) -> int:
        """2 for (H, W) images, 3 for (D, H, W) volumes."""
        return int(self.images.ndim - 2)

    @property
    def structures(self) -> tuple[str, ...]:
        """The names of the foreground classes 1..num_classes-1."""
        return self.class_names[1:]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> SegmentationDataset:
        """Rows `index` (int array (M,)) as a new dataset."""
        index = np.asarray(index, dtype=np.int64)
        groups = None if self.groups is None else self.groups[index]
        spacing = None if self.spacing is None else self.spacing[index]
        return replace(
            self,
            images=self.images[index],
            masks=self.masks[index],
            ids=self.ids[index],
            groups=groups,
            spacing=spacing,
        )


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
