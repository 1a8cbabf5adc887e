"""Pairwise mask statistics and preference-pair mining, backed by the Rust core (``rndpo._core``).

Masks come in as a bank of K candidate masks per image, bool or uint8 of shape (N, K, *S) with
any number of spatial dims S (2D, 3D, ...); scores as (N, K) floats, higher is better.

Binary masks (the default) hold 0/1. With ``num_classes=C`` (2 <= C <= 255) the masks are *label
maps*: each voxel holds a label in 0..C-1, 0 the background and 1..C-1 the structures (organs,
cardiac chambers, tumour sub-regions). Statistics are then per class, and a voxel is in a pair's
disagreement region when the two proposals give it different labels.

The bank is never copied when it is C-contiguous (a ``np.memmap`` included): bool is viewed as
uint8, S is flattened to P = prod(S) by a reshape view, and the Rust core reads the buffer in
place with the GIL released, packing one image at a time. Non-contiguous input is made
contiguous here (one explicit copy). Label maps of another integer dtype (int16, int32, ...) are
checked and converted to a new uint8 bank of N * K * P bytes here, one image at a time (a copy;
save label banks as uint8 to have them read in place).

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

A pair's region D is the set of voxels where the two masks differ: ``chosen xor rejected`` for
binary masks, the voxels whose labels differ for label maps; ``region_size`` is |D|. The
*foreground* of a mask is its non-zero voxels (for label maps, every structure together). A pair
is kept when ``margin = score(chosen) - score(rejected) > min_margin`` (so equal scores never
pair) and ``max(1, min_region) <= |D| <= max_region`` (so identical masks never pair) and, with
``max_region_fraction = f``, ``|D| <= f * |foreground of chosen|`` (pairs are boundary corrections
of the objects, not whole-shape disagreements); ``max_pairs_per_image`` keeps the first kept pairs
in strategy order. The output is ordered by image, then strategy order. Ranking, strategies and
draws are the same for binary masks and label maps.

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

    Binary masks (``num_classes=None``):

    Attributes:
        sizes: (N, K) int64, mask sizes |A|.
        intersection: (N, K, K) int64, |A ∩ B| (symmetric, diagonal = sizes).
        disagreement: (N, K, K) int64, |A xor B| (symmetric, zero diagonal).

    Label maps (``num_classes=C``) add a trailing class axis to the first two:

    - sizes: (N, K, C) int64, voxels of class c in proposal a (summing over c gives P).
    - intersection: (N, K, K, C) int64, voxels that both proposals give class c (symmetric in
      the two proposals; ``intersection[i, a, a] == sizes[i, a]``).
    - disagreement: (N, K, K) int64, voxels whose labels differ (symmetric, zero diagonal).

    Memory: the arrays are owned int64. ``intersection`` dominates: N x K x K (x C) x 8 bytes, for
    example N = 1000, K = 16, C = 4 is 8 MB (plus 2 MB of disagreement), whatever the image size.
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
        region_size: (M,) int64, the disagreement region |D| >= 1: |chosen xor rejected|, or for
            label maps the voxels whose labels differ.
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


def _check_ndim(arr: np.ndarray) -> None:
    """Masks need (N, K, *S) with at least one spatial dim."""
    if arr.ndim < 3:
        raise ValueError(
            f"masks must have shape (N, K, *S) with at least one spatial dim, got shape {arr.shape}"
        )


def _flat_uint8(arr: np.ndarray) -> npt.NDArray[np.uint8]:
    """(N, K, *S) bool/uint8 -> (N, K, P) uint8; a view when ``arr`` is C-contiguous."""
    n, k = arr.shape[:2]
    p = math.prod(arr.shape[2:])
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    return arr.reshape(n, k, p)


def _as_bank(masks: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Checks dtype and ndim of (N, K, *S) bool/uint8 masks and returns a (N, K, P) uint8 view.

    No copy is made when ``masks`` is C-contiguous. Values are not checked here (the core and
    the reference check them while reading).
    """
    arr = np.asarray(masks)
    if arr.dtype != np.bool_ and arr.dtype != np.uint8:
        raise TypeError(f"masks must have dtype bool or uint8, got {arr.dtype}")
    _check_ndim(arr)
    return _flat_uint8(arr)


def _check_num_classes(value: object) -> int:
    """Checks ``num_classes``: an integer (not bool) from 2 to 255."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"num_classes must be None or an integer, got {type(value).__name__} {value!r}")
    as_int = int(value)
    if not 2 <= as_int <= 255:
        raise ValueError(f"num_classes must be an integer from 2 to 255, got {as_int}")
    return as_int


def _bad_label_error(value: int, index: tuple[int, int, int], num_classes: int) -> ValueError:
    """The core's message for a label outside 0..C-1 at (image, proposal, flat pixel)."""
    i, j, v = index
    return ValueError(
        f"masks must contain only labels 0 to {num_classes - 1} (num_classes = {num_classes}), "
        f"got {value} at image {i}, proposal {j}, flat pixel {v}"
    )


def _labels_to_uint8(arr: np.ndarray, num_classes: int) -> npt.NDArray[np.uint8]:
    """(N, K, *S) integer labels of any dtype -> a new (N, K, P) uint8 bank, one image at a time.

    Raises the core's error at the first label < 0 or >= C in C order.
    """
    n, k = arr.shape[:2]
    p = math.prod(arr.shape[2:])
    out = np.empty((n, k, p), dtype=np.uint8)
    for i in range(n):
        image = np.asarray(arr[i]).reshape(k, p)
        bad = (image < 0) | (image >= num_classes)
        if bad.any():
            j, v = np.unravel_index(int(np.argmax(bad)), bad.shape)
            raise _bad_label_error(int(image[j, v]), (i, int(j), int(v)), num_classes)
        out[i] = image
    return out


def _as_label_bank(masks: npt.ArrayLike, num_classes: int) -> npt.NDArray[np.uint8]:
    """(N, K, *S) integer label maps -> (N, K, P) uint8.

    bool and uint8 are read in place when C-contiguous (the core checks their labels); other
    integer dtypes are checked here and converted (a copy).
    """
    arr = np.asarray(masks)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"masks must have an integer or bool dtype with num_classes, got {arr.dtype}")
    _check_ndim(arr)
    if arr.dtype == np.bool_ or arr.dtype == np.uint8:
        return _flat_uint8(arr)
    return _labels_to_uint8(arr, num_classes)


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


def _bank_and_classes(masks: npt.ArrayLike, num_classes: object) -> tuple[npt.NDArray[np.uint8], int | None]:
    """The (N, K, P) uint8 bank and the checked class count (None: binary masks)."""
    if num_classes is None:
        return _as_bank(masks), None
    classes = _check_num_classes(num_classes)
    return _as_label_bank(masks, classes), classes


def pairwise_stats(masks: npt.ArrayLike, *, num_classes: int | None = None) -> PairwiseStats:
    """Sizes, intersections and disagreement-region sizes of every pair of proposals per image.

    Args:
        masks: (N, K, *S) bool or uint8 with values 0/1; read in place when C-contiguous. With
            ``num_classes``: label maps of any integer dtype with values 0..C-1 (uint8 and bool are
            read in place, other integer dtypes are checked and converted to uint8, a copy).
        num_classes: None for binary masks, or the number of labels C of label maps, 2 <= C <= 255.

    Returns:
        :class:`PairwiseStats`: binary masks give sizes (N, K), intersection and disagreement
        (N, K, K); label maps give sizes (N, K, C), intersection (N, K, K, C) and disagreement
        (N, K, K); all int64 (see :class:`PairwiseStats` for their memory).

    Raises:
        TypeError: masks is not bool/uint8 (binary) or not an integer/bool array (label maps);
            num_classes is not None or an integer.
        ValueError: masks has fewer than 3 dims or holds a value other than 0/1 (binary) or
            outside 0..C-1 (label maps, naming the value, image, proposal and flat pixel);
            num_classes is outside 2..255; the N x K x K statistics are more than can be allocated
            (the message names N, K and the bytes).
        RuntimeError: an internal error of the Rust core (a bug; never a ``PanicException``).
    """
    bank, classes = _bank_and_classes(masks, num_classes)
    if classes is None:
        sizes, intersection, disagreement = _core.pairwise_stats(bank)
    else:
        sizes, intersection, disagreement = _core.label_pairwise_stats(bank, classes)
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
    num_classes: int | None = None,
) -> PairSet:
    """Mines (chosen, rejected) preference pairs from a mask bank and its judge scores.

    See the module docstring for the exact ranking, strategies, random draws and filters. |D| below
    is a pair's disagreement region: |chosen xor rejected|, or with ``num_classes`` the voxels whose
    labels differ; |chosen| is the chosen mask's foreground (non-zero) voxels.

    Args:
        masks: (N, K, *S) bool or uint8 with values 0/1; read in place when C-contiguous. With
            ``num_classes``: label maps as in :func:`pairwise_stats`.
        scores: (N, K) real, finite; higher is better. Compared as float64: integer scores beyond
            +-2**53 (where float64 stops being exact) are refused rather than rounded.
        strategy: one of :data:`STRATEGIES`.
        min_margin: keep pairs with score(chosen) - score(rejected) > min_margin (>= 0).
        min_region: keep pairs with |D| >= max(1, min_region).
        max_region: keep pairs with |D| <= max_region (None: no bound).
        max_pairs_per_image: keep at most this many pairs per image, first in strategy order.
        seed: seed of the random strategies, in [0, 2**64).
        max_region_fraction: keep pairs with |D| <= max_region_fraction * |chosen| (a finite
            number > 0; None: no bound relative to the chosen mask's foreground).
        num_classes: None for binary masks, or the number of labels C of label maps, 2 <= C <= 255.

    Returns:
        :class:`PairSet` of M pairs ordered by image, then strategy order.

    Raises:
        TypeError: an argument has the wrong type (masks not bool/uint8, or not an integer array
            with ``num_classes``; strategy not str, ...).
        ValueError: a shape, value or range is invalid (the message names the argument; a label
            outside 0..C-1 is reported as in :func:`pairwise_stats`); ``all_pairs`` would need a K x K
            pair table above 8 GB per image (``K = 50000 proposals need a 50000 x 50000 int64 pair
            table (20.0 GB) ...``), or the pairs are more than can be allocated. The other strategies
            need no pair table, whatever K (O(K) numbers per thread; ``adjacent`` on binary masks also
            keeps an image's masks packed, an eighth of its bytes).
        RuntimeError: an internal error of the Rust core (a bug; never a ``PanicException``).
    """
    args = _check_mining_args(
        strategy, min_margin, min_region, max_region, max_pairs_per_image, seed, max_region_fraction
    )
    bank, classes = _bank_and_classes(masks, num_classes)
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
        num_classes=classes,
    )
    return PairSet(image=image, chosen=chosen, rejected=rejected, region_size=region_size, margin=margin)


def mine_configured(
    masks: npt.ArrayLike,
    scores: npt.ArrayLike,
    miner: str,
    mining: MiningConfig,
    *,
    seed: int = 0,
    num_classes: int | None = None,
) -> PairSet:
    """:func:`mine_pairs` with the filters of a ``[mining]`` config and one ``mining.strategies`` entry
    ``miner`` (``"name"`` or ``"name:margin"``; not ``"auto"``, which is resolved per judge first).
    num_classes: None (binary masks) or C for label maps, as in :func:`mine_pairs`; a bank's own count
    (``ProposalBank.num_classes``) with C > 2."""
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
        num_classes=num_classes,
    )
