"""The uncertainty judge: how well a mask fits the base model's probabilities (sigmoid or softmax).

Binary banks: masks uint8 (N, K, *S) in {0, 1}, probs float32 (N, *S) foreground probabilities in [0, 1].
Label-map banks (C = ``bank.num_classes`` > 2): masks (N, K, *S) labels 0..C-1, probs float32
(N, C, *S) softmax probabilities. S = (H, W) or (D, H, W). Scores float64 (N, K) (range by mode, see
:class:`UncertaintyJudge`).
"""

from __future__ import annotations

import math
import typing
from typing import Any, ClassVar

import numpy as np

from rndpo.config import UncertaintyMode
from rndpo.judges.base import _bank_masks, _bank_probs, _chunks, _finite_scores, _label_classes
from rndpo.proposals import ProposalBank

__all__ = ["UncertaintyJudge", "fit_scores"]

_PROB_CLIP = 1e-6
_MODES: tuple[str, ...] = typing.get_args(UncertaintyMode)


def _region_mean(values: np.ndarray, region: np.ndarray, empty: float) -> np.ndarray:
    """Mean of values (n, 1 or K, P) over each boolean region (n, K, P); ``empty`` where a region is empty."""
    count = np.count_nonzero(region, axis=-1)
    total = np.where(region, values, 0.0).sum(axis=-1)
    out = np.full(count.shape, empty, dtype=np.float64)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _boundary_bands(m: np.ndarray, spatial_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner and outer face-neighbour boundary bands of bool masks (..., *S), S the last ``spatial_dims``
    axes (4 neighbours in 2D, 6 in 3D).

    inner: mask voxels with a neighbour outside the mask; outer: non-mask voxels with a neighbour in
    the mask. Voxels beyond the image edge copy their edge neighbour, so the edge itself is no boundary.
    """
    pad = np.pad(m, [(0, 0)] * (m.ndim - spatial_dims) + [(1, 1)] * spatial_dims, mode="edge")
    centre = [slice(1, -1)] * spatial_dims
    all_in = np.ones_like(m)
    any_in = np.zeros_like(m)
    for axis in range(spatial_dims):
        for side in (slice(None, -2), slice(2, None)):
            index = list(centre)
            index[axis] = side
            key: tuple[Any, ...] = (Ellipsis, *index)
            neighbour = pad[key]
            all_in &= neighbour
            any_in |= neighbour
    return m & ~all_in, ~m & any_in


def _binary_fit(masks: np.ndarray, probs: np.ndarray, mode: str) -> np.ndarray:
    """Binary masks (N, K, *S) against foreground probabilities (N, *S): float64 (N, K)."""
    n, k = masks.shape[:2]
    nd = masks.ndim - 2
    p_size = math.prod(masks.shape[2:])
    out = np.empty((n, k), dtype=np.float64)
    for c in _chunks(n, 24 * k * p_size):
        m = masks[c].astype(bool, copy=False)
        p = probs[c, None].astype(np.float64)
        nc = m.shape[0]
        if mode == "boundary":
            inside, outside = _boundary_bands(m, nd)
        else:
            inside, outside = m, ~m
        if mode == "entropy":
            pc = np.clip(p, _PROB_CLIP, 1.0 - _PROB_CLIP)
            fg, bg, empty = -np.log2(pc), -np.log2(1.0 - pc), 1.0
            sign = -1.0
        else:
            fg, bg, empty = p, 1.0 - p, 0.5
            sign = 1.0
        a = _region_mean(fg.reshape(nc, 1, -1), inside.reshape(nc, k, -1), empty)
        b = _region_mean(bg.reshape(nc, 1, -1), outside.reshape(nc, k, -1), empty)
        out[c] = sign * 0.5 * (a + b)
    return out


def _label_fit(masks: np.ndarray, probs: np.ndarray, mode: str) -> np.ndarray:
    """Label maps (N, K, *S) against class probabilities (N, C, *S): float64 (N, K)."""
    n, k = masks.shape[:2]
    classes = probs.shape[1]
    nd = masks.ndim - 2
    p_size = math.prod(masks.shape[2:])
    out = np.empty((n, k), dtype=np.float64)
    chance = 1.0 / classes
    for c in _chunks(n, 24 * k * p_size + 8 * classes * p_size):
        m = masks[c]
        nc = m.shape[0]
        total = np.zeros((nc, k), dtype=np.float64)
        for label in range(classes):
            region = m == label
            if mode == "boundary":
                region = _boundary_bands(region, nd)[0]
            p = probs[c, label].astype(np.float64).reshape(nc, 1, -1)
            if mode == "entropy":
                values, empty = -np.log2(np.clip(p, _PROB_CLIP, 1.0 - _PROB_CLIP)), -math.log2(chance)
            else:
                values, empty = p, chance
            total += _region_mean(values, region.reshape(nc, k, -1), empty)
        out[c] = (-1.0 if mode == "entropy" else 1.0) * total / classes
    return out


def fit_scores(
    masks: np.ndarray,
    probs: np.ndarray,
    mode: UncertaintyMode = "confidence",
    *,
    num_classes: int | None = None,
) -> np.ndarray:
    """float64 (N, K): how well each mask fits the probabilities, in ``mode`` (see :class:`UncertaintyJudge`).

    Binary (``num_classes=None``): masks (N, K, *S) in {0, 1}, probs (N, *S) foreground probabilities.
    Label maps (``num_classes=C``): masks (N, K, *S) labels 0..C-1, probs (N, C, *S) class probabilities;
    for C = 2 with probs ``[1 - p, p]`` this equals the binary score (up to rounding).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
    if num_classes is None:
        return _binary_fit(masks, probs, mode)
    if probs.ndim != masks.ndim or probs.shape[1] != num_classes or probs.shape[2:] != masks.shape[2:]:
        raise ValueError(
            f"probs must have shape (N, C, *S) = {(masks.shape[0], num_classes, *masks.shape[2:])}, "
            f"got {probs.shape}"
        )
    return _label_fit(masks, probs, mode)


class UncertaintyJudge:
    """Scores how well a mask M fits the base model's probabilities p = bank.probs.

    Binary banks (p the foreground probability; the mean over an empty set is replaced by the chance
    value given below, so empty and full masks get finite, defined scores):

    - ``"confidence"`` (in [0, 1]): ``(mean_{x in M} p(x) + mean_{x not in M} (1 - p(x))) / 2``;
      an empty set contributes 0.5.
    - ``"boundary"`` (in [0, 1]): the same on the mask's boundary only,
      ``(mean_{x in B_in} p(x) + mean_{x in B_out} (1 - p(x))) / 2``, where B_in are mask voxels with a
      face neighbour (4 in 2D, 6 in 3D) outside the mask and B_out are background voxels with a face
      neighbour inside it (voxels beyond the image edge copy the edge, so the image edge is no boundary);
      an empty band contributes 0.5. It is high when the mask's contour runs where p crosses 1/2.
    - ``"entropy"`` (in [-log2(1/1e-6), 0] ~ [-19.93, 0]): minus the balanced per-voxel surprise in bits
      of the mask's labels under Bernoulli(p),
      ``-(mean_{x in M} -log2 p(x) + mean_{x not in M} -log2(1 - p(x))) / 2``, with p clipped to
      [1e-6, 1 - 1e-6]; an empty set contributes 1 bit (the surprise at p = 1/2).

    Label-map banks (C > 2 classes, p_c the softmax probability of class c, L the proposal's label map):
    each mode is the mean over all C classes, background included, of the binary mode's per-class term,
    with the chance value 1/C (or log2 C bits) for an empty set, so that C = 2 gives the binary score:

    - ``"confidence"``: ``(1/C) sum_c mean_{x: L(x) = c} p_c(x)``, the class-balanced mean probability
      of the assigned labels;
    - ``"boundary"``: ``(1/C) sum_c mean_{x in B_c} p_c(x)``, B_c the voxels labelled c with a face
      neighbour labelled otherwise;
    - ``"entropy"``: ``-(1/C) sum_c mean_{x: L(x) = c} -log2 p_c(x)``, minus the class-balanced
      cross-entropy (surprise) of the labels under the softmax, p clipped as above.
    """

    name = "uncertainty"
    MODES: ClassVar[tuple[str, ...]] = _MODES

    def __init__(self, mode: UncertaintyMode = "confidence") -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {list(self.MODES)}, got {mode!r}")
        self.mode = mode

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) scores (range depends on the mode, see the class docstring)."""
        masks = _bank_masks(bank)
        probs = _bank_probs(bank, f"UncertaintyJudge(mode={self.mode!r})")
        scores = fit_scores(masks, probs, self.mode, num_classes=_label_classes(bank))
        return _finite_scores(scores, self.name, masks.shape[:2])
