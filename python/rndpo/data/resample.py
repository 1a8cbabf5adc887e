"""Resampling volumes to a target voxel spacing and back (``[data] spacing = [z, y, x]``).

Images are interpolated linearly (each channel on its own), label maps by nearest neighbour, both with
``scipy.ndimage.zoom`` (``grid_mode=True``: voxel boxes, not centres, are mapped, so the physical extent
is kept). The new shape along each axis is ``round(size * spacing / target)`` (at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["resample_to_shape", "resampled_shape"]


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    """The shape of a volume of ``shape`` voxels of ``spacing`` mm resampled to ``target`` mm."""
    if len(shape) != len(spacing) or len(spacing) != len(target):
        raise ValueError(
            f"shape, spacing and target must have one entry per axis, got {shape}, {spacing}, {target}"
        )
    if any(not (t > 0 and np.isfinite(t)) for t in target):
        raise ValueError(f"target spacing must be positive finite mm, got {list(target)}")
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample_to_shape(x: np.ndarray, shape: Sequence[int], *, labels: bool = False) -> np.ndarray:
    """x (C, *S) float (each channel linearly) or, with ``labels``, an integer label map (*S) (nearest
    neighbour), resampled to the spatial ``shape``; same dtype."""
    spatial = x.shape if labels else x.shape[1:]
    if len(shape) != len(spatial):
        raise ValueError(f"shape must have {len(spatial)} sizes, got {list(shape)}")
    if tuple(shape) == tuple(spatial):
        return x.copy()
    zoom = [t / s for t, s in zip(shape, spatial, strict=True)]
    if labels:
        out = ndimage.zoom(x, zoom, order=0, mode="nearest", grid_mode=True)
        return out.astype(x.dtype, copy=False)
    channels = [ndimage.zoom(c, zoom, order=1, mode="nearest", grid_mode=True) for c in x]
    return np.stack(channels).astype(x.dtype, copy=False)
