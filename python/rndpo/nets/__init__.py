"""Segmentation networks: rndpo's own U-Net, the registry that builds any supported network, saved model files."""

from rndpo.nets.saved import (
    FORMAT,
    NORMALISATIONS,
    SavedModel,
    load_model,
    save_model,
)
from rndpo.nets.unet import (
    NORMS,
    UNet,
    enable_mc_dropout,
    restore_train_flags,
    save_train_flags,
)

__all__ = [
    "FORMAT",
    "NORMALISATIONS",
    "NORMS",
    "SavedModel",
    "UNet",
    "enable_mc_dropout",
    "load_model",
    "restore_train_flags",
    "save_model",
    "save_train_flags",
]
