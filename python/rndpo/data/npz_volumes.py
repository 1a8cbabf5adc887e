"""Volumes from an ``.npz`` (``[data] kind = "npz"`` with ``spatial_dims = 3``): :func:`load_npz_volumes`.

Arrays: ``images`` (N, D, H, W) or (N, D, H, W, C), ``masks`` (N, D, H, W) integer label maps, and
optional ``ids`` (N,), ``spacing`` (N, 3) float mm in array-axis order, ``groups`` (N,). Images are
scaled like the 2D npz loader's, by the one rule of :func:`rndpo.data.input_limits.unit_divisor` applied
to the whole ``images`` array (uint8 / 255, uint16 / 65535, other integers by their value range, floats
in [0, 1] as they are); label values are mapped to classes 0..C-1 through a
:class:`~rndpo.data.label_scheme.LabelScheme`. Headers are checked against the caps of
:mod:`rndpo.data.input_limits` before any array is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rndpo.data.dataset import SegmentationDataset
from rndpo.data.input_limits import read_npz, to_unit_float, unit_divisor
from rndpo.data.label_scheme import LabelScheme

__all__ = ["load_npz_volumes"]


def load_npz_volumes(
    path: str | Path, *, labels: Mapping[str, int] | None = None, name: str | None = None
) -> SegmentationDataset:
    """A 3D :class:`SegmentationDataset` from an ``.npz`` of volumes and label maps.

    labels: ``{structure name: file value}`` (background 0 may be left out); default: the values found,
    named ``label_<v>``. A label value not listed is a ValueError naming the file and the value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: npz file not found: {path}")
    arrays = read_npz(path, ("images", "masks"), ("ids", "spacing", "groups"))
    raw, raw_masks = arrays["images"], arrays["masks"]
    if raw.ndim == 4:
        raw = raw[:, None]
    elif raw.ndim == 5:
        raw = np.moveaxis(raw, -1, 1)
    else:
        raise ValueError(
            f"{path}: images must be (N, D, H, W) or (N, D, H, W, C) volumes with data.spatial_dims = 3,"
            f" got shape {raw.shape}"
        )
    n, spatial = raw.shape[0], raw.shape[2:]
    if raw_masks.shape != (n, *spatial):
        raise ValueError(
            f"{path}: masks must have shape (N, D, H, W) = {(n, *spatial)}, got {raw_masks.shape}"
        )
    scheme = (
        LabelScheme.from_values(raw_masks)
        if labels is None
        else LabelScheme.from_names(labels, "data.labels")
    )
    masks = scheme.to_classes(raw_masks, str(path))
    images = to_unit_float(raw, f"{path}: images", unit_divisor(raw, f"{path}: images"))
    ids = arrays.get("ids")
    if ids is None:
        ids = np.array([f"{path.stem}_{i:05d}" for i in range(n)])
    elif ids.shape != (n,):
        raise ValueError(f"{path}: ids must have shape (N,) = ({n},), got {ids.shape}")
    groups = arrays.get("groups")
    if groups is not None and groups.shape != (n,):
        raise ValueError(f"{path}: groups must have shape (N,) = ({n},), got {groups.shape}")
    spacing = arrays.get("spacing")
    if spacing is not None and spacing.shape != (n, 3):
        raise ValueError(f"{path}: spacing must have shape (N, 3) = ({n}, 3), got {spacing.shape}")
    if name is None:
        name = path.parent.name if path.stem == "data" and path.parent.name else path.stem
    return SegmentationDataset(
        images,
        np.ascontiguousarray(masks),
        ids.astype(str),
        groups,
        name,
        num_classes=scheme.num_classes,
        class_names=scheme.class_names,
        label_values=scheme.label_values,
        spacing=None if spacing is None else spacing.astype(np.float64),
    )
