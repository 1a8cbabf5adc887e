"""The ``ensemble`` judge: a reliability-weighted rank average of label-free judges.

Each component judge's N * K scores of a bank become ranks over the whole bank (ties share their
average rank) scaled to [0, 1] by ``(rank - 1) / (N K - 1)`` (a bank of one proposal gets 0.5); the
ensemble score is the weighted mean of these ranks. Ranks make judges with different score scales (a
Dice estimate, a probability fit) comparable. They are taken over the bank, not per image, so that what
a component knows about how hard an image is survives: the ensemble's scores are comparable across
images like its components' (per-image ranks would put every image's best proposal at 1). In an
experiment the weights are the components' validated reliability, ``max(spearman on the validation
split, 0)`` (see :mod:`rndpo.judges.calibration`), with equal weights when every weight is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from rndpo.judges.base import Judge
from rndpo.proposals import ProposalBank

__all__ = ["DEFAULT_COMPONENTS", "RANKING", "EnsembleJudge", "rank_average", "reliability_weights"]

DEFAULT_COMPONENTS: tuple[str, ...] = ("agreement", "consensus")
"""The components of an ensemble when no other label-free judge is configured."""

RANKING = "bank"
"""How :func:`rank_average` ranks (over the whole bank; earlier builds ranked per image). It is part of
the cache keys of an experiment's ensemble stages, so a folder from another scheme is never reused."""


def reliability_weights(spearmans: Sequence[float | None]) -> np.ndarray:
    """float64 (J,) weights ``max(rho, 0)`` (None counts as 0); all ones when every weight is 0."""
    w = np.array([max(float(r), 0.0) if r is not None else 0.0 for r in spearmans], dtype=np.float64)
    return w if w.sum() > 0 else np.ones_like(w)


def rank_average(scores_list: Sequence[Any], weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weighted mean of bank-wide ranks: J arrays of scores (N, K) and J weights >= 0 -> (N, K) float64.

    Each array's ranks are taken over all its N * K entries (ties share the average rank) and scaled to
    [0, 1]; weights need not sum to 1 but must not all be 0. Raises ValueError naming the argument on
    bad shapes or weights.
    """
    if len(scores_list) == 0:
        raise ValueError("scores_list must hold at least one (N, K) score array, got none")
    arrays = [np.asarray(s, dtype=np.float64) for s in scores_list]
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape != shape:
            raise ValueError(f"scores_list[{i}] must have shape (N, K) = {shape}, got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"scores_list[{i}] must be finite")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrays),):
        raise ValueError(f"weights must have shape ({len(arrays)},) (one per score array), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    size = arrays[0].size
    out = np.zeros(shape, dtype=np.float64)
    if size == 0:
        return out
    for a, wi in zip(arrays, w, strict=True):
        ranks = stats.rankdata(a, axis=None, method="average").reshape(shape)
        scaled = (ranks - 1.0) / (size - 1) if size > 1 else np.full(shape, 0.5)
        out += wi * scaled
    return out / w.sum()


class EnsembleJudge:
    """Rank-averages the scores of ``judges`` with ``weights`` (see :func:`rank_average`).

    judges: the component Judge objects (at least one; :func:`rndpo.judges.registry.build_judge` builds
    them, the default ensemble of :data:`DEFAULT_COMPONENTS` included); weights: one per judge, >= 0
    (default: equal). ``score(bank)`` -> float64 (N, K) in [0, 1].
    """

    name = "ensemble"

    def __init__(self, judges: Sequence[Judge], weights: Sequence[float] | None = None) -> None:
        self.judges = list(judges)
        if not self.judges:
            raise ValueError("judges must name at least one component judge, got none")
        for i, judge in enumerate(self.judges):
            if not isinstance(judge, Judge):
                raise TypeError(
                    f"judges[{i}] must be a Judge (a name and score(bank)), got {type(judge).__name__}"
                )
        self.weights = np.ones(len(self.judges)) if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights.shape != (len(self.judges),):
            raise ValueError(
                f"weights must have one entry per judge ({len(self.judges)}), got shape {self.weights.shape}"
            )

    def score(self, bank: ProposalBank) -> np.ndarray:
        return rank_average([j.score(bank) for j in self.judges], self.weights)
