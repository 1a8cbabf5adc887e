"""Triton kernels for :func:`rndpo.losses.preference.preference_loss` on CUDA: three launches, no gathers.

The math is the module docstring of :mod:`rndpo.losses.preference`; here it is laid out for a GPU:

1. ``_region_sums_kernel``, grid (B, ceil(P / BLOCK)): one read of policy, reference and both masks. Each
   program reduces its block of pixels to partial sums (accumulation dtype): the margin term summed over
   D, the chosen log-ratio summed over D, |D|, and the number of non-finite policy and reference values
   (the inputs' finiteness check rides on the same read). Partials go to a (2, B, NB) float and a
   (3, B, NB) int64 buffer (a two-stage reduction: deterministic, no atomics).
2. ``_pair_kernel``, one program: sums the partials per pair and computes every per-pair output (losses,
   rewards, margins, accuracies, |D|), the batch loss, and the per-pair coefficient
   dlosses_b / dmargin_sum_b that the backward needs; when an input holds a non-finite value, every
   float output and coefficient is NaN (so the gradient is too).
3. ``_region_grad_kernel``, grid (B, ceil(P / BLOCK)), in backward: reads the two masks and writes the
   gradient w.r.t. the policy logits, c_b * (2 y_w - 1) on D (binary) or +c_b at class y_w and -c_b at
   class y_l on D (multi-class), 0 elsewhere, with c_b = (dL/dloss / n_valid + dL/dlosses_b) *
   dlosses_b / dmargin_sum_b. No per-pixel temporaries: the only full-size tensor is the gradient.

Scalars (beta, label smoothing, region power) are passed as two float32 halves (hi + lo), because Triton
passes Python floats as float32 and float64 accumulation needs them to about 48 bits.

Launches go through :class:`rndpo.losses._triton_launch.Launcher`: after the first launch of a
specialization the compiled kernel is called directly, without the JIT's per-call binding; all
per-call buffers come from two allocations (one float, one int64), split into views.

Under ``TRITON_INTERPRET=1`` (set before this module is imported) the same kernels run on CPU tensors
through Triton's interpreter; that is how they are tested without a GPU.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from rndpo.losses._triton_launch import Launcher

__all__ = ["INTERPRETED", "LAUNCHERS", "LOSS_CODES", "region_preference_loss", "triton_version"]

LOSS_CODES = {"sigmoid": 0, "ipo": 1, "hinge": 2, "robust": 3, "cdpo": 4}
BLOCK = 2048  # pixels per program in the two pixel passes
BLOCK_B = 128  # pairs per iteration of the per-pair kernel
BLOCK_J = 32  # partials per pair per iteration of the per-pair kernel


@triton.jit
def _log_sigmoid(x):
    """logsigmoid(x) = min(x, 0) - log1p(exp(-|x|)), with log1p(u) = log(w) * u / (w - 1), w = 1 + u."""
    u = tl.exp(-tl.abs(x))
    w = 1.0 + u
    log1p = tl.where(w == 1.0, u, tl.log(w) * u / (w - 1.0))
    return tl.minimum(x, 0.0) - log1p


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _count_bad(x, inb):
    """Number of non-finite entries of x where inb (NaN fails the comparison too)."""
    bad = tl.where(tl.abs(x) < float("inf"), 0, 1)
    return tl.sum(tl.where(inb, bad, 0).to(tl.int32), axis=0)


@triton.jit
def _region_sums_kernel(
    policy,
    ref,
    chosen,
    rejected,
    sums,
    counts,
    B,
    P,
    NB,
    C: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    offs = j * BLOCK + tl.arange(0, BLOCK)
    inb = offs < P
    yw = tl.load(chosen + b * P + offs, mask=inb, other=0).to(tl.int32)
    yl = tl.load(rejected + b * P + offs, mask=inb, other=0).to(tl.int32)
    d = inb & (yw != yl)
    if C == 1:
        z = tl.load(policy + b * P + offs, mask=inb, other=0.0).to(ACC)
        zr = tl.load(ref + b * P + offs, mask=inb, other=0.0).to(ACC)
        bad_p = _count_bad(z, inb)
        bad_r = _count_bad(zr, inb)
        sign = tl.where(yw != 0, 1.0, -1.0).to(ACC)
        term = sign * (z - zr)
        logratio = _log_sigmoid(sign * z) - _log_sigmoid(sign * zr)
    else:
        zero = tl.zeros([BLOCK], dtype=ACC)
        zw = zero
        zl = zero
        rw = zero
        rl = zero
        m = zero + float("-inf")  # running max and sum of exp(z - max): online log-sum-exp
        s = zero
        mr = zero + float("-inf")
        sr = zero
        bad_p = tl.zeros([], dtype=tl.int32)
        bad_r = tl.zeros([], dtype=tl.int32)
        for c in tl.static_range(C):
            zc = tl.load(policy + (b * C + c) * P + offs, mask=inb, other=0.0).to(ACC)
            rc = tl.load(ref + (b * C + c) * P + offs, mask=inb, other=0.0).to(ACC)
            bad_p += _count_bad(zc, inb)
            bad_r += _count_bad(rc, inb)
            zw = tl.where(yw == c, zc, zw)
            zl = tl.where(yl == c, zc, zl)
            rw = tl.where(yw == c, rc, rw)
            rl = tl.where(yl == c, rc, rl)
            e = tl.exp(-tl.abs(zc - m))  # one exp per class: rescale the sum when the max moves
            s = tl.where(zc > m, s * e + 1.0, s + e)
            m = tl.maximum(m, zc)
            er = tl.exp(-tl.abs(rc - mr))
            sr = tl.where(rc > mr, sr * er + 1.0, sr + er)
            mr = tl.maximum(mr, rc)
        term = (zw - zl) - (rw - rl)
        logratio = (zw - (m + tl.log(s))) - (rw - (mr + tl.log(sr)))
    at = b * NB + j
    tl.store(sums + at, tl.sum(tl.where(d, term, 0.0), axis=0))
    tl.store(sums + B * NB + at, tl.sum(tl.where(d, logratio, 0.0), axis=0))
    tl.store(counts + at, tl.sum(d.to(tl.int32), axis=0))
    tl.store(counts + B * NB + at, bad_p)
    tl.store(counts + 2 * B * NB + at, bad_r)


@triton.jit
def _pair_kernel(
    sums,
    counts,
    losses_out,
    loss_out,
    stats,
    aux,
    sizes,
    bad,
    B,
    NB,
    beta_hi,
    beta_lo,
    eps_hi,
    eps_lo,
    power_hi,
    power_lo,
    ACC: tl.constexpr,
    LOSS: tl.constexpr,
    WEIGHT: tl.constexpr,
    POWER: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """losses_out (B,), loss_out (); stats (4, B): chosen_rewards, rejected_rewards, margins, accuracies;
    aux (B + 1,): coef_b = dlosses_b / dmargin_sum_b, then 1 / n_valid (all acc dtype); sizes (B,) int64
    = |D|; bad (2,) int32 = number of non-finite policy and reference values.
    POWER: 0 for region_power 0 (d = 1), 1 for region_power 1 (d = n), 2 otherwise (d = exp(p log n))."""
    zero = tl.zeros([], dtype=ACC)
    beta = (zero + beta_hi) + beta_lo
    eps = (zero + eps_hi) + eps_lo
    power = (zero + power_hi) + power_lo
    # Accumulate tiles elementwise and reduce after each loop: a reduction feeding a loop-carried sum
    # trips an assertion in Triton 3.6's TritonGPUOptimizeThreadLocality pass (seen on an H200).
    # First the non-finite counts, so that every output can be poisoned with NaN when an input is bad.
    bad_p = tl.zeros([BLOCK_B, BLOCK_J], dtype=tl.int32)
    bad_r = tl.zeros([BLOCK_B, BLOCK_J], dtype=tl.int32)
    for start in range(0, B, BLOCK_B):
        pairs = start + tl.arange(0, BLOCK_B)
        pm = pairs < B
        for j0 in range(0, NB, BLOCK_J):
            cols = j0 + tl.arange(0, BLOCK_J)
            at = pairs[:, None] * NB + cols[None, :]
            am = pm[:, None] & (cols[None, :] < NB)
            bad_p += tl.load(counts + B * NB + at, mask=am, other=0).to(tl.int32)
            bad_r += tl.load(counts + 2 * B * NB + at, mask=am, other=0).to(tl.int32)
    n_bad_p = tl.sum(tl.sum(bad_p, axis=1), axis=0)
    n_bad_r = tl.sum(tl.sum(bad_r, axis=1), axis=0)
    tl.store(bad, n_bad_p)
    tl.store(bad + 1, n_bad_r)
    poison = tl.where(n_bad_p + n_bad_r > 0, float("nan"), 0.0).to(ACC)  # NaN + x = NaN, 0 + x = x
    loss_acc = tl.zeros([BLOCK_B], dtype=ACC)
    valid_acc = tl.zeros([BLOCK_B], dtype=tl.int32)
    for start in range(0, B, BLOCK_B):
        pairs = start + tl.arange(0, BLOCK_B)
        pm = pairs < B
        m_tile = tl.zeros([BLOCK_B, BLOCK_J], dtype=ACC)
        l_tile = tl.zeros([BLOCK_B, BLOCK_J], dtype=ACC)
        n_tile = tl.zeros([BLOCK_B, BLOCK_J], dtype=tl.int32)
        for j0 in range(0, NB, BLOCK_J):
            cols = j0 + tl.arange(0, BLOCK_J)
            at = pairs[:, None] * NB + cols[None, :]
            am = pm[:, None] & (cols[None, :] < NB)
            m_tile += tl.load(sums + at, mask=am, other=0.0)
            l_tile += tl.load(sums + B * NB + at, mask=am, other=0.0)
            n_tile += tl.load(counts + at, mask=am, other=0).to(tl.int32)
        msum = tl.sum(m_tile, axis=1)
        lsum = tl.sum(l_tile, axis=1)
        n = tl.sum(n_tile, axis=1)
        valid = n > 0
        size = tl.maximum(n, 1).to(ACC)
        if POWER == 0:
            denom = tl.full([BLOCK_B], 1.0, ACC)
        elif POWER == 1:
            denom = size
        else:
            denom = tl.exp(power * tl.log(size))
        if WEIGHT:  # normalization="weight": r = m, loss times 1 / d
            raw = msum
            weight = 1.0 / denom
            scale = tl.zeros([BLOCK_B], dtype=ACC) + beta
        else:  # normalization="margin": r = m / d
            raw = msum / denom
            weight = tl.full([BLOCK_B], 1.0, ACC)
            scale = beta / denom
        h = beta * raw
        # per-pair loss f and its derivative w.r.t. h (dfdh), or w.r.t. r for ipo
        if LOSS == 0:  # sigmoid
            f = -_log_sigmoid(h)
            dfdh = -_sigmoid(-h)
        elif LOSS == 1:  # ipo: (r - 1 / (2 beta)) ** 2, derivative taken w.r.t. h = beta r
            gap = raw - 1.0 / (2.0 * beta)
            f = gap * gap
            dfdh = 2.0 * gap / beta
        elif LOSS == 2:  # hinge
            f = tl.maximum(1.0 - h, 0.0)
            dfdh = tl.where(1.0 - h > 0.0, -1.0, 0.0).to(ACC)
        elif LOSS == 3:  # robust
            f = (-(1.0 - eps) * _log_sigmoid(h) + eps * _log_sigmoid(-h)) / (1.0 - 2.0 * eps)
            dfdh = (-(1.0 - eps) * _sigmoid(-h) - eps * _sigmoid(h)) / (1.0 - 2.0 * eps)
        else:  # cdpo
            f = -(1.0 - eps) * _log_sigmoid(h) - eps * _log_sigmoid(-h)
            dfdh = -(1.0 - eps) * _sigmoid(-h) + eps * _sigmoid(h)
        losses = tl.where(valid, f * weight, 0.0)  # poisoned when stored, so no reduction feeds loss_acc
        coef = tl.where(valid, dfdh * weight * scale, 0.0) + poison  # dlosses / dmargin_sum (dh/dm = scale)
        tl.store(losses_out + pairs, losses + poison, mask=pm)
        tl.store(stats + pairs, scale * lsum + poison, mask=pm)
        tl.store(stats + B + pairs, scale * (lsum - msum) + poison, mask=pm)
        tl.store(stats + 2 * B + pairs, h + poison, mask=pm)
        tl.store(stats + 3 * B + pairs, tl.where(h > 0.0, 1.0, 0.0).to(ACC) + poison, mask=pm)
        tl.store(aux + pairs, coef, mask=pm)
        tl.store(sizes + pairs, n.to(tl.int64), mask=pm)
        loss_acc += tl.where(pm, losses, 0.0)
        valid_acc += (pm & valid).to(tl.int32)
    inv = 1.0 / tl.maximum(tl.sum(valid_acc, axis=0), 1).to(ACC)
    tl.store(loss_out, tl.sum(loss_acc, axis=0) * inv + poison)
    tl.store(aux + B, inv)


@triton.jit
def _region_grad_kernel(
    chosen,
    rejected,
    aux,
    grad_loss,
    grad_losses,
    grad,
    B,
    P,
    C: tl.constexpr,
    HAS_LOSS: tl.constexpr,
    HAS_LOSSES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """HAS_LOSS, HAS_LOSSES: whether dL/dloss and dL/dlosses were given (undefined ones count as 0)."""
    b = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    coef = tl.load(aux + b)
    upstream = tl.zeros([], dtype=coef.dtype)
    if HAS_LOSS:
        upstream += tl.load(grad_loss) * tl.load(aux + B)
    if HAS_LOSSES:
        upstream += tl.load(grad_losses + b)
    g = upstream * coef
    offs = j * BLOCK + tl.arange(0, BLOCK)
    inb = offs < P
    yw = tl.load(chosen + b * P + offs, mask=inb, other=0).to(tl.int32)
    yl = tl.load(rejected + b * P + offs, mask=inb, other=0).to(tl.int32)
    d = yw != yl
    if C == 1:
        value = tl.where(d, tl.where(yw != 0, g, -g), 0.0)
        tl.store(grad + b * P + offs, value.to(grad.dtype.element_ty), mask=inb)
    else:
        for c in tl.static_range(C):
            value = tl.where(d & (yw == c), g, tl.where(d & (yl == c), -g, 0.0))
            tl.store(grad + (b * C + c) * P + offs, value.to(grad.dtype.element_ty), mask=inb)


INTERPRETED: bool = not isinstance(_region_sums_kernel, triton.runtime.JITFunction)


def triton_version() -> tuple[int, ...]:
    """Triton's (major, minor) version."""
    return tuple(int(part) for part in triton.__version__.split(".")[:2])


def _split(value: float) -> tuple[float, float]:
    """value = hi + lo with hi, lo float32 (about 48 significant bits together)."""
    hi = _to_float32(value)
    return hi, _to_float32(value - hi)


def _to_float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _contiguous(t: Tensor) -> Tensor:
    return t if t.is_contiguous() else t.contiguous()


def _as_acc(grad: Tensor, dtype: torch.dtype) -> Tensor:
    """An incoming gradient as a contiguous tensor of the accumulation dtype (no op when it is one)."""
    return _contiguous(grad if grad.dtype == dtype else grad.to(dtype))


class _TritonPreferenceFunction(torch.autograd.Function):
    """The Triton kernels as one autograd node; see the module docstring.

    Inputs: policy, ref (B, C, *S) contiguous float, chosen, rejected (B, *S) contiguous bool/integer,
    acc_dtype, options (beta, loss_type, region_power, label_smoothing, normalization). Outputs: loss
    () acc, losses (B,) acc (both differentiable w.r.t. policy and ref), chosen_rewards, rejected_rewards,
    margins, accuracies (B,) acc, region_size (B,) int64, bad (2,) int64 (non-finite values in policy, ref).
    When bad is nonzero every float output and the gradient are NaN (the kernel poisons them), so a
    caller that checks ``bad`` late still never sees a plausible number. Saved for backward: the two
    masks (references) and aux (B + 1,) (per-pair coefficients, 1 / n_valid).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        policy: Tensor,
        ref: Tensor,
        chosen: Tensor,
        rejected: Tensor,
        acc_dtype: torch.dtype,
        options: tuple[float, str, float, float, str],
    ) -> tuple[Tensor, ...]:
        batch, classes = policy.shape[:2]
        pixels = policy.numel() // (batch * classes)
        nb = -(-pixels // BLOCK)  # ceil; triton.cdiv is a jit function, slow to call from Python
        device = policy.device
        index = device.index if device.index is not None else 0
        # two allocations and two splits: each tensor op costs host time, which dominates on a GPU
        work = torch.empty(2 * batch * nb + 6 * batch + 2, dtype=acc_dtype, device=device)
        loss, losses, *stats, aux, sums = work.split_with_sizes(
            [1, batch, batch, batch, batch, batch, batch + 1, 2 * batch * nb]
        )
        ints = torch.empty(batch + 2 + 3 * batch * nb, dtype=torch.int64, device=device)
        sizes, bad, counts = ints.split_with_sizes([batch, 2, 3 * batch * nb])
        acc, scalars, pair_constexprs = _constants(acc_dtype, options)
        _SUMS(
            (batch, nb, 1),
            index,
            (policy, ref, chosen, rejected, sums, counts, batch, pixels, nb),
            (classes, acc, BLOCK),
        )
        # the four rows of stats lie one after another in work: stats[0] is their start
        _PAIR(
            (1, 1, 1),
            index,
            (sums, counts, losses, loss, stats[0], aux, sizes, bad, batch, nb, *scalars),
            pair_constexprs,
        )
        loss = loss.view(())
        # undefined output gradients stay None: materialising them would cost one fill kernel each
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(chosen, rejected, aux)
        ctx.meta = (policy.shape, policy.dtype, ref.dtype, index)  # type: ignore[attr-defined]
        outputs = (loss, losses, *stats, sizes, bad)
        ctx.mark_non_differentiable(*outputs[2:])
        return outputs

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_loss: Tensor | None, grad_losses: Tensor | None, *_rest: Tensor | None
    ) -> tuple[Any, ...]:
        need_policy, need_ref = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_policy or need_ref) or (grad_loss is None and grad_losses is None):
            return None, None, None, None, None, None
        chosen, rejected, aux = ctx.saved_tensors
        shape, dtype, ref_dtype, index = ctx.meta
        batch, classes = shape[0], shape[1]
        pixels = chosen.numel() // batch
        grad = torch.empty(shape, dtype=dtype, device=aux.device)
        _GRAD(
            (batch, -(-pixels // BLOCK), 1),
            index,
            (
                chosen,
                rejected,
                aux,
                aux if grad_loss is None else _as_acc(grad_loss, aux.dtype),
                aux if grad_losses is None else _as_acc(grad_losses, aux.dtype),
                grad,
                batch,
                pixels,
            ),
            (classes, grad_loss is not None, grad_losses is not None, BLOCK),
        )
        grad_ref = -grad.to(ref_dtype) if need_ref else None
        return (grad if need_policy else None), grad_ref, None, None, None, None


_SUMS = Launcher(_region_sums_kernel, ("C", "ACC", "BLOCK"))
_PAIR = Launcher(_pair_kernel, ("ACC", "LOSS", "WEIGHT", "POWER", "BLOCK_B", "BLOCK_J"))
_GRAD = Launcher(_region_grad_kernel, ("C", "HAS_LOSS", "HAS_LOSSES", "BLOCK"))
LAUNCHERS = (_SUMS, _PAIR, _GRAD)


@functools.lru_cache(maxsize=64)
def _constants(
    acc_dtype: torch.dtype, options: tuple[float, str, float, float, str]
) -> tuple[Any, tuple[float, ...], tuple[Any, ...]]:
    """Per-options launch constants, computed once: the Triton accumulation dtype, the six float32
    halves of beta, label smoothing and region power, and the constexprs of the per-pair kernel."""
    beta, loss_type, region_power, label_smoothing, normalization = options
    acc = tl.float64 if acc_dtype == torch.float64 else tl.float32
    scalars = (*_split(beta), *_split(label_smoothing), *_split(region_power))
    power = 0 if region_power == 0 else 1 if region_power == 1 else 2
    return acc, scalars, (acc, LOSS_CODES[loss_type], normalization == "weight", power, BLOCK_B, BLOCK_J)


def region_preference_loss(
    policy: Tensor,
    ref: Tensor,
    chosen: Tensor,
    rejected: Tensor,
    *,
    acc_dtype: torch.dtype,
    beta: float,
    loss_type: str,
    region_power: float,
    label_smoothing: float,
    normalization: str,
) -> tuple[Tensor, ...]:
    """Every output of ``preference_loss`` from the Triton kernels, on already validated inputs.

    policy, ref: (B, C, *S) float16/bfloat16/float32/float64 (made contiguous here); chosen, rejected:
    (B, *S) bool/integer, on the logits' device (CUDA, or CPU under ``TRITON_INTERPRET=1``); B, P > 0.
    Returns (loss, losses, chosen_rewards, rejected_rewards, margins, accuracies, region_size, bad) as
    documented on ``_TritonPreferenceFunction``; ``bad`` holds the non-finite counts of policy and ref,
    which the caller must check (with bad inputs every float output is NaN). Kernels launch through
    :class:`rndpo.losses._triton_launch.Launcher` (``RNDPO_TRITON_LAUNCH=jit|direct``).
    """
    options = (float(beta), loss_type, float(region_power), float(label_smoothing), normalization)
    outputs: tuple[Tensor, ...] = _TritonPreferenceFunction.apply(
        _contiguous(policy),
        _contiguous(ref),
        _contiguous(chosen),  # bool masks load as int8 (Triton reads *i1 as bytes)
        _contiguous(rejected),
        acc_dtype,
        options,
    )
    return outputs
