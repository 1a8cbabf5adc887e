"""Proposal banks: K candidate masks per unlabeled image.

A bank holds images float32 (N, C, H, W), masks uint8 (N, K, H, W), the base model's foreground
probabilities float32 (N, H, W) for judges, and the ground truth uint8 (N, H, W) where it is known
(experiments only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ProposalBank"]


@dataclass(frozen=True)
class ProposalBank:
    """K proposal masks for each of N images (see module docstring for shapes)."""

    images: np.ndarray
    masks: np.ndarray
    probs: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    sources: tuple[str, ...] = ()

    @property
    def n_images(self) -> int:
        return int(self.masks.shape[0])

    @property
    def k(self) -> int:
        return int(self.masks.shape[1])
