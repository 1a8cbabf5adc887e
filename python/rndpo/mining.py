"""Pairwise mask statistics and preference-pair mining, backed by the Rust core (``rndpo._core``).

Masks come in as a bank of K candidate masks per image, bool or uint8 of shape (N, K, *S) with
any number of spatial dims S (2D, 3D, ...); scores as (N, K) floats, higher is better.

The bank is never copied when it is C-contiguous (a ``np.memmap`` included): bool is viewed as
uint8, S is flattened to P = prod(S) by a reshape view, and the Rust core reads the buffer in
place with the GIL released, packing one image at a time. Non-contiguous input is made
contiguous here (one explicit copy).

Mining rules (see :func:`mine_pairs`): per image, proposals are ranked by score, descending,
ties to the lower proposal index. A strategy lists pairs of ranks (a, b), a < b; the proposal
at rank a is *chosen*, the one at rank b *rejected*:

- ``top_vs_bottom``: (0, K-1).
- ``top_vs_rest``: (0, 1), (0, 2), ..., (0, K-1).
- ``adjacent``: (0, 1), (1, 2), ..., (K-2, K-1).
- ``all_pairs``: every a < b, ordered by a then b.
- ``top_vs_random``: (0, r) with r = 1 + g.below(K - 1).
- ``random``: x = g.below(K), y = g.below(K - 1), y += 1 if y >= x; the pair is
  (min(x, y), max(x, y)).

``g`` is a SplitMix64 generator per image with initial state ``mix64(mix64(seed) ^ image)``
(``mix64`` is the SplitMix64 output function); ``g.below(m)`` is ``(next_u64() * m) >> 64``.
Images with K < 2 draw nothing. tests/oracles.py implements the same generator in Python,
and per-image streams make results independent of the thread count.

A pair is kept when ``margin = score(chosen) - score(rejected) > min_margin`` (so equal scores
never pair) and ``max(1, min_region) <= |chosen xor rejected| <= max_region`` (so identical
masks never pair) and, with ``max_region_fraction = f``, ``|chosen xor rejected| <= f * |chosen|``
(pairs are boundary corrections of the object, not whole-shape disagreements);
``max_pairs_per_image`` keeps the first kept pairs in strategy order. The
output is ordered by image, then strategy order.

Threads: the core uses rayon's global pool, sized by the ``RAYON_NUM_THREADS`` environment
variable (read once, at the first call) or else the number of CPUs. Results never depend on it.
A process forked from one that has already mined (``os.fork``, a ``multiprocessing`` pool with the
fork start method, ``DataLoader`` workers) cannot use that pool, whose threads were not copied: there
each call runs serially on a fresh one-thread pool, as tokenizers does after a fork.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from rndpo import _core
from rndpo.config import STRATEGIES, MiningConfig, Strategy

__all__ = [
    "STRATEGIES",
    "PairSet",
    "PairwiseStats",
    "Strategy",
    "mine_configured",
    "mine_pairs",
    "pairwise_stats",
]

_MAX_INT: Final[int] = 2**63
"""Exclusive upper bound of integer arguments (they become Rust u64/usize)."""


@dataclass(frozen=True, slots=True, eq=False)
class PairwiseStats:
    """Per-image pairwise statistics of a mask bank.

    Attributes:
        sizes: (N, K) int64, mask sizes |A|.
        intersection: (N, K, K) int64, |A ∩ B| (symmetric, diagonal = sizes).
        disagreement: (N, K, K) int64, |A xor B| (symmetric, zero diagonal).
    """

    sizes: npt.NDArray[np.int64]
    intersection: npt.NDArray[np.int64]
    disagreement: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class PairSet:
    """Mined preference pairs as a struct of arrays, all of shape (M,).

    Attributes:
        image: (M,) int64, image index of each pair.
        chosen: (M,) int64, proposal index of the preferred (higher-scored) mask.
        rejected: (M,) int64, proposal index of the dispreferred mask.
        region_size: (M,) int64, |chosen xor rejected| (the disagreement region |D|), >= 1.
        margin: (M,) float64, score(chosen) - score(rejected), > min_margin.
    """

    image: npt.NDArray[np.int64]
    chosen: npt.NDArray[np.int64]
    rejected: npt.NDArray[np.int64]
    region_size: npt.NDArray[np.int64]
    margin: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @classmethod
    def empty(cls) -> PairSet:
        """A set with no pairs (all arrays of shape (0,))."""
        ints = np.zeros(0, dtype=np.int64)
        return cls(ints, ints.copy(), ints.copy(), ints.copy(), np.zeros(0, dtype=np.float64))


@dataclass(frozen=True, slots=True)
class _MiningArgs:
    """Validated scalar arguments of :func:`mine_pairs`."""

    strategy: str
    min_margin: float
    min_region: int
    max_region: int | None
    max_pairs_per_image: int | None
    seed: int
    max_region_fraction: float | None = None


def _as_bank(masks: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Checks dtype and ndim of (N, K, *S) bool/uint8 masks and returns a (N, K, P) uint8 view.

    No copy is made when ``masks`` is C-contiguous. Values are not checked here (the core and
    the reference check them while reading).
    """
    arr = np.asarray(masks)
    if arr.dtype != np.bool_ and arr.dtype != np.uint8:
        raise TypeError(f"masks must have dtype bool or uint8, got {arr.dtype}")
    if arr.ndim < 3:
        raise ValueError(
            f"masks must have shape (N, K, *S) with at least one spatial dim, got shape {arr.shape}"
        )
    n, k = arr.shape[:2]
    p = math.prod(arr.shape[2:])
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    return arr.reshape(n, k, p)


def _as_scores(scores: npt.ArrayLike, n: int, k: int) -> npt.NDArray[np.float64]:
    """Checks (N, K) real finite scores and returns them as C-contiguous float64."""
    arr = np.asarray(scores)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"scores must have a real (float or integer) dtype, got {arr.dtype}")
    if arr.shape != (n, k):
        raise ValueError(f"scores must have shape (N, K) = ({n}, {k}), got {arr.shape}")
    if arr.dtype.kind in "iu" and arr.size and (int(arr.max()) > 2**53 or int(arr.min()) < -(2**53)):
        raise ValueError(
            "integer scores must lie in [-2**53, 2**53] (float64 holds them exactly), got values up to "
            f"{max(abs(int(arr.max())), abs(int(arr.min())))}; rescale them"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"scores must be finite, got {arr[i, j]} at image {i}, proposal {j}")
    return arr


def _check_int(name: str, value: object, *, expected: str = "an integer") -> int:
    """Checks an integer argument in [0, 2**63) (they become Rust u64/usize)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    as_int = int(value)
    if not 0 <= as_int < _MAX_INT:
        raise ValueError(f"{name} must be an integer >= 0 and < 2**63, got {as_int}")
    return as_int


def _check_optional_int(name: str, value: object) -> int | None:
    """Like :func:`_check_int`, but None passes through."""
    return None if value is None else _check_int(name, value, expected="None or an integer")


def _check_mining_args(
    strategy: object,
    min_margin: object,
    min_region: object,
    max_region: object,
    max_pairs_per_image: object,
    seed: object,
    max_region_fraction: object = None,
) -> _MiningArgs:
    """Validates the scalar arguments of :func:`mine_pairs` (shared with the reference)."""
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a str, got {type(strategy).__name__} {strategy!r}")
    if strategy not in STRATEGIES:
        choices = ", ".join(f"'{s}'" for s in STRATEGIES)
        raise ValueError(f"strategy must be one of {choices}, got '{strategy}'")
    if isinstance(min_margin, bool) or not isinstance(min_margin, numbers.Real):
        raise TypeError(f"min_margin must be a real number, got {type(min_margin).__name__} {min_margin!r}")
    margin = float(min_margin)
    if math.isnan(margin) or margin < 0:
        raise ValueError(f"min_margin must be a number >= 0, got {margin}")
    lo = _check_int("min_region", min_region)
    hi = _check_optional_int("max_region", max_region)
    if hi is not None and hi < lo:
        raise ValueError(f"max_region must be None or >= min_region = {lo}, got {hi}")
    cap = _check_optional_int("max_pairs_per_image", max_pairs_per_image)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an integer >= 0 and < 2**64, got {int(seed)}")
    fraction: float | None = None
    if max_region_fraction is not None:
        if isinstance(max_region_fraction, bool) or not isinstance(max_region_fraction, numbers.Real):
            raise TypeError(
                "max_region_fraction must be None or a real number, got "
                f"{type(max_region_fraction).__name__} {max_region_fraction!r}"
            )
        fraction = float(max_region_fraction)
        if not (math.isfinite(fraction) and fraction > 0):
            raise ValueError(f"max_region_fraction must be None or a finite number > 0, got {fraction}")
    return _MiningArgs(strategy, margin, lo, hi, cap, int(seed), fraction)


def pairwise_stats(masks: npt.ArrayLike) -> PairwiseStats:
    """Sizes, intersections and disagreement-region sizes of every pair of proposals per image.

    Args:
        masks: (N, K, *S) bool or uint8 with values 0/1; read in place when C-contiguous.

    Returns:
        :class:`PairwiseStats` with sizes (N, K), intersection and disagreement (N, K, K), int64.

    Raises:
        TypeError: masks is not bool/uint8.
        ValueError: masks has fewer than 3 dims or holds a value other than 0/1.
    """
    bank = _as_bank(masks)
    sizes, intersection, disagreement = _core.pairwise_stats(bank)
    return PairwiseStats(sizes=sizes, intersection=intersection, disagreement=disagreement)


def mine_pairs(
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
    """Mines (chosen, rejected) preference pairs from a mask bank and its judge scores.

    See the module docstring for the exact ranking, strategies and random draws.

    Args:
        masks: (N, K, *S) bool or uint8 with values 0/1; read in place when C-contiguous.
        scores: (N, K) real, finite; higher is better. Compared as float64: integer scores beyond
            +-2**53 (where float64 stops being exact) are refused rather than rounded.
        strategy: one of :data:`STRATEGIES`.
        min_margin: keep pairs with score(chosen) - score(rejected) > min_margin (>= 0).
        min_region: keep pairs with |chosen xor rejected| >= max(1, min_region).
        max_region: keep pairs with |chosen xor rejected| <= max_region (None: no bound).
        max_pairs_per_image: keep at most this many pairs per image, first in strategy order.
        seed: seed of the random strategies, in [0, 2**64).
        max_region_fraction: keep pairs with |chosen xor rejected| <= max_region_fraction * |chosen|
            (a finite number > 0; None: no bound relative to the chosen mask's area).

    Returns:
        :class:`PairSet` of M pairs ordered by image, then strategy order.

    Raises:
        TypeError: an argument has the wrong type (masks not bool/uint8, strategy not str, ...).
        ValueError: a shape, value or range is invalid (the message names the argument).
    """
    args = _check_mining_args(
        strategy, min_margin, min_region, max_region, max_pairs_per_image, seed, max_region_fraction
    )
    bank = _as_bank(masks)
    values = _as_scores(scores, bank.shape[0], bank.shape[1])
    image, chosen, rejected, region_size, margin = _core.mine_pairs(
        bank,
        values.reshape(-1),  # a view: the core reads (N, K) row-major and checks its length
        args.strategy,
        args.min_margin,
        args.min_region,
        args.max_region,
        args.max_pairs_per_image,
        args.seed,
        args.max_region_fraction,
    )
    return PairSet(image=image, chosen=chosen, rejected=rejected, region_size=region_size, margin=margin)


def mine_configured(
    masks: npt.ArrayLike, scores: npt.ArrayLike, miner: str, mining: MiningConfig, *, seed: int = 0
) -> PairSet:
    """:func:`mine_pairs` with the filters of a ``[mining]`` config and one ``mining.strategies`` entry
    ``miner`` (``"name"`` or ``"name:margin"``; not ``"auto"``, which is resolved per judge first)."""
    spec = mining.parse_strategy(miner)
    return mine_pairs(
        masks,
        scores,
        spec.name,
        min_margin=spec.min_margin,
        min_region=mining.min_region,
        max_region=mining.max_region,
        max_pairs_per_image=mining.max_pairs_per_image,
        max_region_fraction=mining.max_region_fraction,
        seed=seed,
    )
