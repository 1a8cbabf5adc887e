"""Segmentation networks: rndpo's own U-Net, the registry that builds any supported network, saved model
files.
"""

from rndpo.nets.padding import (
    PadToMultiple,
    crop_to,
    pad_to_multiple,
)
from rndpo.nets.registry import (
    NETWORKS,
    NetworkSpec,
    architecture_of,
    build_network,
    network_from_architecture,
    network_from_config,
    supports_mc_dropout,
)
from rndpo.nets.saved import (
    FORMAT,
    SCALINGS,
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
    "NETWORKS",
    "NORMS",
    "SCALINGS",
    "NetworkSpec",
    "PadToMultiple",
    "SavedModel",
    "UNet",
    "architecture_of",
    "build_network",
    "crop_to",
    "enable_mc_dropout",
    "load_model",
    "network_from_architecture",
    "network_from_config",
    "pad_to_multiple",
    "restore_train_flags",
    "save_model",
    "save_train_flags",
    "supports_mc_dropout",
]
