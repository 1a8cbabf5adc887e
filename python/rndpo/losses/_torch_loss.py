"""The torch path of :func:`rndpo.losses.preference.preference_loss`: per-pair sums over the region D.

Used on CPU, and on CUDA without Triton (the math is the docstring of :mod:`rndpo.losses.preference`).
:class:`RegionPreferenceFunction` gathers only the pixels of D = {chosen != rejected}, reduces them to
per-pair sums (B,) and computes the gradient in closed form from the masks, so no per-pixel
log-likelihood tensor or autograd graph over pixels is built.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["RegionPreferenceFunction", "flat_nonzero", "log_sigmoid"]


def log_sigmoid(h: Tensor) -> Tensor:
    """logsigmoid(h) = -log(1 + exp(-h)), elementwise, through logaddexp (any shape, float dtype).

    Same values and gradients as F.logsigmoid, but on CPU F.logsigmoid enters an OpenMP parallel region
    even for a handful of elements, which costs milliseconds per call on a busy machine.
    """
    return -torch.logaddexp(torch.zeros_like(h), -h)


def flat_nonzero(mask: Tensor) -> Tensor:
    """Sorted positions (N,) int64 of the True entries of a contiguous 1-D bool tensor (N0,).

    Disagreement regions are sparse and clustered (boundaries), so the mask is first scanned eight bytes
    at a time (as int64 words); only the words holding a True byte are expanded. Same result as
    ``mask.nonzero()``, several times faster on CPU for sparse masks; dense masks take the plain path.
    """
    n = mask.numel()
    if n % 8 != 0 or n < 1024 or not mask.is_contiguous() or mask.storage_offset() % 8 != 0:
        return mask.nonzero().squeeze(1)
    words = mask.view(torch.int64).nonzero().squeeze(1)
    if 16 * words.numel() > n:  # dense: more than half the words hit, expanding them costs more
        return mask.nonzero().squeeze(1)
    candidates = (words.unsqueeze(1) * 8 + torch.arange(8, device=mask.device)).reshape(-1)
    return candidates[mask[candidates]]


class RegionPreferenceFunction(torch.autograd.Function):
    """Per-pair region sums from the disagreement pixels only, with a closed-form backward.

    Inputs: policy, ref (B, C, P) float (any of float16/bfloat16/float32/float64), chosen, rejected
    (B, P) bool/integer, acc_dtype (float32 or float64). Outputs, all (B,):
    margin_sum acc_dtype = sum over D of the log-ratio margin term (differentiable);
    chosen_logratio acc_dtype = sum over D of log pi(y_w) - log pi_ref(y_w) (not differentiable);
    region_size int64 = |D| (not differentiable).
    Saved for backward: the flat positions of D, (|D|,) int64, and references to the two masks (no
    copies). The gradient w.r.t. policy is g_b * (2 y_w - 1) on D for C = 1, and +g_b at class y_w,
    -g_b at class y_l on D for C > 1 (g_b = dL/dmargin_sum_b); 0 elsewhere. The reference gets minus that.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        policy: Tensor,
        ref: Tensor,
        chosen: Tensor,
        rejected: Tensor,
        acc_dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor, Tensor]:
        batch, classes, pixels = policy.shape
        idx = flat_nonzero((chosen != rejected).reshape(-1))  # flat b * P + p over D, sorted
        pair = torch.div(idx, pixels, rounding_mode="floor")
        region_size = torch.bincount(pair, minlength=batch)
        y_w = chosen.reshape(-1)[idx]
        if classes == 1:
            z = policy.reshape(-1)[idx].to(acc_dtype)
            z_ref = ref.reshape(-1)[idx].to(acc_dtype)
            sign = y_w.to(acc_dtype) * 2 - 1  # 2 y_w - 1: +1 where y_w = 1, -1 where y_w = 0
            term = sign * (z - z_ref)
            logratio = log_sigmoid(sign * z) - log_sigmoid(sign * z_ref)
        else:
            pix = idx - pair * pixels
            win = y_w.long().unsqueeze(1)
            lose = rejected.reshape(-1)[idx].long().unsqueeze(1)
            z = policy[pair, :, pix].to(acc_dtype)  # (|D|, C)
            z_ref = ref[pair, :, pix].to(acc_dtype)
            term = (
                (z.gather(1, win) - z.gather(1, lose)) - (z_ref.gather(1, win) - z_ref.gather(1, lose))
            ).squeeze(1)
            logratio = (z.gather(1, win).squeeze(1) - torch.logsumexp(z, dim=1)) - (
                z_ref.gather(1, win).squeeze(1) - torch.logsumexp(z_ref, dim=1)
            )
        zeros = torch.zeros(batch, dtype=acc_dtype, device=policy.device)
        margin_sum = zeros.index_add(0, pair, term)
        chosen_logratio = zeros.index_add(0, pair, logratio)
        ctx.save_for_backward(idx, chosen, rejected)
        ctx.policy_meta = (policy.shape, policy.dtype)  # type: ignore[attr-defined]
        ctx.ref_dtype = ref.dtype  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(chosen_logratio, region_size)
        return margin_sum, chosen_logratio, region_size

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_margin: Tensor, _grad_logratio: Tensor, _grad_size: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        need_policy, need_ref = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_policy or need_ref):
            return None, None, None, None, None
        idx, chosen, rejected = ctx.saved_tensors
        (batch, classes, pixels), dtype = ctx.policy_meta
        pair = torch.div(idx, pixels, rounding_mode="floor")
        g = grad_margin[pair]  # (|D|,) acc dtype
        y_w = chosen.reshape(-1)[idx]
        grad = torch.zeros(batch * classes * pixels, dtype=dtype, device=grad_margin.device)
        if classes == 1:
            grad[idx] = (g * (y_w.to(g.dtype) * 2 - 1)).to(dtype)
        else:
            pix = idx - pair * pixels
            base = pair * (classes * pixels) + pix
            g = g.to(dtype)
            grad[base + y_w.long() * pixels] = g  # y_w != y_l on D: the two writes never collide
            grad[base + rejected.reshape(-1)[idx].long() * pixels] = -g
        grad = grad.view(batch, classes, pixels)
        grad_ref = -grad.to(ctx.ref_dtype) if need_ref else None
        return (grad if need_policy else None), grad_ref, None, None, None
