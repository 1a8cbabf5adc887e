"""Label-free judges from the proposals themselves: agreement and consensus.

masks uint8 (N, K, H, W) in {0, 1} (a bank's); scores float64 (N, K) in [0, 1]; two empty masks have
Dice 1.
"""

from __future__ import annotations

import numpy as np

from rndpo.judges.base import _bank_masks, _chunks, _finite_scores
from rndpo.judges.oracle import proposal_dice
from rndpo.metrics import dice_from_counts
from rndpo.proposals import ProposalBank

__all__ = ["AgreementJudge", "ConsensusJudge"]


class AgreementJudge:
    """Mean Dice of each proposal with the other K - 1 proposals of its image.

    Computed from :func:`rndpo.pairwise_stats` (sizes and intersections); two empty masks have Dice 1.
    Needs K >= 2 (with a single proposal there is nothing to agree with: ValueError).
    """

    name = "agreement"

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) mean pairwise Dice in [0, 1]."""
        from rndpo.mining import pairwise_stats

        masks = _bank_masks(bank)
        n, k = masks.shape[:2]
        if k < 2:
            raise ValueError(f"AgreementJudge needs at least 2 proposals per image (K >= 2), got K = {k}")
        st = pairwise_stats(masks)
        sizes = np.asarray(st.sizes, dtype=np.int64)
        inter = np.asarray(st.intersection, dtype=np.int64)
        dice = dice_from_counts(inter, sizes[:, :, None], sizes[:, None, :])
        dice[:, np.arange(k), np.arange(k)] = 0.0
        return _finite_scores(dice.sum(axis=2) / (k - 1), self.name, (n, k))


class ConsensusJudge:
    """Dice of each proposal with the per-pixel majority vote of the K proposals of its image.

    A pixel is in the consensus mask iff strictly more than K / 2 proposals contain it (a tie, possible
    for even K, is background). Two empty masks have Dice 1.
    """

    name = "consensus"

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) Dice with the consensus mask, in [0, 1]."""
        masks = _bank_masks(bank)
        n, k, h, w = masks.shape
        consensus = np.empty((n, h, w), dtype=bool)
        for c in _chunks(n, 2 * k * h * w):
            votes = np.count_nonzero(masks[c].astype(bool, copy=False), axis=1)
            consensus[c] = 2 * votes > k
        return _finite_scores(proposal_dice(masks, consensus), self.name, (n, k))
