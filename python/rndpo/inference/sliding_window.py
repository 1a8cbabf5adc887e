"""Sliding-window (patch-wise) prediction of 2D images and 3D volumes with MONAI's
``sliding_window_inference``.

Each image (C, *S) is covered by windows of ``roi_size`` (clipped to the image along each axis; an roi
at least the image's size is one window, run as plain batched forward passes) that overlap by ``overlap``; the
windows' logits are blended with a Gaussian importance map (MONAI ``mode="gaussian"``, sigma 0.125 of
the roi, as nnU-Net does) and the probabilities are taken from the blended logits: sigmoid for a
1-channel (binary) head, softmax over the channels for a C >= 2 channel (multi-class) head (the head
convention of :mod:`rndpo.inference.batched`). Mixed precision (``amp``): the windows run under
``torch.autocast`` on CUDA (bfloat16 where the GPU supports it, else float16), blending stays float32;
on by default on CUDA, never on CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rndpo.inference.batched import _check_batch_size, as_image_tensor
from rndpo.nets import restore_train_flags, save_train_flags

__all__ = ["autocast_dtype", "sliding_window_logits", "sliding_window_probs"]


def autocast_dtype() -> torch.dtype:
    """The reduced precision of mixed precision on CUDA: bfloat16 where supported, else float16."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def _roi(roi_size: Sequence[int] | int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    dims = len(spatial)
    sizes = (roi_size,) * dims if isinstance(roi_size, int) and not isinstance(roi_size, bool) else roi_size
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"roi_size must be an int or {dims} positive ints, got {roi_size!r}")
    roi = tuple(sizes)
    if len(roi) != dims or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in roi):
        raise ValueError(f"roi_size must be {dims} positive ints (one per spatial axis), got {roi_size!r}")
    return tuple(min(r, s) for r, s in zip(roi, spatial, strict=True))


def sliding_window_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    roi_size: Sequence[int] | int,
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    amp: bool | None = None,
) -> torch.Tensor:
    """Blended eval-mode logits float32 (N, C_out, *S) on CPU for images float (N, C, *S), S = (H, W) or
    (D, H, W), predicted in windows of ``roi_size`` (an int for every axis, or one per axis).

    overlap: in [0, 1); batch_size: windows per forward pass; device: where the model runs (it is moved
    there; each module's train/eval flag is restored afterwards); amp: autocast on CUDA (None: on for
    CUDA, off for CPU; True on CPU is ignored).
    """
    from monai.inferers import sliding_window_inference  # MONAI is imported only when used

    _check_batch_size(batch_size)
    x_all = as_image_tensor(images, spatial_dims=(2, 3))
    roi = _roi(roi_size, tuple(x_all.shape[2:]))
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
    if amp is not None and not isinstance(amp, bool):
        raise TypeError(f"amp must be a bool or None, got {type(amp).__name__}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    autocast = device.type == "cuda" and (amp is None or amp)
    dtype = autocast_dtype()

    def predictor(window: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=dtype) if autocast else contextlib.nullcontext():
            out = model(window)
        return out.float()

    flags = save_train_flags(model)
    model.to(device)
    model.eval()
    outs: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            if roi == tuple(x_all.shape[2:]):  # one window per image: plain batched forward passes
                for start in range(0, x_all.shape[0], batch_size):
                    outs.append(predictor(x_all[start : start + batch_size].to(device)).cpu())
                return torch.cat(outs, dim=0)
            for i in range(x_all.shape[0]):
                out = sliding_window_inference(
                    x_all[i : i + 1].to(device),
                    roi,
                    batch_size,
                    predictor,
                    overlap=overlap,
                    mode="gaussian",
                )
                if not isinstance(out, torch.Tensor):  # a model returning several outputs
                    raise TypeError(f"model must return one logits tensor, got {type(out).__name__}")
                outs.append(torch.Tensor(out.detach()).to("cpu", torch.float32))  # a plain tensor
    finally:
        restore_train_flags(flags)
    return torch.cat(outs, dim=0)


def sliding_window_probs(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    roi_size: Sequence[int] | int,
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    amp: bool | None = None,
) -> np.ndarray:
    """Probabilities float32 (N, C_out, *S) from :func:`sliding_window_logits` (same arguments): sigmoid
    for a 1-channel head, softmax over the channels for C_out >= 2."""
    logits = sliding_window_logits(
        model, images, roi_size, overlap=overlap, batch_size=batch_size, device=device, amp=amp
    )
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    return probs.numpy()
