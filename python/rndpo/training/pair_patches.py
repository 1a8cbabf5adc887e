"""Patches for fine-tuning on volumes: each pair is cut to a window centred where its masks disagree.

A preference pair says nothing outside its disagreement region D, so a patch of a large volume is centred
on a random voxel of D (chosen != rejected); the loss then sees the part of D inside the patch, and RN-DPO
normalises by that part's size. A pair whose masks agree everywhere, and every image of an objective
without pairs, gets a window centred on a random voxel of its ``focus`` map's foreground (the chosen mask
for ``sft_top``, the labels for the supervised anchor), or a uniform random window when it has none.
Along an axis shorter than the patch the window is the whole axis, so every window of a batch has one
shape. All draws come from a CPU ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["crop_windows", "pair_windows"]

Window = tuple[slice, ...]


def _start(
    voxels: torch.Tensor, spatial: Sequence[int], patch: Sequence[int], gen: torch.Generator
) -> list[int]:
    """Window start per axis, centred on a random row of ``voxels`` (V, d) or uniform when V = 0."""
    if voxels.shape[0]:
        v = voxels[int(torch.randint(voxels.shape[0], (1,), generator=gen))].tolist()
        return [max(0, min(c - p // 2, s - p)) for c, p, s in zip(v, patch, spatial, strict=True)]
    return [int(torch.randint(s - p + 1, (1,), generator=gen)) for s, p in zip(spatial, patch, strict=True)]


def pair_windows(
    focus: torch.Tensor,
    other: torch.Tensor | None,
    patch_size: Sequence[int],
    generator: torch.Generator,
) -> list[Window]:
    """One window per item of ``focus`` (B, *S) integer maps: centred on a random voxel where ``focus``
    and ``other`` (B, *S) differ, or, with ``other`` None or where they agree everywhere, on a random
    foreground voxel of ``focus``; uniform when there is neither. patch_size: one int per spatial axis
    (clipped to the image)."""
    spatial = tuple(focus.shape[1:])
    if len(patch_size) != len(spatial):
        raise ValueError(
            f"patch_size must have {len(spatial)} ints (one per spatial axis), got {list(patch_size)}"
        )
    patch = [min(int(p), s) for p, s in zip(patch_size, spatial, strict=True)]
    windows = []
    for b in range(focus.shape[0]):
        voxels = torch.empty((0, len(spatial)), dtype=torch.int64)
        if other is not None:
            voxels = torch.nonzero(focus[b] != other[b])
        if voxels.shape[0] == 0:
            voxels = torch.nonzero(focus[b] != 0)
        start = _start(voxels, spatial, patch, generator)
        windows.append(tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True)))
    return windows


def crop_windows(x: torch.Tensor, windows: Sequence[Window]) -> torch.Tensor:
    """x (B, ..., *S) cut to each item's window: (B, ..., *P); windows: B tuples of one slice per
    spatial axis (the trailing axes of x)."""
    if len(windows) != x.shape[0]:
        raise ValueError(f"windows must hold one window per item, {x.shape[0]}, got {len(windows)}")
    lead = x.ndim - 1 - (len(windows[0]) if windows else 0)
    return torch.stack([x[b][(slice(None),) * lead + w] for b, w in enumerate(windows)]) if windows else x
