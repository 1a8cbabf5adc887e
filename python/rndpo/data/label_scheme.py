"""Structure names and file label values: :class:`LabelScheme` maps a dataset's own label values (for
example 0, 1, 2, 4) to the classes 0..C-1 that rndpo uses inside, and back on output.

The background is value 0 and class 0. A label file holding a value the scheme does not list is an error
naming the file and the value, never silently merged or dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["LabelScheme"]


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

    def to_classes(self, labels: np.ndarray, what: str) -> np.ndarray:
        """Integer label map of file values (any shape) -> uint8 classes 0..C-1; ValueError naming
        ``what`` and the first value the scheme does not list."""
        if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
            if not np.issubdtype(labels.dtype, np.floating) or not np.array_equal(labels, np.round(labels)):
                raise ValueError(f"{what}: label values must be integers, got dtype {labels.dtype}")
        found = np.unique(labels)
        unknown = [v for v in found.tolist() if int(v) not in self.label_values]
        if unknown:
            known = dict(zip(self.class_names, self.label_values, strict=True))
            raise ValueError(f"{what}: label value {int(unknown[0])} is not among the labels {known}")
        if self.label_values == tuple(range(self.num_classes)):
            return labels.astype(np.uint8)
        lut = np.zeros(max(self.label_values) + 1, dtype=np.uint8)
        lut[list(self.label_values)] = np.arange(self.num_classes, dtype=np.uint8)
        return lut[labels.astype(np.int64)]

    def to_values(self, classes: np.ndarray) -> np.ndarray:
        """uint8 classes 0..C-1 -> the file values, uint8 when they fit, uint16 otherwise."""
        dtype = np.uint8 if max(self.label_values) <= 255 else np.uint16
        return np.asarray(self.label_values, dtype=dtype)[classes]
