"""Preference objectives for segmentation: DPO, Region-Normalized DPO and baselines, as fused losses.

With per-pixel independent likelihoods, the DPO margin of a pair (chosen y_w, rejected y_l) against a
frozen reference reduces to a sum over the disagreement region D = {i : y_w,i != y_l,i}, because the
pixels where both masks agree cancel:

* binary logits z (B, 1, *S): log p(y) = logsigmoid((2y - 1) z) per pixel, and on D
  log p(y_w) - log p(y_l) = (2 y_w - 1) z exactly, so m = sum_{i in D} (2 y_w,i - 1) (z_i - z_ref,i);
* multi-class logits z (B, C, *S): log p(y) = z[y] - logsumexp(z); the log-sum-exp cancels, so
  m = sum_{i in D} (z_i[y_w] - z_i[y_l]) - (z_ref,i[y_w] - z_ref,i[y_l]).

Standard DPO uses -logsigmoid(beta m): its gradient grows with |D|, so one wrongly ordered pair with a
large disagreement region dominates a batch. RN-DPO divides the margin by |D| ** region_power
(1.0 is RN-DPO, 0.0 is DPO; values between interpolate).

Two fused paths compute the same outputs; neither builds per-pixel log-likelihood tensors or an autograd
graph over pixels. On CPU (and on CUDA without Triton) a private ``torch.autograd.Function`` gathers only
the pixels of D, reduces them to per-pair sums and computes the gradient in closed form from the masks.
On CUDA with Triton installed, ``rndpo.losses._triton_loss`` does the same in three kernel launches per step
(one read of the inputs for margins, |D| and the finiteness check; one per-pair kernel; one backward
pass writing the gradient), with no gathers or index lists.

Scoring in eval mode: the trainer must compute policy and reference logits with the networks in eval
mode (dropout off, batch-norm statistics frozen). Then, at step 0 with policy == reference, the margin is
exactly 0 and the sigmoid loss is exactly ln 2. Reference logits may be precomputed once and stored as
float16 (they are cast to the accumulation dtype inside); note that a float16 reference then differs
from a float32 policy by the float16 rounding, so step 0 is ln 2 only up to that rounding.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from rndpo.config import LOSS_TYPES, LossType, Normalization

__all__ = [
    "LossType",
    "Normalization",
    "PreferenceLoss",
    "PreferenceLossOutput",
    "check_nonfinite",
    "preference_loss",
    "sft_top_loss",
    "soft_dice_loss",
    "supervised_anchor_loss",
]


_NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
_LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SMOOTHED = ("robust", "cdpo")
_DICE_SMOOTH = 1e-5  # MONAI DiceLoss defaults (smooth_nr = smooth_dr = 1e-5)


@dataclass(frozen=True, slots=True)
class PreferenceLossOutput:
    """Result of :func:`preference_loss` (TRL vocabulary).

    loss: () float32 (float64 for float64 logits), mean of ``losses`` over pairs with |D| > 0, with grad.
    losses: (B,) same dtype, per-pair loss with grad; exactly 0 for pairs with |D| = 0.
    chosen_rewards, rejected_rewards: (B,) detached, beta * (sum over D of log pi(y) - log pi_ref(y)),
        divided by |D| ** region_power when ``normalization="margin"`` (i.e. scaled like the margin
        the loss sees).
    margins: (B,) detached, the margin h the loss sees (= chosen_rewards - rejected_rewards).
    accuracies: (B,) detached, float, 1.0 where margins > 0.
    region_size: (B,) int64, |D| = number of pixels (voxels) where chosen and rejected differ.
    """

    loss: Tensor
    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    margins: Tensor
    accuracies: Tensor
    region_size: Tensor


def _log_sigmoid(h: Tensor) -> Tensor:
    """logsigmoid(h) = -log(1 + exp(-h)), elementwise, through logaddexp (any shape, float dtype).

    Same values and gradients as F.logsigmoid, but on CPU F.logsigmoid enters an OpenMP parallel region
    even for a handful of elements, which costs milliseconds per call on a busy machine.
    """
    return -torch.logaddexp(torch.zeros_like(h), -h)


def _flat_nonzero(mask: Tensor) -> Tensor:
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


class _RegionPreferenceFunction(torch.autograd.Function):
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
        idx = _flat_nonzero((chosen != rejected).reshape(-1))  # flat b * P + p over D, sorted
        pair = torch.div(idx, pixels, rounding_mode="floor")
        region_size = torch.bincount(pair, minlength=batch)
        y_w = chosen.reshape(-1)[idx]
        if classes == 1:
            z = policy.reshape(-1)[idx].to(acc_dtype)
            z_ref = ref.reshape(-1)[idx].to(acc_dtype)
            sign = y_w.to(acc_dtype) * 2 - 1  # 2 y_w - 1: +1 where y_w = 1, -1 where y_w = 0
            term = sign * (z - z_ref)
            logratio = _log_sigmoid(sign * z) - _log_sigmoid(sign * z_ref)
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


def _check_options(
    beta: float, loss_type: str, region_power: float, label_smoothing: float, normalization: str
) -> None:
    for name, value in (("beta", beta), ("region_power", region_power), ("label_smoothing", label_smoothing)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a float, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if region_power < 0:
        raise ValueError(f"region_power must be >= 0, got {region_power}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(map(repr, LOSS_TYPES))}, got {loss_type!r}")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {', '.join(map(repr, _NORMALIZATIONS))}, got {normalization!r}"
        )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing != 0.0 and loss_type not in _SMOOTHED:
        raise ValueError(
            f"label_smoothing is only used by loss_type 'robust' or 'cdpo', got label_smoothing="
            f"{label_smoothing} with loss_type={loss_type!r}"
        )


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_logits(name: str, logits: Tensor, *, check_finite: bool = True) -> None:
    """dtype check, then (check_finite=True) the finiteness check, which reads the whole tensor."""
    if logits.dtype not in _LOGIT_DTYPES:
        raise TypeError(f"{name} must be a float16, bfloat16, float32 or float64 tensor, got {logits.dtype}")
    if not check_finite:
        return
    # fast path: one reduction, no temporaries; any NaN or inf makes the sum non-finite. Only when the sum
    # is not finite (a bad value, or an overflow of finite values) is each element checked.
    values = logits.detach()
    total = values.sum(dtype=torch.float64 if values.dtype == torch.float64 else torch.float32)
    if bool(torch.isfinite(total)):
        return
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} must be finite, got {bad} non-finite values")


def _check_labels(
    name: str, labels: Tensor, shape: tuple[int, ...], classes: int, device: torch.device
) -> None:
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise TypeError(f"{name} must be a bool or integer tensor, got {labels.dtype}")
    if tuple(labels.shape) != shape:
        raise ValueError(f"{name} must have shape (B, *S) = {shape}, got {_shape(labels)}")
    if labels.device != device:
        raise ValueError(f"{name} must be on the logits' device {device}, got {labels.device}")
    if labels.dtype == torch.bool or labels.numel() == 0:
        return  # bool values {0, 1} are valid binary masks and valid class ids (C >= 2)
    low, high = (int(v) for v in torch.aminmax(labels))
    if classes == 1 and (low < 0 or high > 1):
        raise ValueError(
            f"{name} must be binary (values in {{0, 1}}) for single-channel logits (B, 1, *S), "
            f"got values in [{low}, {high}]"
        )
    if classes > 1 and (low < 0 or high >= classes):
        raise ValueError(
            f"{name} must hold class ids in [0, {classes - 1}] for C = {classes}, got [{low}, {high}]"
        )


def _check_segmentation(
    name: str, logits: Tensor, labels: Tensor, label_name: str, *, finite: bool = True
) -> tuple[int, tuple[int, ...]]:
    """Validate logits (B, C, *S) against labels (B, *S); return (C, (B, *S)).

    finite=False skips the logits' finiteness check (the caller checks finiteness itself)."""
    if logits.dim() < 3:
        raise ValueError(
            f"{name} must have shape (B, C, *S) with at least one spatial dim, got {_shape(logits)}"
        )
    classes = int(logits.shape[1])
    if classes < 1:
        raise ValueError(f"{name} must have at least one channel, got shape {_shape(logits)}")
    _check_logits(name, logits, check_finite=finite)
    mask_shape = (int(logits.shape[0]), *(int(s) for s in logits.shape[2:]))
    _check_labels(label_name, labels, mask_shape, classes, logits.device)
    return classes, mask_shape


@functools.cache
def _triton_module() -> ModuleType | None:
    """rndpo.losses._triton_loss, or None where Triton cannot be imported (imported on first use only)."""
    try:
        from rndpo.losses import _triton_loss
    except ImportError:
        return None
    return _triton_loss


def _use_triton(logits: Tensor) -> bool:
    """Whether :func:`preference_loss` takes the Triton path: CUDA logits and Triton importable."""
    return logits.is_cuda and _triton_module() is not None


def _pair_losses(h: Tensor, raw: Tensor, beta: float, loss_type: str, eps: float) -> Tensor:
    """Per-pair loss from the beta-scaled margin h = beta * raw (formulas in :func:`preference_loss`)."""
    if loss_type == "sigmoid":
        return -_log_sigmoid(h)
    if loss_type == "ipo":
        return (raw - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1.0 - h)
    if loss_type == "robust":
        return (-(1.0 - eps) * _log_sigmoid(h) + eps * _log_sigmoid(-h)) / (1.0 - 2.0 * eps)
    # cdpo
    return -(1.0 - eps) * _log_sigmoid(h) - eps * _log_sigmoid(-h)


def preference_loss(
    policy_logits: Tensor,
    ref_logits: Tensor,
    chosen: Tensor,
    rejected: Tensor,
    *,
    beta: float,
    loss_type: LossType = "sigmoid",
    region_power: float = 1.0,
    label_smoothing: float = 0.0,
    normalization: Normalization = "margin",
) -> PreferenceLossOutput:
    """DPO-family loss of (chosen, rejected) mask pairs, computed on the disagreement region only.

    policy_logits: (B, 1, *S) binary or (B, C, *S) multi-class logits, float16/bfloat16/float32/float64
        (*S is (H, W) or (D, H, W)). ref_logits: same shape, any of those dtypes (e.g. precomputed
        float16), not differentiated unless it requires grad.
    chosen, rejected: (B, *S) bool/integer; values in {0, 1} for C = 1, class ids in [0, C) otherwise.

    With m = the region log-ratio margin (module docstring), n = |D| and d = n ** region_power:

    * ``normalization="margin"`` (RN-DPO, default): r = m / d, h = beta * r, per-pair weight 1;
    * ``normalization="weight"``: r = m, h = beta * m (unnormalized in the sigmoid) and the per-pair loss
      is multiplied by 1 / d.

    Per-pair loss (eps = label_smoothing, only for robust and cdpo, 0 <= eps < 0.5):

    * sigmoid: -logsigmoid(h)
    * ipo:     (r - 1 / (2 beta)) ** 2  (IPO with tau = beta, as in TRL: r regressed to 1 / (2 beta))
    * hinge:   relu(1 - h)
    * robust:  (-(1 - eps) logsigmoid(h) + eps logsigmoid(-h)) / (1 - 2 eps)  (unbiased under label flips)
    * cdpo:    -(1 - eps) logsigmoid(h) - eps logsigmoid(-h)

    Pairs with |D| = 0 carry no preference: their ``losses`` are 0, they are left out of the mean and get
    zero gradient; a batch of only such pairs gives ``loss`` exactly 0.0 (backward still works).
    Per-pair sums accumulate in float32 (float64 if either logits tensor is float64); the gradient w.r.t.
    policy_logits has its dtype. Validation reads the whole inputs (a device sync on CUDA). On CUDA with
    Triton the finiteness of the logits is checked by the loss kernel itself (one read, one sync), after
    the checks of shapes, dtypes and label values; the errors raised are the same. With
    ``RNDPO_TRITON_FINITE=deferred`` (and always inside CUDA graph capture) that sync is avoided: a
    non-finite input gives NaN outputs and gradient, and the ValueError is raised by the next call (or
    :func:`check_nonfinite`); see ``_FiniteCheck``.
    ``beta`` may be any real number (a NumPy float too). A beta so large that beta * margin overflows
    float32/float64 raises FloatingPointError naming beta instead of returning an infinite loss (on the
    CPU path; the Triton path does not check it, to keep its single sync).
    """
    _check_options(beta, loss_type, region_power, label_smoothing, normalization)
    beta, region_power, label_smoothing = float(beta), float(region_power), float(label_smoothing)
    policy_logits = _check_tensor("policy_logits", policy_logits)
    ref_logits = _check_tensor("ref_logits", ref_logits)
    chosen = _check_tensor("chosen", chosen)
    rejected = _check_tensor("rejected", rejected)
    triton_path = _use_triton(policy_logits) and policy_logits.numel() > 0
    classes, mask_shape = _check_segmentation(
        "policy_logits", policy_logits, chosen, "chosen", finite=not triton_path
    )
    if ref_logits.shape != policy_logits.shape:
        raise ValueError(
            f"ref_logits must have the shape of policy_logits (B, C, *S) = {_shape(policy_logits)}, "
            f"got {_shape(ref_logits)}"
        )
    if ref_logits.device != policy_logits.device:
        raise ValueError(
            f"ref_logits must be on policy_logits' device {policy_logits.device}, got {ref_logits.device}"
        )
    _check_logits("ref_logits", ref_logits, check_finite=not triton_path)
    _check_labels("rejected", rejected, mask_shape, classes, policy_logits.device)

    batch, pixels = mask_shape[0], math.prod(mask_shape[1:])
    acc = torch.float64 if torch.float64 in (policy_logits.dtype, ref_logits.dtype) else torch.float32
    if triton_path:
        return _triton_preference_loss(
            policy_logits,
            ref_logits,
            chosen,
            rejected,
            acc,
            (beta, loss_type, region_power, label_smoothing, normalization),
        )
    margin_sum, chosen_logratio, region_size = _RegionPreferenceFunction.apply(
        policy_logits.reshape(batch, classes, pixels),
        ref_logits.reshape(batch, classes, pixels),
        chosen.reshape(batch, pixels),
        rejected.reshape(batch, pixels),
        acc,
    )
    valid = region_size > 0
    denom = region_size.clamp(min=1).to(acc) ** region_power
    if normalization == "margin":
        raw, weight, scale = margin_sum / denom, None, beta / denom
    else:
        raw, weight, scale = margin_sum, 1.0 / denom, torch.full_like(denom, beta)
    h = beta * raw
    if not bool(torch.isfinite(h).all()):  # logits are finite, so only beta can overflow
        raise FloatingPointError(
            f"preference_loss: beta * margin overflowed to inf (beta = {beta}, largest |margin| = "
            f"{float(raw.detach().abs().max())}); use a smaller beta"
        )
    losses = _pair_losses(h, raw, beta, loss_type, label_smoothing)
    if weight is not None:
        losses = losses * weight
    losses = torch.where(valid, losses, torch.zeros_like(losses))
    loss = losses.sum() / valid.sum().clamp(min=1).to(acc)

    with torch.no_grad():
        margin_sum_d = margin_sum.detach()
        chosen_rewards = scale * chosen_logratio
        rejected_rewards = scale * (chosen_logratio - margin_sum_d)
        margins = h.detach()
    return PreferenceLossOutput(
        loss=loss,
        losses=losses,
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        margins=margins,
        accuracies=(margins > 0).to(acc),
        region_size=region_size,
    )


def _triton_preference_loss(
    policy: Tensor,
    ref: Tensor,
    chosen: Tensor,
    rejected: Tensor,
    acc: torch.dtype,
    options: tuple[float, str, float, float, str],
) -> PreferenceLossOutput:
    """The Triton path of :func:`preference_loss`: policy, ref (B, C, *S), masks (B, *S), validated
    except for finiteness, which the kernel counts; :data:`FINITE_CHECK` says when that count is read."""
    module = _triton_module()
    assert module is not None
    beta, loss_type, region_power, label_smoothing, normalization = options
    capturing = policy.is_cuda and torch.cuda.is_current_stream_capturing()  # no copy, no sync allowed
    if FINITE_CHECK.mode == "deferred" and not capturing:
        FINITE_CHECK.raise_pending()
    *outputs, bad = module.region_preference_loss(
        policy,
        ref,
        chosen,
        rejected,
        acc_dtype=acc,
        beta=beta,
        loss_type=loss_type,
        region_power=region_power,
        label_smoothing=label_smoothing,
        normalization=normalization,
    )
    if capturing:
        pass  # the check is the kernel's NaN poisoning alone (``_FiniteCheck``)
    elif FINITE_CHECK.mode == "deferred":
        FINITE_CHECK.defer(bad)
    elif any(bad.tolist()):  # one small copy, the only sync of this path; the full checks word the error
        _check_logits("policy_logits", policy)
        _check_logits("ref_logits", ref)
    return PreferenceLossOutput(*outputs)


class _FiniteCheck:
    """When the Triton path reads the kernel's non-finite counts (``RNDPO_TRITON_FINITE``).

    * ``sync`` (default): at once, with one 16-byte device-to-host copy that waits for the kernels
      (a host sync per call); a NaN/inf input raises ValueError from that very call.
    * ``deferred``: the counts are copied without blocking into pinned host memory behind a CUDA event,
      and read at the start of the next Triton-path call (by then the copy is long done, so the host
      never waits on the current step) or by :func:`check_nonfinite`. The step with the bad input
      returns NaN loss, outputs and gradient (the kernel poisons them: never a plausible number), and
      the ValueError comes one call later, naming the call it was found in.
    * While a CUDA graph is being captured (``torch.cuda.graph``) no copy or sync is possible: the
      check is the NaN poisoning alone, and the counts stay in the ``bad`` tensor of that call.
    """

    def __init__(self, mode: str) -> None:
        if mode not in ("sync", "deferred"):
            raise ValueError(f"RNDPO_TRITON_FINITE must be 'sync' or 'deferred', got {mode!r}")
        self.mode = mode
        self.calls = 0
        self._host: Tensor | None = None
        self._event: Any = None
        self._pending: int | None = None  # the call number whose counts wait in _host

    def defer(self, bad: Tensor) -> None:
        """Start the copy of ``bad`` (2,) int64 to the host (no wait), to be read later."""
        self.calls += 1
        if not bad.is_cuda:  # the interpreter on CPU: nothing to overlap
            self._host, self._event = bad, None
        else:
            if self._host is None or self._host.device.type != "cpu" or not self._host.is_pinned():
                self._host = torch.empty(2, dtype=torch.int64, pin_memory=True)
            self._host.copy_(bad, non_blocking=True)
            if self._event is None:
                self._event = torch.cuda.Event()
            self._event.record()
        self._pending = self.calls

    def raise_pending(self) -> None:
        """Raise ValueError if the deferred counts of an earlier call are nonzero (waits for that copy)."""
        if self._pending is None or self._host is None:
            return
        if self._event is not None:
            self._event.synchronize()
        call, (bad_policy, bad_ref) = self._pending, self._host.tolist()
        self._pending = None
        if bad_policy or bad_ref:
            raise ValueError(
                f"policy_logits and ref_logits must be finite, got {bad_policy} and {bad_ref} non-finite "
                f"values in preference_loss call {call} (found late: RNDPO_TRITON_FINITE=deferred; that call "
                "returned NaN loss and gradient)"
            )


FINITE_CHECK = _FiniteCheck(os.environ.get("RNDPO_TRITON_FINITE") or "sync")


def check_nonfinite() -> None:
    """Raise the pending non-finite error of the CUDA path's deferred check (``RNDPO_TRITON_FINITE=
    deferred``), if any; call it after the last step. A no-op in the default ``sync`` mode."""
    FINITE_CHECK.raise_pending()


class PreferenceLoss(nn.Module):
    """Thin module around :func:`preference_loss` holding its hyper-parameters (validated at init)."""

    def __init__(
        self,
        *,
        beta: float,
        loss_type: LossType = "sigmoid",
        region_power: float = 1.0,
        label_smoothing: float = 0.0,
        normalization: Normalization = "margin",
    ) -> None:
        super().__init__()
        _check_options(beta, loss_type, region_power, label_smoothing, normalization)
        self.beta = beta
        self.loss_type: LossType = loss_type
        self.region_power = region_power
        self.label_smoothing = label_smoothing
        self.normalization: Normalization = normalization

    def forward(
        self, policy_logits: Tensor, ref_logits: Tensor, chosen: Tensor, rejected: Tensor
    ) -> PreferenceLossOutput:
        """See :func:`preference_loss`: logits (B, C, *S), masks (B, *S)."""
        return preference_loss(
            policy_logits,
            ref_logits,
            chosen,
            rejected,
            beta=self.beta,
            loss_type=self.loss_type,
            region_power=self.region_power,
            label_smoothing=self.label_smoothing,
            normalization=self.normalization,
        )

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, loss_type={self.loss_type!r}, region_power={self.region_power}, "
            f"label_smoothing={self.label_smoothing}, normalization={self.normalization!r}"
        )


def _dice_ce(logits: Tensor, target: Tensor, dice_weight: float, target_name: str) -> Tensor:
    """(Binary) cross-entropy + dice_weight * soft Dice (MONAI DiceCELoss semantics), mean over batch."""
    logits = _check_tensor("policy_logits", logits)
    target = _check_tensor(target_name, target)
    if isinstance(dice_weight, bool) or not isinstance(dice_weight, (int, float)):
        raise TypeError(f"dice_weight must be a float, got {type(dice_weight).__name__}")
    if not (math.isfinite(dice_weight) and dice_weight >= 0):
        raise ValueError(f"dice_weight must be finite and >= 0, got {dice_weight}")
    classes, _ = _check_segmentation("policy_logits", logits, target, target_name)
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
    The one soft Dice of rndpo (the fine-tuning losses here, base training in ``rndpo.training.supervised``)."""
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
