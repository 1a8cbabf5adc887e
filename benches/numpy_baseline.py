"""The best plain-NumPy implementation of :mod:`rndpo.mining`: the baseline the benchmarks time the Rust core against.

Same signatures, argument validation (shared with :mod:`rndpo.mining`), return types, error
messages and results as the Rust-backed functions, written the straightforward NumPy way:
``np.packbits`` + XOR/AND + ``np.bitwise_count`` over chunks of images, and a Python loop over
images for mining. The random strategies use :class:`SplitMix64`, a bit-exact Python copy of the
generator in the Rust core.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

# The one Python twin of the core's SplitMix64 is the test oracle's (checked there against published outputs).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import SplitMix64
from rndpo.mining import (
    PairSet,
    PairwiseStats,
    Strategy,
    _as_bank,
    _as_scores,
    _check_mining_args,
)

__all__ = ["mine_pairs_reference", "pairwise_stats_reference"]

_CHUNK_BYTES: Final[int] = 1 << 22
"""Approximate bytes of packed masks handled per chunk (bounds the (c, K, K, B) temporaries)."""


def _check_binary(chunk: npt.NDArray[np.uint8], first_image: int) -> None:
    """Raises the core's error for the first (C order) value of a (c, K, P) chunk that is not 0/1."""
    bad = chunk > 1
    if bad.any():
        _, k, p = chunk.shape
        flat = int(np.argmax(bad.reshape(-1)))
        i, rest = divmod(flat, k * p)
        j, pixel = divmod(rest, p)
        value = int(chunk[i, j, pixel])
        raise ValueError(
            f"masks must contain only 0 and 1, got {value} at image {first_image + i}, "
            f"proposal {j}, flat pixel {pixel}"
        )


def pairwise_stats_reference(masks: npt.ArrayLike) -> PairwiseStats:
    """NumPy version of :func:`rndpo.mining.pairwise_stats` (same arguments, result and errors).

    Args:
        masks: (N, K, *S) bool or uint8 with values 0/1.

    Returns:
        :class:`PairwiseStats` with sizes (N, K), intersection and disagreement (N, K, K), int64.
    """
    bank = _as_bank(masks)
    n, k, p = bank.shape
    sizes = np.zeros((n, k), dtype=np.int64)
    intersection = np.zeros((n, k, k), dtype=np.int64)
    disagreement = np.zeros((n, k, k), dtype=np.int64)
    per_image = max(1, k * k * ((p + 7) // 8))
    step = max(1, _CHUNK_BYTES // per_image)
    for start in range(0, n, step):
        chunk = bank[start : start + step]
        _check_binary(chunk, start)
        packed = np.packbits(chunk, axis=-1)  # (c, K, ceil(P / 8)) uint8
        a, b = packed[:, :, None, :], packed[:, None, :, :]
        sizes[start : start + step] = np.bitwise_count(packed).sum(axis=-1, dtype=np.int64)
        intersection[start : start + step] = np.bitwise_count(a & b).sum(axis=-1, dtype=np.int64)
        disagreement[start : start + step] = np.bitwise_count(a ^ b).sum(axis=-1, dtype=np.int64)
    return PairwiseStats(sizes=sizes, intersection=intersection, disagreement=disagreement)


def _rank_pairs(strategy: str, k: int, rng: SplitMix64) -> list[tuple[int, int]]:
    """Rank pairs (a, b), a < b, of one image in strategy order."""
    if k < 2:
        return []
    if strategy == "top_vs_bottom":
        return [(0, k - 1)]
    if strategy == "top_vs_rest":
        return [(0, r) for r in range(1, k)]
    if strategy == "adjacent":
        return [(r, r + 1) for r in range(k - 1)]
    if strategy == "all_pairs":
        return [(a, b) for a in range(k) for b in range(a + 1, k)]
    if strategy == "top_vs_random":
        return [(0, 1 + rng.below(k - 1))]
    if strategy == "random":
        x = rng.below(k)
        y = rng.below(k - 1)
        if y >= x:
            y += 1
        return [(min(x, y), max(x, y))]
    raise ValueError(f"strategy {strategy!r} is validated before reaching here")  # pragma: no cover


def mine_pairs_reference(
    masks: npt.ArrayLike,
    scores: npt.ArrayLike,
    strategy: Strategy = "top_vs_rest",
    *,
    min_margin: float = 0.0,
    min_region: int = 1,
    max_region: int | None = None,
    max_pairs_per_image: int | None = None,
    seed: int = 0,
    max_region_fraction: float | None = None,
) -> PairSet:
    """NumPy version of :func:`rndpo.mining.mine_pairs` (same arguments, result and errors).

    Args:
        masks: (N, K, *S) bool or uint8 with values 0/1.
        scores: (N, K) real, finite; higher is better.
        strategy, min_margin, min_region, max_region, max_pairs_per_image, seed, max_region_fraction: as in
            :func:`rndpo.mining.mine_pairs`.

    Returns:
        :class:`PairSet` of M pairs ordered by image, then strategy order.
    """
    args = _check_mining_args(
        strategy, min_margin, min_region, max_region, max_pairs_per_image, seed, max_region_fraction
    )
    bank = _as_bank(masks)
    values = _as_scores(scores, bank.shape[0], bank.shape[1])
    stats = pairwise_stats_reference(bank)
    disagreement = stats.disagreement
    fraction = args.max_region_fraction
    lo = max(1, args.min_region)
    hi = args.max_region
    cap = args.max_pairs_per_image
    rows: list[tuple[int, int, int, int, float]] = []
    n, k = values.shape
    for i in range(n):
        order = np.argsort(-values[i], kind="stable")
        rng = SplitMix64.for_image(args.seed, i)
        kept = 0
        for a, b in _rank_pairs(args.strategy, k, rng):
            if cap is not None and kept >= cap:
                break
            chosen, rejected = int(order[a]), int(order[b])
            margin = float(values[i, chosen] - values[i, rejected])
            if not margin > args.min_margin:
                continue
            region = int(disagreement[i, chosen, rejected])
            if region < lo or (hi is not None and region > hi):
                continue
            if fraction is not None and region > fraction * int(stats.sizes[i, chosen]):
                continue
            rows.append((i, chosen, rejected, region, margin))
            kept += 1
    if not rows:
        return PairSet.empty()
    image, chosen_arr, rejected_arr, region_size, margin_arr = zip(*rows, strict=True)
    return PairSet(
        image=np.asarray(image, dtype=np.int64),
        chosen=np.asarray(chosen_arr, dtype=np.int64),
        rejected=np.asarray(rejected_arr, dtype=np.int64),
        region_size=np.asarray(region_size, dtype=np.int64),
        margin=np.asarray(margin_arr, dtype=np.float64),
    )
