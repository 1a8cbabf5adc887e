"""Synthetic corruptions of a true mask with their exact Dice: training data for the learned QC judge.

Masks are 2-D (H, W) or 3-D (D, H, W). Binary masks (``num_classes`` None or 2; bool or uint8 in
{0, 1}) are damaged by the kinds of :data:`CORRUPTION_KINDS`, the way segmentation models fail:

- ``erode`` / ``dilate``: binary erosion / dilation by a ball (a disk in 2D) of radius r;
- ``shift``: a translation by a random offset along every axis, zero-filled;
- ``holes``: one to three balls removed (centred on the object when there is one);
- ``blobs``: one to three spurious balls added anywhere;
- ``boundary``: the boundary moved by smooth random noise (the signed distance to the boundary plus a
  Gaussian-smoothed noise field, thresholded at 0);
- ``combo``: two or three of the kinds above in sequence.

Label maps (``num_classes`` C >= 3; uint8 labels 0..C-1, 0 the background) use
:data:`LABEL_CORRUPTION_KINDS`: the kinds above per structure (``erode`` / ``dilate`` / ``shift`` act on
one random structure or on all of them, a whole-map shift included; ``holes`` cut into one structure,
``blobs`` add balls of one structure, possibly one the truth lacks; ``boundary`` moves every structure's
boundary, a voxel taking the structure of largest noisy signed distance), and three more: ``drop`` (a
structure removed), ``swap`` (two structures' labels exchanged; one of them may be absent, which
relabels the other) and ``speckle`` (label noise at the boundaries: voxels whose neighbourhood holds
several labels take the label of a random neighbour, each with a random probability). In 3D the
``boundary`` noise is scaled by its standard deviation rather than its maximum (see
:func:`_boundary_noise`); 2D binary corruptions are those of earlier versions, draw for draw.
Their Dice is the mean per-structure Dice over the structures 1..C-1, a structure absent from both maps
counting as 1 (:func:`rndpo.judges.oracle.mean_structure_dice`, the oracle judge's score).

:func:`corrupt_mask` draws one corruption; :func:`corruption_set` draws many and keeps a subset whose
Dice against the truth is spread evenly over [0, 1] (stratified in ``n_bins`` equal bins). Everything is
pure numpy / scipy and seeded by a ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from rndpo.judges.oracle import mean_structure_dice
from rndpo.metrics import dice_from_counts
from rndpo.proposals import ball

__all__ = ["CORRUPTION_KINDS", "LABEL_CORRUPTION_KINDS", "corrupt_mask", "corruption_set"]

CORRUPTION_KINDS = ("erode", "dilate", "shift", "holes", "blobs", "boundary", "combo")
"""The kinds for binary masks (num_classes None or 2)."""
LABEL_CORRUPTION_KINDS = (*CORRUPTION_KINDS[:-1], "drop", "swap", "speckle", "combo")
"""The kinds for label maps (num_classes >= 3)."""
_SIMPLE = CORRUPTION_KINDS[:-1]
_LABEL_SIMPLE = LABEL_CORRUPTION_KINDS[:-1]


def _check_num_classes(num_classes: Any) -> int | None:
    """None for binary masks (num_classes None or 2), else C >= 3."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be None or an int from 2 to 255, got {num_classes!r}")
    if not 2 <= int(num_classes) <= 255:
        raise ValueError(f"num_classes must be None or an int from 2 to 255, got {num_classes!r}")
    return None if int(num_classes) == 2 else int(num_classes)


def _check_mask(mask: Any, num_classes: int | None) -> np.ndarray:
    """A bool mask (binary) or a uint8 label map (num_classes >= 3) of 2 or 3 dims, >= 4 per side."""
    if not isinstance(mask, np.ndarray) or mask.ndim not in (2, 3):
        got = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"mask must be a 2-D (H, W) or 3-D (D, H, W) bool or uint8 array, got {got}")
    if mask.ndim == 2 and min(mask.shape) < 4:
        raise ValueError(f"mask must be at least 4x4, got {mask.shape}")
    if min(mask.shape) < 4:
        raise ValueError(
            f"mask must be a 2-D (H, W) or 3-D (D, H, W) array at least 4 voxels along every axis, "
            f"got shape {mask.shape}"
        )
    if num_classes is None:
        if mask.dtype != np.bool_ and not (mask.dtype == np.uint8 and mask.max(initial=0) <= 1):
            raise ValueError(f"mask must be bool or uint8 in {{0, 1}}, got dtype {mask.dtype}")
        return mask.astype(bool)
    if mask.dtype != np.uint8 or mask.max(initial=0) >= num_classes:
        top = mask.max(initial=0) if mask.dtype == np.uint8 else None
        raise ValueError(
            f"mask must be a uint8 label map with labels 0 to {num_classes - 1} "
            f"(num_classes = {num_classes}), got dtype {mask.dtype}"
            + ("" if top is None else f" with values up to {top}")
        )
    return mask


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _max_radius(m: np.ndarray) -> int:
    """A radius scale: about the object's inscribed radius (at least 1), capped by the image size."""
    count = max(int(m.sum()), 1)
    if m.ndim == 2:
        size = max(1, int(np.sqrt(count / np.pi)))
    else:
        size = max(1, int(np.cbrt(3.0 * count / (4.0 * np.pi))))
    return max(1, min(size, min(m.shape) // 4))


def _balls(shape: tuple[int, ...], centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """bool ``shape``: the union of the balls of float ``radii`` (n,) around int ``centres`` (n, ndim)."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    out = np.zeros(shape, dtype=bool)
    for centre, r in zip(centres, radii, strict=True):
        dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
        out |= dist2 <= r**2
    return out


def _shift(m: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """``m`` translated by ``offsets`` (one int per axis), zero-filled."""
    out = np.zeros_like(m)
    src = tuple(slice(max(0, -d), s - max(0, d)) for d, s in zip(offsets, m.shape, strict=True))
    part = m[src]
    dst = tuple(slice(max(0, d), max(0, d) + p) for d, p in zip(offsets, part.shape, strict=True))
    out[dst] = part
    return out


def _random_balls(
    shape: tuple[int, ...], n: int, scale: int, rng: np.random.Generator, inside: np.ndarray | None
) -> np.ndarray:
    """bool ``shape``: ``n`` balls of radius in [1, scale], centred on voxels of ``inside`` (if any)."""
    radii = rng.uniform(1.0, max(1.5, scale), size=n)
    where = np.nonzero(inside) if inside is not None else ()
    if where and where[0].size:
        pick = rng.integers(0, where[0].size, size=n)
        centres = np.stack([a[pick] for a in where], axis=1)
    else:
        centres = np.stack([rng.integers(0, s, size=n) for s in shape], axis=1)
    return _balls(shape, centres, radii)


def _boundary_noise(signed: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    """``signed`` plus a smooth noise field of amplitude about ``scale``: in 2D its maximum, in 3D 2.5
    standard deviations (the maximum of a volume's many more voxels lies further out, which left the
    typical voxel almost untouched)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(signed.shape), sigma=rng.uniform(1.0, 4.0))
    spread = float(np.abs(noise).max()) if noise.ndim == 2 else 2.5 * float(noise.std())
    noise *= rng.uniform(0.5, 1.5) * scale / max(spread, 1e-12)
    return signed + noise


def _signed_distance(m: np.ndarray) -> np.ndarray:
    """Distance to the boundary, positive inside ``m`` (bool), negative outside."""
    inside = ndimage.distance_transform_edt(m)
    outside = ndimage.distance_transform_edt(~m)
    return np.asarray(np.where(m, inside, -outside), dtype=np.float64)


def _apply(kind: str, m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One corruption of kind ``kind`` of a bool mask (2-D or 3-D)."""
    scale = _max_radius(m)
    if kind == "erode":
        return ndimage.binary_erosion(m, ball(int(rng.integers(1, scale + 1)), m.ndim))
    if kind == "dilate":
        return ndimage.binary_dilation(m, ball(int(rng.integers(1, scale + 1)), m.ndim))
    if kind == "shift":
        reach = max(1, scale)
        return _shift(m, tuple(int(v) for v in rng.integers(-reach, reach + 1, size=m.ndim)))
    if kind in ("holes", "blobs"):
        d = _random_balls(m.shape, int(rng.integers(1, 4)), scale, rng, m if kind == "holes" else None)
        return m & ~d if kind == "holes" else m | d
    if kind == "boundary":
        return _boundary_noise(_signed_distance(m), scale, rng) > 0
    if kind == "combo":
        out = m
        for sub in rng.choice(_SIMPLE, size=int(rng.integers(2, 4)), replace=False):
            out = _apply(str(sub), out, rng)
        return out
    raise ValueError(f"kind must be one of {list(CORRUPTION_KINDS)}, got {kind!r}")


def _present(lab: np.ndarray, num_classes: int) -> np.ndarray:
    """The structures 1..C-1 present in ``lab``, int64 (M,)."""
    return np.flatnonzero(np.bincount(lab.ravel(), minlength=num_classes)[1:]) + 1


def _targets(lab: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[int]:
    """One random present structure, or (half the time) all of them; [] for an empty map."""
    present = _present(lab, num_classes)
    if present.size == 0:
        return []
    if rng.random() < 0.5:
        return [int(c) for c in present]
    return [int(rng.choice(present))]


def _apply_labels(kind: str, lab: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """One corruption of kind ``kind`` of a uint8 label map (2-D or 3-D) with labels 0..C-1."""
    out = lab.copy()
    if kind in ("erode", "dilate"):
        targets = _targets(lab, num_classes, rng)
        for c in targets:
            m = lab == c
            fp = ball(int(rng.integers(1, _max_radius(m) + 1)), lab.ndim)
            if kind == "erode":
                out[m & ~ndimage.binary_erosion(m, fp)] = 0
            else:  # one structure grows over anything; all of them grow into the background only
                grown = ndimage.binary_dilation(m, fp)
                out[grown & (lab == 0) if len(targets) > 1 else grown] = c
        return out
    if kind == "shift":
        targets = _targets(lab, num_classes, rng)
        whole = len(targets) > 1
        reach = _max_radius(lab > 0) if whole else _max_radius(lab == targets[0]) if targets else 1
        offsets = tuple(int(v) for v in rng.integers(-reach, reach + 1, size=lab.ndim))
        if whole or not targets:
            return _shift(lab, offsets)
        m = lab == targets[0]
        out[m] = 0
        out[_shift(m, offsets)] = targets[0]
        return out
    if kind == "holes":
        present = _present(lab, num_classes)
        if present.size == 0:
            return out
        m = lab == int(rng.choice(present))
        out[m & _random_balls(lab.shape, int(rng.integers(1, 4)), _max_radius(m), rng, m)] = 0
        return out
    if kind == "blobs":
        c = int(rng.integers(1, num_classes))
        scale = _max_radius(lab == c) if np.any(lab == c) else _max_radius(lab > 0)
        out[_random_balls(lab.shape, int(rng.integers(1, 4)), scale, rng, None)] = c
        return out
    if kind == "boundary":
        present = _present(lab, num_classes)
        best = np.zeros(lab.shape, dtype=np.float64)  # the background wins where every score is <= 0
        for c in present:
            m = lab == c
            score = _boundary_noise(_signed_distance(m), _max_radius(m), rng)
            better = score > best
            out[better] = c
            best[better] = score[better]
        out[best <= 0] = 0
        return out
    if kind == "drop":
        present = _present(lab, num_classes)
        if present.size:
            out[lab == int(rng.choice(present))] = 0
        return out
    if kind == "swap":
        present = _present(lab, num_classes)
        if present.size == 0:
            return out
        a = int(rng.choice(present))
        b = int(rng.choice([c for c in range(1, num_classes) if c != a]))
        out[lab == a], out[lab == b] = b, a
        return out
    if kind == "speckle":
        r = int(rng.integers(1, 3))
        fp = ball(r, lab.ndim)
        band = ndimage.maximum_filter(lab, footprint=fp) != ndimage.minimum_filter(lab, footprint=fp)
        band &= rng.random(lab.shape) < rng.uniform(0.2, 0.8)
        where = np.nonzero(band)
        moved = tuple(
            np.clip(w + rng.integers(-r, r + 1, size=w.size), 0, s - 1)
            for w, s in zip(where, lab.shape, strict=True)
        )
        out[where] = lab[moved]
        return out
    if kind == "combo":
        for sub in rng.choice(_LABEL_SIMPLE, size=int(rng.integers(2, 4)), replace=False):
            out = _apply_labels(str(sub), out, num_classes, rng)
        return out
    raise ValueError(f"kind must be one of {list(LABEL_CORRUPTION_KINDS)}, got {kind!r}")


def _binary_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks, 1 when both are empty."""
    sizes = np.array([np.count_nonzero(a & b), np.count_nonzero(a), np.count_nonzero(b)])
    return float(dice_from_counts(sizes[0], sizes[1], sizes[2]))


def _label_dice(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """Mean per-structure Dice of two label maps (the oracle's score)."""
    same = a == b
    inter = np.bincount(a[same].ravel(), minlength=num_classes)
    size_a = np.bincount(a.ravel(), minlength=num_classes)
    size_b = np.bincount(b.ravel(), minlength=num_classes)
    return float(mean_structure_dice(inter, size_a, size_b))


def _kinds_for(num_classes: int | None) -> tuple[str, ...]:
    return CORRUPTION_KINDS if num_classes is None else LABEL_CORRUPTION_KINDS


def corrupt_mask(
    mask: np.ndarray, kind: str, rng: np.random.Generator, *, num_classes: int | None = None
) -> tuple[np.ndarray, float]:
    """One corruption of ``mask`` (H, W) or (D, H, W), at least 4 voxels along every axis.

    Binary (``num_classes`` None or 2): ``mask`` bool or uint8 in {0, 1}, kinds
    :data:`CORRUPTION_KINDS`; label maps (``num_classes`` C >= 3): uint8 labels 0..C-1, kinds
    :data:`LABEL_CORRUPTION_KINDS`. Returns (corrupted mask uint8 of ``mask``'s shape with labels 0..C-1,
    its Dice against ``mask`` as a float in [0, 1]: the mean per-structure Dice for label maps). The
    same ``rng`` state gives the same output.
    """
    classes = _check_num_classes(num_classes)
    m = _check_mask(mask, classes)
    rng = _check_rng(rng)
    if kind not in _kinds_for(classes):
        raise ValueError(f"kind must be one of {list(_kinds_for(classes))}, got {kind!r}")
    if classes is None:
        out = _apply(kind, m, rng).astype(np.uint8)
        return out, _binary_dice(out.astype(bool), m)
    out = _apply_labels(kind, m, classes, rng)
    return out, _label_dice(out, m, classes)


def corruption_set(
    mask: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    num_classes: int | None = None,
    kinds: tuple[str, ...] | None = None,
    n_bins: int = 5,
    oversample: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` corruptions of ``mask`` (H, W) or (D, H, W) with their Dice spread evenly over [0, 1].

    Draws ``oversample * n`` corruptions (kinds uniformly from ``kinds``, by default every kind of the
    mask's type: :data:`CORRUPTION_KINDS` for binary masks, :data:`LABEL_CORRUPTION_KINDS` for label maps
    with ``num_classes`` >= 3, see :func:`corrupt_mask`), sorts their Dice into ``n_bins`` equal bins of
    [0, 1] and takes them round-robin from the bins (randomly within a bin), so that each bin is equally
    represented as far as the draws allow.
    Returns (masks uint8 (n, *S) with labels 0..C-1, Dice float64 (n,) in [0, 1]).
    """
    classes = _check_num_classes(num_classes)
    m = _check_mask(mask, classes)
    rng = _check_rng(rng)
    allowed = _kinds_for(classes)
    kinds = allowed if kinds is None else kinds
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not kinds or any(k not in allowed for k in kinds):
        raise ValueError(f"kinds must be a non-empty tuple from {list(allowed)}, got {kinds!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 1:
        raise ValueError(f"oversample must be a positive int, got {oversample!r}")
    draws = [corrupt_mask(m, str(rng.choice(kinds)), rng, num_classes=classes) for _ in range(oversample * n)]
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
