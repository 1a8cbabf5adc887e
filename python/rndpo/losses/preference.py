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
graph over pixels. On CPU (and on CUDA without Triton) a ``torch.autograd.Function``
(``rndpo.losses._torch_loss``) gathers only the pixels of D, reduces them to per-pair sums and computes
the gradient in closed form from the masks. On CUDA with Triton installed, ``rndpo.losses._triton_loss``
does the same in three kernel launches per step (one read of the inputs for margins, |D| and the
finiteness check; one per-pair kernel; one backward pass writing the gradient), with no gathers or index
lists. :func:`set_loss_backend` forces either path (benchmarks, tests).

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
from torch import Tensor, nn

from rndpo.config import LOSS_TYPES, LossType, Normalization
from rndpo.losses._checks import (
    check_labels,
    check_logits,
    check_region_power,
    check_segmentation,
    check_tensor,
    shape_str,
)
from rndpo.losses._torch_loss import RegionPreferenceFunction, log_sigmoid

__all__ = [
    "LossType",
    "Normalization",
    "PreferenceLoss",
    "PreferenceLossOutput",
    "check_nonfinite",
    "finite_check_mode",
    "loss_backend",
    "preference_loss",
    "set_finite_check_mode",
    "set_loss_backend",
]


_NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
_SMOOTHED = ("robust", "cdpo")


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


@functools.cache
def _triton_module() -> ModuleType | None:
    """rndpo.losses._triton_loss, or None where Triton cannot be imported (imported on first use only)."""
    try:
        from rndpo.losses import _triton_loss
    except ImportError:
        return None
    return _triton_loss


_LOSS_BACKENDS = ("auto", "torch", "triton")
_backend = "auto"


def loss_backend() -> str:
    """The path :func:`preference_loss` computes on: 'auto' (the default), 'torch' or 'triton'."""
    return _backend


def set_loss_backend(backend: str) -> None:
    """Choose the path :func:`preference_loss` computes on (for benchmarks and tests; same outputs).

    * ``"auto"`` (default): the Triton kernels for CUDA logits where Triton imports, else the torch path;
    * ``"torch"``: the torch path (the autograd Function over the pixels of D), on every device;
    * ``"triton"``: the Triton kernels for CUDA logits, and for CPU logits under Triton's interpreter
      (``TRITON_INTERPRET=1`` set before the first call); RuntimeError here where Triton cannot be imported.
    """
    global _backend
    if backend not in _LOSS_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, _LOSS_BACKENDS))}, got {backend!r}")
    if backend == "triton" and _triton_module() is None:
        raise RuntimeError("backend 'triton' needs the triton package, which cannot be imported here")
    _backend = backend


def _use_triton(logits: Tensor) -> bool:
    """Whether :func:`preference_loss` takes the Triton path (:func:`set_loss_backend`); 'auto': CUDA logits
    and Triton importable."""
    if _backend == "auto":
        return logits.is_cuda and _triton_module() is not None
    if _backend == "torch":
        return False
    module = _triton_module()
    assert module is not None  # set_loss_backend checked it
    if not (logits.is_cuda or module.INTERPRETED):
        raise ValueError(
            f"policy_logits must be on a CUDA device for loss backend 'triton' (CPU tensors need "
            f"TRITON_INTERPRET=1 set before Triton is first used), got {logits.device}"
        )
    return True


def _pair_losses(h: Tensor, raw: Tensor, beta: float, loss_type: str, eps: float) -> Tensor:
    """Per-pair loss from the beta-scaled margin h = beta * raw (formulas in :func:`preference_loss`)."""
    if loss_type == "sigmoid":
        return -log_sigmoid(h)
    if loss_type == "ipo":
        return (raw - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1.0 - h)
    if loss_type == "robust":
        return (-(1.0 - eps) * log_sigmoid(h) + eps * log_sigmoid(-h)) / (1.0 - 2.0 * eps)
    # cdpo
    return -(1.0 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h)


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
    :func:`check_nonfinite`); see :func:`set_finite_check_mode`.
    ``beta`` may be any real number (a NumPy float too). A beta so large that beta * margin overflows
    float32/float64 raises FloatingPointError naming beta instead of returning an infinite loss (on the
    CPU path; the Triton path does not check it, to keep its single sync). A region_power for which the
    batch's largest |D| ** region_power overflows the accumulation dtype raises ValueError naming
    region_power (checked on the host from the image size; the batch's largest |D| is read only when
    pixels ** region_power overflows).
    """
    _check_options(beta, loss_type, region_power, label_smoothing, normalization)
    beta, region_power, label_smoothing = float(beta), float(region_power), float(label_smoothing)
    policy_logits = check_tensor("policy_logits", policy_logits)
    ref_logits = check_tensor("ref_logits", ref_logits)
    chosen = check_tensor("chosen", chosen)
    rejected = check_tensor("rejected", rejected)
    triton_path = _use_triton(policy_logits) and policy_logits.numel() > 0
    classes, mask_shape = check_segmentation(
        "policy_logits", policy_logits, chosen, "chosen", finite=not triton_path
    )
    if ref_logits.shape != policy_logits.shape:
        raise ValueError(
            f"ref_logits must have the shape of policy_logits (B, C, *S) = {shape_str(policy_logits)}, "
            f"got {shape_str(ref_logits)}"
        )
    if ref_logits.device != policy_logits.device:
        raise ValueError(
            f"ref_logits must be on policy_logits' device {policy_logits.device}, got {ref_logits.device}"
        )
    check_logits("ref_logits", ref_logits, check_finite=not triton_path)
    check_labels("rejected", rejected, mask_shape, classes, policy_logits.device)

    batch, pixels = mask_shape[0], math.prod(mask_shape[1:])
    acc = torch.float64 if torch.float64 in (policy_logits.dtype, ref_logits.dtype) else torch.float32
    if triton_path:
        out = _triton_preference_loss(
            policy_logits,
            ref_logits,
            chosen,
            rejected,
            acc,
            (beta, loss_type, region_power, label_smoothing, normalization),
        )
        if not (policy_logits.is_cuda and torch.cuda.is_current_stream_capturing()):  # capture: no sync
            check_region_power(region_power, out.region_size, pixels, acc)
        return out
    margin_sum, chosen_logratio, region_size = RegionPreferenceFunction.apply(
        policy_logits.reshape(batch, classes, pixels),
        ref_logits.reshape(batch, classes, pixels),
        chosen.reshape(batch, pixels),
        rejected.reshape(batch, pixels),
        acc,
    )
    check_region_power(region_power, region_size, pixels, acc)
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
    """The Triton path of :func:`preference_loss`: policy, ref (B, C, *S), masks (B, *S), validated except
    for finiteness, which the kernel counts; :func:`set_finite_check_mode` says when that count is read."""
    module = _triton_module()
    assert module is not None
    beta, loss_type, region_power, label_smoothing, normalization = options
    capturing = policy.is_cuda and torch.cuda.is_current_stream_capturing()  # no copy, no sync allowed
    if _FINITE_CHECK.mode == "deferred" and not capturing:
        _FINITE_CHECK.raise_pending()
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
    elif _FINITE_CHECK.mode == "deferred":
        _FINITE_CHECK.defer(bad)
    elif any(bad.tolist()):  # one small copy, the only sync of this path; the full checks word the error
        check_logits("policy_logits", policy)
        check_logits("ref_logits", ref)
    return PreferenceLossOutput(*outputs)


_FINITE_CHECK_MODES = ("sync", "deferred")


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
        if mode not in _FINITE_CHECK_MODES:
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


_FINITE_CHECK = _FiniteCheck(os.environ.get("RNDPO_TRITON_FINITE") or "sync")


def finite_check_mode() -> str:
    """When the Triton path reads its non-finite counts: 'sync' (the default) or 'deferred'."""
    return _FINITE_CHECK.mode


def set_finite_check_mode(mode: str) -> None:
    """Switch the Triton path's finiteness check (``RNDPO_TRITON_FINITE`` at run time; ``_FiniteCheck``).

    'sync': a NaN/inf input raises from its own call (one host sync per call); 'deferred': from the next
    Triton-path call or :func:`check_nonfinite`, counting calls from the switch. An error still pending
    stays so across switches, until the next call in 'deferred' mode or :func:`check_nonfinite`.
    """
    if mode not in _FINITE_CHECK_MODES:
        raise ValueError(f"mode must be 'sync' or 'deferred', got {mode!r}")
    if mode == "deferred" and _FINITE_CHECK.mode != "deferred":
        _FINITE_CHECK.calls = 0
    _FINITE_CHECK.mode = mode


def check_nonfinite() -> None:
    """Raise the pending non-finite error of the CUDA path's deferred check (``RNDPO_TRITON_FINITE=
    deferred``), if any; call it after the last step. A no-op when nothing is pending (always, if
    ``deferred`` was never used)."""
    _FINITE_CHECK.raise_pending()


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
