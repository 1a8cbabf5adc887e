"""A small U-Net returning logits (B, out_channels, H, W) (2D) or (B, out_channels, D, H, W) (3D), with
dropout for MC-dropout sampling.

Layout: ``len(channels)`` levels. Each level is two (3x3 conv -> norm -> ReLU) layers; levels are joined
by 2x2 max-pooling on the way down and 2x2 transposed convolutions on the way up, with skip connections
(3x3x3, 2x2x2 in 3D). A ``Dropout2d`` (``Dropout3d``; channel dropout) follows every block from the
second level on (encoder, bottleneck and decoder), so ``enable_mc_dropout`` gives diverse samples. Inputs
whose spatial sizes are not multiples of 2 ** (levels - 1) are padded (replicate) and the logits are
cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from rndpo.nets.padding import crop_to, pad_to_multiple

__all__ = ["NORMS", "UNet", "enable_mc_dropout", "restore_train_flags", "save_train_flags"]

NORMS: tuple[str, ...] = ("batch", "instance", "none")

Norm = Literal["batch", "instance", "none"]


#: the layer classes per spatial_dims: convolution, transposed convolution, batch norm, instance norm,
#: channel dropout
_LAYERS: dict[int, tuple[type[nn.Module], ...]] = {
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.Dropout2d),
    3: (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.InstanceNorm3d, nn.Dropout3d),
}


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    _, _, batch, instance, _ = _LAYERS[dims]
    if kind == "batch":
        return batch(channels)
    if kind == "instance":
        return instance(channels, affine=True)
    return nn.Identity()


class _Block(nn.Sequential):
    """(3x3 conv -> norm -> ReLU) x 2, then optional channel dropout."""

    def __init__(self, cin: int, cout: int, norm: str, dropout: float, dims: int) -> None:
        bias = norm == "none"
        conv, _, _, _, drop = _LAYERS[dims]
        layers: list[nn.Module] = [
            conv(cin, cout, 3, padding=1, bias=bias),
            _norm(norm, cout, dims),
            nn.ReLU(inplace=True),
            conv(cout, cout, 3, padding=1, bias=bias),
            _norm(norm, cout, dims),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(drop(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net: images float32 (B, in_channels, *S) -> logits float32 (B, out_channels, *S), S = (H, W)
    (spatial_dims 2) or (D, H, W) (spatial_dims 3).

    channels: features per level, e.g. (16, 32, 64, 128) (4 levels, 3 poolings); dropout: channel
    dropout probability after every block except the first encoder block and the last decoder block
    (0 disables); norm: "batch", "instance" or "none".
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        dropout: float = 0.1,
        norm: Norm = "batch",
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        channels = tuple(channels)
        if len(channels) < 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"channels must list at least 2 positive ints, got {channels!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
        if isinstance(spatial_dims, bool) or spatial_dims not in _LAYERS:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.dropout = float(dropout)
        self.norm = norm
        self.spatial_dims = int(spatial_dims)
        _, up, _, _, _ = _LAYERS[self.spatial_dims]

        self.encoders = nn.ModuleList()
        cin = in_channels
        for level, c in enumerate(channels):
            self.encoders.append(_Block(cin, c, norm, self.dropout if level > 0 else 0.0, spatial_dims))
            cin = c
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(channels) - 2, -1, -1):
            c = channels[level]
            self.ups.append(up(channels[level + 1], c, kernel_size=2, stride=2))
            self.decoders.append(_Block(2 * c, c, norm, self.dropout if level > 0 else 0.0, spatial_dims))
        self.head = _LAYERS[self.spatial_dims][0](channels[0], out_channels, kernel_size=1)

    @property
    def multiple(self) -> int:
        """Spatial sizes are padded up to a multiple of this (2 ** (levels - 1))."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits float32 (B, out_channels, *S) for images float32 (B, in_channels, *S)."""
        if x.ndim != 2 + self.spatial_dims or x.shape[1] != self.in_channels:
            axes = "H, W" if self.spatial_dims == 2 else "D, H, W"
            raise ValueError(
                f"x must have shape (B, in_channels={self.in_channels}, {axes}), got {tuple(x.shape)}"
            )
        size = tuple(x.shape[2:])
        x, padded = pad_to_multiple(x, self.multiple, self.spatial_dims)
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        skips: list[torch.Tensor] = []
        for level, enc in enumerate(self.encoders):
            if level > 0:
                x = pool(x, 2)
            x = enc(x)
            skips.append(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips[:-1]), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        out = self.head(x)
        return crop_to(out, size) if padded else out

    def config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-ready dict (channels as a list); see :meth:`from_config`."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "channels": list(self.channels),
            "dropout": self.dropout,
            "norm": self.norm,
            "spatial_dims": self.spatial_dims,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UNet:
        """A freshly initialised UNet from :meth:`config` output."""
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping of UNet arguments, got {type(config).__name__}")
        valid = {"in_channels", "out_channels", "channels", "dropout", "norm", "spatial_dims"}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**dict(config))


def save_train_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every module's train/eval flag, to put back with :func:`restore_train_flags`."""
    return [(module, module.training) for module in model.modules()]


def restore_train_flags(flags: list[tuple[nn.Module, bool]]) -> None:
    """Puts back the flags :func:`save_train_flags` took (module by module, mixed flags included)."""
    for module, training in flags:
        module.training = training


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode except its dropout modules (MC-dropout); batch-norm stays frozen.

    Returns the same model. Raises ValueError if it has no dropout module with p > 0.
    """
    model.eval()
    found = False
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
            found = found or module.p > 0
    if not found:
        raise ValueError("model has no dropout module with p > 0; MC-dropout needs dropout > 0")
    return model
