"""Fine-tuning a segmenter against its frozen base from mined preference pairs (or the judge's top pick).

The reference (base) model's logits on the bank images are computed once, stored as float16 and
streamed, so the reference network is not kept in memory beside the policy. Policy and reference are
scored in eval mode (dropout off, batch-norm statistics frozen), so at step 0 the sigmoid loss is ln 2.

Runs are resumable: a checkpoint (model, optimizer, sampler state, curve, logs) is written atomically
at every evaluation, and a resumed run continues bit-for-bit where the interrupted one stopped.
Under ``torchrun`` the batch is split across processes and gradients are averaged by
DistributedDataParallel.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from rndpo.config import FinetuneConfig, MethodConfig
from rndpo.data import SegmentationDataset
from rndpo.inference import predict_logits
from rndpo.losses import (
    confident_pseudo_label_loss,
    consistency_loss,
    ema_update,
    preference_loss,
    pseudo_label_targets,
    sft_top_loss,
    supervised_anchor_loss,
)
from rndpo.metrics import evaluate
from rndpo.mining import PairSet
from rndpo.storage import atomic_write, load_weights, stage_ready
from rndpo.training.pair_patches import crop_windows, pair_windows
from rndpo.training.supervised import augment_batch

__all__ = [
    "FinetuneResult",
    "TrainingPairs",
    "finetune",
    "lr_factor",
    "reference_logits",
    "summarize_curve",
    "summarize_selection",
    "top_choice_pairs",
]


@dataclass(frozen=True)
class TrainingPairs:
    """What a fine-tuning run trains on.

    images float32 (N, C, H, W); masks uint8 (N, K, H, W) (the bank's proposals); image, chosen,
    rejected int64 (P,) index pairs into them. For ``sft_top`` rejected is -1 (unused).
    """

    images: np.ndarray
    masks: np.ndarray
    image: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @classmethod
    def from_pairs(cls, images: np.ndarray, masks: np.ndarray, pairs: PairSet) -> TrainingPairs:
        return cls(images, masks, pairs.image, pairs.chosen, pairs.rejected)


def top_choice_pairs(images: np.ndarray, masks: np.ndarray, scores: np.ndarray) -> TrainingPairs:
    """The judge's top-ranked proposal per image (ties to the lower index), for ``sft_top``."""
    top = np.argmax(scores, axis=1).astype(np.int64)  # argmax returns the first maximum
    n = scores.shape[0]
    return TrainingPairs(images, masks, np.arange(n, dtype=np.int64), top, np.full(n, -1, dtype=np.int64))


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run gives back.

    state_dict: the final weights (CPU). curve / val_curve: [(step, mean Dice)] on the test / validation
    set at every evaluation, step 0 included ([] without that set). selected_state_dict: the weights at
    ``selected_step``, the evaluation with the best validation Dice (ties: the earlier step; the final
    step when no validation set is given). final_hd95 / final_dice_per_image (float64 (N,)): of the final
    weights on the test set, None without one. train_log: one dict of metrics per step.
    final_dice_per_class / final_hd95_per_class: {structure: mean test Dice / HD95 in mm} of the final
    weights when the test set is scored per structure (volumes, label maps), else {}.
    """

    state_dict: dict[str, torch.Tensor]
    curve: list[tuple[int, float]]
    final_hd95: float | None
    final_dice_per_image: np.ndarray | None
    train_log: list[dict[str, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    selected_step: int = 0
    selected_state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    final_dice_per_class: dict[str, float | None] = field(default_factory=dict)
    final_hd95_per_class: dict[str, float | None] = field(default_factory=dict)


def reference_logits(
    model: nn.Module, images: np.ndarray, *, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Base-model logits (N, 1, H, W) on CPU, computed once in eval mode.

    dtype float16 halves their memory; float32 (the default) keeps the step-0 sigmoid loss exactly ln 2.
    """
    return predict_logits(model, images, device=device).to(dtype).cpu()


def _evaluate(
    model: nn.Module, test: SegmentationDataset, device: str, roi: Sequence[int] | None = None
) -> float:
    """The headline test or validation Dice: the mean over images (volumes), or, per structure, the mean
    over structures of each structure's mean (:meth:`rndpo.metrics.Evaluation.means`); volumes are
    predicted in sliding windows of ``roi`` (None: whole)."""
    return evaluate(model, test, distances=False, device=device, roi_size=roi).means()["dice"]


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _optional_split(data: SegmentationDataset | None, name: str) -> SegmentationDataset | None:
    """``data``, or None when it is None or empty; anything else than a dataset is a TypeError."""
    if data is None:
        return None
    if not isinstance(data, SegmentationDataset):
        raise TypeError(f"finetune: {name} must be a SegmentationDataset or None, got {type(data).__name__}")
    return data if len(data) else None


def lr_factor(step: int, config: FinetuneConfig) -> float:
    """Multiplier of ``config.lr`` at optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps`` (step s gets (s + 1) / warmup_steps), then constant or a cosine decay that reaches
    5% of lr after the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.steps - config.warmup_steps)
    t = min(1.0, (step - config.warmup_steps + 1) / span)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))


def _augmented(
    images: torch.Tensor,
    masks: list[torch.Tensor],
    gen: torch.Generator | None,
    part: slice,
    flip_axes: Sequence[int] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """images float32 (B, C, *S) and masks each (B, *S) of the global batch, augmented together
    (same draw per image) with :func:`augment_batch` (no-op when ``gen`` is None; volumes flipped along
    ``flip_axes`` only, None: all), then cut to this process's ``part``; masks come back uint8. Binary
    masks go through as float {0, 1} (bilinear, then > 0.5: today's path); label maps with a class above
    1 as integers (nearest), so no class is merged into another. Drawing for the global batch keeps DDP
    == one process."""
    if gen is not None:
        if any(int(m.max()) > 1 for m in masks if m.numel()):
            images, y = augment_batch(images, torch.stack(masks, dim=1), gen, flip_axes=flip_axes)
        else:
            stacked = torch.stack([m.float() for m in masks], dim=1)
            images, y = augment_batch(images, stacked, gen, flip_axes=flip_axes)
        masks = [y[:, i].to(torch.uint8) for i in range(len(masks))]
    return images[part], [m[part] for m in masks]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _step_loss(
    model: nn.Module,
    method: MethodConfig,
    data: TrainingPairs,
    ref: torch.Tensor | None,
    batch: np.ndarray,
    labeled: SegmentationDataset | None,
    anchor_batch: np.ndarray | None,
    device: str,
    aug: torch.Generator | None = None,
    ref_model: nn.Module | None = None,
    teacher: nn.Module | None = None,
    gen: torch.Generator | None = None,
    part: slice = slice(None),
    patch_size: tuple[int, ...] | None = None,
    flip_axes: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of this process's ``part`` of the global ``batch`` (and ``anchor_batch``). With ``aug`` the
    batches are augmented and the reference logits are recomputed by ``ref_model`` (the frozen base,
    eval mode) on the augmented images. mean_teacher needs ``teacher`` and ``gen`` (its views);
    pseudo_label takes its targets from ``ref``. With ``patch_size`` (volumes) every item is cut to a window
    drawn from ``gen`` (:mod:`rndpo.training.pair_patches`): centred in a pair's disagreement region, on the
    chosen mask's foreground (sft_top) or the labels' (anchor), else uniform (mean_teacher, pseudo_label,
    whose stored base logits are cut to the same windows); a preference pair's reference is then
    ``ref_model`` on the patch itself."""
    img = data.image[batch]
    images = torch.from_numpy(np.ascontiguousarray(data.images[img])).to(device)
    metrics: dict[str, float] = {}

    def windows(focus: torch.Tensor | None, other: torch.Tensor | None = None) -> list[tuple[slice, ...]]:
        """This batch's windows (:func:`pair_windows`); ``focus`` None: uniform windows over ``images``."""
        assert gen is not None and patch_size is not None
        if focus is None:
            focus = torch.zeros((images.shape[0], *images.shape[2:]), dtype=torch.uint8)
        return pair_windows(focus.cpu(), None if other is None else other.cpu(), patch_size, gen)

    anchor_inputs: tuple[torch.Tensor, torch.Tensor] | None = None
    if method.anchor_weight > 0 and labeled is not None and anchor_batch is not None:
        x = torch.from_numpy(np.ascontiguousarray(labeled.images[anchor_batch])).to(device)
        y = torch.from_numpy(np.ascontiguousarray(labeled.masks[anchor_batch])).to(device)
        if patch_size is not None:
            boxes = windows(y)
            x, y = crop_windows(x, boxes), crop_windows(y, boxes)
        x, (y,) = _augmented(x, [y], aug, part, flip_axes)
        anchor_inputs = (x, y)

    anchor_logits: list[torch.Tensor] = []

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        """The policy on ``inputs`` and, in the same forward pass, on the anchor images."""
        if anchor_inputs is None:
            return cast(torch.Tensor, model(inputs))
        out = model(torch.cat([inputs, anchor_inputs[0]]))
        anchor_logits.append(out[len(inputs) :])
        return cast(torch.Tensor, out[: len(inputs)])

    if method.objective == "mean_teacher":
        assert teacher is not None and gen is not None
        if patch_size is not None:
            images = crop_windows(images, windows(None))
        loss = method.beta * consistency_loss(forward, teacher, images, gen, part, flip_axes=flip_axes)
        metrics["consistency"] = float(loss.detach()) / method.beta
    elif method.objective == "pseudo_label":
        assert ref is not None
        base_logits = ref[torch.from_numpy(img)].to(device).float()
        if patch_size is not None:
            boxes = windows(None)
            images, base_logits = crop_windows(images, boxes), crop_windows(base_logits, boxes)
        target, keep = pseudo_label_targets(base_logits, method.confidence)
        images, (target, keep) = _augmented(images, [target, keep], aug, part, flip_axes)
        loss = method.beta * confident_pseudo_label_loss(forward(images), target, keep)
        metrics["pseudo_label_loss"] = float(loss.detach()) / method.beta
        metrics["confident_share"] = float(keep.float().mean())
    elif method.objective == "sft_top":
        chosen = torch.from_numpy(np.ascontiguousarray(data.masks[img, data.chosen[batch]])).to(device)
        if patch_size is not None:
            boxes = windows(chosen)
            chosen, images = crop_windows(chosen, boxes), crop_windows(images, boxes)
        images, (chosen,) = _augmented(images, [chosen], aug, part, flip_axes)
        loss = sft_top_loss(forward(images), chosen)
    else:
        chosen = torch.from_numpy(np.ascontiguousarray(data.masks[img, data.chosen[batch]])).to(device)
        rejected = torch.from_numpy(np.ascontiguousarray(data.masks[img, data.rejected[batch]])).to(device)
        if patch_size is not None:
            boxes = windows(chosen, rejected)
            chosen, rejected, images = (crop_windows(t, boxes) for t in (chosen, rejected, images))
        images, (chosen, rejected) = _augmented(images, [chosen, rejected], aug, part, flip_axes)
        if ref_model is not None:  # augmented or cut to patches: the frozen base on these very inputs
            with torch.no_grad():
                ref_batch = ref_model(images)
        else:
            assert ref is not None
            ref_batch = ref[torch.from_numpy(img[part])].to(device)
        logits = forward(images)
        out = preference_loss(logits, ref_batch, chosen, rejected, **method.loss_options())
        loss = out.loss
        valid = out.region_size > 0
        if bool(valid.any()):
            metrics = {
                "rewards/chosen": float(out.chosen_rewards[valid].mean()),
                "rewards/rejected": float(out.rejected_rewards[valid].mean()),
                "rewards/margins": float(out.margins[valid].mean()),
                "rewards/accuracies": float(out.accuracies[valid].float().mean()),
                "region_size": float(out.region_size[valid].float().mean()),
            }
        if method.chosen_sft_weight > 0:  # RPO's term: keep the chosen masks likely, not only ahead
            sft = sft_top_loss(logits, chosen)
            metrics["chosen_sft_loss"] = float(sft.detach())
            loss = loss + method.chosen_sft_weight * sft
    if anchor_inputs is not None:
        anchor = supervised_anchor_loss(anchor_logits[0], anchor_inputs[1])
        metrics["anchor_loss"] = float(anchor.detach())
        loss = loss + method.anchor_weight * anchor
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def finetune(
    model: nn.Module,
    data: TrainingPairs,
    method: MethodConfig,
    config: FinetuneConfig,
    test: SegmentationDataset | None = None,
    *,
    val: SegmentationDataset | None = None,
    seed: int = 0,
    ref_logits: torch.Tensor | None = None,
    labeled: SegmentationDataset | None = None,
    device: str = "cpu",
    checkpoint: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    reference: nn.Module | None = None,
    patch_size: Sequence[int] | None = None,
    flip_axes: Sequence[int] | None = None,
    roi_size: Sequence[int] | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``data`` with ``method``; select the weights on ``val``.

    At step 0, every ``config.eval_every`` steps and at the end, the model is scored on ``val`` (model
    selection: the best validation Dice wins, ties go to the earlier step) and on ``test`` (reporting
    only; never used to pick anything). Both are optional (None or empty): without ``val`` the final
    weights are the selected ones. The model ends holding the final weights.
    ref_logits: float16/float32 (N, 1, H, W) base logits on ``data.images`` (needed for preference
    objectives unless ``config.augment``, which recomputes them on each augmented batch with a frozen copy
    of ``model``; that costs one forward pass per step).
    Learning rate: ``config.lr`` times :func:`lr_factor`; gradients clipped to norm ``config.grad_clip``.
    checkpoint: file to resume from and to save progress to (atomically) at every evaluation.
    reference: the frozen reference model of a preference objective with ``config.augment`` (default: a
    copy of ``model`` as it starts); it must match ``ref_logits`` when both are given.
    patch_size: train on windows of this size (one int per spatial axis; volumes), each pair's centred in
    its disagreement region (:mod:`rndpo.training.pair_patches`), so RN-DPO's |D| is the part of D the
    loss sees; the reference logits are the frozen base's on the same patch (one more forward pass per
    step, as with ``config.augment``), so the step-0 loss is ln 2. None: whole images.
    roi_size: evaluation predicts in sliding windows of this size (None: ``patch_size``; both None: whole
    images).
    flip_axes: with ``config.augment``, the spatial axes of volumes flipped (None: all; the base's
    ``[base] flip_axes``: leave out an axis along which structures differ only by position).
    """
    if len(data) == 0:
        raise ValueError("finetune: data has no pairs; loosen the mining filters or use another miner")
    if method.objective == "preference" and ref_logits is None and not config.augment and patch_size is None:
        raise ValueError("finetune: ref_logits are required for preference objectives without augmentation")
    if method.objective == "pseudo_label" and ref_logits is None:
        raise ValueError(
            "finetune: ref_logits (the base model's logits on the pool) are required for pseudo_label"
        )
    roi = roi_size if roi_size is not None else patch_size
    rank, world = _world()
    model.to(device)
    model.eval()  # dropout off and batch-norm frozen, for policy and reference alike
    ref_model = None
    if (config.augment or patch_size is not None) and method.objective == "preference":
        start_model = model if reference is None else reference
        ref_model = copy.deepcopy(start_model).requires_grad_(False)  # the frozen base, before any resume
        ref_model.to(device).eval()
    teacher = copy.deepcopy(model).requires_grad_(False) if method.objective == "mean_teacher" else None
    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    test_set = _optional_split(test, "test")
    val_set = _optional_split(val, "val")
    curve: list[tuple[int, float]] = []
    val_curve: list[tuple[int, float]] = []
    log: list[dict[str, float]] = []
    best: dict[str, Any] = {"step": 0, "state": _cpu_state(model)}
    start = 0

    def evaluate_at(step: int) -> None:
        if test_set is not None:
            curve.append((step, _evaluate(model, test_set, device, roi)))
        if val_set is not None:
            val_curve.append((step, _evaluate(model, val_set, device, roi)))
            if val_curve[-1][1] > max((v for _, v in val_curve[:-1]), default=-math.inf):
                best.update(step=step, state=_cpu_state(model))  # strict: ties keep the earlier step

    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and stage_ready(ckpt_path):  # a corrupted checkpoint is removed
        # on the CPU: the generator's state must be a CPU ByteTensor, and the selected weights stay on
        # the CPU like _cpu_state's; load_state_dict copies model and optimizer state to their devices
        state = load_weights(ckpt_path, map_location="cpu")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        curve, log, start = [tuple(c) for c in state["curve"]], state["log"], state["step"]
        val_curve = [tuple(c) for c in state.get("val_curve", [])]
        best = {"step": state.get("selected_step", 0), "state": state.get("selected_model", best["state"])}
    if start == 0:
        evaluate_at(0)

    def save(step: int) -> None:
        if ckpt_path is None or rank != 0:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "curve": curve,
            "val_curve": val_curve,
            "selected_step": best["step"],
            "selected_model": best["state"],
            "log": log,
            "step": step,
        }
        if teacher is not None:
            state["teacher"] = teacher.state_dict()
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp), checksum=True)

    bar = tqdm(
        range(start, config.steps),
        desc="finetune",
        disable=None if progress and rank == 0 else True,  # None: off when output is not a terminal
        leave=False,
        initial=start,
    )
    per_rank = max(1, math.ceil(config.batch_size / world))
    for step in bar:
        batch = torch.randint(len(data), (per_rank * world,), generator=gen).numpy()
        anchor_batch = None
        if method.anchor_weight > 0 and labeled is not None:
            anchor_batch = torch.randint(len(labeled), (per_rank * world,), generator=gen).numpy()
        loss, metrics = _step_loss(
            train_model,
            method,
            data,
            ref_logits,
            batch,
            labeled,
            anchor_batch,
            device,
            aug=gen if config.augment else None,
            ref_model=ref_model,
            teacher=teacher,
            gen=gen,
            part=slice(rank, None, world),
            patch_size=None if patch_size is None else tuple(patch_size),
            flip_axes=None if flip_axes is None else tuple(flip_axes),
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"finetune: non-finite loss {float(loss)} at step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            metrics["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
        lr = config.lr * lr_factor(step, config)
        for group in opt.param_groups:
            group["lr"] = lr
        metrics["lr"] = lr
        opt.step()
        if teacher is not None:
            ema_update(teacher, model, method.ema_decay)
        metrics["step"] = float(step + 1)
        log.append(metrics)
        if on_step is not None:
            on_step(step + 1, metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            evaluate_at(step + 1)
            save(step + 1)
    final_state = _cpu_state(model)
    final = evaluate(model, test_set, device=device, roi_size=roi) if test_set is not None else None
    return FinetuneResult(
        final_state,
        curve,
        final.means()["hd95"] if final is not None else None,
        final.dice if final is not None else None,
        log,
        val_curve,
        best["step"] if val_set is not None else config.steps,
        best["state"] if val_set is not None else final_state,
        final.dice_per_class() if final is not None else {},
        final.hd95_per_class() if final is not None else {},
    )


def summarize_curve(curve: list[tuple[int, float]], final_window: int) -> dict[str, Any]:
    """base (step 0), peak, final (mean of the last ``final_window`` evaluations) and AUC (mean) Dice."""
    values = np.array([v for _, v in curve], dtype=np.float64)
    return {
        "base_dice": float(values[0]),
        "peak_dice": float(values.max()),
        "final_dice": float(values[-final_window:].mean()),
        "auc_dice": float(values.mean()),
    }


def summarize_selection(
    curve: list[tuple[int, float]], val_curve: list[tuple[int, float]], selected_step: int
) -> dict[str, Any]:
    """The validation-selected model's figures: ``selected_step``, ``selected_dice`` (its test Dice,
    read from ``curve`` at that step; None without a test curve), ``selected_val_dice`` and
    ``base_val_dice`` (validation Dice at step 0; None without a validation curve)."""
    test_at, val_at = dict(curve), dict(val_curve)
    return {
        "selected_step": int(selected_step),
        "selected_dice": test_at.get(selected_step),
        "selected_val_dice": val_at.get(selected_step),
        "base_val_dice": val_at.get(0),
    }
