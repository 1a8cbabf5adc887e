"""Per-image segmentation metrics (Dice, IoU, HD95, ASSD) and batch summaries.

Inputs are binary masks bool or {0, 1} integer/float. Dice and IoU take 2D masks shaped (N, H, W) (one
value per image, float64 (N,)) or (H, W) (a Python float). HD95 and ASSD are N-D: the length of
``spacing`` (mm per array axis, array-axis order) says how many trailing axes are spatial:

==============================  ============  ================================================
spacing                         masks         meaning
==============================  ============  ================================================
2 numbers (row, column)         (H, W)        one image: a float
2 numbers (row, column)         (N, H, W)     a batch of 2D images: float64 (N,) (the default)
3 numbers (depth, row, column)  (D, H, W)     one volume, 3D surface distances: a float
3 numbers (depth, row, column)  (N, D, H, W)  a batch of volumes: float64 (N,)
==============================  ============  ================================================

So a 3-D array with a 2-element spacing is a batch of 2D slices, never a volume; any other combination is
a ValueError naming ``spacing`` and the shapes.

Surfaces follow MONAI (``monai.metrics.utils.get_mask_edges`` without sub-voxel spacing): the boundary of a
mask is the mask minus its binary erosion by the face-connected cross (4-connected in 2D, 6-connected in
3D: scipy's ``generate_binary_structure(ndim, 1)``, MONAI's default), with pixels outside the image counting
as background (so foreground pixels on the image border are boundary pixels). The distance from a boundary
pixel to the other mask is the Euclidean distance (in units of ``spacing``) to the nearest boundary pixel of
the other mask. HD95 is the larger of the two directed 95th percentiles (linear interpolation, as
``torch.quantile``); ASSD is the mean of both directed distance sets pooled together. On pairs where both
masks are non-empty these match ``compute_dice``, ``compute_iou``, ``compute_hausdorff_distance(percentile=95,
spacing=...)`` and ``compute_average_surface_distance(symmetric=True, spacing=...)``, in 2D and 3D, up to
MONAI's float32 rounding.

Empty masks (where MONAI gives nan or inf, these give finite values so that means stay finite; the
per-structure metrics of :mod:`rndpo.metrics.structures` give nan / inf instead, to be counted apart):

=================  =====  =====  ===========================  ===========================
pred / target      Dice   IoU    HD95                         ASSD
=================  =====  =====  ===========================  ===========================
both empty         1      1      0                            0
exactly one empty  0      0      image diagonal (worst case)  image diagonal (worst case)
=================  =====  =====  ===========================  ===========================

The image diagonal is ``hypot(H * spacing[0], W * spacing[1])`` (in 3D ``hypot(D * spacing[0], H *
spacing[1], W * spacing[2])``), an upper bound of any distance in the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "MetricSummary",
    "assd",
    "dice",
    "dice_from_counts",
    "hd95",
    "iou",
    "summarize",
]

_LAYOUTS = {2: "(N, H, W) or (H, W)", 3: "(N, D, H, W) or (D, H, W)"}


def _as_masks(
    pred: object, target: object, spatial_dims: int = 2, *, by_spacing: bool = False
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate and return bool (N, *S) pred, target (len(S) = ``spatial_dims``) and whether the input was a
    single (*S) image. ``by_spacing``: the number of spatial dims comes from ``spacing`` (named in errors)."""
    arrays = []
    for arg, x in (("pred", pred), ("target", target)):
        a = np.asarray(x)
        if a.ndim not in (spatial_dims, spatial_dims + 1):
            _raise_layout(arg, a.shape, spatial_dims, by_spacing)
        if a.dtype != np.bool_:
            if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
                raise TypeError(f"{arg} must be a bool or numeric array, got dtype {a.dtype}")
            if a.size and not np.isin(a, (0, 1)).all():
                values = np.unique(a)
                shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if values.size > 6 else "")
                raise ValueError(f"{arg} must be binary (bool or values {{0, 1}}), got values {{{shown}}}")
            a = a != 0
        arrays.append(a)
    p, t = arrays
    if p.shape != t.shape:
        raise ValueError(f"target must have the same shape as pred {p.shape}, got {t.shape}")
    single = p.ndim == spatial_dims
    return (p[None], t[None], True) if single else (p, t, False)


def _raise_layout(arg: str, shape: tuple[int, ...], spatial_dims: int, by_spacing: bool) -> None:
    """Raise the ValueError for an array of ``shape`` that is neither (*S) nor (N, *S)."""
    if not by_spacing:
        raise ValueError(
            f"{arg} must have shape {_LAYOUTS[spatial_dims]}, got ndim {len(shape)} with shape {shape}"
        )
    if len(shape) == 2 and arg == "pred":  # only a 2-element spacing fits a 2-D pred (target: see pred)
        raise ValueError(
            f"spacing must have length 2 (row, column), got length {spatial_dims} for {arg} of shape {shape};"
            " a 3-element spacing (depth, row, column) needs a volume (D, H, W) or a batch (N, D, H, W)"
        )
    hint = (
        "; a batch of volumes (N, D, H, W) needs a 3-element spacing (depth, row, column)"
        if len(shape) == 4 and spatial_dims == 2
        else ""
    )
    raise ValueError(
        f"{arg} must have shape {_LAYOUTS[spatial_dims]}, got ndim {len(shape)} with shape {shape}, for"
        f" spacing of length {spatial_dims}{hint}"
    )


def _check_spacing(spacing: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """Return spacing as 2 or 3 positive finite floats (mm per array axis)."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(
            "spacing must be a sequence of 2 numbers (row, column) or 3 (depth, row, column), got"
            f" {spacing!r}"
        ) from None
    if len(values) not in (2, 3):
        raise ValueError(
            "spacing must have length 2 (row, column) or 3 (depth, row, column), got length"
            f" {len(values)}: {spacing!r}"
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be finite and > 0, got {spacing!r}")
    return values


def _finish(values: np.ndarray, single: bool) -> np.ndarray | float:
    return float(values[0]) if single else values


def dice_from_counts(inter: np.ndarray, size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """Dice 2 inter / (size_a + size_b) from (broadcastable) integer counts, float64; 1 where both are 0."""
    denom = (np.asarray(size_a) + np.asarray(size_b)).astype(np.float64)
    out = np.ones(np.broadcast_shapes(np.shape(inter), denom.shape), dtype=np.float64)
    np.divide(2.0 * np.asarray(inter, dtype=np.float64), denom, out=out, where=denom > 0)
    return out


def dice(pred: np.ndarray, target: np.ndarray) -> np.ndarray | float:
    """Dice 2|P∩T| / (|P| + |T|) per image: float64 (N,) for (N, H, W) masks, a float for (H, W).

    Both masks empty: 1.0; exactly one empty: 0.0.
    """
    p, t, single = _as_masks(pred, target)
    inter = np.count_nonzero(p & t, axis=(1, 2))
    out = dice_from_counts(inter, np.count_nonzero(p, axis=(1, 2)), np.count_nonzero(t, axis=(1, 2)))
    return _finish(out, single)


def iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray | float:
    """IoU (Jaccard) |P∩T| / |P∪T| per image: float64 (N,) for (N, H, W) masks, a float for (H, W).

    Both masks empty: 1.0; exactly one empty: 0.0.
    """
    p, t, single = _as_masks(pred, target)
    inter = np.count_nonzero(p & t, axis=(1, 2)).astype(np.float64)
    union = np.count_nonzero(p | t, axis=(1, 2)).astype(np.float64)
    out = np.ones(p.shape[0], dtype=np.float64)
    nonempty = union > 0
    out[nonempty] = inter[nonempty] / union[nonempty]
    return _finish(out, single)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """bool (*S) boundary voxels: the mask minus its erosion by the face-connected cross (outside: empty)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the bounding box of a non-empty bool (*S) mask, grown by ``margin`` and clipped to it."""
    box = []
    for axis, size in enumerate(mask.shape):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, size)))
    return tuple(box)


def _surface_distances(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per image of bool (N, *S): (pred->target, target->pred) boundary distances float64, or None if
    either mask is empty."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    for p, t in zip(pred, target, strict=True):
        if not p.any() or not t.any():
            out.append(None)
            continue
        # crop to the union grown by one voxel: erosion with outside = background gives the same boundary
        box = _bounding_box(p | t, margin=1)
        ep, et = _boundary(p[box]), _boundary(t[box])
        box = _bounding_box(ep | et)  # crop to the boundaries' box: distances stay the same
        ep, et = ep[box], et[box]
        to_t = ndimage.distance_transform_edt(~et, sampling=spacing)
        to_p = ndimage.distance_transform_edt(~ep, sampling=spacing)
        out.append((to_t[ep], to_p[et]))
    return out


def _empty_case(p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...]) -> float:
    """0 when both masks are empty, else (exactly one empty) the image diagonal in physical units."""
    if not p.any() and not t.any():
        return 0.0
    return math.hypot(*(n * s for n, s in zip(p.shape, spacing, strict=True)))


def _masks_and_spacing(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool, tuple[float, ...]]:
    sp = _check_spacing(spacing)
    p, t, single = _as_masks(pred, target, len(sp), by_spacing=True)
    return p, t, single, sp


def hd95(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | np.ndarray = (1.0, 1.0)
) -> np.ndarray | float:
    """95th-percentile symmetric Hausdorff distance per image or volume, in units of ``spacing``.

    pred, target: binary (H, W) or (N, H, W) with spacing (row, column); (D, H, W) or (N, D, H, W) with
    spacing (depth, row, column) (see the module docstring: a 3-D array with a 2-element spacing is a batch
    of 2D images). Returns float64 (N,) for a batch, a float for one image. Both empty: 0; exactly one
    empty: the image diagonal (a finite worst case; MONAI gives inf or nan there).
    """
    p, t, single, sp = _masks_and_spacing(pred, target, spacing)
    out = np.empty(p.shape[0], dtype=np.float64)
    for i, dist in enumerate(_surface_distances(p, t, sp)):
        if dist is None:
            out[i] = _empty_case(p[i], t[i], sp)
        else:
            out[i] = max(np.percentile(dist[0], 95.0), np.percentile(dist[1], 95.0))
    return _finish(out, single)


def assd(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | np.ndarray = (1.0, 1.0)
) -> np.ndarray | float:
    """Average symmetric surface distance per image or volume: both directed boundary distance sets pooled.

    Shapes and ``spacing`` as :func:`hd95`: float64 (N,) for a batch, a float for one image or volume, in
    units of ``spacing``. Both empty: 0; exactly one empty: the image diagonal (a finite worst case; MONAI
    gives nan or inf there).
    """
    p, t, single, sp = _masks_and_spacing(pred, target, spacing)
    out = np.empty(p.shape[0], dtype=np.float64)
    for i, dist in enumerate(_surface_distances(p, t, sp)):
        if dist is None:
            out[i] = _empty_case(p[i], t[i], sp)
        else:
            out[i] = (dist[0].sum() + dist[1].sum()) / (dist[0].size + dist[1].size)
    return _finish(out, single)


@dataclass(frozen=True)
class MetricSummary:
    """Mean and population std (ddof = 0) of per-image values, their count, and, against a baseline, the
    shares of images whose value rose (``improved``) or fell (``degraded``) by more than ``tol``
    (None without a baseline)."""

    mean: float
    std: float
    n: int
    improved: float | None = None
    degraded: float | None = None


def summarize(values: np.ndarray, baseline: np.ndarray | None = None, *, tol: float = 1e-6) -> MetricSummary:
    """Summarise per-image values (N,) float, optionally against baseline values (N,) of the same images.

    ``improved``/``degraded`` count a rise/fall by more than ``tol``: for metrics where lower is better
    (HD95, ASSD), "improved" means the value rose, so swap the two or pass negated values.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array (N,), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"values must be finite, got {np.count_nonzero(~np.isfinite(v))} non-finite entries")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol!r}")
    improved = degraded = None
    if baseline is not None:
        b = np.asarray(baseline, dtype=np.float64)
        if b.shape != v.shape:
            raise ValueError(f"baseline must have the shape of values {v.shape}, got {b.shape}")
        if not np.isfinite(b).all():
            raise ValueError(
                f"baseline must be finite, got {np.count_nonzero(~np.isfinite(b))} non-finite entries"
            )
        diff = v - b
        improved = float(np.mean(diff > tol))
        degraded = float(np.mean(diff < -tol))
    return MetricSummary(float(v.mean()), float(v.std()), int(v.size), improved, degraded)
