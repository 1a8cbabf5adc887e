"""Supervised segmentation losses for fine-tuning: (binary) cross-entropy + soft Dice (MONAI DiceCELoss).

Logits (B, 1, *S) (binary: BCE with logits, sigmoid Dice) or (B, C, *S) (cross-entropy, softmax Dice over
all C channels), float16/bfloat16/float32/float64, *S = (H, W) or (D, H, W); targets (B, *S) bool/integer.
Each loss returns a () float32 tensor (float64 for float64 logits), the mean over the batch.
:func:`soft_dice_loss` is the one soft Dice of rndpo (also used by base training in
``rndpo.training.supervised``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from rndpo.losses._checks import check_segmentation, check_tensor

__all__ = ["sft_top_loss", "soft_dice_loss", "supervised_anchor_loss"]

_DICE_SMOOTH = 1e-5  # MONAI DiceLoss defaults (smooth_nr = smooth_dr = 1e-5)


def _dice_ce(logits: Tensor, target: Tensor, dice_weight: float, target_name: str) -> Tensor:
    """(Binary) cross-entropy + dice_weight * soft Dice (MONAI DiceCELoss semantics), mean over batch."""
    logits = check_tensor("policy_logits", logits)
    target = check_tensor(target_name, target)
    if isinstance(dice_weight, bool) or not isinstance(dice_weight, (int, float)):
        raise TypeError(f"dice_weight must be a float, got {type(dice_weight).__name__}")
    if not (math.isfinite(dice_weight) and dice_weight >= 0):
        raise ValueError(f"dice_weight must be finite and >= 0, got {dice_weight}")
    classes, _ = check_segmentation("policy_logits", logits, target, target_name)
    x = logits if logits.dtype == torch.float64 else logits.float()
    if x.shape[0] == 0:  # an empty batch: 0 with zero gradient, like preference_loss
        return x.sum() * 0.0
    if classes == 1:
        onehot = target.unsqueeze(1).to(x.dtype)
        ce = F.binary_cross_entropy_with_logits(x, onehot)
        prob = torch.sigmoid(x)
    else:
        labels = target.long()
        ce = F.cross_entropy(x, labels)
        prob = torch.softmax(x, dim=1)
        onehot = F.one_hot(labels, classes).movedim(-1, 1).to(x.dtype)
    return ce + dice_weight * soft_dice_loss(prob, onehot, smooth=_DICE_SMOOTH)


def soft_dice_loss(prob: Tensor, onehot: Tensor, *, smooth: float) -> Tensor:
    """Mean over images and channels of 1 - soft Dice, for probabilities and one-hot targets float
    (B, C, *S): (2 |P T| + smooth) / (|P| + |T| + smooth) per (image, channel) over the spatial dims.
    The one soft Dice of rndpo (the fine-tuning losses of this module, and base training in
    ``rndpo.training.supervised``)."""
    spatial = tuple(range(2, prob.dim()))
    inter = (prob * onehot).sum(spatial)
    denom = prob.sum(spatial) + onehot.sum(spatial)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def sft_top_loss(policy_logits: Tensor, chosen: Tensor, *, dice_weight: float = 1.0) -> Tensor:
    """Pseudo-label fine-tuning on the judge's choice: (B)CE + dice_weight * soft Dice towards ``chosen``.

    policy_logits: (B, 1, *S) (BCE with logits, sigmoid Dice) or (B, C, *S) (cross-entropy, softmax
    Dice over all C channels, background included); chosen: (B, *S) bool/integer. Returns a () float32
    tensor (float64 for float64 logits). Dice per (image, channel) with MONAI's smoothing 1e-5.
    """
    return _dice_ce(policy_logits, chosen, dice_weight, "chosen")


def supervised_anchor_loss(policy_logits: Tensor, masks: Tensor, *, dice_weight: float = 1.0) -> Tensor:
    """Supervised anchor on labeled images: (B)CE + dice_weight * soft Dice towards ground-truth ``masks``.

    Same shapes and semantics as :func:`sft_top_loss`: policy_logits (B, C, *S), masks (B, *S)
    bool/integer; returns () float32 (float64 for float64 logits). The trainer adds it, with a weight, to
    any preference loss.
    """
    return _dice_ce(policy_logits, masks, dice_weight, "masks")
