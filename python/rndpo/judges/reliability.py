"""How reliable a judge is: rank agreement with the true Dice, top-1 accuracy, and the quality of mined pairs.

Shapes: scores and true Dice are float64 (N, K) (N images, K proposals each). Undefined statistics
(a correlation with a constant side, any statistic over zero pairs) are reported as None, never NaN, so
reports stay valid JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from rndpo.judges.oracle import OracleJudge
from rndpo.metrics import kendall, spearman
from rndpo.proposals import ProposalBank

if TYPE_CHECKING:
    from rndpo.mining import PairSet

__all__ = ["PairQuality", "ReliabilityReport", "judge_reliability", "pair_quality"]


@dataclass(frozen=True)
class ReliabilityReport:
    """How well a judge's scores track the true Dice over a bank.

    spearman / kendall: Spearman rho and Kendall tau-b over all N * K (image, proposal) entries pooled
    (None if either side is constant). mean_image_spearman: the mean over images of the per-image
    Spearman over the K proposals, skipping images whose true Dice is constant (n_images_ranked says how
    many counted; an image where the judge is constant but the truth is not counts as 0); None if no image
    counts. top1_accuracy: share of images whose top-scored proposal (ties to the lower index, as in
    mining) has the image's highest true Dice (ties in true Dice count as correct). top1_dice /
    best_dice: mean true Dice of the judge's pick / of the truly best proposal; top1_regret their gap.
    """

    n_images: int
    n_proposals: int
    spearman: float | None
    kendall: float | None
    mean_image_spearman: float | None
    n_images_ranked: int
    top1_accuracy: float
    top1_dice: float
    best_dice: float
    top1_regret: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class PairQuality:
    """How often mined pairs are ordered correctly, and how much region size the wrong ones carry.

    A pair is correct if its chosen mask has strictly higher true Dice than its rejected one, wrong if
    strictly lower, and tied otherwise (n_ties). pair_accuracy = n_correct / n_pairs (ties count as not
    correct). harmful_leverage = sum of region_size over wrong pairs / sum over all pairs (0.0 if every
    pair has an empty region, which forces equal Dice). With no pairs both are None.
    """

    n_pairs: int
    n_correct: int
    n_wrong: int
    n_ties: int
    pair_accuracy: float | None
    harmful_leverage: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _as_matrix(arr: Any, what: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    if isinstance(arr, ProposalBank) or not isinstance(arr, (np.ndarray, list, tuple)):
        raise TypeError(f"{what} must be a float array (N, K), got {type(arr).__name__}")
    out = np.asarray(arr)
    if out.dtype == np.bool_ or not (
        np.issubdtype(out.dtype, np.floating) or np.issubdtype(out.dtype, np.integer)
    ):
        raise TypeError(f"{what} must be a float array (N, K), got dtype {out.dtype}")
    out = out.astype(np.float64, copy=False)
    if shape is not None and out.shape != shape:
        raise ValueError(f"{what} must have shape (N, K) = {shape}, got {out.shape}")
    if out.ndim != 2 or out.shape[0] == 0 or out.shape[1] == 0:
        raise ValueError(f"{what} must have shape (N, K) with N, K >= 1, got {out.shape}")
    bad = ~np.isfinite(out)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} must be finite, got {int(bad.sum())} non-finite values (first at {where})")
    return out


def _true_dice(truth: ProposalBank | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(truth, ProposalBank):
        dice = OracleJudge().score(truth)
        if dice.shape != shape:
            raise ValueError(f"scores must have shape (N, K) = {dice.shape} of the bank, got {shape}")
        return dice
    dice = _as_matrix(truth, "true_dice", shape)
    if dice.min() < 0.0 or dice.max() > 1.0:
        raise ValueError(f"true_dice must lie in [0, 1], got values in [{dice.min()}, {dice.max()}]")
    return dice


def _row_spearman(scores: np.ndarray, truth: np.ndarray) -> tuple[float | None, int]:
    """Mean per-row Spearman over rows with non-constant truth (constant scores count 0)."""
    varying = np.ptp(truth, axis=1) > 0
    if not varying.any():
        return None, 0
    rs = stats.rankdata(scores[varying], axis=1, method="average")
    rt = stats.rankdata(truth[varying], axis=1, method="average")
    rs -= rs.mean(axis=1, keepdims=True)
    rt -= rt.mean(axis=1, keepdims=True)
    num = (rs * rt).sum(axis=1)
    denom = np.sqrt((rs * rs).sum(axis=1) * (rt * rt).sum(axis=1))
    rho = np.zeros_like(num)
    np.divide(num, denom, out=rho, where=denom > 0)
    return float(np.clip(rho, -1.0, 1.0).mean()), int(varying.sum())


def judge_reliability(scores: np.ndarray, truth: ProposalBank | np.ndarray) -> ReliabilityReport:
    """Compare judge ``scores`` float64 (N, K) with the true Dice.

    ``truth`` is either the true Dice float64 (N, K) in [0, 1] or a bank with ground truth (its
    oracle Dice is used). See :class:`ReliabilityReport` for the definitions.
    """
    s = _as_matrix(scores, "scores")
    d = _true_dice(truth, s.shape)
    n = s.shape[0]
    top = np.argmax(s, axis=1)  # the first maximum: ties to the lower index
    picked = d[np.arange(n), top]
    best = d.max(axis=1)
    mean_image, n_ranked = _row_spearman(s, d)
    return ReliabilityReport(
        n_images=n,
        n_proposals=int(s.size),
        spearman=spearman(s, d),
        kendall=kendall(s, d),
        mean_image_spearman=mean_image,
        n_images_ranked=n_ranked,
        top1_accuracy=float(np.mean(picked >= best)),
        top1_dice=float(picked.mean()),
        best_dice=float(best.mean()),
        top1_regret=float((best - picked).mean()),
    )


def _index_array(pairs: Any, name: str) -> np.ndarray:
    if not hasattr(pairs, name):
        raise TypeError(f"pairs must be a PairSet with field {name!r}, got {type(pairs).__name__}")
    arr = np.asarray(getattr(pairs, name))
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"pairs.{name} must be a 1-D integer array, got dtype {arr.dtype} shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def pair_quality(pairs: PairSet, true_dice: np.ndarray) -> PairQuality:
    """Ordering quality of mined ``pairs`` (image, chosen, rejected, region_size: int64 (P,)) against
    ``true_dice`` float64 (N, K). See :class:`PairQuality` for the definitions."""
    d = _as_matrix(true_dice, "true_dice")
    n, k = d.shape
    image, chosen, rejected, region = (
        _index_array(pairs, f) for f in ("image", "chosen", "rejected", "region_size")
    )
    p = image.size
    for name, arr in (("chosen", chosen), ("rejected", rejected), ("region_size", region)):
        if arr.size != p:
            raise ValueError(f"pairs.{name} must have length {p} like pairs.image, got {arr.size}")
    if p == 0:
        return PairQuality(0, 0, 0, 0, None, None)
    if image.min() < 0 or image.max() >= n:
        raise ValueError(
            f"pairs.image must lie in [0, {n}) for true_dice with N = {n}, got [{image.min()}, {image.max()}]"
        )
    for name, arr in (("chosen", chosen), ("rejected", rejected)):
        if arr.min() < 0 or arr.max() >= k:
            raise ValueError(
                f"pairs.{name} must lie in [0, {k}) for true_dice with K = {k}, "
                f"got [{arr.min()}, {arr.max()}]"
            )
    if region.min() < 0:
        raise ValueError(f"pairs.region_size must be >= 0, got minimum {region.min()}")
    dc, dr = d[image, chosen], d[image, rejected]
    correct, wrong = dc > dr, dc < dr
    total = int(region.sum())
    leverage = float(region[wrong].sum() / total) if total > 0 else 0.0
    return PairQuality(
        n_pairs=int(p),
        n_correct=int(correct.sum()),
        n_wrong=int(wrong.sum()),
        n_ties=int(p - correct.sum() - wrong.sum()),
        pair_accuracy=float(correct.mean()),
        harmful_leverage=leverage,
    )
