"""Batched prediction: logits (N, 1, H, W) and foreground probabilities (N, H, W) in eval mode.

``predict_logits`` / ``predict_probs`` put the model in eval mode (dropout off, batch-norm frozen) for the
call and restore every module's previous train/eval flag afterwards. ``forward_batched`` runs the model
as it is (no mode change), for MC-dropout sampling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rndpo.nets import restore_train_flags, save_train_flags

__all__ = ["as_image_tensor", "forward_batched", "predict_logits", "predict_probs", "rotate"]


def as_image_tensor(images: np.ndarray | torch.Tensor, name: str = "images") -> torch.Tensor:
    """Validate images float (N, C, H, W) (NumPy or torch); a float32 tensor (no copy when possible)."""
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(f"{name} must be a float array (N, C, H, W), got dtype {images.dtype}")
        array = np.ascontiguousarray(images, dtype=np.float32)
        if not array.flags.writeable:  # e.g. a read-only memory-mapped bank: torch needs its own copy
            array = array.copy()
        tensor = torch.from_numpy(array)
    elif isinstance(images, torch.Tensor):
        if not images.is_floating_point():
            raise TypeError(f"{name} must be a float tensor (N, C, H, W), got dtype {images.dtype}")
        tensor = images.detach().to(torch.float32)
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(images).__name__}")
    if tensor.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf values")
    return tensor


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def forward_batched(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    inverse: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits float32 (N, out, H, W) on CPU, in the model's current mode, under ``torch.inference_mode``.

    ``transform`` maps each input batch (B, C, H, W) before the model and ``inverse`` maps the logits
    back (test-time augmentation).
    """
    _check_batch_size(batch_size)
    x_all = as_image_tensor(images)
    outs: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, x_all.shape[0], batch_size):
            x = x_all[start : start + batch_size].to(device)
            if transform is not None:
                x = transform(x)
            y = model(x)
            if inverse is not None:
                y = inverse(y)
            outs.append(y.to("cpu", torch.float32))
    return torch.cat(outs, dim=0)


def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Eval-mode logits float32 (N, 1, H, W) on CPU for images float32 (N, C, H, W); batched.

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
    """Eval-mode foreground probabilities float32 (N, H, W) = sigmoid of channel 0 of the logits."""
    logits = predict_logits(model, images, batch_size=batch_size, device=device)
    return torch.sigmoid(logits[:, 0]).numpy()


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
