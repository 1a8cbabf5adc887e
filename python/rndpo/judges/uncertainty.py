"""The uncertainty judge: how well a mask fits the base model's foreground probabilities.

masks uint8 (N, K, H, W) in {0, 1}, probs float32 (N, H, W) in [0, 1]; scores float64 (N, K) (range
by mode, see :class:`UncertaintyJudge`).
"""

from __future__ import annotations

import typing
from typing import ClassVar

import numpy as np

from rndpo.config import UncertaintyMode
from rndpo.judges.base import _bank_masks, _bank_probs, _chunks, _finite_scores
from rndpo.proposals import ProposalBank

__all__ = ["UncertaintyJudge"]

_PROB_CLIP = 1e-6


def _region_mean(values: np.ndarray, region: np.ndarray, empty: float) -> np.ndarray:
    """Mean of values (n, 1 or K, P) over each boolean region (n, K, P); ``empty`` where a region is empty."""
    count = np.count_nonzero(region, axis=-1)
    total = np.where(region, values, 0.0).sum(axis=-1)
    out = np.full(count.shape, empty, dtype=np.float64)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _boundary_bands(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inner and outer 4-neighbour boundary bands of bool masks (..., H, W).

    inner: mask pixels with a 4-neighbour outside the mask; outer: non-mask pixels with a 4-neighbour in
    the mask. Pixels beyond the image edge copy their edge neighbour, so the edge itself is no boundary.
    """
    pad = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    up, down = pad[..., :-2, 1:-1], pad[..., 2:, 1:-1]
    left, right = pad[..., 1:-1, :-2], pad[..., 1:-1, 2:]
    all_in = up & down & left & right
    any_in = up | down | left | right
    return m & ~all_in, ~m & any_in


class UncertaintyJudge:
    """Scores how well a mask M fits the base model's foreground probabilities p = bank.probs.

    Modes (the mean over an empty set is replaced by the chance value given below, so empty and full
    masks get finite, defined scores):

    - ``"confidence"`` (in [0, 1]): ``(mean_{x in M} p(x) + mean_{x not in M} (1 - p(x))) / 2``;
      an empty set contributes 0.5.
    - ``"boundary"`` (in [0, 1]): the same on the mask's boundary only,
      ``(mean_{x in B_in} p(x) + mean_{x in B_out} (1 - p(x))) / 2``, where B_in are mask pixels with a
      4-neighbour outside the mask and B_out are background pixels with a 4-neighbour inside it (pixels
      beyond the image edge copy the edge, so the image edge is no boundary); an empty band contributes
      0.5. It is high when the mask's contour runs where p crosses 1/2.
    - ``"entropy"`` (in [-log2(1/1e-6), 0] ~ [-19.93, 0]): minus the balanced per-pixel surprise in bits
      of the mask's labels under Bernoulli(p),
      ``-(mean_{x in M} -log2 p(x) + mean_{x not in M} -log2(1 - p(x))) / 2``, with p clipped to
      [1e-6, 1 - 1e-6]; an empty set contributes 1 bit (the surprise at p = 1/2).
    """

    name = "uncertainty"
    MODES: ClassVar[tuple[str, ...]] = typing.get_args(UncertaintyMode)

    def __init__(self, mode: UncertaintyMode = "confidence") -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {list(self.MODES)}, got {mode!r}")
        self.mode = mode

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) scores (range depends on the mode, see the class docstring)."""
        masks = _bank_masks(bank)
        probs = _bank_probs(bank, f"UncertaintyJudge(mode={self.mode!r})")
        n, k, h, w = masks.shape
        out = np.empty((n, k), dtype=np.float64)
        for c in _chunks(n, 24 * k * h * w):
            m = masks[c].astype(bool, copy=False)
            p = probs[c, None].astype(np.float64)
            nc = m.shape[0]
            if self.mode == "boundary":
                inner, outer = _boundary_bands(m)
                inside, outside = inner, outer
            else:
                inside, outside = m, ~m
            if self.mode == "entropy":
                pc = np.clip(p, _PROB_CLIP, 1.0 - _PROB_CLIP)
                fg, bg, empty = -np.log2(pc), -np.log2(1.0 - pc), 1.0
                sign = -1.0
            else:
                fg, bg, empty = p, 1.0 - p, 0.5
                sign = 1.0
            a = _region_mean(fg.reshape(nc, 1, -1), inside.reshape(nc, k, -1), empty)
            b = _region_mean(bg.reshape(nc, 1, -1), outside.reshape(nc, k, -1), empty)
            out[c] = sign * 0.5 * (a + b)
        return _finite_scores(out, self.name, (n, k))
