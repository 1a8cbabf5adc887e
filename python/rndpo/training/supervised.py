"""Supervised base training on the labeled split: BCE + soft Dice, AdamW, batch augmentation in torch.

Seeding: the global torch RNG (dropout) is forked and seeded with ``seed`` for the run, and a
separate ``torch.Generator`` seeded with ``seed`` draws the batches and augmentation parameters,
so two runs from the same initial model and seed give identical weights on CPU.
Checkpoint selection: the state with the highest validation Dice (threshold 0.5; an image where
prediction and truth are both empty scores 1) over evaluations every ``eval_every`` steps and at the end;
ties keep the earlier step. Snapshots are taken at steps round(steps * i / n_snapshots), i = 1..n.

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

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rndpo.config import BaseTrainConfig
from rndpo.data import SegmentationDataset
from rndpo.inference import predict_probs, rotate
from rndpo.losses import soft_dice_loss
from rndpo.metrics import dice

__all__ = [
    "BaseTrainConfig",
    "BaseTrainResult",
    "PatienceRule",
    "augment_batch",
    "base_lr_factor",
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
    """Scalar BCE-with-logits + soft Dice loss (mean over images) for logits (B, 1, H, W) and
    target (B, 1, H, W) in {0, 1} (float)."""
    if logits.shape != target.shape:
        raise ValueError(
            f"target must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce + soft_dice_loss(torch.sigmoid(logits), target, smooth=smooth)


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, *, max_rotation: float = 15.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random per-image augmentation of images float32 (B, C, H, W) (any finite range) and masks float32
    (B, 1, H, W) in {0, 1}: horizontal/vertical flips, 90-degree rotations (square images only), a small
    rotation in [-max_rotation, max_rotation] degrees, and gamma in [0.7, 1.5], contrast in [0.8, 1.2],
    brightness in [-0.1, 0.1] (images only; applied to each image's [min(0, min), max(1, max)] range
    mapped to [0, 1] and clamped there). All draws come from ``generator`` (CPU)."""
    b, _, h, w = images.shape
    dev = images.device

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    flip_h = draw(b) < 0.5
    flip_v = draw(b) < 0.5
    rot90 = torch.randint(0, 4, (b,), generator=generator)
    angles = (draw(b) * 2 - 1) * math.radians(max_rotation)
    gamma = torch.exp(torch.empty(b).uniform_(math.log(0.7), math.log(1.5), generator=generator)).to(dev)
    contrast = (0.8 + 0.4 * draw(b)).view(b, 1, 1, 1)
    brightness = (0.2 * draw(b) - 0.1).view(b, 1, 1, 1)

    both = torch.cat([images, masks], dim=1)
    both = torch.where(flip_h.view(b, 1, 1, 1), both.flip(-1), both)
    both = torch.where(flip_v.view(b, 1, 1, 1), both.flip(-2), both)
    if h == w:
        for k in (1, 2, 3):
            sel = (rot90 == k).to(dev)
            if bool(sel.any()):
                both[sel] = torch.rot90(both[sel], k, dims=(-2, -1))
    if max_rotation > 0:
        both = rotate(both, angles, mode="bilinear")
    c = images.shape[1]
    x, y = both[:, :c], (both[:, c:] > 0.5).to(masks.dtype)
    # intensity changes act on [lo, hi] = [min(0, image min), max(1, image max)] mapped to [0, 1]: exactly
    # [0, 1] for images in [0, 1], and any finite range (z-scored, CT units) keeps its own scale
    lo = images.amin(dim=(1, 2, 3), keepdim=True).clamp(max=0)
    hi = images.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1)
    x = ((x - lo) / (hi - lo)).clamp(0, 1) ** gamma.view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp(0, 1)
    return x * (hi - lo) + lo, y


def _check_dataset(data: Any, name: str) -> None:
    """Dtypes, shapes and binary masks are guaranteed by SegmentationDataset; check type and size."""
    if not isinstance(data, SegmentationDataset):
        raise TypeError(f"{name} must be a SegmentationDataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} must hold at least one image, got 0")


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_base(
    model: nn.Module,
    labeled: SegmentationDataset,
    val: SegmentationDataset,
    config: BaseTrainConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> BaseTrainResult:
    """Train ``model`` (logits (B, 1, H, W)) on ``labeled`` and select the best state on ``val``.

    labeled / val: images float32 (N, C, H, W) (any finite range), masks uint8 (N, H, W). ``seed`` seeds
    batch sampling, augmentation and dropout; training runs on ``device``. The model is trained in place
    and ends holding the best state, in eval mode, on ``device``. Returns a :class:`BaseTrainResult`.
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

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model.to(device)
        x_all = torch.from_numpy(np.ascontiguousarray(labeled.images)).to(device)
        y_all = torch.from_numpy(labeled.masks.astype(np.float32)).unsqueeze(1).to(device)
        n = x_all.shape[0]
        batch = min(config.batch_size, n)
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
                x, y = x_all[idx], y_all[idx]
                if config.augment:
                    x, y = augment_batch(x, y, gen, max_rotation=config.max_rotation)
                loss = segmentation_loss(model(x), y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                if step in snaps_at:
                    snapshots.append(_cpu_state(model))
                if step % config.eval_every == 0 or step == last:
                    probs = predict_probs(model, val.images, batch_size=max(64, batch), device=device)
                    val_dice = float(np.mean(dice(probs > 0.5, val.masks)))
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
