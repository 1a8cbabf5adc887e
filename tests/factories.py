"""Small test datasets shared by several test modules."""

from __future__ import annotations

import numpy as np
import torch

from rndpo.data import SegmentationDataset
from rndpo.proposals import ProposalBank


def disks(n: int, size: int = 32, seed: int = 0, channels: int = 1) -> SegmentationDataset:
    """n noisy images (n, channels, size, size) of one bright disk each, with the disk as mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    images = np.zeros((n, channels, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.12, size * 0.3)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        images[i] = np.clip(0.3 + 0.35 * masks[i] + rng.normal(0, 0.12, (channels, size, size)), 0, 1)
    return SegmentationDataset(images, masks, np.array([f"disk{i}" for i in range(n)]), name="disks")


def boundary_masks(batch: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected masks (B, size, size) bool: two discs per image, the rejected one shifted and
    5% smaller, so that they differ along the boundary (|D| about 3% of the pixels at 256 x 256)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = size / 2 + size / 16 * torch.randn(batch, 2, generator=gen)
    radius = size / 4 * (1 + 0.2 * torch.rand(batch, generator=gen))
    shift = size / 64 * torch.randn(batch, 2, generator=gen)

    def disc(c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2 < r[:, None, None] ** 2

    return disc(centre, radius), disc(centre + shift, radius * 0.95)


def disc_bank(n: int, k: int, size: int, seed: int) -> ProposalBank:
    """Discs as ground truth; proposals are shifted and rescaled discs (varied, realistic Dice)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.35 * size, 0.65 * size, (2, n, 1, 1))
    r = rng.uniform(0.12 * size, 0.25 * size, (n, 1, 1))
    gt = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)
    dy, dx = rng.normal(0.0, 0.06 * size, (2, n, k, 1, 1))
    rr = r[:, None] * rng.uniform(0.6, 1.4, (n, k, 1, 1))
    masks = ((yy - cy[:, None] - dy) ** 2 + (xx - cx[:, None] - dx) ** 2 < rr**2).astype(np.uint8)
    images = (0.2 + 0.6 * gt[:, None] + rng.normal(0, 0.05, (n, 1, size, size))).astype(np.float32)
    probs = np.clip(0.1 + 0.8 * gt + rng.normal(0, 0.05, gt.shape), 0, 1).astype(np.float32)
    return ProposalBank(images=images, masks=masks, probs=probs, ground_truth=gt, sources=())
