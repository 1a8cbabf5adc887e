"""Judges: label-free quality signals that score every proposal of a :class:`~rndpo.proposals.bank.ProposalBank`.

Every judge follows the :class:`Judge` protocol: ``judge.score(bank)`` returns float64 (N, K) scores, higher
is better, and never NaN (a judge that would produce a non-finite score raises ``ValueError`` instead).
Judges that need a part of the bank the bank lacks (ground truth, probabilities, images) raise
``ValueError`` naming the missing field.

Shapes: images float32 (N, C, H, W), masks bool or uint8 (N, K, H, W) with values {0, 1}, probs float32
(N, H, W) in [0, 1], ground truth bool or uint8 (N, H, W) with values {0, 1}. Dice is
``2|A ∩ B| / (|A| + |B|)`` with the convention that two empty masks have Dice 1.

Judges:

- :class:`OracleJudge`: true Dice against ``bank.ground_truth`` (an upper bound; experiments only).
- :class:`NoisyOracleJudge`: the oracle's Dice with rank noise, tuned so that its Spearman correlation
  with the true Dice over the bank is ``reliability``.
- :class:`AgreementJudge`: mean Dice with the other K - 1 proposals of the same image.
- :class:`ConsensusJudge`: Dice with the per-pixel strict-majority vote of the K proposals.
- :class:`UncertaintyJudge`: how well a mask fits the base model's probabilities.
- :class:`LearnedQCJudge`: a small CNN that predicts Dice from (image, mask), trained on labeled images.
- :class:`~rndpo.judges.ensemble.EnsembleJudge` (``ensemble``): a reliability-weighted rank average of label-free
  judges (see :mod:`rndpo.judges.ensemble`).
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from scipy import stats

from rndpo.config import JUDGE_NAMES, UncertaintyMode
from rndpo.judges.qc_model import QCFitResult, QCNet, fit_qc_model, load_qc_model, predict_qc, save_qc_model
from rndpo.metrics import dice_from_counts, spearman
from rndpo.proposals import ProposalBank

__all__ = [
    "JUDGE_NAMES",
    "AgreementJudge",
    "ConsensusJudge",
    "Judge",
    "LearnedQCJudge",
    "NoisyOracleJudge",
    "OracleJudge",
    "UncertaintyJudge",
    "make_judge",
    "pearson_for_spearman",
    "proposal_dice",
]


# Images are processed in chunks so that boolean temporaries stay around this many bytes.
_CHUNK_BYTES = 1 << 26


@runtime_checkable
class Judge(Protocol):
    """Scores each proposal of a bank: ``score(bank)`` -> float64 (N, K), higher is better, never NaN."""

    name: str

    def score(self, bank: ProposalBank) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------------------
# validation


def _check_binary(arr: Any, what: str, ndim: int, layout: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{what} must be a numpy array {layout}, got {type(arr).__name__}")
    if arr.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions {layout}, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{what} must be bool or an integer dtype with values {{0, 1}}, got dtype {arr.dtype}"
        )
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(
            f"{what} must be binary with values {{0, 1}}, got values in [{arr.min()}, {arr.max()}]"
        )
    return arr


def _bank_masks(bank: ProposalBank) -> np.ndarray:
    """bank.masks, uint8 (N, K, H, W) in {0, 1} with K >= 1 (``ProposalBank`` guarantees all of it)."""
    if not isinstance(bank, ProposalBank):
        raise TypeError(f"bank must be a ProposalBank, got {type(bank).__name__}")
    return bank.masks


# What a judge needs that a valid bank may lack: the optional arrays, and finite images (a bank checks
# the images' dtype and shape only). Shapes, dtypes and value ranges are ProposalBank's guarantees.


def _bank_ground_truth(bank: ProposalBank, judge: str) -> np.ndarray:
    _bank_masks(bank)
    if bank.ground_truth is None:
        raise ValueError(
            f"{judge} needs bank.ground_truth (N, H, W) with values {{0, 1}}, but the bank has none "
            "(ground truth is only known for labeled images and experiments)"
        )
    return bank.ground_truth


def _bank_probs(bank: ProposalBank, judge: str) -> np.ndarray:
    _bank_masks(bank)
    if bank.probs is None:
        raise ValueError(
            f"{judge} needs bank.probs, the base model's foreground probabilities float32 (N, H, W), "
            "but the bank has none"
        )
    return bank.probs


def _bank_images(bank: ProposalBank, judge: str) -> np.ndarray:
    _bank_masks(bank)
    images = bank.images
    if images.size == 0:
        raise ValueError(
            f"{judge} needs bank.images float32 (N, C, H, W) with C >= 1, "
            f"but the bank has none (shape {images.shape})"
        )
    if not np.all(np.isfinite(images)):
        raise ValueError(
            f"bank.images must be finite, got {int(np.sum(~np.isfinite(images)))} non-finite values"
        )
    return images


def _finite_scores(scores: np.ndarray, judge: str, shape: tuple[int, int]) -> np.ndarray:
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    if scores.shape != shape:
        raise ValueError(f"{judge} produced scores of shape {scores.shape}, expected (N, K) = {shape}")
    bad = ~np.isfinite(scores)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{judge} produced {int(bad.sum())} non-finite scores (first at (image, proposal) = {where})"
        )
    return scores


def _chunks(n: int, per_image_bytes: int) -> list[slice]:
    """Slices over n images, each holding about _CHUNK_BYTES of per-image temporaries."""
    step = max(1, _CHUNK_BYTES // max(1, per_image_bytes))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


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


# --------------------------------------------------------------------------------------------------------
# label-free judges from the proposals themselves


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


# --------------------------------------------------------------------------------------------------------
# uncertainty judge from the base model's probabilities

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


# --------------------------------------------------------------------------------------------------------
# learned quality-control judge


class LearnedQCJudge:
    """A small CNN (:class:`rndpo.judges.qc_model.QCNet`) that predicts a proposal's Dice from (image, mask).

    Train it with :meth:`fit` on a bank of proposals for labeled images (their true Dice is known),
    then :meth:`score` any bank with the same number of image channels. ``n_synthetic`` corruptions of
    each training image's true mask (:mod:`rndpo.judges.corruptions`) join the proposals, ``rank_weight``
    weighs a pairwise ranking loss among each image's masks, ``jitter`` is the training intensity
    jitter, and ``tta`` scores as the mean over the 8 flips / 90-degree rotations. :meth:`save` / :meth:`load`
    keep the network and its fit result in a folder.
    """

    name = "learned_qc"

    def __init__(
        self,
        *,
        width: int = 16,
        stem_stride: int = 2,
        batch_size: int = 64,
        lr: float = 3e-3,
        n_synthetic: int = 0,
        rank_weight: float = 0.0,
        jitter: float = 0.0,
        tta: bool = False,
        device: str = "cpu",
    ) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite float, got {lr!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        if isinstance(n_synthetic, bool) or not isinstance(n_synthetic, int) or n_synthetic < 0:
            raise ValueError(f"n_synthetic must be a non-negative int, got {n_synthetic!r}")
        if not (isinstance(rank_weight, (int, float)) and rank_weight >= 0 and math.isfinite(rank_weight)):
            raise ValueError(f"rank_weight must be a finite float >= 0, got {rank_weight!r}")
        if not (isinstance(jitter, (int, float)) and 0 <= jitter < 1):
            raise ValueError(f"jitter must lie in [0, 1), got {jitter!r}")
        self.width = width
        self.stem_stride = stem_stride
        self.batch_size = batch_size
        self.lr = float(lr)
        self.n_synthetic = n_synthetic
        self.rank_weight = float(rank_weight)
        self.jitter = float(jitter)
        self.tta = bool(tta)
        self.device = device
        self.model: QCNet | None = None
        self.fit_result: QCFitResult | None = None

    def fit(
        self,
        bank: ProposalBank,
        *,
        val_fraction: float = 0.2,
        steps: int = 300,
        seed: int = 0,
        progress: bool = True,
    ) -> QCFitResult:
        """Train on ``bank`` (needs images and ground truth) plus ``n_synthetic`` corruptions of each
        training image's true mask; a ``val_fraction`` of images (a seeded split by image, never by
        proposal) is held out for the returned validation metrics (on the real proposals)."""
        masks = _bank_masks(bank)
        images = _bank_images(bank, "LearnedQCJudge.fit")
        truth = OracleJudge().score(bank)
        self.model, self.fit_result = fit_qc_model(
            images,
            masks,
            truth,
            ground_truth=_bank_ground_truth(bank, "LearnedQCJudge.fit"),
            n_synthetic=self.n_synthetic,
            rank_weight=self.rank_weight,
            jitter=self.jitter,
            val_fraction=val_fraction,
            steps=steps,
            batch_size=self.batch_size,
            lr=self.lr,
            width=self.width,
            stem_stride=self.stem_stride,
            seed=seed,
            device=self.device,
            progress=progress,
        )
        return self.fit_result

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) predicted Dice in [0, 1]; raises ValueError before :meth:`fit` or :meth:`load`."""
        if self.model is None:
            raise ValueError(
                "LearnedQCJudge has no trained model: call fit(bank) or LearnedQCJudge.load(path)"
            )
        masks = _bank_masks(bank)
        images = _bank_images(bank, "LearnedQCJudge")
        if images.shape[1] != self.model.in_channels:
            raise ValueError(
                f"bank.images must have {self.model.in_channels} channels (as in training), "
                f"got {images.shape[1]} (shape {images.shape})"
            )
        scores = predict_qc(
            self.model,
            images,
            masks,
            batch_size=max(self.batch_size, 128),
            device=self.device,
            tta=self.tta,
        )
        return _finite_scores(scores, self.name, masks.shape[:2])

    def save(self, path: str | Path) -> Path:
        """Write the network (model.pt), its config and fit result (config.json) into folder ``path``."""
        if self.model is None:
            raise ValueError("LearnedQCJudge has no trained model to save: call fit(bank) first")
        extra = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "n_synthetic": self.n_synthetic,
            "rank_weight": self.rank_weight,
            "jitter": self.jitter,
            "tta": self.tta,
        }
        return save_qc_model(path, self.model, self.fit_result, extra=extra)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> LearnedQCJudge:
        """A judge with the network saved in folder ``path`` by :meth:`save`."""
        model, fit_result, extra = load_qc_model(path, device=device)
        judge = cls(
            width=model.width,
            stem_stride=model.stem_stride,
            batch_size=int(extra.get("batch_size", 64)),
            lr=float(extra.get("lr", 3e-3)),
            n_synthetic=int(extra.get("n_synthetic", 0)),
            rank_weight=float(extra.get("rank_weight", 0.0)),
            jitter=float(extra.get("jitter", 0.0)),
            tta=bool(extra.get("tta", False)),
            device=device,
        )
        judge.model = model
        judge.fit_result = fit_result
        return judge


# --------------------------------------------------------------------------------------------------------
# factory

from rndpo.judges.ensemble import EnsembleJudge  # noqa: E402  (it builds its default components with make_judge)

_FACTORIES: dict[str, Callable[..., Judge]] = {
    "oracle": OracleJudge,
    "noisy_oracle": NoisyOracleJudge,
    "agreement": AgreementJudge,
    "consensus": ConsensusJudge,
    "uncertainty": UncertaintyJudge,
    "learned_qc": LearnedQCJudge,
    "ensemble": EnsembleJudge,
}


def make_judge(name: str, **kwargs: Any) -> Judge:
    """The judge called ``name`` (one of :data:`JUDGE_NAMES`), constructed with ``kwargs``."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown judge {name!r}; valid names: {list(JUDGE_NAMES)}")
    factory = _FACTORIES[name]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        params = [p for p in inspect.signature(factory).parameters if p != "self"]
        raise TypeError(
            f"judge {name!r} got invalid arguments {sorted(kwargs)}; it accepts {params} ({exc})"
        ) from None
    return factory(**kwargs)
