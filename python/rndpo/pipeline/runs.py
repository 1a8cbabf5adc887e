"""Fine-tuning runs of an experiment: each run cached as OUT/runs/<run>.json, its selected model
saved to OUT/models, and the training data (pairs) a run is given."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from rndpo.config import (
    TOP_PICK,
    MethodConfig,
    config_to_dict,
)
from rndpo.judges import (
    pair_quality,
)
from rndpo.metrics import evaluate
from rndpo.nets import save_model
from rndpo.pipeline.distributed import barrier, rank
from rndpo.pipeline.inputs import image_scaling
from rndpo.pipeline.stages import Stages
from rndpo.pipeline.timings import stage_timer
from rndpo.proposals import ProposalBank
from rndpo.storage import (
    atomic_write,
    stage_key,
    stage_ready,
    write_json,
)
from rndpo.training import (
    TrainingPairs,
    finetune,
    summarize_curve,
    summarize_selection,
    top_choice_pairs,
)

__all__ = [
    "JudgeRun",
    "base_model_name",
    "cached_run",
    "finetune_run",
    "judge_run",
    "model_info",
    "run_record",
    "save_base",
    "training_data",
]

log = logging.getLogger("rndpo")


@dataclass(frozen=True)
class JudgeRun:
    """What every round of one judge-driven run repeats: method, judge and miner of one seed."""

    method_name: str
    method: MethodConfig
    label: str
    judge: str
    kwargs: dict[str, Any]
    miner: str
    seed: int
    mine_with: str | None = None
    """The ``mining.strategies`` entry the pairs are mined with when ``miner`` is ``auto`` (its
    resolution from round 1's validation calibration); None: ``miner`` itself."""


def training_data(
    stages: Stages,
    scores_key: str,
    bank: ProposalBank,
    scores: np.ndarray,
    true_dice: np.ndarray | None,
    miner: str,
    seed: int,
) -> tuple[str, TrainingPairs, dict[str, Any]]:
    """Pairs of one miner (or the judge's top pick for ``top1``) and, where the pool's ground truth is
    known (``true_dice`` (N, K)), their quality; without it the quality fields are absent."""
    if miner == TOP_PICK:
        data = top_choice_pairs(bank.images, bank.masks, scores)
        quality: dict[str, Any] = {"n_pairs": len(data)}
        if true_dice is not None:
            picked = true_dice[np.arange(len(data)), data.chosen]
            quality |= {
                "pair_accuracy": float(np.mean(picked >= true_dice.max(axis=1))),
                "harmful_leverage": None,
            }
        return stage_key(scores_key, TOP_PICK), data, quality
    pairs_key, pairs = stages.pairs(scores_key, bank, scores, miner, seed)
    quality = {"n_pairs": len(pairs)}
    if true_dice is not None:
        q = pair_quality(pairs, true_dice)
        quality = {
            "n_pairs": q.n_pairs,
            "pair_accuracy": q.pair_accuracy,
            "harmful_leverage": q.harmful_leverage,
            "flip_rate": q.n_wrong / q.n_pairs if q.n_pairs else None,
        }
    return pairs_key, TrainingPairs.from_pairs(bank.images, bank.masks, pairs), quality


def base_model_name(stages: Stages, seed: int) -> str:
    """base.pt for a single seed, base-s<seed>.pt when the experiment has several."""
    return "base" if len(stages.config.seeds) == 1 else f"base-s{seed}"


def model_info(stages: Stages, **fields: Any) -> dict[str, Any]:
    """What a saved model records about its inputs and outputs (see :mod:`rndpo.nets.saved`)."""
    cfg = stages.config
    labeled = stages.splits.labeled
    info: dict[str, Any] = {
        "in_channels": int(labeled.images.shape[1]),
        "image_size": cfg.data.image_size if labeled.spatial_dims == 2 else None,
        "scaling": image_scaling(cfg.data),
        "threshold": 0.5,
        "dataset": stages.dataset,
        "num_classes": labeled.num_classes,
        "class_names": list(labeled.class_names),
        "label_values": list(labeled.label_values),
    }
    if labeled.spacing is not None:
        info["spacing"] = [float(v) for v in np.median(labeled.spacing, axis=0)]
        info["resample"] = cfg.data.spacing != "native"  # predict resamples to the spacing and back
    if stages.patch_size is not None:
        info["patch_size"] = list(stages.patch_size)
    if stages.roi_size is not None:
        info["inference_size"] = list(stages.roi_size)
    return info | fields


def save_base(stages: Stages, seed: int, model: nn.Module) -> None:
    dev = stages.device
    val_dice = evaluate(
        model, stages.splits.val, distances=False, device=dev, roi_size=stages.roi_size
    ).means()["dice"]
    test = stages.test
    test_dice = (
        evaluate(model, test, distances=False, device=dev, roi_size=stages.roi_size).means()["dice"]
        if test is not None
        else None
    )
    log.info("seed %d: base model: validation Dice %.4f", seed, val_dice)
    info = model_info(stages, method="base", judge=None, miner=None, seed=seed, selected_step=None)
    save_model(
        stages.out / "models" / f"{base_model_name(stages, seed)}.pt",
        model,
        **info,
        val_dice=val_dice,
        test_dice=test_dice,
    )


def cached_run(
    stages: Stages,
    model: nn.Module,
    base_state: dict[str, torch.Tensor],
    data: TrainingPairs,
    method: MethodConfig,
    run_id: str,
    seed: int,
    ref: torch.Tensor,
    base_hd95: float | None,
    extra: dict[str, Any],
    stage: str,
) -> dict[str, Any]:
    """One fine-tuning run from the base state, cached as OUT/runs/<run_id>.json with ``extra`` (the
    ladder's rungs and the judge-free baselines; no model file is kept for them); ``stage``: its name in
    timings.json."""
    path = stages.out / "runs" / f"{run_id}.json"
    if not stage_ready(path):
        log.info("fine-tuning %s on %d pairs", run_id, len(data))
        model.load_state_dict(base_state)
        with stage_timer(stages.out, seed, stage):
            record, _, _ = finetune_run(stages, model, data, method, seed, ref, path, base_hd95)
        record.update(extra)
        if rank() == 0:
            write_json(path, record, checksum=True)
            path.with_suffix(".ckpt").unlink(missing_ok=True)
            path.with_suffix(".ckpt.sha256").unlink(missing_ok=True)
        barrier()
    return cast(dict[str, Any], json.loads(path.read_text()))


def judge_run(
    stages: Stages,
    model: nn.Module,
    start_state: dict[str, torch.Tensor],
    data: TrainingPairs,
    run: JudgeRun,
    ref: torch.Tensor,
    base_hd95: float | None,
    run_id: str,
    fields: dict[str, Any],
    *,
    last: bool = True,
    policy: Path | None = None,
    round: int = 1,
    reference: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """One judge-driven fine-tuning run from ``start_state``, cached as OUT/runs/<run_id>.json with the
    run's identity and ``fields`` (pair quality, judge reliability); the row, with ``model``.

    last: the run's model goes to OUT/models (the last round of a run); policy: a stage file that keeps
    the validation-selected weights for the next round (None: not kept); round: written to the record
    when > 1; reference: the frozen reference model for augmented preference runs (None: the start).
    """
    config = stages.config
    path = stages.out / "runs" / f"{run_id}.json"
    model_path = stages.out / "models" / f"{run_id}.pt"
    if not (stage_ready(path) and (policy is None or stage_ready(policy))):
        log.info("fine-tuning %s on %d pairs", run_id, len(data))
        model.load_state_dict(start_state)
        stage = f"{run.method_name} ({run.label}, {run.miner})" + (f" round {round}" if round > 1 else "")
        with stage_timer(stages.out, run.seed, stage):
            record, selected, final = finetune_run(
                stages, model, data, run.method, run.seed, ref, path, base_hd95, reference
            )
        record.update(run=run_id, method=run.method_name, judge=run.label, miner=run.miner, seed=run.seed)
        record.update(({"round": round} if round > 1 else {}), **fields)
        if rank() == 0:
            if last and stages.keep != "none":
                info = model_info(
                    stages,
                    method=run.method_name,
                    method_config=config_to_dict(run.method),
                    judge=run.label,
                    miner=run.miner,
                    seed=run.seed,
                    selected_step=record["selected_step"],
                    val_dice=record["selected_val_dice"],
                    test_dice=record["selected_dice"],
                )
                save_model(model_path, model, state_dict=selected, **info)
                if stages.keep == "all":
                    final_info = {**info, "selected_step": config.finetune.steps}
                    final_info |= {
                        "val_dice": record["final_val_dice"],
                        "test_dice": record["final_test_dice"],
                    }
                    save_model(
                        model_path.with_name(f"{run_id}-final.pt"), model, state_dict=final, **final_info
                    )
            if policy is not None:
                atomic_write(policy, partial(torch.save, {"selected": selected}), checksum=True)
            write_json(path, record, checksum=True)
            path.with_suffix(".ckpt").unlink(missing_ok=True)
            path.with_suffix(".ckpt.sha256").unlink(missing_ok=True)
        barrier()
    elif last and stages.keep != "none" and not model_path.exists():
        log.warning("run %s is cached but its model was not kept (an earlier --keep none)", run_id)
    row = cast(dict[str, Any], json.loads(path.read_text()))
    row["model"] = str(model_path.relative_to(stages.out)) if last and model_path.exists() else None
    return row


def finetune_run(
    stages: Stages,
    model: nn.Module,
    data: TrainingPairs,
    method: MethodConfig,
    seed: int,
    ref: torch.Tensor,
    path: Path,
    base_hd95: float | None,
    reference: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The run's record (summaries and curves), its validation-selected weights and its final weights;
    ``reference``: see :func:`rndpo.training.finetuning.finetune`."""
    config = stages.config
    test, val = stages.test, stages.splits.val
    base_classes = structure_dice(stages, model)
    if len(data) == 0:
        log.warning("no pairs were mined: the run keeps the base model")
        dev = config.device
        test_eval = (
            evaluate(model, test, distances=False, device=dev, roi_size=stages.roi_size)
            if test is not None
            else None
        )
        per_image = test_eval.dice if test_eval is not None else None
        dice0 = test_eval.means()["dice"] if test_eval is not None else None
        val0 = evaluate(model, val, distances=False, device=dev, roi_size=stages.roi_size).means()["dice"]
        steps = [0, config.finetune.steps]
        curve = [(s, dice0) for s in steps] if dice0 is not None else []
        val_curve = [(s, val0) for s in steps]
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        record = run_record(stages, curve, val_curve, 0, base_hd95, base_hd95, [], per_image)
        if base_classes is not None and test is not None:  # the base is the final model: its figures
            ev = evaluate(model, test, device=dev, roi_size=stages.roi_size)
            record |= structure_fields(
                stages, model, base_classes, state, ev.dice_per_class(), ev.hd95_per_class()
            )
        return record, state, state
    torch.manual_seed(seed)
    result = finetune(
        model,
        data,
        method,
        config.finetune,
        test,
        val=val,
        seed=seed,
        ref_logits=ref if method.objective in ("preference", "pseudo_label") else None,
        labeled=stages.splits.labeled,
        device=config.device,
        checkpoint=path.with_suffix(".ckpt"),
        progress=stages.progress,
        reference=reference,
        patch_size=stages.patch_size,
        flip_axes=config.base.flip_axes,
        roi_size=stages.roi_size,
    )
    record = run_record(
        stages,
        result.curve,
        result.val_curve,
        result.selected_step,
        base_hd95,
        result.final_hd95,
        result.train_log,
        result.final_dice_per_image,
    )
    record |= structure_fields(
        stages,
        model,
        base_classes,
        result.selected_state_dict,
        result.final_dice_per_class,
        result.final_hd95_per_class,
    )
    model.load_state_dict(result.state_dict)  # the model ends holding the final weights
    return record, result.selected_state_dict, result.state_dict


def structure_dice(stages: Stages, model: nn.Module) -> dict[str, float | None] | None:
    """{structure: mean test Dice} of ``model`` when the test set is scored per structure (volumes,
    label maps), else None."""
    test = stages.test
    if test is None or not (test.spatial_dims == 3 or test.num_classes > 2):
        return None
    ev = evaluate(model, test, distances=False, device=stages.device, roi_size=stages.roi_size)
    return ev.dice_per_class()


def structure_fields(
    stages: Stages,
    model: nn.Module,
    base: dict[str, float | None] | None,
    selected: dict[str, torch.Tensor],
    final_dice: dict[str, float | None],
    final_hd95: dict[str, float | None],
) -> dict[str, Any]:
    """The per-structure fields of a run row ({} when the test set is not scored per structure):
    base_dice_per_class, selected_dice_per_class (``selected`` weights, evaluated here: ``model`` ends
    holding them), final_dice_per_class, final_hd95_mm_per_class (the final weights' figures, from the
    run's own final evaluation) ({structure name: value}, None where a structure was never scored)."""
    if base is None:
        return {}
    model.load_state_dict(selected)
    return {
        "base_dice_per_class": base,
        "selected_dice_per_class": structure_dice(stages, model),
        "final_dice_per_class": final_dice,
        "final_hd95_mm_per_class": final_hd95,
    }


def run_record(
    stages: Stages,
    curve: list[tuple[int, float]],
    val_curve: list[tuple[int, float]],
    selected_step: int,
    base_hd95: float | None,
    final_hd95: float | None,
    train_log: list[dict[str, float]],
    dice_per_image: Any = None,
) -> dict[str, Any]:
    """Summaries and curves of one run; ``dice_per_image`` (test images,) of the final weights or None
    (test volumes for NIfTI slices: :func:`rndpo.metrics.evaluate` scores those per volume)."""
    window = stages.config.finetune.final_window
    if curve:
        summary = summarize_curve(curve, window)
    else:  # no test set: the test figures are None
        summary = dict.fromkeys(("base_dice", "peak_dice", "final_dice", "auc_dice"))
    selection = summarize_selection(curve, val_curve, selected_step)
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    log.info(
        "  test Dice: base %s  selected %s (step %d, val %s)  final %s  peak %s (test-curve max)",
        fmt(summary["base_dice"]),
        fmt(selection["selected_dice"]),
        selected_step,
        fmt(selection["selected_val_dice"]),
        fmt(summary["final_dice"]),
        fmt(summary["peak_dice"]),
    )
    return {
        **selection,
        **summary,
        "final_val_dice": val_curve[-1][1] if val_curve else None,
        "final_test_dice": curve[-1][1] if curve else None,
        "base_hd95": base_hd95,
        "final_hd95": final_hd95,
        "final_dice_per_image": None if dice_per_image is None else [float(v) for v in dice_per_image],
        "curve": [list(c) for c in curve],
        "val_curve": [list(c) for c in val_curve],
        "train_log": train_log,
    }
