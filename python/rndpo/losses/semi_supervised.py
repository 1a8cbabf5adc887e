"""Semi-supervised baselines that users would pick instead of judges: mean teacher and confidence-filtered
pseudo-labelling. Both train on the unlabeled pool plus a supervised term on the labeled images (the
method's ``anchor_weight``) and need no judge; :func:`rndpo.training.finetuning.finetune` runs them like any
other objective (``objective = "mean_teacher"`` or ``"pseudo_label"``).

* Mean teacher (Tarvainen & Valpola, 2017): the teacher is an exponential moving average of the student
  (``ema_decay``); the student, on a flipped/rotated (dihedral) view of an unlabeled image with
  photometric noise, must match the teacher's probabilities on the clean image under the same view
  (mean squared error, weight ``beta``). Volumes (B, C, D, H, W) get a flip along each spatial axis
  (each with probability 1/2) and an in-plane rot90 when H == W.
* Pseudo-labelling: the base model's mask on each unlabeled image is the target, and only pixels where
  the base model is confident (its top class probability, max(p, 1 - p) for binary, >= ``confidence``)
  enter the cross-entropy (weight ``beta``).

Binary models have one output channel (sigmoid); multi-class models C >= 2 (softmax over dim 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "confident_pseudo_label_loss",
    "consistency_loss",
    "dihedral",
    "ema_update",
    "photometric_noise",
    "probabilities",
    "pseudo_label_targets",
]


def dihedral(x: Tensor, k: Tensor, flip: Tensor) -> Tensor:
    """Per-image flips and in-plane rotation of x (B, C, *S), exact (a permutation of pixels).

    2D (B, C, H, W): optional horizontal flip (flip (B,) bool), then rot90 by k (B,) int in {0..3} (H == W
    when any k is non-zero). 3D (B, C, D, H, W): flip (B, 3) bool flips along D, H and W, then rot90 by k
    in the (H, W) plane."""
    if x.ndim == 4:
        out = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    else:
        out = x
        for axis in range(flip.shape[1]):
            shape = (-1,) + (1,) * (x.ndim - 1)
            out = torch.where(flip[:, axis].view(shape).to(x.device), out.flip(2 + axis), out)
    rotated = [torch.rot90(out[i], int(k[i]), dims=(-2, -1)) for i in range(x.shape[0])]
    return torch.stack(rotated) if rotated else out


def probabilities(logits: Tensor) -> Tensor:
    """Sigmoid of one-channel (binary) logits (B, 1, *S), softmax over the classes of (B, C, *S)."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def photometric_noise(x: Tensor, generator: torch.Generator) -> Tensor:
    """Brightness in [-0.1, 0.1], contrast in [0.8, 1.2] and Gaussian noise (std 0.03) per image of
    x float32 (B, C, *S) in [0, 1]; clamped to [0, 1]. Draws come from ``generator`` (CPU)."""
    b = x.shape[0]
    shape = (b,) + (1,) * (x.ndim - 1)
    brightness = (0.2 * torch.rand(b, generator=generator) - 0.1).view(shape).to(x.device)
    contrast = (0.8 + 0.4 * torch.rand(b, generator=generator)).view(shape).to(x.device)
    noise = (0.03 * torch.randn(x.shape, generator=generator)).to(x.device)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return ((x - mean) * contrast + mean + brightness + noise).clamp(0, 1)


def consistency_loss(
    student: Callable[[Tensor], Tensor],
    teacher: nn.Module,
    images: Tensor,
    generator: torch.Generator,
    part: slice = slice(None),
    *,
    flip_axes: Sequence[int] | None = None,
) -> Tensor:
    """Mean-teacher consistency: mean squared error between the student's probabilities on a view and the
    teacher's on the clean images moved to the same view (:func:`probabilities`). images (B, C, *S) is the
    global batch: views are drawn for all of it and only rows ``part`` (this process's share) are used.
    flip_axes: volumes are flipped along these spatial axes only (None: all). Returns ()."""
    b = images.shape[0]
    k = (
        torch.randint(0, 4, (b,), generator=generator)
        if images.shape[-1] == images.shape[-2]
        else torch.zeros(b, dtype=torch.int64)
    )
    flip = torch.rand((b,) if images.ndim == 4 else (b, images.ndim - 2), generator=generator) < 0.5
    if images.ndim == 5 and flip_axes is not None:
        allowed = torch.zeros(images.ndim - 2, dtype=torch.bool)
        allowed[list(flip_axes)] = True
        flip &= allowed
    view = photometric_noise(dihedral(images, k, flip), generator)[part]
    with torch.no_grad():
        target = dihedral(probabilities(teacher(images[part])), k[part], flip[part])
    return F.mse_loss(probabilities(student(view)), target)


def confident_pseudo_label_loss(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Cross-entropy of logits towards target over the pixels where weight (B, *S) is 1 (mean over those
    pixels; 0 with a gradient of zeros if there are none). Binary: logits (B, 1, *S), target (B, *S) in
    {0, 1}, binary cross-entropy; multi-class: logits (B, C, *S), target (B, *S) class ids in [0, C)."""
    if logits.shape[1] == 1:
        w = weight.unsqueeze(1).to(logits.dtype)
        ce = F.binary_cross_entropy_with_logits(
            logits, target.unsqueeze(1).to(logits.dtype), reduction="none"
        )
    else:
        w = weight.to(logits.dtype)
        ce = F.cross_entropy(logits, target.long(), reduction="none")
    return (ce * w).sum() / w.sum().clamp_min(1.0)


def pseudo_label_targets(ref_logits: Tensor, confidence: float) -> tuple[Tensor, Tensor]:
    """The base model's mask and where it is confident, from its logits (B, 1 | C, *S): target uint8
    (B, *S) (logit > 0 for binary, argmax otherwise) and keep uint8 (B, *S) (top class probability >=
    confidence)."""
    if ref_logits.shape[1] == 1:
        base = ref_logits[:, 0]
        return (base > 0).to(torch.uint8), (torch.sigmoid(base.abs()) >= confidence).to(torch.uint8)
    top, label = torch.softmax(ref_logits, dim=1).max(dim=1)
    return label.to(torch.uint8), (top >= confidence).to(torch.uint8)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student, parameters and buffers (floating ones)."""
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True):
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        else:
            t.copy_(s)
