"""Synthetic corruptions of a true mask with their exact Dice: training data for the learned QC judge.

Each kind damages a binary mask (H, W) the way segmentation models fail:

- ``erode`` / ``dilate``: binary erosion / dilation by a disk of radius r (scikit-image);
- ``shift``: a translation by (dy, dx) pixels, zero-filled;
- ``holes``: one to three disks removed (centred on the object when there is one);
- ``blobs``: one to three spurious disks added anywhere;
- ``boundary``: the boundary moved by smooth random noise (the signed distance to the boundary plus a
  Gaussian-smoothed noise field, thresholded at 0);
- ``combo``: two or three of the kinds above in sequence.

:func:`corrupt_mask` draws one corruption; :func:`corruption_set` draws many and keeps a subset whose
Dice against the truth is spread evenly over [0, 1] (stratified in ``n_bins`` equal bins). Everything is
pure numpy / scipy / scikit-image and seeded by a ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage.morphology import disk

from rndpo.metrics import dice

__all__ = ["CORRUPTION_KINDS", "corrupt_mask", "corruption_set"]

CORRUPTION_KINDS = ("erode", "dilate", "shift", "holes", "blobs", "boundary", "combo")
_SIMPLE = CORRUPTION_KINDS[:-1]


def _check_mask(mask: Any) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        got = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"mask must be a 2-D bool or uint8 array (H, W), got {got}")
    if mask.dtype != np.bool_ and not (mask.dtype == np.uint8 and mask.max(initial=0) <= 1):
        raise ValueError(f"mask must be bool or uint8 in {{0, 1}}, got dtype {mask.dtype}")
    if min(mask.shape) < 4:
        raise ValueError(f"mask must be at least 4x4, got {mask.shape}")
    return mask.astype(bool)


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _max_radius(m: np.ndarray) -> int:
    """A radius scale: about the object's inscribed radius (at least 1), capped by the image size."""
    size = max(1, int(np.sqrt(max(m.sum(), 1) / np.pi)))
    return max(1, min(size, min(m.shape) // 4))


def _disks(shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    out = np.zeros(shape, dtype=bool)
    for (cy, cx), r in zip(centres, radii, strict=True):
        out |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    return out


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    src = m[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def _apply(kind: str, m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = m.shape
    scale = _max_radius(m)
    if kind == "erode":
        return ndimage.binary_erosion(m, disk(int(rng.integers(1, scale + 1))))
    if kind == "dilate":
        return ndimage.binary_dilation(m, disk(int(rng.integers(1, scale + 1))))
    if kind == "shift":
        reach = max(1, scale)
        dy, dx = (int(v) for v in rng.integers(-reach, reach + 1, size=2))
        return _shift(m, dy, dx)
    if kind in ("holes", "blobs"):
        n = int(rng.integers(1, 4))
        radii = rng.uniform(1.0, max(1.5, scale), size=n)
        ys, xs = np.nonzero(m)
        if kind == "holes" and ys.size:
            pick = rng.integers(0, ys.size, size=n)
            centres = np.stack([ys[pick], xs[pick]], axis=1)
        else:
            centres = np.stack([rng.integers(0, h, size=n), rng.integers(0, w, size=n)], axis=1)
        d = _disks((h, w), centres, radii)
        return m & ~d if kind == "holes" else m | d
    if kind == "boundary":
        inside = ndimage.distance_transform_edt(m)
        outside = ndimage.distance_transform_edt(~m)
        signed = np.where(m, inside, -outside)
        noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=rng.uniform(1.0, 4.0))
        noise *= rng.uniform(0.5, 1.5) * scale / max(float(np.abs(noise).max()), 1e-12)
        return signed + noise > 0
    if kind == "combo":
        out = m
        for sub in rng.choice(_SIMPLE, size=int(rng.integers(2, 4)), replace=False):
            out = _apply(str(sub), out, rng)
        return out
    raise ValueError(f"kind must be one of {list(CORRUPTION_KINDS)}, got {kind!r}")


def corrupt_mask(mask: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One corruption of ``mask`` (H, W) bool or uint8 in {0, 1}, H, W >= 4.

    Returns (corrupted mask uint8 (H, W) in {0, 1}, its Dice against ``mask`` as a float in [0, 1]).
    The same ``rng`` state gives the same output.
    """
    m = _check_mask(mask)
    rng = _check_rng(rng)
    if kind not in CORRUPTION_KINDS:
        raise ValueError(f"kind must be one of {list(CORRUPTION_KINDS)}, got {kind!r}")
    out = _apply(kind, m, rng).astype(np.uint8)
    return out, float(dice(out, m))


def corruption_set(
    mask: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    kinds: tuple[str, ...] = CORRUPTION_KINDS,
    n_bins: int = 5,
    oversample: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` corruptions of ``mask`` (H, W) with their Dice spread evenly over [0, 1].

    Draws ``oversample * n`` corruptions (kinds uniformly from ``kinds``), sorts their Dice into
    ``n_bins`` equal bins of [0, 1] and takes them round-robin from the bins (randomly within a bin), so
    that each bin is equally represented as far as the draws allow.
    Returns (masks uint8 (n, H, W) in {0, 1}, Dice float64 (n,) in [0, 1]).
    """
    m = _check_mask(mask)
    rng = _check_rng(rng)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not kinds or any(k not in CORRUPTION_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty tuple from {list(CORRUPTION_KINDS)}, got {kinds!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 1:
        raise ValueError(f"oversample must be a positive int, got {oversample!r}")
    draws = [corrupt_mask(m, str(rng.choice(kinds)), rng) for _ in range(oversample * n)]
    scores = np.array([d for _, d in draws])
    bins = np.minimum((scores * n_bins).astype(np.int64), n_bins - 1)
    queues = [list(rng.permutation(np.flatnonzero(bins == b))) for b in range(n_bins)]
    picked: list[int] = []
    while len(picked) < n:
        for q in queues:
            if q and len(picked) < n:
                picked.append(int(q.pop()))
    idx = np.array(picked, dtype=np.int64)
    return np.stack([draws[i][0] for i in idx]), scores[idx]
