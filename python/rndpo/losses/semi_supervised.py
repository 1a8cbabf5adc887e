"""Semi-supervised baselines that users would pick instead of judges: mean teacher and confidence-filtered
pseudo-labelling. Both train on the unlabeled pool plus a supervised term on the labeled images (the
method's ``anchor_weight``) and need no judge; :func:`rndpo.training.finetuning.finetune` runs them like any
other objective (``objective = "mean_teacher"`` or ``"pseudo_label"``).

* Mean teacher (Tarvainen & Valpola, 2017): the teacher is an exponential moving average of the student
  (``ema_decay``); the student, on a flipped/rotated (dihedral) view of an unlabeled image with
  photometric noise, must match the teacher's foreground probabilities on the clean image under the same
  view (mean squared error, weight ``beta``).
* Pseudo-labelling: the base model's mask (logit > 0) on each unlabeled image is the target, and only
  pixels where the base model is confident (max(p, 1 - p) >= ``confidence``) enter the binary
  cross-entropy (weight ``beta``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["confident_pseudo_label_loss", "consistency_loss", "dihedral", "ema_update", "photometric_noise"]


def dihedral(x: Tensor, k: Tensor, flip: Tensor) -> Tensor:
    """Per-image dihedral transform of x (B, C, H, W) with H == W: optional horizontal flip (flip (B,)
    bool), then rot90 by k (B,) int in {0..3}. Exact (a permutation of pixels)."""
    out = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    rotated = [torch.rot90(out[i], int(k[i]), dims=(-2, -1)) for i in range(x.shape[0])]
    return torch.stack(rotated) if rotated else out


def photometric_noise(x: Tensor, generator: torch.Generator) -> Tensor:
    """Brightness in [-0.1, 0.1], contrast in [0.8, 1.2] and Gaussian noise (std 0.03) per image of
    x float32 (B, C, H, W) in [0, 1]; clamped to [0, 1]. Draws come from ``generator`` (CPU)."""
    b = x.shape[0]
    brightness = (0.2 * torch.rand(b, generator=generator) - 0.1).view(b, 1, 1, 1).to(x.device)
    contrast = (0.8 + 0.4 * torch.rand(b, generator=generator)).view(b, 1, 1, 1).to(x.device)
    noise = (0.03 * torch.randn(x.shape, generator=generator)).to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness + noise).clamp(0, 1)


def consistency_loss(
    student: Callable[[Tensor], Tensor],
    teacher: nn.Module,
    images: Tensor,
    generator: torch.Generator,
    part: slice = slice(None),
) -> Tensor:
    """Mean-teacher consistency: mean squared error between sigmoid(student(view)) and the teacher's
    probabilities on the clean images moved to the same view. images (B, C, H, W) is the global batch:
    views are drawn for all of it and only rows ``part`` (this process's share) are used. Returns ()."""
    b = images.shape[0]
    k = (
        torch.randint(0, 4, (b,), generator=generator)
        if images.shape[-1] == images.shape[-2]
        else torch.zeros(b, dtype=torch.int64)
    )
    flip = torch.rand(b, generator=generator) < 0.5
    view = photometric_noise(dihedral(images, k, flip), generator)[part]
    with torch.no_grad():
        target = dihedral(torch.sigmoid(teacher(images[part])), k[part], flip[part])
    return F.mse_loss(torch.sigmoid(student(view)), target)


def confident_pseudo_label_loss(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Binary cross-entropy of logits (B, 1, H, W) towards target (B, H, W) in {0, 1} over the pixels
    where weight (B, H, W) is 1 (mean over those pixels; 0 with a gradient of zeros if there are none)."""
    w = weight.unsqueeze(1).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target.unsqueeze(1).to(logits.dtype), reduction="none")
    return (bce * w).sum() / w.sum().clamp_min(1.0)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student, parameters and buffers (floating ones)."""
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True):
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        else:
            t.copy_(s)
