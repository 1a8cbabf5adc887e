"""Structure names and file label values: :class:`LabelScheme` maps a dataset's own label values (for
example 0, 1, 2, 4) to the classes 0..C-1 that rndpo uses inside, and back on output.

The background is value 0 and class 0. A label file holding a value the scheme does not list is an error
naming the file and the value, never silently merged or dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LabelScheme", "map_label_values"]

_MAX_LABEL_VALUE = 65535  # label maps are written back as uint8 or uint16


def map_label_values(
    seg: np.ndarray, label_values: Sequence[int], path: str | Path, *, source: str = "dataset.json"
) -> np.ndarray:
    """A label file's values -> uint8 classes 0..C-1 (class c = ``label_values[c]``); a value not in
    ``label_values`` (or not an integer) is a ValueError naming the file ``path``, the value and
    ``source``, where the label values were named."""
    values = np.asarray(label_values, dtype=np.int64)
    if values.ndim != 1 or values.size < 1 or values.min() < 0 or np.unique(values).size != values.size:
        raise ValueError(f"label_values must be distinct non-negative integers, got {list(label_values)}")
    seg = np.asarray(seg)
    if seg.dtype.kind not in "uifb":
        raise ValueError(f"label file {path}: expected integer labels, got dtype {seg.dtype}")
    small = seg.dtype.kind in "uib" and (
        seg.size == 0 or 0 <= int(seg.min()) <= int(seg.max()) <= _MAX_LABEL_VALUE
    )
    present = np.flatnonzero(np.bincount(seg.ravel().astype(np.intp))) if small else np.unique(seg)
    unknown = [v for v in present.tolist() if v not in set(values.tolist())]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:6])
        raise ValueError(
            f"label file {path}: holds the value {shown}, which {source} does not name"
            f" (its label values: {', '.join(map(str, values.tolist()))})"
        )
    if np.array_equal(values, np.arange(values.size)) and seg.dtype == np.uint8:
        return seg.copy()
    lut = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    lut[values] = np.arange(values.size, dtype=np.uint8)
    return lut[seg.astype(np.intp)]


@dataclass(frozen=True)
class LabelScheme:
    """class_names: C names, background first; label_values: C distinct file values, 0 first, as ints."""

    class_names: tuple[str, ...]
    label_values: tuple[int, ...]

    def __post_init__(self) -> None:
        names, values = tuple(self.class_names), tuple(int(v) for v in self.label_values)
        if len(names) != len(values) or not 2 <= len(values) <= 255:
            raise ValueError(
                "labels must name 2 to 255 classes (background included) with one value each,"
                f" got names {names} values {values}"
            )
        if values[0] != 0 or len(set(values)) != len(values) or min(values) < 0 or max(values) > 65535:
            raise ValueError(
                f"labels must give the background the value 0 and each structure a distinct value in"
                f" 1..65535, got {dict(zip(names, values, strict=True))}"
            )
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"labels must have distinct non-empty names, got {names}")
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "label_values", values)

    @property
    def num_classes(self) -> int:
        return len(self.label_values)

    @classmethod
    def from_names(cls, labels: Mapping[str, int], what: str = "labels") -> LabelScheme:
        """From ``{name: value}`` (dataset.json of nnU-Net, ``[data] labels``); sorted by value, so the
        background (value 0) comes first. A missing 0 gets the name ``background``."""
        if not isinstance(labels, Mapping) or not labels:
            raise ValueError(f"{what} must be a table of structure name = label value, got {labels!r}")
        pairs = []
        for name, value in labels.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(
                    f"{what}.{name} must be one integer label value (overlapping region labels are not"
                    f" supported), got {value!r}"
                )
            pairs.append((int(value), str(name)))
        if 0 not in {v for v, _ in pairs}:
            pairs.append((0, "background"))
        pairs.sort()
        return cls(tuple(n for _, n in pairs), tuple(v for v, _ in pairs))

    @classmethod
    def from_values(cls, values: np.ndarray) -> LabelScheme:
        """From the values found in the label maps (0 added): names ``background``, ``label_<v>``."""
        found = sorted({0, *(int(v) for v in np.unique(values))})
        return cls(("background", *(f"label_{v}" for v in found[1:])), tuple(found))

    def to_classes(self, labels: np.ndarray, what: str, source: str = "data.labels") -> np.ndarray:
        """Integer label map of file values (any shape) -> uint8 classes 0..C-1 (:func:`map_label_values`:
        a value the scheme does not list is a ValueError naming ``what``, the value and ``source``)."""
        return map_label_values(labels, self.label_values, what, source=source)

    def to_values(self, classes: np.ndarray) -> np.ndarray:
        """uint8 classes 0..C-1 -> the file values, uint8 when they fit, uint16 otherwise."""
        dtype = np.uint8 if max(self.label_values) <= 255 else np.uint16
        return np.asarray(self.label_values, dtype=dtype)[classes]
