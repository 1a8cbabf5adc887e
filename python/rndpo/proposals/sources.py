"""The building blocks of the proposal sources: batched forward passes, label maps from logits,
test-time transforms (2D flips and rotations, 3D flips along every spatial axis), MC-dropout sampling,
snapshots and per-structure morphology with N-D balls.

Logits are float32 (B, 1, *S) for a binary network (sigmoid; mask = logit >= 0, i.e. p >= 0.5) and
(B, C, *S) with C >= 2 for a multi-class one (softmax over dim 1; label map = argmax, ties to the lower
label). S is (H, W) or (D, H, W). Every forward pass goes through :func:`_forward`: whole images, or
with ``roi`` windows of that size blended as :func:`rndpo.inference.sliding_window_logits` blends them
(MONAI's ``sliding_window_inference``, gaussian weights, overlap 0.5), but in the model's current mode,
so that MC-dropout samples every window.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from rndpo.inference import as_image_tensor, forward_batched, rotate
from rndpo.nets import enable_mc_dropout, restore_train_flags, save_train_flags

__all__ = ["TTA_FLIPS_3D", "TTA_VARIANTS", "ball"]

TTA_VARIANTS: tuple[tuple[bool, bool, float], ...] = (
    # 2D: (hflip, vflip, rotation as a fraction of tta_degrees)
    (True, False, 0.0),
    (False, True, 0.0),
    (False, False, 1.0),
    (False, False, -1.0),
    (True, False, 0.5),
    (False, True, -0.5),
    (False, False, 0.5),
    (False, False, -0.5),
)

TTA_FLIPS_3D: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-3,), (-1, -2), (-1, -3), (-2, -3), (-1, -2, -3))
"""3D test-time variants: the tensor axes of (B, C, D, H, W) flipped (W = -1, H = -2, D = -3); every
non-empty set of spatial axes, single axes first."""

Post = Callable[[torch.Tensor], torch.Tensor]


def _image_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validated images float (N, C, H, W) or (N, C, D, H, W), finite, N >= 1: a float32 CPU tensor."""
    return as_image_tensor(images, spatial_dims=(2, 3)).cpu()


def _forward(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int,
    device: str | torch.device,
    transform: Post | None = None,
    inverse: Post | None = None,
    post: Post | None = None,
    roi: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``post(logits)`` per batch, on CPU, concatenated over the N images; the model runs as it is
    (:func:`rndpo.inference.forward_batched`). x float32 (N, Cin, *S); ``roi`` (one size per spatial axis,
    at most S; see :func:`_roi`): predict in blended windows of that size; None: whole images."""
    return forward_batched(
        model,
        x,
        batch_size=batch_size,
        device=device,
        transform=transform,
        inverse=inverse,
        post=post,
        roi=roi,
    )


def _roi(roi_size: Sequence[int] | int | None, spatial: tuple[int, ...]) -> tuple[int, ...] | None:
    """The window size per spatial axis (each clipped to the image), or None for whole images."""
    if roi_size is None:
        return None
    sizes = (roi_size,) * len(spatial) if isinstance(roi_size, int) else tuple(roi_size)
    if len(sizes) != len(spatial) or any(
        isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in sizes
    ):
        raise ValueError(
            f"roi_size must be None, a positive int or {len(spatial)} positive ints (one per spatial axis), "
            f"got {roi_size!r}"
        )
    return tuple(min(r, s) for r, s in zip(sizes, spatial, strict=True))


def _eval_forward(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int,
    device: str | torch.device,
    post: Post | None = None,
    roi: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """:func:`_forward` in eval mode (dropout off, batch-norm frozen); the model is moved to ``device`` and
    each module's train/eval flag is restored afterwards."""
    flags = save_train_flags(model)
    model.to(device)
    model.eval()
    try:
        return _forward(model, x, batch_size=batch_size, device=device, post=post, roi=roi)
    finally:
        restore_train_flags(flags)


def _labels(logits: torch.Tensor) -> torch.Tensor:
    """uint8 (B, *S) label maps from logits (B, 1, *S) (logit >= 0) or (B, C, *S) (argmax)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] >= 0).to(torch.uint8)
    return logits.argmax(dim=1).to(torch.uint8)


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """float32 probabilities: (B, *S) sigmoid of a 1-channel network's logit, (B, *S) the softmax's
    class 1 for 2 channels, (B, C, *S) the softmax for C > 2."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    probs = torch.softmax(logits, dim=1)
    return probs[:, 1] if logits.shape[1] == 2 else probs


def _prior_shift_labels(probs: np.ndarray, t: float) -> np.ndarray:
    """uint8 (N, *S) label maps argmax_c p_c w_c with w_0 = 1 and w_c = (1 - t) / t for the structures.

    probs float32 (N, C, *S). This is the softmax's counterpart of thresholding at t: the structures'
    prior odds against the background are scaled by (1 - t) / t (their logits shifted by -logit(t)),
    and for C = 2 it is ``p_1 >= t`` up to exact ties (which go to the lower label).
    """
    weights = np.full(probs.shape[1], (1.0 - t) / t, dtype=np.float64)
    weights[0] = 1.0
    out = np.empty((probs.shape[0], *probs.shape[2:]), dtype=np.uint8)
    for i in range(probs.shape[0]):
        shape = (-1,) + (1,) * (probs.ndim - 2)
        out[i] = np.argmax(probs[i].astype(np.float64) * weights.reshape(shape), axis=0)
    return out


def _radians(degrees: float) -> torch.Tensor:
    """A fixed angle as a float64 scalar tensor (exact cos and sin before the cast to the images' dtype)."""
    return torch.tensor(math.radians(degrees), dtype=torch.float64)


def _tta_pair(variant: int, degrees: float, spatial_dims: int) -> tuple[Post, Post]:
    """(transform, inverse) of test-time variant ``variant``: :data:`TTA_VARIANTS` in 2D (cycling),
    :data:`TTA_FLIPS_3D` in 3D (cycling; ``degrees`` is unused there)."""
    if spatial_dims == 3:
        axes = TTA_FLIPS_3D[variant % len(TTA_FLIPS_3D)]

        def flip(t: torch.Tensor) -> torch.Tensor:
            return t.flip(axes)

        return flip, flip
    hflip, vflip, frac = TTA_VARIANTS[variant % len(TTA_VARIANTS)]
    angle = frac * degrees

    def forward(x: torch.Tensor) -> torch.Tensor:
        if hflip:
            x = x.flip(-1)
        if vflip:
            x = x.flip(-2)
        return rotate(x, _radians(angle)) if angle else x

    def inverse(y: torch.Tensor) -> torch.Tensor:
        if angle:
            y = rotate(y, _radians(-angle))
        if vflip:
            y = y.flip(-2)
        if hflip:
            y = y.flip(-1)
        return y

    return forward, inverse


def ball(radius: int, ndim: int) -> np.ndarray:
    """bool footprint {x in Z^ndim : |x|^2 <= radius^2}, shape (2 radius + 1,) * ndim (a disk in 2D)."""
    grids = np.ogrid[tuple(slice(-radius, radius + 1) for _ in range(ndim))]
    dist2 = np.zeros((1,) * ndim, dtype=np.int64)
    for g in grids:
        dist2 = dist2 + g.astype(np.int64) ** 2
    return np.asarray(dist2 <= radius**2)


def _morph(mask: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    """Dilate or erode each image of a bool (N, *S) stack with a ball of ``radius`` voxels; uint8 (N, *S).

    Erosion treats voxels outside the image as foreground: objects cut by the border are not eaten
    from it.
    """
    footprint = ball(radius, mask.ndim - 1)
    out = np.empty(mask.shape, dtype=np.uint8)
    for i in range(mask.shape[0]):
        if dilate:
            out[i] = ndimage.binary_dilation(mask[i], structure=footprint)
        else:
            out[i] = ndimage.binary_erosion(mask[i], structure=footprint, border_value=1)
    return out


def _morph_labels(labels: np.ndarray, radius: int, dilate: bool, num_classes: int) -> np.ndarray:
    """Per-structure morphology of uint8 (N, *S) label maps with a ball of ``radius`` voxels; uint8 (N, *S).

    Dilation grows every structure into the background only: a background voxel within Euclidean
    distance ``radius`` of some structure takes the label of the nearest one (ties to the lower label);
    structures never overwrite each other. Erosion shrinks every structure on its own (the eroded
    voxels become background; outside the image counts as the structure, as in :func:`_morph`). With
    one structure (C = 2) both equal :func:`_morph` of the foreground.
    """
    footprint = ball(radius, labels.ndim - 1)
    out = np.empty(labels.shape, dtype=np.uint8)
    for i in range(labels.shape[0]):
        lab = labels[i]
        if dilate:
            best = np.full(lab.shape, np.inf)
            nearest = np.zeros(lab.shape, dtype=np.uint8)
            for c in range(1, num_classes):
                present = lab == c
                if not present.any():
                    continue
                dist = ndimage.distance_transform_edt(~present)
                closer = dist < best  # strict: an equal distance keeps the lower label
                best[closer] = dist[closer]
                nearest[closer] = c
            out[i] = np.where((lab == 0) & (best <= radius), nearest, lab)
        else:
            res = lab.copy()
            for c in range(1, num_classes):
                present = lab == c
                if present.any():
                    kept = ndimage.binary_erosion(present, structure=footprint, border_value=1)
                    res[present & ~kept] = 0
            out[i] = res
    return out


def _mc_dropout_labels(
    model: nn.Module,
    x: torch.Tensor,
    p: float | None,
    seed: int,
    variant: int,
    batch_size: int,
    device: Any,
    roi: tuple[int, ...] | None = None,
) -> np.ndarray:
    """uint8 (N, *S) label maps of one MC-dropout sample: dropout on (probability ``p``, None: the model's
    own), batch-norm frozen; batch b draws its dropout masks with seed ``(seed, variant, b)``."""
    flags = save_train_flags(model)
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    old_p = [m.p for m in dropouts]
    dev = torch.device(device)
    fork = [dev.index or 0] if dev.type == "cuda" else []
    try:
        if p is not None:
            for m in dropouts:
                m.p = p
        enable_mc_dropout(model)
        outs = []
        with torch.random.fork_rng(devices=fork):
            for b, start in enumerate(range(0, x.shape[0], batch_size)):
                torch.manual_seed(
                    int(np.random.SeedSequence([seed, variant, b]).generate_state(1, np.uint64)[0] >> 1)
                )
                outs.append(
                    _forward(
                        model,
                        x[start : start + batch_size],
                        batch_size=batch_size,
                        device=device,
                        post=_labels,
                        roi=roi,
                    )
                )
        return torch.cat(outs).numpy()
    finally:
        for drop, value in zip(dropouts, old_p, strict=True):
            drop.p = value
        restore_train_flags(flags)


def _snapshot_model(
    model: nn.Module, snapshot: nn.Module | Mapping[str, torch.Tensor], index: int
) -> nn.Module:
    if isinstance(snapshot, nn.Module):
        return snapshot
    if isinstance(snapshot, Mapping):
        clone = copy.deepcopy(model)
        try:
            clone.load_state_dict(snapshot)
        except RuntimeError as err:
            raise ValueError(f"snapshots[{index}] does not match the model's state_dict: {err}") from None
        return clone
    raise TypeError(f"snapshots[{index}] must be an nn.Module or a state_dict, got {type(snapshot).__name__}")
