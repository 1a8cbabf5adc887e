"""The oracle judges: true Dice against ``bank.ground_truth`` and its noisy version (experiments only).

masks bool or uint8 (N, K, H, W) in {0, 1}; ground truth bool or uint8 (N, H, W) in {0, 1}; scores
float64 (N, K) on the Dice scale [0, 1]. Two empty masks have Dice 1.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from rndpo.judges.base import _bank_ground_truth, _bank_masks, _check_binary, _chunks, _finite_scores
from rndpo.metrics import dice_from_counts, spearman
from rndpo.proposals import ProposalBank

__all__ = ["NoisyOracleJudge", "OracleJudge", "pearson_for_spearman", "proposal_dice"]


# --------------------------------------------------------------------------------------------------------
# Dice of proposals against a per-image reference mask


def proposal_dice(masks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Dice of every proposal with its image's reference mask.

    masks: bool or uint8 (N, K, H, W) in {0, 1}; reference: bool or uint8 (N, H, W) in {0, 1}.
    Returns float64 (N, K) in [0, 1]; two empty masks have Dice 1.
    """
    masks = _check_binary(masks, "masks", 4, "(N, K, H, W)")
    reference = _check_binary(reference, "reference", 3, "(N, H, W)")
    n, k, h, w = masks.shape
    if reference.shape != (n, h, w):
        raise ValueError(f"reference must have shape (N, H, W) = {(n, h, w)}, got {reference.shape}")
    out = np.empty((n, k), dtype=np.float64)
    p = h * w
    for c in _chunks(n, 2 * k * p):
        m = masks[c].reshape(-1, k, p).astype(bool, copy=False)
        g = reference[c].reshape(-1, 1, p).astype(bool, copy=False)
        inter = np.count_nonzero(m & g, axis=-1)
        out[c] = dice_from_counts(inter, np.count_nonzero(m, axis=-1), np.count_nonzero(g, axis=-1))
    return out


# --------------------------------------------------------------------------------------------------------
# oracle judges


class OracleJudge:
    """True Dice of each proposal against ``bank.ground_truth`` (an upper bound; experiments only)."""

    name = "oracle"

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) true Dice in [0, 1]; raises ValueError if the bank has no ground truth."""
        masks = _bank_masks(bank)
        gt = _bank_ground_truth(bank, "OracleJudge")
        return _finite_scores(proposal_dice(masks, gt), self.name, masks.shape[:2])


def pearson_for_spearman(rho: float) -> float:
    """The Pearson r of a bivariate normal whose Spearman correlation is ``rho``: ``2 sin(pi rho / 6)``.

    Inverse of ``rho_s = (6 / pi) arcsin(r / 2)`` (Pearson, 1907); r and rho are floats in [-1, 1].
    """
    return 2.0 * math.sin(math.pi * rho / 6.0)


def _rank_normal_scores(values: np.ndarray) -> np.ndarray:
    """Normal scores Phi^-1((rank - 1/2) / M) of a flat array, average ranks for ties."""
    u = (stats.rankdata(values, method="average") - 0.5) / values.size
    return stats.norm.ppf(u)


def _spearman_flat(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two flat arrays (0.0 where it is undefined: either side constant)."""
    rho = spearman(a, b)
    return 0.0 if rho is None else rho


class NoisyOracleJudge:
    """The oracle's Dice with rank noise whose Spearman correlation with the true Dice is ``reliability``.

    Construction over all N * K entries of the bank (true Dice d, float64 (N, K)):

    1. normal scores ``z = Phi^-1((rank(d) - 1/2) / (N K))`` (average ranks for ties);
    2. ``y = r z + sqrt(1 - r^2) eps`` with ``eps ~ N(0, 1)`` drawn from ``seed``;
    3. the score of an entry is the true-Dice value of the same rank as ``y``, i.e. the scores have
       exactly the empirical distribution of the true Dice (so margins stay on the Dice scale, and
       ``reliability=1`` returns the oracle's scores).

    For a bivariate normal, Spearman's rho_s and Pearson's r satisfy ``rho_s = (6 / pi) arcsin(r / 2)``,
    so ``r = 2 sin(pi rho / 6)`` is the starting point. With ``calibrate=True`` (default) r is then
    refined by bisection (the noise ``eps`` stays fixed) so that the realised Spearman correlation over
    the bank is within ``1e-3`` of ``reliability`` wherever that is reachable; this removes the
    finite-sample and tie error of the closed form. If the true Dice is constant over the bank, the
    correlation is undefined and the scores are that constant. Deterministic per ``seed``.
    """

    name = "noisy_oracle"

    def __init__(self, reliability: float = 0.7, *, seed: int = 0, calibrate: bool = True) -> None:
        if isinstance(reliability, bool) or not isinstance(
            reliability, (int, float, np.floating, np.integer)
        ):
            raise TypeError(f"reliability must be a float in [0, 1], got {type(reliability).__name__}")
        if not 0.0 <= float(reliability) <= 1.0:
            raise ValueError(f"reliability must lie in [0, 1], got {reliability}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.reliability = float(reliability)
        self.seed = int(seed)
        self.calibrate = bool(calibrate)

    def _scores_for(self, r: float, z: np.ndarray, eps: np.ndarray, sorted_truth: np.ndarray) -> np.ndarray:
        y = r * z + math.sqrt(max(0.0, 1.0 - r * r)) * eps
        order = np.argsort(y, kind="stable")
        out = np.empty_like(sorted_truth)
        out[order] = sorted_truth
        return out

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) scores on the Dice scale; raises ValueError if the bank has no ground truth."""
        truth = OracleJudge().score(bank)
        shape = truth.shape
        flat = truth.ravel()
        if np.all(flat == flat[0]):
            return truth.copy()
        rho = self.reliability
        if rho == 1.0:
            return truth.copy()
        z = _rank_normal_scores(flat)
        eps = np.random.default_rng(self.seed).standard_normal(flat.size)
        sorted_truth = np.sort(flat)
        r0 = pearson_for_spearman(rho)
        scores = self._scores_for(r0, z, eps, sorted_truth)
        if self.calibrate:
            scores = self._calibrated(rho, r0, scores, flat, z, eps, sorted_truth)
        return _finite_scores(scores.reshape(shape), self.name, shape)

    def _calibrated(
        self,
        rho: float,
        r0: float,
        scores: np.ndarray,
        flat: np.ndarray,
        z: np.ndarray,
        eps: np.ndarray,
        sorted_truth: np.ndarray,
    ) -> np.ndarray:
        def gap(r: float) -> tuple[float, np.ndarray]:
            s = self._scores_for(r, z, eps, sorted_truth)
            return _spearman_flat(s, flat) - rho, s

        g0 = _spearman_flat(scores, flat) - rho
        if abs(g0) <= 1e-3:
            return scores
        lo, hi = (0.0, r0) if g0 > 0 else (r0, 1.0)
        g_lo, s_lo = gap(lo)
        g_hi, s_hi = gap(hi)
        if g_lo > 0:  # even pure noise correlates more than asked: the closest reachable is r = 0
            return s_lo
        if g_hi < 0:
            return s_hi
        best = s_lo if abs(g_lo) < abs(g_hi) else s_hi
        best_gap = min(abs(g_lo), abs(g_hi))
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            g, s = gap(mid)
            if abs(g) < best_gap:
                best, best_gap = s, abs(g)
            if best_gap <= 1e-3:
                break
            if g > 0:
                hi = mid
            else:
                lo = mid
        return best
