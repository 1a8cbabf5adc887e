"""Random per-image augmentation of training batches in torch, for 2D images and 3D volumes.

Geometry (image and masks together): flips along every spatial axis (W and H, and D for volumes),
90-degree rotations in the (H, W) plane (when H == W), and a small rotation in the (H, W) plane; volumes
are rotated about their depth axis only (every slice by the same angle), never out of plane. Intensity
(images only): gamma, contrast, brightness. Masks are float {0, 1} (binary; bilinear then thresholded at
0.5, rndpo's 2D behaviour) or integer label maps (nearest-neighbour, so they stay label maps of the same
values). For 2D batches the draws and results are those rndpo always had; volumes draw their depth flip
after all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rndpo.inference import rotate

__all__ = ["augment_batch"]


def _rotate_in_plane(x: torch.Tensor, angles: torch.Tensor, mode: str) -> torch.Tensor:
    """rotate() of (B, C, H, W), or of (B, C, D, H, W) slice by slice about the depth axis."""
    if x.ndim == 4:
        return rotate(x, angles, mode=mode)
    b, c, d, h, w = x.shape
    return rotate(x.reshape(b, c * d, h, w), angles, mode=mode).reshape(b, c, d, h, w)


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    *,
    max_rotation: float = 15.0,
    flip_axes: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random per-image augmentation of images float32 (B, C, *S) (any finite range), S = (H, W) or
    (D, H, W), and masks (B, M, *S): float {0, 1} or integer label maps (returned in their dtype).

    Flips along each spatial axis (probability 1/2 each), 90-degree rotations in the (H, W) plane (square
    (H, W) only), a small rotation in the (H, W) plane in [-max_rotation, max_rotation] degrees, and
    gamma in [0.7, 1.5], contrast in [0.8, 1.2], brightness in [-0.1, 0.1] (images only; applied to each
    image's [min(0, min), max(1, max)] range mapped to [0, 1] and clamped there). All draws come from
    ``generator`` (CPU). flip_axes: the spatial axes that may be flipped, 0-based within S (e.g. (0, 2)
    for D and W of a volume whose structures are told apart by their place along H); None: all. The draws
    are the same whichever axes are allowed.
    """
    if images.ndim not in (4, 5):
        raise ValueError(f"images must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(images.shape)}")
    if masks.ndim != images.ndim or masks.shape[0] != images.shape[0] or masks.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"masks must have shape (B, M, *S) with images' B and S {tuple(images.shape[2:])},"
            f" got {tuple(masks.shape)}"
        )
    dims = images.ndim - 2
    allowed = range(dims) if flip_axes is None else tuple(flip_axes)
    if any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < dims for a in allowed):
        raise ValueError(f"flip_axes must be spatial axes in [0, {dims}), got {flip_axes!r}")
    labels = not masks.is_floating_point()
    b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    ones = (1,) * (images.ndim - 1)
    dev = images.device

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    flip_h = draw(b) < 0.5
    flip_v = draw(b) < 0.5
    rot90 = torch.randint(0, 4, (b,), generator=generator)
    angles = (draw(b) * 2 - 1) * math.radians(max_rotation)
    gamma = torch.exp(torch.empty(b).uniform_(math.log(0.7), math.log(1.5), generator=generator)).to(dev)
    contrast = (0.8 + 0.4 * draw(b)).view(b, *ones)
    brightness = (0.2 * draw(b) - 0.1).view(b, *ones)
    flips = [(flip_h, -1), (flip_v, -2)]
    if images.ndim == 5:
        flips.append((draw(b) < 0.5, -3))

    both = torch.cat([images, masks.to(images.dtype) if labels else masks], dim=1)
    for flip, axis in flips:
        if dims + axis in allowed:
            both = torch.where(flip.view(b, *ones), both.flip(axis), both)
    if h == w:
        for k in (1, 2, 3):
            sel = (rot90 == k).to(dev)
            if bool(sel.any()):
                both[sel] = torch.rot90(both[sel], k, dims=(-2, -1))
    c = images.shape[1]
    if labels:
        x, y = both[:, :c], both[:, c:]
        if max_rotation > 0:
            x = _rotate_in_plane(x, angles, "bilinear")
            y = _rotate_in_plane(y, angles, "nearest")
        y = y.round().to(masks.dtype)
    else:
        if max_rotation > 0:
            both = _rotate_in_plane(both, angles, "bilinear")
        x, y = both[:, :c], (both[:, c:] > 0.5).to(masks.dtype)
    # intensity changes act on [lo, hi] = [min(0, image min), max(1, image max)] mapped to [0, 1]: exactly
    # [0, 1] for images in [0, 1], and any finite range (z-scored, CT units) keeps its own scale
    axes = tuple(range(1, images.ndim))
    lo = images.amin(dim=axes, keepdim=True).clamp(max=0)
    hi = images.amax(dim=axes, keepdim=True).clamp(min=1)
    x = ((x - lo) / (hi - lo)).clamp(0, 1) ** gamma.view(b, *ones)
    mean = x.mean(dim=axes, keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp(0, 1)
    return x * (hi - lo) + lo, y
