"""Type stubs of the compiled extension ``rndpo._core`` (rust/bindings). Use ``rndpo.mining`` instead."""

import numpy as np
import numpy.typing as npt

__all__ = ["CORE_VERSION", "label_pairwise_stats", "mine_pairs", "pairwise_stats"]

CORE_VERSION: str

def pairwise_stats(
    masks: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(N, K, P) uint8 masks -> sizes (N, K), intersection (N, K, K), disagreement (N, K, K) int64.

    intersection and disagreement are the two halves of one (2, N, K, K) buffer.
    """

def label_pairwise_stats(
    masks: npt.NDArray[np.uint8],
    num_classes: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(N, K, P) uint8 label maps with labels 0..C-1 -> sizes (N, K, C), intersection (N, K, K, C),
    disagreement (N, K, K) int64."""

def mine_pairs(
    masks: npt.NDArray[np.uint8],
    scores: npt.NDArray[np.float64],
    strategy: str,
    min_margin: float,
    min_region: int,
    max_region: int | None,
    max_pairs_per_image: int | None,
    seed: int,
    max_region_fraction: float | None = None,
    num_classes: int | None = None,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
]:
    """(N, K, P) uint8 masks, (N * K,) float64 scores (row-major (N, K)) -> (image, chosen, rejected,
    region_size, margin). With num_classes, the masks are label maps with labels 0..C-1."""
