"""Label-free judges from the proposals themselves: agreement and consensus.

masks uint8 (N, K, *S) (a bank's), S = (H, W) or (D, H, W): {0, 1} for a binary bank, labels 0..C-1 for
a label-map bank (C = ``bank.num_classes`` > 2); scores float64 (N, K) in [0, 1]. Binary banks use the
Dice of the foreground (two empty masks have Dice 1), label maps the mean per-structure Dice over the
structures 1..C-1 (a structure absent from both maps counts as 1; see :mod:`rndpo.judges.base`).
"""

from __future__ import annotations

import math

import numpy as np

from rndpo.judges.base import _bank_masks, _chunks, _finite_scores, _label_classes
from rndpo.judges.oracle import mean_structure_dice, proposal_dice
from rndpo.metrics import dice_from_counts
from rndpo.proposals import ProposalBank

__all__ = ["AgreementJudge", "ConsensusJudge", "agreement_scores", "consensus_scores", "vote_label_map"]


def agreement_scores(masks: np.ndarray, *, num_classes: int | None = None) -> np.ndarray:
    """float64 (N, K): each proposal's mean Dice with the other K - 1 proposals of its image (K >= 2).

    masks (N, K, *S): binary (``num_classes=None``) or label maps 0..C-1 (``num_classes=C``, mean
    per-structure Dice). The counts are :func:`rndpo.pairwise_stats`'s.
    """
    from rndpo.mining import pairwise_stats

    k = masks.shape[1]
    if k < 2:
        raise ValueError(f"AgreementJudge needs at least 2 proposals per image (K >= 2), got K = {k}")
    st = pairwise_stats(masks, num_classes=num_classes)
    sizes = np.asarray(st.sizes, dtype=np.int64)
    inter = np.asarray(st.intersection, dtype=np.int64)
    if num_classes is None:
        dice = dice_from_counts(inter, sizes[:, :, None], sizes[:, None, :])
    else:
        dice = mean_structure_dice(inter, sizes[:, :, None, :], sizes[:, None, :, :])
    dice[:, np.arange(k), np.arange(k)] = 0.0
    return dice.sum(axis=2) / (k - 1)


def vote_label_map(masks: np.ndarray, *, num_classes: int | None = None) -> np.ndarray:
    """The per-voxel vote of the K proposals of each image.

    Binary masks (N, K, *S) in {0, 1} (``num_classes=None``): bool (N, *S), a voxel is foreground iff
    strictly more than K / 2 proposals contain it (a tie, possible for even K, is background). Label
    maps (``num_classes=C``): uint8 (N, *S), the most frequent label, ties to the lower label (for
    C = 2 this is the binary rule).
    """
    n, k = masks.shape[:2]
    spatial = tuple(masks.shape[2:])
    p = math.prod(spatial)
    if num_classes is None:
        consensus = np.empty((n, *spatial), dtype=bool)
        for c in _chunks(n, 2 * k * p):
            votes = np.count_nonzero(masks[c].astype(bool, copy=False), axis=1)
            consensus[c] = 2 * votes > k
        return consensus
    mode = np.empty((n, *spatial), dtype=np.uint8)
    for c in _chunks(n, (k + 17) * p):
        m = masks[c]
        best = np.count_nonzero(m == 0, axis=1)
        label = np.zeros(best.shape, dtype=np.uint8)
        for value in range(1, num_classes):
            count = np.count_nonzero(m == value, axis=1)
            more = count > best  # strict: a tie keeps the lower label
            best = np.where(more, count, best)
            label[more] = value
        mode[c] = label
    return mode


def consensus_scores(masks: np.ndarray, *, num_classes: int | None = None) -> np.ndarray:
    """float64 (N, K): Dice of each proposal with :func:`vote_label_map` of its image (mean
    per-structure Dice for label maps, ``num_classes=C``)."""
    return proposal_dice(masks, vote_label_map(masks, num_classes=num_classes), num_classes=num_classes)


class AgreementJudge:
    """Mean Dice of each proposal with the other K - 1 proposals of its image.

    Computed from :func:`rndpo.pairwise_stats` (sizes and intersections; per class for label maps, whose
    score is the mean per-structure Dice); two empty masks have Dice 1. Needs K >= 2 (with a single
    proposal there is nothing to agree with: ValueError).
    """

    name = "agreement"

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) mean pairwise Dice in [0, 1]."""
        masks = _bank_masks(bank)
        scores = agreement_scores(masks, num_classes=_label_classes(bank))
        return _finite_scores(scores, self.name, masks.shape[:2])


class ConsensusJudge:
    """Dice of each proposal with the per-voxel vote of the K proposals of its image.

    Binary banks: a voxel is in the consensus mask iff strictly more than K / 2 proposals contain it (a
    tie, possible for even K, is background); two empty masks have Dice 1. Label-map banks: the
    consensus is the most frequent label per voxel (ties to the lower label), and the score the mean
    per-structure Dice with it (see :func:`vote_label_map`).
    """

    name = "consensus"

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) Dice with the consensus mask, in [0, 1]."""
        masks = _bank_masks(bank)
        scores = consensus_scores(masks, num_classes=_label_classes(bank))
        return _finite_scores(scores, self.name, masks.shape[:2])
