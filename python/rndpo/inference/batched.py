"""Batched prediction of 2D images (N, C, H, W) and 3D volumes (N, C, D, H, W) in eval mode.

The head convention of rndpo: a network with 1 output channel is binary (foreground probability =
sigmoid of its logit; mask = p > 0.5); a network with C >= 2 output channels is multi-class (softmax over
the channel axis; label map = argmax). A dataset's ``num_classes`` counts the background, so a binary
dataset (num_classes 2) has either the 1-logit head (the default) or a 2-channel softmax head.

``predict_logits`` / ``predict_probs`` put the model in eval mode (dropout off, batch-norm frozen) for the
call and restore every module's previous train/eval flag afterwards. ``forward_batched`` runs the model
as it is (no mode change), for MC-dropout sampling. They run whole images; patch-wise (sliding-window)
prediction of large volumes is :mod:`rndpo.inference.sliding_window`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rndpo.nets import restore_train_flags, save_train_flags

__all__ = [
    "as_image_tensor",
    "forward_batched",
    "labels_from_probs",
    "predict_logits",
    "predict_probs",
    "rotate",
]

_LAYOUTS = {2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def as_image_tensor(
    images: np.ndarray | torch.Tensor, name: str = "images", *, spatial_dims: tuple[int, ...] = (2,)
) -> torch.Tensor:
    """Validate images float (N, C, H, W) (NumPy or torch); a float32 tensor (no copy when possible).

    spatial_dims: the accepted numbers of spatial axes, (2,) (the default) or (2, 3) to accept volumes
    (N, C, D, H, W) too.
    """
    layout = " or ".join(_LAYOUTS[d] for d in spatial_dims)
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(f"{name} must be a float array {layout}, got dtype {images.dtype}")
        array = np.ascontiguousarray(images, dtype=np.float32)
        if not array.flags.writeable:  # e.g. a read-only memory-mapped bank: torch needs its own copy
            array = array.copy()
        tensor = torch.from_numpy(array)
    elif isinstance(images, torch.Tensor):
        if not images.is_floating_point():
            raise TypeError(f"{name} must be a float tensor {layout}, got dtype {images.dtype}")
        tensor = images.detach().to(torch.float32)
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(images).__name__}")
    if tensor.ndim - 2 not in spatial_dims:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf values")
    return tensor


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def blended_logits(model: nn.Module, x: torch.Tensor, roi: Sequence[int], batch_size: int) -> torch.Tensor:
    """Logits of x (B, C, *S) predicted in Gaussian-blended windows of size ``roi`` (one int per spatial
    axis, at most S) with overlap 0.5 (MONAI ``sliding_window_inference``), ``batch_size`` windows per
    pass, the model in its current mode; a plain tensor."""
    from monai.inferers import sliding_window_inference  # MONAI is imported only when used

    out = sliding_window_inference(x, tuple(roi), batch_size, model, overlap=0.5, mode="gaussian")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return one logits tensor, got {type(out).__name__}")
    return torch.Tensor(out)  # a plain tensor, not a MONAI MetaTensor


def forward_batched(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    inverse: Callable[[torch.Tensor], torch.Tensor] | None = None,
    post: Callable[[torch.Tensor], torch.Tensor] | None = None,
    roi: Sequence[int] | None = None,
) -> torch.Tensor:
    """Logits float32 (N, out, *S) on CPU, in the model's current mode, under ``torch.inference_mode``,
    for images (N, C, *S), S = (H, W) or (D, H, W).

    ``transform`` maps each input batch (B, C, *S) before the model and ``inverse`` maps the logits
    back (test-time augmentation); ``post`` reduces each batch's logits (to labels or probabilities) so
    the full logits are never held; ``roi``: predict each batch in blended windows of that size
    (:func:`blended_logits`), None: whole images.
    """
    _check_batch_size(batch_size)
    x_all = as_image_tensor(images, spatial_dims=(2, 3))
    outs: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, x_all.shape[0], batch_size):
            x = x_all[start : start + batch_size].to(device)
            if transform is not None:
                x = transform(x)
            y = model(x) if roi is None else blended_logits(model, x, roi, batch_size)
            if inverse is not None:
                y = inverse(y)
            y = y.to("cpu", torch.float32)
            outs.append(y if post is None else post(y))
    return torch.cat(outs, dim=0)


def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Eval-mode logits float32 (N, out, *S) on CPU for images float32 (N, C, *S), S = (H, W) or
    (D, H, W); batched (whole images: see :func:`rndpo.inference.sliding_window_probs` for patches).

    The model is moved to ``device``; each module's train/eval flag is restored afterwards.
    """
    _check_batch_size(batch_size)
    flags = save_train_flags(model)
    model.to(device)
    model.eval()
    try:
        return forward_batched(model, images, batch_size=batch_size, device=device)
    finally:
        restore_train_flags(flags)


def predict_probs(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Eval-mode probabilities float32 for images (N, C, *S): a 1-logit (binary) head gives foreground
    probabilities (N, *S) = sigmoid of its logit; a C >= 2 channel head gives class probabilities
    (N, C, *S) = softmax over the channels. :func:`labels_from_probs` turns either into label maps."""
    logits = predict_logits(model, images, batch_size=batch_size, device=device)
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0]).numpy()
    return torch.softmax(logits, dim=1).numpy()


def labels_from_probs(probs: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Label maps uint8 (N, *S) from probabilities float (N, C_out, *S) (:func:`sliding_window_probs`'s
    layout): C_out = 1 (binary): 1 where p > ``threshold``; C_out >= 2: the argmax over the channels
    (the first of equal maxima)."""
    if not isinstance(probs, np.ndarray) or probs.ndim < 3:
        raise ValueError(f"probs must be an array (N, C_out, *S), got {getattr(probs, 'shape', type(probs))}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if probs.shape[1] == 1:
        return (probs[:, 0] > threshold).astype(np.uint8)
    if probs.shape[1] > 256:
        raise ValueError(f"probs must have at most 256 channels for uint8 labels, got {probs.shape[1]}")
    return np.argmax(probs, axis=1).astype(np.uint8)


def rotate(x: torch.Tensor, angles: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
    """Rotate x (B, C, H, W) about the centre by ``angles`` radians, (B,) or a scalar tensor, in pixel
    geometry (any aspect ratio), sampling with ``mode`` and border padding.

    cos and sin are taken in the dtype of ``angles`` (float64 for exact fixed angles) and the affine
    matrix is then cast to x's dtype.
    """
    _, _, h, w = x.shape
    angles = angles.to(x.device).expand(x.shape[0])
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * h / w
    theta[:, 1, 0] = sin * w / h
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
