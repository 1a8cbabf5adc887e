"""Losses: the preference objectives (DPO, RN-DPO and relatives), supervised segmentation losses, semi-
supervised baselines.
"""

from rndpo.losses.preference import (
    LossType,
    Normalization,
    PreferenceLoss,
    PreferenceLossOutput,
    check_nonfinite,
    finite_check_mode,
    loss_backend,
    preference_loss,
    set_finite_check_mode,
    set_loss_backend,
)
from rndpo.losses.segmentation import (
    sft_top_loss,
    soft_dice_loss,
    supervised_anchor_loss,
)
from rndpo.losses.semi_supervised import (
    confident_pseudo_label_loss,
    consistency_loss,
    dihedral,
    ema_update,
    photometric_noise,
    probabilities,
    pseudo_label_targets,
)

__all__ = [
    "LossType",
    "Normalization",
    "PreferenceLoss",
    "PreferenceLossOutput",
    "check_nonfinite",
    "confident_pseudo_label_loss",
    "consistency_loss",
    "dihedral",
    "ema_update",
    "finite_check_mode",
    "loss_backend",
    "photometric_noise",
    "preference_loss",
    "probabilities",
    "pseudo_label_targets",
    "set_finite_check_mode",
    "set_loss_backend",
    "sft_top_loss",
    "soft_dice_loss",
    "supervised_anchor_loss",
]
