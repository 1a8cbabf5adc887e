"""Pad-and-crop: any spatial size through a network that needs multiples of its total downsampling.

Inputs float32 (B, C, *S) (S: (H, W) or (D, H, W)) are padded at the end of each spatial axis
(replicate) up to multiples of ``multiple``; the logits (B, out_channels, *S') are cropped back to S.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PadToMultiple", "crop_to", "pad_to_multiple"]


def pad_to_multiple(x: torch.Tensor, multiple: int, spatial_dims: int) -> tuple[torch.Tensor, bool]:
    """``x`` (B, C, *S) replicate-padded at the end of its last ``spatial_dims`` axes up to multiples of
    ``multiple``; returns it and whether anything was padded (``x`` itself when nothing was)."""
    pads = [(-s) % multiple for s in x.shape[x.ndim - spatial_dims :]]
    if not any(pads):
        return x, False
    return F.pad(x, [p for pad in reversed(pads) for p in (0, pad)], mode="replicate"), True


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The leading ``size`` corner of the last ``len(size)`` axes of ``x`` (a view)."""
    index: tuple[Any, ...] = (..., *(slice(0, s) for s in size))
    return x[index]


class PadToMultiple(nn.Module):
    """Wraps ``network`` so that inputs of any spatial size give logits of the same size.

    network: takes (B, C, *S) with every S a multiple of ``multiple``; spatial_dims: 2 or 3 (1 works too).
    The wrapped network's parameters are under ``network.`` in the state dict.
    """

    def __init__(self, network: nn.Module, multiple: int, spatial_dims: int) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"multiple must be a positive int, got {multiple!r}")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        self.network = network
        self.multiple = multiple
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, out_channels, *S) for inputs (B, C, *S) of any spatial size S."""
        if x.ndim != 2 + self.spatial_dims:
            raise ValueError(
                f"x must have {2 + self.spatial_dims} dimensions (B, C and {self.spatial_dims} spatial),"
                f" got shape {tuple(x.shape)}"
            )
        size = tuple(x.shape[2:])
        padded, changed = pad_to_multiple(x, self.multiple, self.spatial_dims)
        out = self.network(padded)
        return crop_to(out, size) if changed else out
