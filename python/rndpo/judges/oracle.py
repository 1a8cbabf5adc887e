"""The oracle judges: true Dice against ``bank.ground_truth`` and its noisy version (experiments only).

Binary banks: masks bool or uint8 (N, K, *S) in {0, 1}, ground truth (N, *S) in {0, 1}, S = (H, W) or
(D, H, W); the score is the Dice of the foreground, two empty masks have Dice 1.

Label-map banks (``num_classes`` C > 2): masks (N, K, *S) and ground truth (N, *S) with labels 0..C-1;
the score is the mean per-structure Dice over the structures 1..C-1, where a structure absent from both
the proposal and the ground truth counts as Dice 1 (the proposal is right about it). Averages over
images therefore always take C - 1 terms, and a proposal that invents a structure the image lacks is
penalised. Scores are float64 (N, K) on the Dice scale [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from rndpo.judges.base import (
    _bank_ground_truth,
    _bank_masks,
    _check_binary,
    _chunks,
    _finite_scores,
    _label_classes,
)
from rndpo.metrics import dice_from_counts, spearman
from rndpo.proposals import ProposalBank

__all__ = [
    "NoisyOracleJudge",
    "OracleJudge",
    "mean_structure_dice",
    "pearson_for_spearman",
    "proposal_dice",
]


# --------------------------------------------------------------------------------------------------------
# Dice of proposals against a per-image reference mask


def mean_structure_dice(inter: np.ndarray, size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """Mean per-structure Dice from per-class counts with a trailing class axis C (class 0 the background).

    inter, size_a, size_b: broadcastable integer counts (..., C), e.g. from
    :func:`rndpo.pairwise_stats` with ``num_classes=C``. Returns float64 (...,): the mean over classes
    1..C-1 of ``2 inter / (size_a + size_b)``, a class absent from both counting as 1.
    """
    per_class = dice_from_counts(inter[..., 1:], size_a[..., 1:], size_b[..., 1:])
    return per_class.mean(axis=-1)


def _layout(spatial: int, lead: str) -> str:
    axes = ("H", "W") if spatial == 2 else ("D", "H", "W")
    return "(" + ", ".join([*lead.split(), *axes]) + ")"


def _spatial_dims(reference: object) -> int:
    """2 or 3, from the reference's shape (N, *S); 2 for anything else (its check then reports it)."""
    ndim = getattr(reference, "ndim", 3)
    return 3 if ndim == 4 else 2


def _check_labels(arr: object, what: str, ndim: int, layout: str, num_classes: int) -> np.ndarray:
    """An integer or bool array of ``ndim`` dims with labels 0..num_classes-1 (checked by chunk)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{what} must be a numpy array {layout}, got {type(arr).__name__}")
    if arr.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions {layout}, got shape {arr.shape}")
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{what} must be bool or an integer dtype with labels 0 to {num_classes - 1}, got {arr.dtype}"
        )
    if arr.size:
        step = max(1, (1 << 24) // max(1, arr[:1].size))
        lo = min(int(arr[i : i + step].min()) for i in range(0, arr.shape[0], step))
        hi = max(int(arr[i : i + step].max()) for i in range(0, arr.shape[0], step))
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{what} must hold labels 0 to {num_classes - 1} (num_classes = {num_classes}), "
                f"got values in [{lo}, {hi}]"
            )
    return arr


def _label_dice(masks: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean per-structure Dice (N, K) of label maps (N, K, *S) against reference label maps (N, *S).

    The counts come from the Rust core: each chunk's reference joins its proposals as proposal K, and
    ``pairwise_stats(..., num_classes=C)`` gives the per-class sizes and intersections.
    """
    from rndpo.mining import pairwise_stats

    n, k = masks.shape[:2]
    p = math.prod(masks.shape[2:])
    out = np.empty((n, k), dtype=np.float64)
    for c in _chunks(n, 2 * (k + 1) * p):
        stacked = np.empty((c.stop - c.start, k + 1, p), dtype=np.uint8)
        stacked[:, :k] = masks[c].reshape(-1, k, p)
        stacked[:, k] = reference[c].reshape(-1, p)
        st = pairwise_stats(stacked, num_classes=num_classes)
        sizes = np.asarray(st.sizes, dtype=np.int64)
        inter = np.asarray(st.intersection, dtype=np.int64)[:, :k, k, :]
        out[c] = mean_structure_dice(inter, sizes[:, :k, :], sizes[:, k : k + 1, :])
    return out


def proposal_dice(masks: np.ndarray, reference: np.ndarray, *, num_classes: int | None = None) -> np.ndarray:
    """Dice of every proposal with its image's reference mask.

    masks: bool or uint8 (N, K, *S) in {0, 1}; reference: bool or uint8 (N, *S) in {0, 1}; S = (H, W) or
    (D, H, W). Returns float64 (N, K) in [0, 1]; two empty masks have Dice 1.

    With ``num_classes`` C (2 to 255): masks and reference are label maps (any integer dtype, labels
    0..C-1) and the result is the mean per-structure Dice over classes 1..C-1, a structure absent from
    both counting as 1 (see :func:`mean_structure_dice`); for C = 2 it equals the binary Dice.
    """
    nd = _spatial_dims(reference)
    mask_layout, ref_layout = _layout(nd, "N K"), _layout(nd, "N")
    if num_classes is None:
        masks = _check_binary(masks, "masks", nd + 2, mask_layout)
        reference = _check_binary(reference, "reference", nd + 1, ref_layout)
    else:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 255:
            raise ValueError(f"num_classes must be None or an int from 2 to 255, got {num_classes!r}")
        masks = _check_labels(masks, "masks", nd + 2, mask_layout, num_classes)
        reference = _check_labels(reference, "reference", nd + 1, ref_layout, num_classes)
    n, k = masks.shape[:2]
    spatial = tuple(masks.shape[2:])
    if reference.shape != (n, *spatial):
        raise ValueError(f"reference must have shape {ref_layout} = {(n, *spatial)}, got {reference.shape}")
    if num_classes is not None:
        return _label_dice(masks, reference, num_classes)
    out = np.empty((n, k), dtype=np.float64)
    p = math.prod(spatial)
    for c in _chunks(n, 2 * k * p):
        m = masks[c].reshape(-1, k, p).astype(bool, copy=False)
        g = reference[c].reshape(-1, 1, p).astype(bool, copy=False)
        inter = np.count_nonzero(m & g, axis=-1)
        out[c] = dice_from_counts(inter, np.count_nonzero(m, axis=-1), np.count_nonzero(g, axis=-1))
    return out


# --------------------------------------------------------------------------------------------------------
# oracle judges


class OracleJudge:
    """True Dice of each proposal against ``bank.ground_truth`` (an upper bound; experiments only).

    Label-map banks (``bank.num_classes`` > 2) score the mean per-structure Dice, a structure absent
    from both the proposal and the ground truth counting as 1 (see :func:`proposal_dice`).
    """

    name = "oracle"

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) true Dice in [0, 1]; raises ValueError if the bank has no ground truth."""
        masks = _bank_masks(bank)
        gt = _bank_ground_truth(bank, "OracleJudge")
        classes = _label_classes(bank)
        return _finite_scores(proposal_dice(masks, gt, num_classes=classes), self.name, masks.shape[:2])


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
    correlation is undefined and the scores are that constant. Deterministic per ``seed``. On a label-map
    bank the true Dice is the oracle's mean per-structure Dice.
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
