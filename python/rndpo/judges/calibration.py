"""How far to trust each judge, measured on the labeled validation split before fine-tuning.

The experiment generates proposals for the validation images with the base model (the pool bank's
proposal config and seed), scores them with every configured judge and compares the scores with the
proposals' true Dice (the validation masks are known). No test and no pool labels are used, so this
works with a truly unlabeled pool. Per judge (:class:`JudgeCalibration`):

- ``spearman`` / ``kendall`` / ``top1_accuracy`` / ``mean_image_spearman``: as
  :func:`rndpo.judges.reliability.judge_reliability` (the first two pooled over all proposals of all images,
  so they also reward knowing which images are hard; mining uses only the order within an image, which
  ``mean_image_spearman`` and the pair accuracies measure).
- ``pair_accuracy``: over every pair of proposals of an image whose true Dice differ, the share the
  judge orders correctly (a score tie counts as wrong: the miner never pairs equal scores).
- ``top_pair_accuracy``: the same over the pairs (judge's top pick, other proposal): what the
  top-anchored miners (``top_vs_bottom``, ``top_vs_rest``) mine.
- ``spearman_interval``: a 95% percentile-bootstrap interval of ``spearman`` over the validation images
  (:func:`spearman_interval`): with a few dozen images the estimate is wide, and the interval says how
  far the pool's figure may lie from it.
- ``flip_rates``: per miner (a ``mining.strategies`` entry), the share of the pairs it mines on the
  validation bank (:func:`rndpo.mine_pairs` with the mining config) whose chosen mask has the lower true
  Dice; ``flip_rate`` is that of the first configured miner (``top_vs_bottom`` when only ``auto``).

:func:`choose_strategy` turns a calibration into the miner of ``mining.strategies = ["auto"]``:

1. ``top_vs_bottom`` when ``top_pair_accuracy >= TOP_ANCHORED_MIN_ACCURACY`` (0.75). A preference pair
   that is right with probability a carries a net signal of 2a - 1; top-anchored mining gives every
   image's top pick the full weight of the chosen side, so an error there is repeated in every pair of the
   image and is amplified (the paper's first finding). At a >= 0.75 the net signal (>= 0.5) is at least
   twice the noise share, the regime in which the robust/cDPO losses are designed to work.
2. otherwise, no pairs (abstain: the run keeps the base model) when ``pair_accuracy <=
   ABSTAIN_MAX_ACCURACY`` (0.55): a net signal of at most 0.1 is within the sampling error of a
   validation split of a few dozen images, so the judge is not known to be better than a coin.
3. otherwise ``all_pairs`` with ``min_margin`` = the median (``AUTO_MARGIN_QUANTILE``) of the judge's
   within-image score gaps on the validation bank: all pairs spread the judge's errors over many pairs
   instead of anchoring them, and a noisy judge orders widely separated scores more reliably than close
   ones, so the half of the pairs with the smallest gaps is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from rndpo.config import AUTO, LABEL_FREE_JUDGES, JudgeConfig, MiningConfig
from rndpo.judges.ensemble import DEFAULT_COMPONENTS, rank_average, reliability_weights
from rndpo.judges.reliability import judge_reliability, pair_quality
from rndpo.metrics import spearman
from rndpo.mining import mine_configured

__all__ = [
    "ABSTAIN_MAX_ACCURACY",
    "AUTO_MARGIN_QUANTILE",
    "MAX_LABEL_SMOOTHING",
    "TOP_ANCHORED_MIN_ACCURACY",
    "JudgeCalibration",
    "StrategyChoice",
    "auto_label_smoothing",
    "calibrate_judge",
    "calibrate_judges",
    "choose_strategy",
    "ensemble_components",
    "ensemble_weights",
    "margin_quantile",
    "pair_accuracy",
    "spearman_interval",
    "top_pair_accuracy",
]

TOP_ANCHORED_MIN_ACCURACY = 0.75
"""``auto`` mines top-anchored pairs when the validated top_pair_accuracy is at least this."""
ABSTAIN_MAX_ACCURACY = 0.55
"""``auto`` mines no pairs when the validated pair_accuracy is at most this (and top-anchoring failed)."""
AUTO_MARGIN_QUANTILE = 0.5
"""``auto``'s all_pairs min_margin: this quantile of the judge's within-image score gaps on validation."""
MAX_LABEL_SMOOTHING = 0.49
"""``label_smoothing = "auto"`` clips the estimated flip rate to [0, this] (the losses need < 0.5)."""


@dataclass(frozen=True)
class JudgeCalibration:
    """One judge's reliability on the validation bank (see the module docstring for each field).

    Statistics over zero pairs, or correlations with a constant side, are None.
    """

    judge: str
    n_images: int
    spearman: float | None
    kendall: float | None
    top1_accuracy: float
    mean_image_spearman: float | None
    pair_accuracy: float | None
    top_pair_accuracy: float | None
    flip_rate: float | None
    flip_miner: str
    auto_min_margin: float
    flip_rates: dict[str, float | None] = field(default_factory=dict)
    n_mined_pairs: dict[str, int] = field(default_factory=dict)
    spearman_interval: tuple[float, float] | None = None  # None in calibrations cached before it

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JudgeCalibration:
        interval = raw.get("spearman_interval")
        return cls(**{**raw, "spearman_interval": None if interval is None else tuple(interval)})


def _pair_signs(scores: np.ndarray, true_dice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score and truth differences of every pair j < l of each image: two (N, K*(K-1)/2) arrays."""
    k = scores.shape[1]
    j, l_ = np.triu_indices(k, 1)
    return scores[:, j] - scores[:, l_], true_dice[:, j] - true_dice[:, l_]


def pair_accuracy(scores: np.ndarray, true_dice: np.ndarray) -> float | None:
    """Share of the within-image pairs with different true Dice that ``scores`` order the same way.

    scores, true_dice: float64 (N, K). A score tie counts as wrong. None when no pair has different Dice.
    """
    ds, dd = _pair_signs(np.asarray(scores, np.float64), np.asarray(true_dice, np.float64))
    counted = dd != 0
    if not counted.any():
        return None
    return float(np.mean((np.sign(ds) == np.sign(dd))[counted]))


def top_pair_accuracy(scores: np.ndarray, true_dice: np.ndarray) -> float | None:
    """:func:`pair_accuracy` over the pairs (judge's top pick, another proposal) only.

    The top pick is the first maximum of each row (ties to the lower index, as in mining).
    """
    s = np.asarray(scores, np.float64)
    d = np.asarray(true_dice, np.float64)
    n, k = s.shape
    top = np.argmax(s, axis=1)
    rows = np.arange(n)
    ds = s[rows, top][:, None] - s
    dd = d[rows, top][:, None] - d
    other = np.ones((n, k), dtype=bool)
    other[rows, top] = False
    counted = other & (dd != 0)
    if not counted.any():
        return None
    return float(np.mean(((ds > 0) & (dd > 0))[counted]))


def spearman_interval(
    scores: np.ndarray, true_dice: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the pooled Spearman of ``scores`` with ``true_dice`` (float64
    (N, K)), resampling whole images with replacement ``n_boot`` times (numpy seeded by ``seed``).

    None with fewer than 2 images, or when fewer than half the resamples have a defined correlation.
    Raises ValueError for shapes that differ or are not 2-D, ``n_boot`` < 1 or ``level`` outside (0, 1).
    """
    s, d = np.asarray(scores, np.float64), np.asarray(true_dice, np.float64)
    if s.ndim != 2 or s.shape != d.shape:
        raise ValueError(
            f"spearman_interval: scores and true_dice must both be (N, K), got {s.shape} and {d.shape}"
        )
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"spearman_interval: n_boot must be a positive int, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"spearman_interval: level must lie in (0, 1), got {level!r}")
    n = s.shape[0]
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = [spearman(s[idx], d[idx]) for idx in rng.integers(0, n, size=(n_boot, n))]
    values = np.array([v for v in draws if v is not None], dtype=np.float64)
    if values.size < n_boot / 2:
        return None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def margin_quantile(scores: np.ndarray, q: float = AUTO_MARGIN_QUANTILE) -> float:
    """The ``q`` quantile of the positive within-image score gaps |s_j - s_l| (0.0 if there are none)."""
    ds, _ = _pair_signs(np.asarray(scores, np.float64), np.zeros_like(scores, dtype=np.float64))
    gaps = np.abs(ds)
    gaps = gaps[gaps > 0]
    return float(np.quantile(gaps, q)) if gaps.size else 0.0


def _mined_flip_rate(
    masks: np.ndarray,
    scores: np.ndarray,
    true_dice: np.ndarray,
    miner: str,
    mining: MiningConfig,
    seed: int,
    num_classes: int | None,
) -> tuple[float | None, int]:
    pairs = mine_configured(masks, scores, miner, mining, seed=seed, num_classes=num_classes)
    q = pair_quality(pairs, true_dice)
    return (q.n_wrong / q.n_pairs if q.n_pairs else None), q.n_pairs


def _auto_miners(margin: float) -> tuple[str, str]:
    """The two miners ``auto`` may choose for a judge whose all_pairs margin is ``margin``."""
    return "top_vs_bottom", f"all_pairs:{margin!r}"


def calibrate_judge(
    judge: str,
    scores: np.ndarray,
    true_dice: np.ndarray,
    masks: np.ndarray,
    mining: MiningConfig,
    *,
    seed: int = 0,
    num_classes: int | None = None,
) -> JudgeCalibration:
    """Calibrate one judge: ``scores`` and ``true_dice`` float64 (N, K) of a validation bank whose masks
    are ``masks`` bool/uint8 (N, K, *S) (label maps with ``num_classes`` C > 2); flip rates of every
    configured miner and of both ``auto`` candidates are mined with ``mining`` and ``seed``."""
    s = np.asarray(scores, dtype=np.float64)
    rel = judge_reliability(s, true_dice)
    margin = margin_quantile(s)
    concrete = [m for m in mining.strategies if m != AUTO]
    miners = list(dict.fromkeys([*concrete, *_auto_miners(margin)]))
    flips: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for miner in miners:
        flips[miner], counts[miner] = _mined_flip_rate(masks, s, true_dice, miner, mining, seed, num_classes)
    first = concrete[0] if concrete else "top_vs_bottom"
    return JudgeCalibration(
        judge=judge,
        n_images=rel.n_images,
        spearman=rel.spearman,
        kendall=rel.kendall,
        top1_accuracy=rel.top1_accuracy,
        mean_image_spearman=rel.mean_image_spearman,
        pair_accuracy=pair_accuracy(s, true_dice),
        top_pair_accuracy=top_pair_accuracy(s, true_dice),
        flip_rate=flips[first],
        flip_miner=first,
        auto_min_margin=margin,
        flip_rates=flips,
        n_mined_pairs=counts,
        spearman_interval=spearman_interval(s, true_dice, seed=seed),
    )


def ensemble_components(judges: JudgeConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, name, kwargs) of the judges an ``ensemble`` combines: the configured label-free judges,
    or agreement and consensus when none is configured."""
    chosen = [j for j in judges.judge_labels() if j[1] in LABEL_FREE_JUDGES]
    return chosen or [(name, name, {}) for name in DEFAULT_COMPONENTS]


def calibrate_judges(
    val_scores: Mapping[str, np.ndarray],
    true_dice: np.ndarray,
    masks: np.ndarray,
    judges: JudgeConfig,
    mining: MiningConfig,
    *,
    seed: int = 0,
    num_classes: int | None = None,
) -> dict[str, JudgeCalibration]:
    """Calibrate every judge of ``judges`` from its validation scores ``val_scores[label]`` (N, K).

    An ``ensemble`` is scored here from its components' validation scores with weights from their
    calibrated Spearman (see :func:`rndpo.judges.ensemble.reliability_weights`); ``val_scores`` must hold the
    components (:func:`ensemble_components`), which are calibrated too.
    """
    out: dict[str, JudgeCalibration] = {}
    labels = [label for label, name, _ in judges.judge_labels() if name != "ensemble"]
    parts = [label for label, _, _ in ensemble_components(judges)] if "ensemble" in judges.names else []
    for label in dict.fromkeys([*labels, *parts]):
        out[label] = calibrate_judge(
            label, val_scores[label], true_dice, masks, mining, seed=seed, num_classes=num_classes
        )
    if parts:
        weights = ensemble_weights(out, parts)
        scores = rank_average([val_scores[p] for p in parts], weights)
        out["ensemble"] = calibrate_judge(
            "ensemble", scores, true_dice, masks, mining, seed=seed, num_classes=num_classes
        )
    return out


def ensemble_weights(calibration: Mapping[str, JudgeCalibration], parts: Sequence[str]) -> list[float]:
    """The ensemble weights of judges ``parts``: max(validated Spearman, 0), equal when all are 0."""
    return [float(w) for w in reliability_weights([calibration[p].spearman for p in parts])]


class StrategyChoice(NamedTuple):
    """The outcome of :func:`choose_strategy`: a ``mining.strategies`` entry, or None to abstain."""

    miner: str | None
    reason: str


def choose_strategy(
    calibration: JudgeCalibration,
    *,
    top_threshold: float = TOP_ANCHORED_MIN_ACCURACY,
    abstain_at: float = ABSTAIN_MAX_ACCURACY,
) -> StrategyChoice:
    """The miner ``auto`` uses for a judge with this validation ``calibration`` (rules in the module
    docstring): ``top_vs_bottom``, ``all_pairs:<margin>``, or None (abstain, with the reason)."""
    top, pair = calibration.top_pair_accuracy, calibration.pair_accuracy
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    if top is not None and top >= top_threshold:
        return StrategyChoice(
            "top_vs_bottom", f"top_pair_accuracy {fmt(top)} >= {top_threshold}: top-anchored pairs"
        )
    if pair is None or pair <= abstain_at:
        return StrategyChoice(
            None,
            f"top_pair_accuracy {fmt(top)} < {top_threshold} and pair_accuracy {fmt(pair)} <= {abstain_at}:"
            " the judge is not known to order pairs better than chance; no pairs (the base model is kept)",
        )
    miner = _auto_miners(calibration.auto_min_margin)[1]
    return StrategyChoice(
        miner,
        f"top_pair_accuracy {fmt(top)} < {top_threshold}, pair_accuracy {fmt(pair)} > {abstain_at}:"
        f" all pairs with score margin > {calibration.auto_min_margin:.4g}",
    )


def auto_label_smoothing(calibration: JudgeCalibration, miner: str) -> float:
    """``label_smoothing = "auto"``: the validated flip rate of ``miner``'s pairs (falling back to
    1 - pair_accuracy, then 0 when neither is known), clipped to [0, MAX_LABEL_SMOOTHING]."""
    rate = calibration.flip_rates.get(miner)
    if rate is None and calibration.pair_accuracy is not None:
        rate = 1.0 - calibration.pair_accuracy
    value = 0.0 if rate is None or not math.isfinite(rate) else rate
    return float(min(max(value, 0.0), MAX_LABEL_SMOOTHING))
