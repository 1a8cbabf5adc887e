"""Supervised base training on the labeled split: (B)CE + soft Dice, AdamW, batch augmentation in torch,
for 2D images and 3D volumes, binary or multi-class.

Heads (the convention of :mod:`rndpo.inference.batched`): a model with 1 output channel is binary
(sigmoid, mask = p > 0.5; a dataset of num_classes 2 keeps this head by default); a model with C >= 2
output channels is multi-class (softmax, label map = argmax) and must have C = the data's num_classes.
Loss (:func:`segmentation_loss`): binary, BCE-with-logits + soft Dice; multi-class, cross-entropy + soft
Dice over all C channels (MONAI's DiceCELoss(softmax=True, to_onehot_y=True)). With ``patch_size``, each
step trains on random patches with foreground oversampling (:func:`rndpo.training.patches.sample_patches`)
and validation predicts by sliding windows of that size.

Seeding: the global torch RNG (dropout) is forked and seeded with ``seed`` for the run, and a
separate ``torch.Generator`` seeded with ``seed`` draws the batches, patches and augmentation parameters,
so two runs from the same initial model and seed give identical weights on CPU.
Checkpoint selection: the state with the highest validation Dice over evaluations every ``eval_every``
steps and at the end; ties keep the earlier step. Validation Dice is, for a binary head on 2D images
without patches (rndpo's original path), the mean per-image Dice at threshold 0.5 (an image where
prediction and truth are both empty scores 1); otherwise the mean per-structure Dice (each foreground
class's mean Dice over the volumes where it is present in the prediction or the truth, then the mean
over the classes). Snapshots are taken at steps round(steps * i / n_snapshots), i = 1..n.

Convergence (``patience`` > 0): the constant phase ends after the evaluation at which validation Dice
has not risen by more than ``min_delta`` above its best for ``patience`` evaluations in a row (that Dice
is the mean of the last ``patience_window`` evaluations: :class:`PatienceRule`), or at the cap
``steps``. A ``cooldown`` then trains round(cooldown x T) more steps (T: the steps trained so far)
while the learning rate falls linearly towards 0, (D - j) / (D + 1) of it at cooldown step j of D, as
warmup-stable-decay schedules do; the model is then the best of the cooldown's evaluations, the
annealed states, not a lucky peak of the noisier constant phase. The snapshots of such a run are the
states kept at evaluations nearest (at or before) to round(stop * i / n_snapshots), where ``stop`` is
the last step trained. ``warmup_steps`` ramps the learning rate linearly (step s gets
(s + 1) / warmup_steps of ``lr``) before the schedule.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rndpo.config import BaseTrainConfig
from rndpo.data import SegmentationDataset
from rndpo.inference import autocast_dtype, labels_from_probs, predict_probs, sliding_window_probs
from rndpo.losses import soft_dice_loss
from rndpo.metrics import dice, dice_from_counts
from rndpo.nets import architecture_of
from rndpo.training.augment import augment_batch
from rndpo.training.patches import _check_patch_size, sample_patches

__all__ = [
    "BaseTrainConfig",
    "BaseTrainResult",
    "PatienceRule",
    "augment_batch",
    "base_lr_factor",
    "mean_structure_dice",
    "segmentation_loss",
    "snapshot_steps",
    "train_base",
]


@dataclass(frozen=True)
class BaseTrainResult:
    """state_dict: best (validation Dice) weights on CPU; snapshots: n_snapshots state dicts on CPU in
    step order; history: (step, mean train loss since the previous evaluation, val Dice) per evaluation."""

    state_dict: dict[str, torch.Tensor]
    snapshots: list[dict[str, torch.Tensor]]
    history: list[tuple[int, float, float]]
    best_step: int
    best_val_dice: float
    snapshot_steps: tuple[int, ...]
    seconds: float

    @property
    def stopped_step(self) -> int:
        """The last step trained: ``config.steps`` without patience; with it, the step where patience (or
        the cap) stopped the constant phase plus the cooldown's steps (the last evaluation is always at
        the last step)."""
        return self.history[-1][0]


def snapshot_steps(steps: int, n_snapshots: int) -> tuple[int, ...]:
    """Steps (1-based, after the optimizer step) at which snapshots are taken: round(steps * i / n)."""
    return tuple(round(steps * i / n_snapshots) for i in range(1, n_snapshots + 1))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Scalar supervised loss, the mean over images, for 2D (*S = (H, W)) or 3D (*S = (D, H, W)) logits.

    Binary: logits (B, 1, *S) and target float (B, 1, *S) in {0, 1}: BCE-with-logits + soft Dice of the
    sigmoid. Multi-class: logits (B, C, *S), C >= 2, and target an integer label map (B, *S) with values
    0..C-1: cross-entropy + soft Dice of the softmax against the one-hot target over all C channels
    (background included), per (image, channel), = MONAI's ``DiceCELoss(softmax=True, to_onehot_y=True,
    smooth_nr=smooth, smooth_dr=smooth)``; float16/bfloat16 logits are computed in float32.
    """
    if logits.ndim not in (4, 5):
        raise ValueError(f"logits must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(logits.shape)}")
    classes = logits.shape[1]
    if classes == 1:
        if logits.shape != target.shape:
            raise ValueError(
                f"target must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}"
            )
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return bce + soft_dice_loss(torch.sigmoid(logits), target, smooth=smooth)
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be a label map (B, *S) = {expected} for logits with {classes} channels,"
            f" got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer label map (values 0..{classes - 1}), got {target.dtype}")
    labels = target.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"target must hold labels 0..{classes - 1} (one per logits channel), got values in"
            f" [{int(labels.min())}, {int(labels.max())}]"
        )
    x = logits if logits.dtype == torch.float64 else logits.float()
    onehot = F.one_hot(labels, classes).movedim(-1, 1).to(x.dtype)
    return F.cross_entropy(x, labels) + soft_dice_loss(torch.softmax(x, dim=1), onehot, smooth=smooth)


def mean_structure_dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean per-structure Dice of label maps pred and target (N, *S) with values 0..num_classes-1: for
    each foreground class, the mean Dice over the images where it is in the prediction or the truth
    (empty in both: left out), then the mean over the classes that are somewhere (1.0 if none is)."""
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(f"pred must have target's shape {target.shape} (N, *S), got {pred.shape}")
    axes = tuple(range(1, pred.ndim))
    per_class: list[float] = []
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        sp, st = np.count_nonzero(p, axis=axes), np.count_nonzero(t, axis=axes)
        present = sp + st > 0
        if present.any():
            values = dice_from_counts(np.count_nonzero(p & t, axis=axes), sp, st)
            per_class.append(float(np.mean(values[present])))
    return float(np.mean(per_class)) if per_class else 1.0


def _check_dataset(data: Any, name: str) -> None:
    """Dtypes, shapes and label values are guaranteed by SegmentationDataset; check type and size."""
    if not isinstance(data, SegmentationDataset):
        raise TypeError(f"{name} must be a SegmentationDataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} must hold at least one image, got 0")


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


_KIND = {2: "2D images (N, C, H, W)", 3: "3D volumes (N, C, D, H, W)"}


def _declared_head(model: nn.Module) -> tuple[int | None, int | None]:
    """The model's (out_channels, spatial_dims) as it declares them (registry record, rndpo's U-Net,
    attributes), None where it does not."""
    try:
        record = architecture_of(model)
    except ValueError:
        record = None
    if record is not None:
        return int(record["out_channels"]), int(record["spatial_dims"])
    out, dims = getattr(model, "out_channels", None), getattr(model, "spatial_dims", None)
    return (out if isinstance(out, int) else None), (dims if isinstance(dims, int) else None)


def _check_head(out_channels: int, classes: int) -> None:
    if out_channels != classes and not (out_channels == 1 and classes == 2):
        binary = " or 1 (binary sigmoid head)" if classes == 2 else ""
        raise ValueError(
            f"model has out_channels = {out_channels}, but labeled has num_classes = {classes}: the network"
            f" needs out_channels = {classes} (softmax over the classes){binary}"
        )


def _check_options(
    foreground_fraction: float, amp: bool | None, flip_axes: Sequence[int] | None, dims: int
) -> None:
    ff = foreground_fraction
    if isinstance(ff, bool) or not isinstance(ff, (int, float)) or not 0 <= ff <= 1:
        raise ValueError(f"foreground_fraction must be a number in [0, 1], got {ff!r}")
    if amp is not None and not isinstance(amp, bool):
        raise TypeError(f"amp must be a bool or None, got {type(amp).__name__}")
    if flip_axes is not None and (
        not isinstance(flip_axes, Sequence)
        or any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < dims for a in flip_axes)
    ):
        raise ValueError(f"flip_axes must be None or spatial axes in [0, {dims}), got {flip_axes!r}")


def _validation_dice(
    model: nn.Module,
    val: SegmentationDataset,
    roi: tuple[int, ...] | None,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool,
) -> float:
    """Validation Dice (see the module docstring): per image for the original binary 2D path (``roi``
    None), else the mean per-structure Dice of sliding-window label maps (roi: the window size)."""
    if roi is None:
        probs = predict_probs(model, val.images, batch_size=batch_size, device=device)
        return float(np.mean(dice(probs > 0.5, val.masks)))
    chunk = 8  # volumes per sliding-window call: bounds the probabilities held at once
    pred = np.empty_like(val.masks)
    for start in range(0, len(val), chunk):
        part = slice(start, start + chunk)
        probs = sliding_window_probs(
            model, val.images[part], roi, overlap=0.5, batch_size=batch_size, device=device, amp=amp
        )
        pred[part] = labels_from_probs(probs)
    return mean_structure_dice(pred, val.masks, val.num_classes)


def train_base(
    model: nn.Module,
    labeled: SegmentationDataset,
    val: SegmentationDataset,
    config: BaseTrainConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    patch_size: Sequence[int] | None = None,
    roi_size: Sequence[int] | None = None,
    foreground_fraction: float = 0.33,
    amp: bool | None = None,
    flip_axes: Sequence[int] | None = None,
) -> BaseTrainResult:
    """Train ``model`` on ``labeled`` and select the best state on ``val``.

    labeled / val: images float32 (N, C, *S) (any finite range), S = (H, W) or (D, H, W), masks uint8 label
    maps (N, *S); both of the same spatial_dims and num_classes. model: logits (B, out, *S) with the data's
    spatial_dims and out = num_classes (softmax) or, for binary data, 1 (sigmoid); a mismatch is a ValueError
    naming it. patch_size: train on random patches of this size (one int per spatial axis; smaller images are
    zero-padded) with a ``foreground_fraction`` share centred on foreground, and validate by sliding windows
    of ``roi_size`` (None: ``patch_size``; both None: whole images). flip_axes: the spatial axes (0-based
    within S) that augmentation may flip (None: all; leave out an axis along which structures are told apart
    by their place, such as the anterior / posterior hippocampus). amp: mixed precision on CUDA (None: on for
    every run but a binary head on 2D images without patches, whose results stay rndpo's original ones; never
    on CPU). ``seed`` seeds batch sampling, patches, augmentation and dropout; training runs on ``device``.
    The model is trained in place and ends holding the best state, in eval mode, on ``device``. Returns a
    :class:`BaseTrainResult`.
    """
    config = BaseTrainConfig() if config is None else config
    if not isinstance(config, BaseTrainConfig):
        raise TypeError(f"config must be a BaseTrainConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_dataset(labeled, "labeled")
    _check_dataset(val, "val")
    c = labeled.images.shape[1]
    expected = getattr(model, "in_channels", c)
    if c != expected:
        raise ValueError(f"labeled.images must have model.in_channels = {expected} channels, got {c}")
    if val.images.shape[1] != c:
        raise ValueError(
            f"val.images must have as many channels as labeled.images ({c}), got {val.images.shape[1]}"
        )
    dims, classes = labeled.spatial_dims, labeled.num_classes
    if val.spatial_dims != dims:
        raise ValueError(f"val must hold {_KIND[dims]} like labeled, got {_KIND[val.spatial_dims]}")
    if val.num_classes != classes:
        raise ValueError(f"val.num_classes must be labeled.num_classes = {classes}, got {val.num_classes}")
    out_channels, model_dims = _declared_head(model)
    if model_dims is not None and model_dims != dims:
        raise ValueError(
            f"model has spatial_dims = {model_dims}, but labeled holds {_KIND[dims]}: the network needs"
            f" spatial_dims = {dims}"
        )
    if out_channels is not None:
        _check_head(out_channels, classes)
    patch = None if patch_size is None else _check_patch_size(patch_size, dims)
    window = None if roi_size is None else _check_patch_size(roi_size, dims, "roi_size")
    _check_options(foreground_fraction, amp, flip_axes, dims)

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model.to(device)
        if out_channels is None:  # a model that does not declare its head: one eval-mode forward says
            probe = predict_probs(model, val.images[:1], batch_size=1, device=device)
            out_channels = 1 if probe.ndim == dims + 1 else int(probe.shape[1])
            _check_head(out_channels, classes)
        binary = out_channels == 1
        original = binary and dims == 2 and patch is None  # rndpo's original path, results unchanged
        mixed = device.type == "cuda" and (amp if amp is not None else not original)
        half = autocast_dtype()
        scaler = torch.amp.GradScaler("cuda") if mixed and half == torch.float16 else None
        roi = None if original else (window or patch or tuple(val.images.shape[2:]))
        x_all = torch.from_numpy(np.ascontiguousarray(labeled.images)).to(device)
        if binary:  # float {0, 1} (N, 1, *S)
            y_all = torch.from_numpy(labeled.masks.astype(np.float32)).unsqueeze(1).to(device)
        else:  # uint8 label maps (N, 1, *S)
            y_all = torch.from_numpy(np.ascontiguousarray(labeled.masks)).unsqueeze(1).to(device)
        n = x_all.shape[0]
        batch = min(config.batch_size, n)
        eval_batch = max(64, batch) if dims == 2 else max(4, batch)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        cooldown = _Cooldown(config.cooldown)
        # with patience the last step is not known in advance: snapshots are chosen at the end from the
        # states kept at evaluations (see _EvalStates); without it, taken at their fixed steps
        snaps_at = set() if config.patience else set(snapshot_steps(config.steps, config.n_snapshots))
        kept = _EvalStates(4 * config.n_snapshots) if config.patience and config.n_snapshots else None
        snapshots: list[dict[str, torch.Tensor]] = []
        history: list[tuple[int, float, float]] = []
        best_state = _cpu_state(model)
        best_step, best_dice = 0, -math.inf
        converged = PatienceRule(config.patience, config.min_delta, config.patience_window)
        order = torch.randperm(n, generator=gen)
        cursor = 0
        losses: list[float] = []
        bar = tqdm(total=config.steps, desc="base training", disable=None if progress else True, leave=False)
        step, last = 0, config.steps
        try:
            while step < last:
                step += 1
                for group in opt.param_groups:  # lr of this step (0-based index step - 1)
                    group["lr"] = config.lr * base_lr_factor(step - 1, config) * cooldown.factor(step - 1)
                model.train()
                if cursor + batch > n:
                    order, cursor = torch.randperm(n, generator=gen), 0
                idx = order[cursor : cursor + batch].to(device)
                cursor += batch
                if patch is None:
                    x, y = x_all[idx], y_all[idx]
                else:
                    x, y = sample_patches(
                        x_all, y_all[:, 0], patch, batch, gen, foreground_fraction, index=idx
                    )
                    y = y.unsqueeze(1)
                if config.augment:
                    x, y = augment_batch(x, y, gen, max_rotation=config.max_rotation, flip_axes=flip_axes)
                with torch.autocast("cuda", dtype=half) if mixed else contextlib.nullcontext():
                    logits = model(x)
                if logits.shape[1] != out_channels:  # a head that declared other channels than it has
                    _check_head(logits.shape[1], classes)
                    raise ValueError(
                        f"model declares out_channels = {out_channels}, but its logits have"
                        f" {logits.shape[1]} channels"
                    )
                loss = segmentation_loss(logits.float() if mixed else logits, y if binary else y[:, 0])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                losses.append(float(loss.detach()))
                if step in snaps_at:
                    snapshots.append(_cpu_state(model))
                if step % config.eval_every == 0 or step == last:
                    val_dice = _validation_dice(
                        model, val, roi, batch_size=eval_batch, device=device, amp=mixed
                    )
                    history.append((step, float(np.mean(losses)), val_dice))
                    losses = []
                    stop = converged.update(val_dice)
                    improved = val_dice > best_dice
                    if improved or kept is not None:
                        state = _cpu_state(model)  # one copy serves the best state and the kept one
                        if improved:
                            best_dice, best_step, best_state = val_dice, step, state
                        if kept is not None:
                            kept.add(step, state)
                    bar.set_postfix(
                        loss=f"{history[-1][1]:.3f}", val_dice=f"{val_dice:.3f}", best=f"{best_dice:.3f}"
                    )
                    # patience (or the cap) ends the constant phase; the cooldown, if any, then runs
                    if config.patience and cooldown.start is None and (stop or step == config.steps):
                        last = step + cooldown.begin(step)
                        if last > step:  # the model is chosen among the cooldown's evaluations
                            best_dice = -math.inf
                            bar.reset(total=last)
                            bar.update(step - 1)
                    if step >= last:
                        break
                bar.update(1)
        finally:
            bar.close()
    snap_steps = snapshot_steps(config.steps, config.n_snapshots)
    if kept is not None:
        snap_steps, snapshots = kept.pick(snapshot_steps(history[-1][0], config.n_snapshots))
    model.load_state_dict(best_state)
    model.eval()
    return BaseTrainResult(
        state_dict=best_state,
        snapshots=snapshots,
        history=history,
        best_step=best_step,
        best_val_dice=best_dice,
        snapshot_steps=snap_steps,
        seconds=time.perf_counter() - start,
    )


@dataclass
class PatienceRule:
    """The convergence rule of base training: call :meth:`update` with each evaluation's validation
    Dice; it returns True once the mean of the last ``window`` values (fewer at the start) has not risen
    by more than ``min_delta`` above its best for ``patience`` evaluations in a row (never when
    ``patience`` is 0). ``window`` 1 follows the raw values; a longer window steadies the decision on a
    small, noisy validation split (the state kept is still one evaluation's: the best of the cooldown's,
    or of the whole run without a cooldown)."""

    patience: int
    min_delta: float = 0.0
    window: int = 1
    best: float = -math.inf
    stale: int = 0
    recent: list[float] = field(default_factory=list)

    def update(self, value: float) -> bool:
        self.recent = [*self.recent, value][-self.window :]
        level = value if self.window == 1 else sum(self.recent) / len(self.recent)
        self.stale = 0 if level > self.best + self.min_delta else self.stale + 1
        self.best = max(self.best, level)
        return self.patience > 0 and self.stale >= self.patience


class _Cooldown:
    """The learning-rate decay that follows the stop: after ``start`` steps (the stop), round(``share`` x
    start) more steps whose multipliers fall linearly, (D - j) / (D + 1) at cooldown step j = 0..D-1."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.start: int | None = None
        self.length = 0

    def begin(self, start: int) -> int:
        """Start the cooldown after step ``start`` (1-based); returns its number of steps."""
        self.start, self.length = start, round(self.share * start)
        return self.length

    def factor(self, index: int) -> float:
        """Multiplier of the learning rate at 0-based step ``index``."""
        if self.start is None or index < self.start:
            return 1.0
        return (self.length - (index - self.start)) / (self.length + 1)


def base_lr_factor(step: int, config: BaseTrainConfig) -> float:
    """Multiplier of ``config.lr`` at optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps`` (step s gets (s + 1) / warmup_steps), then constant or a cosine decay over the
    remaining steps of the cap ``steps`` that reaches 5% of lr there."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = config.steps - config.warmup_steps
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step - config.warmup_steps, span) / span))


class _EvalStates:
    """Model states at evaluation steps, thinned to at most ``limit`` evenly spread ones (every other
    one is dropped when full), from which the snapshots of an early-stopped run are picked."""

    def __init__(self, limit: int) -> None:
        self.limit = max(2, limit)
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def add(self, step: int, state: dict[str, torch.Tensor]) -> None:
        """Keep ``state``, the model's CPU state at evaluation ``step`` (not copied again)."""
        self.states[step] = state
        if len(self.states) > self.limit:
            for dropped in sorted(self.states)[1::2]:
                del self.states[dropped]

    def pick(self, targets: tuple[int, ...]) -> tuple[tuple[int, ...], list[dict[str, torch.Tensor]]]:
        """For each target step, the kept state of the latest evaluation at or before it (the first
        one when none is); returns their steps and the states."""
        steps = sorted(self.states)
        chosen = tuple(max((s for s in steps if s <= t), default=steps[0]) for t in targets)
        return chosen, [self.states[s] for s in chosen]
