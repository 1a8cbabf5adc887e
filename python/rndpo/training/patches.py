"""Random training patches with foreground oversampling (nnU-Net's sampling), for 2D images and 3D volumes.

:func:`sample_patches` cuts a batch of ``patch_size`` crops from images (N, C, *S) and label maps (N, *S)
(S = (H, W) or (D, H, W)). Each patch comes from one source image (``index``, or drawn uniformly with
replacement). A share ``foreground_fraction`` of the batch, in expectation, is forced to hold foreground:
as in nnU-Net, a present foreground class of the image is drawn uniformly, then a voxel of that class, and
the patch is centred on it (shifted inwards at the borders so it stays inside the image, which keeps the
voxel inside the patch). The other patches are uniform random crops. Along an axis where the image is
smaller than the patch, the image is placed at offset (P - S) // 2 of the patch and the rest is zero
(images) and background 0 (masks). The number of forced patches is floor(B f) plus one more with
probability frac(B f), so a batch of 1 (common in 3D) is oversampled too; the forced ones are the first
of the batch. Every draw comes from ``generator`` (a CPU ``torch.Generator``), so a seed fixes the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import overload

import numpy as np
import torch

__all__ = ["sample_patches"]


def _check_patch_size(patch_size: Sequence[int], dims: int, name: str = "patch_size") -> tuple[int, ...]:
    if isinstance(patch_size, (str, bytes)) or not isinstance(patch_size, Sequence):
        raise TypeError(f"{name} must be a sequence of {dims} positive ints, got {patch_size!r}")
    size = tuple(patch_size)
    if len(size) != dims or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in size):
        raise ValueError(f"{name} must be {dims} positive ints (one per spatial axis), got {patch_size!r}")
    return size


def _as_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else x.copy())
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _foreground_start(
    mask: torch.Tensor, patch: tuple[int, ...], generator: torch.Generator
) -> list[int] | None:
    """Start of a patch centred on a random voxel of a random present foreground class of ``mask`` (*S),
    shifted inwards to stay inside the image; None when ``mask`` has no foreground."""
    classes = torch.unique(mask)
    classes = classes[classes > 0]
    if classes.numel() == 0:
        return None
    cls = classes[int(torch.randint(classes.numel(), (1,), generator=generator))]
    voxels = torch.nonzero(mask == cls)  # (V, dims)
    voxel = voxels[int(torch.randint(voxels.shape[0], (1,), generator=generator))].tolist()
    return [
        max(0, min(v - p // 2, s - p)) if s >= p else 0
        for v, p, s in zip(voxel, patch, mask.shape, strict=True)
    ]


@overload
def sample_patches(
    images: np.ndarray,
    masks: np.ndarray,
    patch_size: Sequence[int],
    batch: int,
    generator: torch.Generator,
    foreground_fraction: float = ...,
    *,
    index: Sequence[int] | np.ndarray | torch.Tensor | None = ...,
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def sample_patches(
    images: torch.Tensor,
    masks: torch.Tensor,
    patch_size: Sequence[int],
    batch: int,
    generator: torch.Generator,
    foreground_fraction: float = ...,
    *,
    index: Sequence[int] | np.ndarray | torch.Tensor | None = ...,
) -> tuple[torch.Tensor, torch.Tensor]: ...


def sample_patches(
    images: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    patch_size: Sequence[int],
    batch: int,
    generator: torch.Generator,
    foreground_fraction: float = 0.33,
    *,
    index: Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """A batch of random patches: images (B, C, *P) and masks (B, *P) of the input types and dtypes.

    images: (N, C, *S) float; masks: (N, *S) integer label maps (0 = background) or float {0, 1}; both
    NumPy arrays or both torch tensors (kept on their device). patch_size: P, one int per spatial axis;
    batch: B >= 1; generator: a CPU ``torch.Generator`` (all draws); foreground_fraction: in [0, 1], the
    expected share of patches centred on foreground; index: (B,) source image of each patch (default:
    drawn uniformly with replacement). See the module docstring for the rules.
    """
    numpy_in = isinstance(images, np.ndarray)
    if numpy_in != isinstance(masks, np.ndarray):
        raise TypeError(
            f"images and masks must both be numpy arrays or both torch tensors, got"
            f" {type(images).__name__} and {type(masks).__name__}"
        )
    x, y = _as_tensor(images, "images"), _as_tensor(masks, "masks")
    if x.ndim not in (4, 5):
        raise ValueError(f"images must have shape (N, C, H, W) or (N, C, D, H, W), got {tuple(x.shape)}")
    if tuple(y.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(
            f"masks must have shape (N, *S) = {(x.shape[0], *x.shape[2:])} to match images,"
            f" got {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("images must hold at least one image, got N = 0")
    dims = x.ndim - 2
    patch = _check_patch_size(patch_size, dims)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    fraction = foreground_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ValueError(f"foreground_fraction must be a number in [0, 1], got {fraction!r}")
    if index is None:
        rows = torch.randint(x.shape[0], (batch,), generator=generator).tolist()
    else:
        picked = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index).reshape(-1)
        rows = [int(i) for i in picked] if picked.dtype.kind in "iu" else []
        if len(rows) != batch or any(not 0 <= i < x.shape[0] for i in rows):
            raise ValueError(
                f"index must hold batch = {batch} integer image indices in [0, {x.shape[0]}),"
                f" got {picked.tolist()!r}"
            )
    expected = batch * float(fraction)
    forced = math.floor(expected)
    if expected > forced and float(torch.rand((), generator=generator)) < expected - forced:
        forced += 1

    spatial = tuple(x.shape[2:])
    out_x = x.new_zeros((batch, x.shape[1], *patch))
    out_y = y.new_zeros((batch, *patch))
    for b, row in enumerate(rows):
        start = _foreground_start(y[row], patch, generator) if b < forced else None
        if start is None:
            start = [
                int(torch.randint(s - p + 1, (1,), generator=generator)) if s > p else 0
                for s, p in zip(spatial, patch, strict=True)
            ]
        src: list[slice] = []
        dst: list[slice] = []
        for s, p, a in zip(spatial, patch, start, strict=True):
            if s >= p:
                src.append(slice(a, a + p))
                dst.append(slice(0, p))
            else:  # the image is smaller than the patch: centred in it, zeros around
                off = (p - s) // 2
                src.append(slice(0, s))
                dst.append(slice(off, off + s))
        out_x[b][(slice(None), *dst)] = x[row][(slice(None), *src)]
        out_y[b][tuple(dst)] = y[row][tuple(src)]
    if numpy_in:
        return out_x.numpy(), out_y.numpy()
    return out_x, out_y
