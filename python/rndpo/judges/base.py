"""The judge protocol and the checks every judge shares.

A judge scores each proposal of a :class:`~rndpo.proposals.ProposalBank`: ``judge.score(bank)`` returns
float64 (N, K) scores, higher is better, and never NaN (a judge that would produce a non-finite score
raises ``ValueError`` instead). Judges that need a part of the bank the bank lacks (ground truth,
probabilities, images) raise ``ValueError`` naming the missing field.

Shapes, with S = (H, W) or (D, H, W): images float32 (N, Cin, *S), masks uint8 (N, K, *S), ground truth
uint8 (N, *S). Binary banks (``bank.num_classes == 2``): masks and ground truth in {0, 1}, probs float32
(N, *S) foreground probabilities; Dice is ``2|A ∩ B| / (|A| + |B|)`` with the convention that two empty
masks have Dice 1. Label-map banks (``bank.num_classes`` C > 2): masks and ground truth hold labels
0..C-1, probs float32 (N, C, *S) softmax probabilities, and every Dice-based judge uses the *mean
per-structure Dice*: the mean over the structures 1..C-1 of their Dice, a structure absent from both
maps counting as 1 there (:func:`rndpo.judges.oracle.mean_structure_dice`; the counts come from the
Rust core's per-class :func:`rndpo.pairwise_stats`). For C = 2 this is the binary Dice, and binary
banks score exactly as before.

The judges, one module each (:mod:`rndpo.judges.registry` builds them by name):

- :mod:`rndpo.judges.oracle`: ``oracle`` (true Dice against ``bank.ground_truth``; experiments only) and
  ``noisy_oracle`` (the oracle's Dice with rank noise of a given Spearman correlation).
- :mod:`rndpo.judges.agreement`: ``agreement`` (mean Dice with the other K - 1 proposals of the image)
  and ``consensus`` (Dice with the per-voxel vote of the K proposals: the strict majority for binary
  banks, the most frequent label, ties to the lower one, for label maps).
- :mod:`rndpo.judges.uncertainty`: ``uncertainty`` (how well a mask fits the base model's probabilities,
  sigmoid or softmax).
- :mod:`rndpo.judges.learned_qc`: ``learned_qc`` (a small CNN that predicts Dice from (image, mask),
  trained on labeled images).
- :mod:`rndpo.judges.ensemble`: ``ensemble`` (a reliability-weighted rank average of label-free judges).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rndpo.proposals import ProposalBank

__all__ = ["Judge", "TrainableJudge"]

# Images are processed in chunks so that boolean temporaries stay around this many bytes.
_CHUNK_BYTES = 1 << 26


@runtime_checkable
class Judge(Protocol):
    """Scores each proposal of a bank: ``score(bank)`` -> float64 (N, K), higher is better, never NaN."""

    name: str

    def score(self, bank: ProposalBank) -> np.ndarray: ...


@runtime_checkable
class TrainableJudge(Judge, Protocol):
    """A judge fitted on a bank of labeled proposals, kept in a folder (e.g. the learned QC judge).

    ``fit(bank, steps=, seed=, progress=)`` trains it on a bank with images and ground truth;
    ``save(folder)`` writes it; the class's ``load(folder, device=)`` reads it back.
    """

    def fit(self, bank: ProposalBank, *, steps: int, seed: int, progress: bool) -> Any: ...

    def save(self, path: str | Path) -> Path: ...


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
    """bank.masks, uint8 (N, K, *S) labels 0..num_classes-1 with K >= 1 (``ProposalBank`` guarantees it)."""
    if not isinstance(bank, ProposalBank):
        raise TypeError(f"bank must be a ProposalBank, got {type(bank).__name__}")
    return bank.masks


# What a judge needs that a valid bank may lack: the optional arrays, and finite images (a bank checks
# the images' dtype and shape only). Shapes, dtypes and value ranges are ProposalBank's guarantees.


def _bank_ground_truth(bank: ProposalBank, judge: str) -> np.ndarray:
    _bank_masks(bank)
    if bank.ground_truth is None:
        raise ValueError(
            f"{judge} needs bank.ground_truth (N, *S) with labels 0..num_classes-1, but the bank has none "
            "(ground truth is only known for labeled images and experiments)"
        )
    return bank.ground_truth


def _bank_probs(bank: ProposalBank, judge: str) -> np.ndarray:
    _bank_masks(bank)
    if bank.probs is None:
        raise ValueError(
            f"{judge} needs bank.probs, the base model's probabilities float32 (N, *S) (binary) or "
            "(N, C, *S) (label maps), but the bank has none"
        )
    return bank.probs


def _bank_images(bank: ProposalBank, judge: str) -> np.ndarray:
    _bank_masks(bank)
    images = bank.images
    if images.size == 0:
        raise ValueError(
            f"{judge} needs bank.images float32 (N, C, *S) with C >= 1, "
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


def _label_classes(bank: ProposalBank) -> int | None:
    """The bank's class count C when it holds label maps (C > 2); None for a binary bank."""
    return None if bank.num_classes == 2 else bank.num_classes


def _chunks(n: int, per_image_bytes: int) -> list[slice]:
    """Slices over n images, each holding about _CHUNK_BYTES of per-image temporaries."""
    step = max(1, _CHUNK_BYTES // max(1, per_image_bytes))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]
