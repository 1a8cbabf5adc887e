"""Rank correlations between two sets of M values (e.g. judge scores against true Dice), compared flat.

Inputs: array-likes of M numbers each (any shape, raveled); outputs: a Python float in [-1, 1], or None
where the correlation is undefined (M < 2 or a constant side).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["kendall", "spearman"]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rho (average ranks for ties) of two arrays of M values each, compared flat.

    None when M < 2 or either side is constant (the correlation is undefined there).
    """
    ra = stats.rankdata(np.ravel(a), method="average")
    rb = stats.rankdata(np.ravel(b), method="average")
    if ra.size != rb.size:
        raise ValueError(f"b must have as many values as a ({ra.size}), got {rb.size}")
    if ra.size < 2:
        return None
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else None


def kendall(a: np.ndarray, b: np.ndarray) -> float | None:
    """Kendall tau-b of two arrays of M values each, compared flat; None when M < 2 or either is constant."""
    x, y = np.ravel(a), np.ravel(b)
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(stats.kendalltau(x, y).statistic)
