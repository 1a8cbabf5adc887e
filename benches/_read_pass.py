"""The read-pass baseline of benches/bench_losses.py: one Triton kernel that reads every input once.

Policy and reference logits (B, 1, P) float and both masks (B, P) bool are read with the grid and block
size of the loss's first kernel (``rndpo.losses._triton_loss``), launched the same way (``RNDPO_TRITON_LAUNCH``),
and each program writes one float (the sum of what it read, so that no load can be optimised away). No loss over these inputs can read less.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rndpo.losses import _triton_loss
from rndpo.losses._triton_launch import Launcher

__all__ = ["read_pass"]


@triton.jit
def _read_kernel(policy, ref, chosen, rejected, out, P, NB, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    offs = j * BLOCK + tl.arange(0, BLOCK)
    inb = offs < P
    z = tl.load(policy + b * P + offs, mask=inb, other=0.0).to(tl.float32)
    zr = tl.load(ref + b * P + offs, mask=inb, other=0.0).to(tl.float32)
    yw = tl.load(chosen + b * P + offs, mask=inb, other=0).to(tl.float32)
    yl = tl.load(rejected + b * P + offs, mask=inb, other=0).to(tl.float32)
    tl.store(out + b * NB + j, tl.sum(z + zr + yw + yl, axis=0))


_LAUNCH = Launcher(_read_kernel, ("BLOCK",))  # launched like the loss's kernels (RNDPO_TRITON_LAUNCH)


def read_pass(
    policy: torch.Tensor, ref: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor
) -> torch.Tensor:
    """Per-program sums (B, NB) float32 of one read of policy, ref (B, 1, *S) and masks (B, *S) bool."""
    batch = policy.shape[0]
    pixels = policy[0].numel()
    block = _triton_loss.BLOCK
    nb = -(-pixels // block)  # ceil (triton.cdiv costs microseconds from Python)
    out = torch.empty((batch, nb), dtype=torch.float32, device=policy.device)
    index = policy.device.index or 0
    args = (policy.detach(), ref, chosen.view(torch.uint8), rejected.view(torch.uint8), out, pixels, nb)
    _LAUNCH((batch, nb, 1), index, args, (block,))
    return out
