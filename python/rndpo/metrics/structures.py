"""Per-structure metrics of label maps (2D images or 3D volumes) and their summary over a set of volumes.

pred and target are integer (or bool) label maps with values 0..num_classes-1, 0 the background, shaped
(N, *S) (one row per image or volume) or (*S) (one map). Each foreground class 1..C-1 (a "structure") is
scored on its own, in the map's own grid, as a binary mask ``map == class``:

=========================  ===================  ===================================================
structure in pred / truth  Dice                 HD95 (mm, as :func:`rndpo.metrics.hd95`)
=========================  ===================  ===================================================
in both                    2|P∩T| / (|P|+|T|)   max of the two directed 95th percentiles
in exactly one             0                    +inf (one side empty: counted apart, never averaged)
in neither                 nan (never 1)        nan (excluded from every mean, and counted)
=========================  ===================  ===================================================

These match MONAI (``DiceMetric(include_background=False, ignore_empty=False)`` except nan where MONAI gives
1, and ``compute_hausdorff_distance(percentile=95, spacing=...)`` where both are non-empty).
:func:`summarize_structures` turns the (N, C-1) tables into per-structure means and counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rndpo.metrics.segmentation import dice_from_counts, hd95

__all__ = ["StructureSummary", "dice_per_class", "hd95_per_class", "summarize_structures"]

_SPATIAL = {2: "(N, H, W) or (H, W)", 3: "(N, D, H, W) or (D, H, W)"}


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 (background and at least one structure), got {num_classes}"
        )
    return int(num_classes)


def _label_maps(
    pred: object, target: object, num_classes: int, spatial_dims: int | None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate label maps and return them as (N, *S) arrays and whether a single (*S) map was given.

    spatial_dims None: 2-D arrays are one image, 3-D arrays a batch of 2D images (N, H, W), 4-D arrays a
    batch of volumes (N, D, H, W); 2 or 3: (*S) or (N, *S) with len(S) = spatial_dims.
    """
    arrays = []
    for arg, x in (("pred", pred), ("target", target)):
        a = np.asarray(x)
        if a.dtype != np.bool_ and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{arg} must be an integer (or bool) label map, got dtype {a.dtype}")
        if spatial_dims is None:
            if a.ndim not in (2, 3, 4):
                raise ValueError(
                    f"{arg} must have shape (H, W), (N, H, W) or (N, D, H, W) (a single volume (D, H, W)"
                    f" needs spatial_dims=3), got ndim {a.ndim} with shape {a.shape}"
                )
        elif a.ndim not in (spatial_dims, spatial_dims + 1):
            raise ValueError(
                f"{arg} must have shape {_SPATIAL[spatial_dims]} for {spatial_dims} spatial dims, got ndim"
                f" {a.ndim} with shape {a.shape}"
            )
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(
                    f"{arg} must hold labels 0 to {num_classes - 1} (num_classes = {num_classes}), got values"
                    f" from {lo} to {hi}"
                )
        arrays.append(a)
    p, t = arrays
    if p.shape != t.shape:
        raise ValueError(f"target must have the same shape as pred {p.shape}, got {t.shape}")
    single = p.ndim == 2 if spatial_dims is None else p.ndim == spatial_dims
    return (p[None], t[None], True) if single else (p, t, False)


def _confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (N, C, C) voxel counts [i, pred class, target class] by one bincount per image."""
    c = num_classes
    out = np.empty((pred.shape[0], c, c), dtype=np.int64)
    for i, (p, t) in enumerate(zip(pred, target, strict=True)):
        codes = p.ravel().astype(np.intp) * c + t.ravel()
        out[i] = np.bincount(codes, minlength=c * c).reshape(c, c)
    return out


def dice_per_class(
    pred: np.ndarray, target: np.ndarray, num_classes: int, *, spatial_dims: int | None = None
) -> np.ndarray:
    """Dice of each structure 1..C-1 per image or volume: float64 (N, C-1), or (C-1,) for one map.

    pred, target: integer label maps (N, *S) or (*S) with values < num_classes. spatial_dims (2 or 3)
    says how many trailing axes are spatial; None reads (H, W) as one image, (N, H, W) as 2D images and
    (N, D, H, W) as volumes (pass 3 for one volume (D, H, W)). nan where the structure is in neither map.
    """
    c = _check_num_classes(num_classes)
    if spatial_dims is not None and spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be None, 2 or 3, got {spatial_dims!r}")
    p, t, single = _label_maps(pred, target, c, spatial_dims)
    conf = _confusion(p, t, c)
    size_p, size_t = conf.sum(axis=2)[:, 1:], conf.sum(axis=1)[:, 1:]
    out = dice_from_counts(np.diagonal(conf, axis1=1, axis2=2)[:, 1:], size_p, size_t)
    out[(size_p + size_t) == 0] = np.nan
    return out[0] if single else out


def _spacing_table(spacing: object) -> np.ndarray:
    """spacing as float64 (d,) or (N, d), d in {2, 3}, positive and finite."""
    try:
        sp = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"spacing must be numbers of shape (len(S),) or (N, len(S)), got {spacing!r}"
        ) from None
    if sp.ndim not in (1, 2) or sp.shape[-1] not in (2, 3):
        raise ValueError(
            "spacing must have shape (2,) or (3,) (mm per spatial axis, for all maps) or (N, 2) or (N, 3)"
            f" (per map), got shape {sp.shape}"
        )
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise ValueError(f"spacing must be finite and > 0, got {spacing!r}")
    return sp


def hd95_per_class(
    pred: np.ndarray, target: np.ndarray, num_classes: int, spacing: Sequence[float] | np.ndarray
) -> np.ndarray:
    """HD95 in mm of each structure 1..C-1 per image or volume: float64 (N, C-1), or (C-1,) for one map.

    pred, target: integer label maps (N, *S) or (*S) with values < num_classes. spacing: (len(S),) mm per
    array axis for all maps, or (N, len(S)) per map; its length says whether S is (H, W) or (D, H, W).
    nan where the structure is in neither map; +inf where it is in exactly one.
    """
    c = _check_num_classes(num_classes)
    sp = _spacing_table(spacing)
    d = sp.shape[-1]
    p, t, single = _label_maps(pred, target, c, d)
    if sp.ndim == 2 and (single or sp.shape[0] != p.shape[0]):
        raise ValueError(
            f"spacing of shape (N, {d}) needs label maps (N, *S) with the same N, got spacing of shape"
            f" {sp.shape} for pred of shape {np.shape(pred)}"
        )
    out = np.full((p.shape[0], c - 1), np.nan, dtype=np.float64)
    for i in range(p.shape[0]):
        sp_i = sp[i] if sp.ndim == 2 else sp
        for k in range(1, c):
            pk, tk = p[i] == k, t[i] == k
            in_p, in_t = bool(pk.any()), bool(tk.any())
            if in_p and in_t:
                out[i, k - 1] = hd95(pk, tk, sp_i)
            elif in_p or in_t:
                out[i, k - 1] = np.inf
    return out[0] if single else out


@dataclass(frozen=True, slots=True)
class StructureSummary:
    """Per-structure means and counts over N volumes (struct of arrays, one entry per structure).

    names: the C-1 structure names. dice: float64 (C-1,) mean Dice over the volumes where the structure is
    in the truth or the prediction (nan: no such volume); dice_scored: int64 (C-1,) how many those are;
    empty_both: int64 (C-1,) volumes where it is in neither (excluded, never scored 1). hd95: float64
    (C-1,) mean HD95 (mm) over finite values (nan: none); hd95_scored: int64 (C-1,) their count;
    hd95_one_empty: int64 (C-1,) volumes where exactly one side is empty (counted apart, not averaged);
    all three None without HD95. mean_dice / mean_hd95: mean over structures of the per-structure means,
    None when no structure was scored; dice_unscored / hd95_unscored: names left out of that mean.
    """

    names: tuple[str, ...]
    num_volumes: int
    dice: np.ndarray
    dice_scored: np.ndarray
    empty_both: np.ndarray
    mean_dice: float | None
    dice_unscored: tuple[str, ...]
    hd95: np.ndarray | None = None
    hd95_scored: np.ndarray | None = None
    hd95_one_empty: np.ndarray | None = None
    mean_hd95: float | None = None
    hd95_unscored: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: {"num_volumes", "mean_dice", "mean_hd95", "unscored": {"dice", "hd95"},
        "structures": {name: {"dice", "dice_volumes", "empty_both"[, "hd95", "hd95_volumes",
        "hd95_one_empty"]}}}; floats, ints, lists and None (for no value), never nan."""
        structures: dict[str, dict[str, float | int | None]] = {}
        for k, name in enumerate(self.names):
            row: dict[str, float | int | None] = {
                "dice": _json_float(self.dice[k]),
                "dice_volumes": int(self.dice_scored[k]),
                "empty_both": int(self.empty_both[k]),
            }
            if self.hd95 is not None and self.hd95_scored is not None and self.hd95_one_empty is not None:
                row |= {
                    "hd95": _json_float(self.hd95[k]),
                    "hd95_volumes": int(self.hd95_scored[k]),
                    "hd95_one_empty": int(self.hd95_one_empty[k]),
                }
            structures[name] = row
        return {
            "num_volumes": self.num_volumes,
            "mean_dice": self.mean_dice,
            "mean_hd95": self.mean_hd95,
            "unscored": {"dice": list(self.dice_unscored), "hd95": list(self.hd95_unscored)},
            "structures": structures,
        }


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _means(values: np.ndarray, scored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean of ``values`` where ``scored`` (nan where none) and the count of scored rows."""
    count = scored.sum(axis=0)
    total = np.where(scored, values, 0.0).sum(axis=0)
    mean = np.full(values.shape[1], np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    return mean, count.astype(np.int64)


def _mean_over(means: np.ndarray, names: tuple[str, ...]) -> tuple[float | None, tuple[str, ...]]:
    ok = np.isfinite(means)
    unscored = tuple(n for n, good in zip(names, ok, strict=True) if not good)
    return (float(means[ok].mean()) if ok.any() else None), unscored


def summarize_structures(dice: np.ndarray, hd95: np.ndarray | None, names: Sequence[str]) -> StructureSummary:
    """Summarise per-volume tables float (N, C-1) from :func:`dice_per_class` and :func:`hd95_per_class`.

    dice: values in [0, 1], nan where the structure is in neither map; hd95: None, or values >= 0 with nan
    exactly where dice is nan and +inf where one side is empty; names: C-1 distinct structure names (e.g. a
    dataset's ``class_names[1:]``).
    """
    d = np.asarray(dice, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"dice must be a 2-D array (N, C-1), got shape {d.shape}")
    names_t = tuple(names) if not isinstance(names, str) else (names,)
    if len(names_t) != d.shape[1] or not all(isinstance(n, str) for n in names_t):
        raise ValueError(f"names must be {d.shape[1]} strings (one per column of dice), got {names!r}")
    if len(set(names_t)) != len(names_t):
        raise ValueError(f"names must be distinct, got {names!r}")
    empty = np.isnan(d)
    if not ((d[~empty] >= 0) & (d[~empty] <= 1)).all():
        raise ValueError("dice must hold values in [0, 1] or nan (structure in neither map)")
    dice_mean, dice_scored = _means(d, ~empty)
    mean_dice, dice_unscored = _mean_over(dice_mean, names_t)
    hd_mean: np.ndarray | None = None
    hd_scored: np.ndarray | None = None
    hd_one_empty: np.ndarray | None = None
    mean_hd95: float | None = None
    hd_unscored: tuple[str, ...] = ()
    if hd95 is not None:
        h = np.asarray(hd95, dtype=np.float64)
        if h.shape != d.shape:
            raise ValueError(f"hd95 must have the shape of dice {d.shape}, got {h.shape}")
        if not np.array_equal(np.isnan(h), empty):
            raise ValueError("hd95 must be nan exactly where dice is nan (structure in neither map)")
        if (h[~empty] < 0).any():
            raise ValueError("hd95 must hold values >= 0, +inf (one side empty) or nan (in neither map)")
        hd_mean, hd_scored = _means(h, np.isfinite(h))
        hd_one_empty = np.isposinf(h).sum(axis=0).astype(np.int64)
        mean_hd95, hd_unscored = _mean_over(hd_mean, names_t)
    return StructureSummary(
        names=names_t,
        num_volumes=int(d.shape[0]),
        dice=dice_mean,
        dice_scored=dice_scored,
        empty_both=empty.sum(axis=0).astype(np.int64),
        mean_dice=mean_dice,
        dice_unscored=dice_unscored,
        hd95=hd_mean,
        hd95_scored=hd_scored,
        hd95_one_empty=hd_one_empty,
        mean_hd95=mean_hd95,
        hd95_unscored=hd_unscored,
    )
