"""Paired statistics for claims of the form "A gives higher test Dice than B".

Both sides are measured on the same seeds and the same test images, so a claim is judged on the paired
differences d[s, i] = A[s, i] - B[s, i] (S seeds, N test images; float64 (S, N)). Seeds and images are
crossed (every seed is evaluated on every test image), so the bootstrap resamples both: each replicate
draws S seeds and N images with replacement, independently, and takes the mean of d over the drawn
rows and columns. The confidence interval is the percentile interval of those replicate means.

Verdict, for a claim that A beats B by more than ``margin`` (direction +1) or falls below it (-1):
"holds" when the interval of (mean d - margin) excludes 0 in the claimed direction, "refuted" when it
excludes 0 the other way, "inconclusive" otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["PairedResult", "bootstrap_mean_ci", "paired_verdict"]

Verdict = Literal["holds", "refuted", "inconclusive"]


@dataclass(frozen=True)
class PairedResult:
    """mean: mean paired difference A - B (minus ``margin``); low / high: its confidence interval;
    n_seeds / n_images: the shape of the differences; verdict: see the module docstring."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_images: int
    confidence: float
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}] {self.verdict}"

    def table_row(self, claim: str) -> str:
        """One markdown row ``| claim | mean | [low, high] | seeds x images | **verdict** |``."""
        return (
            f"| {claim} | {self.mean:+.4f} | [{self.low:+.4f}, {self.high:+.4f}] "
            f"| {self.n_seeds} x {self.n_images} | **{self.verdict}** |"
        )


def _as_diffs(arr: Any, what: str) -> np.ndarray:
    out = np.asarray(arr, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] == 0 or out.shape[1] == 0:
        raise ValueError(f"{what} must have shape (S, N) with S, N >= 1 (seeds x images), got {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{what} must be finite, got {int((~np.isfinite(out)).sum())} non-finite values")
    return out


def bootstrap_mean_ci(
    diffs: Any, *, n_boot: int = 4000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``diffs`` float (S, N) (or (S,): one value per seed) and its
    percentile bootstrap interval, resampling seeds and images independently with replacement."""
    d = _as_diffs(diffs, "diffs")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    s, n = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot, dtype=np.float64)
    # the mean over a drawn (seeds x images) grid = (row counts)^T d (column counts) / (S N)
    chunk = 512
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        rows = rng.multinomial(s, np.full(s, 1.0 / s), size=b).astype(np.float64)  # (b, S)
        cols = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)  # (b, N)
        means[start : start + b] = np.einsum("bs,sn,bn->b", rows, d, cols) / (s * n)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(d.mean()), float(low), float(high)


def paired_verdict(
    a: Any,
    b: Any,
    *,
    direction: Literal[1, -1] = 1,
    margin: float = 0.0,
    n_boot: int = 4000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedResult:
    """Judge the claim "A - B > margin" (direction 1) or "A - B < margin" (direction -1).

    a, b: float (S, N) per-image test Dice of the two sides, row s of both from seed s, column i of both
    from test image i (a (S,) array is one value per seed). Returns a :class:`PairedResult` whose mean
    and interval are of A - B - margin.
    """
    x, y = _as_diffs(a, "a"), _as_diffs(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape (seeds x images), got {x.shape} and {y.shape}")
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction!r}")
    mean, low, high = bootstrap_mean_ci(x - y - margin, n_boot=n_boot, confidence=confidence, seed=seed)
    verdict: Verdict = "inconclusive"
    if low > 0:
        verdict = "holds" if direction == 1 else "refuted"
    elif high < 0:
        verdict = "holds" if direction == -1 else "refuted"
    return PairedResult(mean, low, high, x.shape[0], x.shape[1], confidence, verdict)
