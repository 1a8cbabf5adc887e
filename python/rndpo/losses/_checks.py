"""Input checks shared by the loss families of rndpo.losses (preference and supervised segmentation losses).

Logits are (B, C, *S) float16/bfloat16/float32/float64 tensors with at least one spatial dim; labels are
(B, *S) bool/integer tensors on the logits' device: values in {0, 1} for C = 1, class ids in [0, C)
otherwise. Each check raises TypeError or ValueError naming the argument, what was expected and what came.
:func:`check_region_power` guards the preference losses' 1 / |D| ** region_power against float overflow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "check_labels",
    "check_logits",
    "check_region_power",
    "check_segmentation",
    "check_tensor",
    "shape_str",
]

_LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def shape_str(t: Tensor) -> str:
    """The shape of ``t`` as a tuple string, for error messages: ``(2, 1, 8, 8)``."""
    return str(tuple(t.shape))


def check_tensor(name: str, value: object) -> Tensor:
    """``value`` if it is a torch.Tensor, else TypeError naming ``name``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_logits(name: str, logits: Tensor, *, check_finite: bool = True) -> None:
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


def check_labels(
    name: str, labels: Tensor, shape: tuple[int, ...], classes: int, device: torch.device
) -> None:
    """Labels (B, *S) = ``shape``, bool/integer, on ``device``, valid for ``classes`` logit channels."""
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise TypeError(f"{name} must be a bool or integer tensor, got {labels.dtype}")
    if tuple(labels.shape) != shape:
        raise ValueError(f"{name} must have shape (B, *S) = {shape}, got {shape_str(labels)}")
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


def check_segmentation(
    name: str, logits: Tensor, labels: Tensor, label_name: str, *, finite: bool = True
) -> tuple[int, tuple[int, ...]]:
    """Validate logits (B, C, *S) against labels (B, *S); return (C, (B, *S)).

    finite=False skips the logits' finiteness check (the caller checks finiteness itself)."""
    if logits.dim() < 3:
        raise ValueError(
            f"{name} must have shape (B, C, *S) with at least one spatial dim, got {shape_str(logits)}"
        )
    classes = int(logits.shape[1])
    if classes < 1:
        raise ValueError(f"{name} must have at least one channel, got shape {shape_str(logits)}")
    check_logits(name, logits, check_finite=finite)
    mask_shape = (int(logits.shape[0]), *(int(s) for s in logits.shape[2:]))
    check_labels(label_name, labels, mask_shape, classes, logits.device)
    return classes, mask_shape


def _power_fits(power: float, region: int, dtype: torch.dtype) -> bool:
    """Whether ``region ** power`` is finite in ``dtype`` (host arithmetic in log space, no device sync)."""
    return region <= 1 or power == 0 or power * math.log(region) < math.log(torch.finfo(dtype).max)


def check_region_power(region_power: float, region_size: Tensor, pixels: int, dtype: torch.dtype) -> None:
    """ValueError naming region_power if |D| ** region_power overflows ``dtype`` (float32/float64).

    region_size: (B,) int64 |D| per pair; pixels: pixels per image, the largest |D| possible. The batch's
    largest |D| is read (one max, a device sync) only when ``pixels ** region_power`` alone overflows, so
    the usual case costs nothing; an overflow would make every normalised margin 0 and train on nothing.
    """
    if _power_fits(region_power, pixels, dtype) or region_size.numel() == 0:
        return
    largest = int(region_size.max())
    if not _power_fits(region_power, largest, dtype):
        limit = math.log(torch.finfo(dtype).max) / math.log(largest)
        raise ValueError(
            f"region_power must keep |D| ** region_power finite in {str(dtype).removeprefix('torch.')}: for"
            f" the largest region of this batch (|D| = {largest}) that needs region_power < {limit:.4g},"
            f" got {region_power:g} (the margin / |D| ** region_power would be 0 and train on nothing)"
        )
