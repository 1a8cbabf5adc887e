"""The end-to-end experiment: base model -> proposals -> judges -> pairs -> fine-tuning runs -> results.

Each stage is cached in the output folder under a key hashed from the part of the config it depends
on, and every file is written atomically, so an interrupted experiment (even ``kill -9``) resumes with
``resume=True`` and redoes only unfinished work. Output layout::

    OUT/config.json                     the resolved config and package version
    OUT/stages/base-<key>/              base U-Net (best + snapshots) per seed
    OUT/stages/bank-<key>/              proposal bank (memory-mappable .npy files)
    OUT/stages/scores-<key>.npz         judge scores (N, K) and the judge's reliability
    OUT/stages/pairs-<key>.npz          mined pairs
    OUT/runs/<run>-<key>.json           one fine-tuning run (curve, train log); .ckpt while running
    OUT/.rndpo.lock                     held while a run uses the folder (names the owner's pid)

Stage folders hold a SHA256SUMS file and single-file stages a ``<file>.sha256``; ``resume`` verifies
them and recomputes a stage that fails (see :mod:`rndpo.storage`). Weights are loaded with
``torch.load(weights_only=True)``: nothing in an output folder can run code.
    OUT/results.json|csv|md, curves.png, examples.png
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist

from rndpo import __version__
from rndpo.config import ConfigError, DataConfig, ModelConfig, RunConfig, config_to_dict
from rndpo.data import (
    DatasetSplits,
    SegmentationDataset,
    load_folder,
    load_nifti,
    load_npz,
    split_dataset,
    synthetic_dataset,
)
from rndpo.evaluation import evaluate
from rndpo.finetune import TrainingPairs, finetune, reference_logits, summarize_curve, top_choice_pairs
from rndpo.judges import Judge, LearnedQCJudge, OracleJudge, make_judge
from rndpo.mining import PairSet, Strategy, mine_pairs
from rndpo.model import UNet
from rndpo.proposals import ProposalBank, generate_proposals
from rndpo.reliability import judge_reliability, pair_quality
from rndpo.report import plot_pair_examples, write_reports
from rndpo.rundir import RUN_MARKER, check_device, check_out, clear_out, lock_out, remove_leftovers
from rndpo.storage import atomic_dir, load_weights, stage_key, stage_ready, write_json, write_npz
from rndpo.supervised import train_base

__all__ = ["ExperimentResult", "build_unet", "load_data", "run_experiment", "split_data"]

log = logging.getLogger("rndpo")


@dataclass(frozen=True)
class ExperimentResult:
    """rows: one dict per (method, judge, miner, seed); out: the output folder."""

    rows: list[dict[str, Any]]
    out: Path


def load_data(cfg: DataConfig) -> SegmentationDataset:
    """The dataset a config names; relative paths are taken from the current directory."""
    size = cfg.image_size
    if cfg.kind == "synthetic":
        return synthetic_dataset(n_images=cfg.n_images, size=size, seed=cfg.seed)
    if cfg.kind == "nifti":
        for p in (*cfg.nifti_images, *cfg.nifti_masks):
            if not Path(p).is_file():
                raise ConfigError(f"data.nifti_images/nifti_masks: file not found: {p}")
        return load_nifti(list(cfg.nifti_images), list(cfg.nifti_masks), axis=cfg.nifti_axis, image_size=size)
    path = Path(cfg.path)
    if not path.exists():
        raise ConfigError(f"data.path: {cfg.kind} dataset not found: {path} (relative to {Path.cwd()})")
    if cfg.kind == "npz":
        return load_npz(path, image_size=size, group_by=cfg.group_by)
    mask_dir = Path(cfg.mask_path) if cfg.mask_path else path / "masks"
    image_dir = path / "images" if (path / "images").is_dir() else path
    return load_folder(image_dir, mask_dir, image_size=size, mask_suffix=cfg.mask_suffix)


def split_data(cfg: DataConfig, data: SegmentationDataset) -> DatasetSplits:
    """The seeded splits a config names; ``label_budget`` > 1 is a count of labeled images."""
    budget = int(cfg.label_budget) if cfg.label_budget > 1 else cfg.label_budget
    return split_dataset(
        data,
        label_budget=budget,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
    )


def build_unet(cfg: ModelConfig, in_channels: int) -> UNet:
    """The U-Net a config names, for images with ``in_channels`` channels."""
    return UNet(in_channels=in_channels, channels=cfg.channels, dropout=cfg.dropout)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _Stages:
    """Computes or loads each cached stage of one experiment."""

    def __init__(self, config: RunConfig, out: Path, splits: DatasetSplits, progress: bool) -> None:
        self.config = config
        self.out = out
        self.stages = out / "stages"
        self.splits = splits
        self.progress = progress
        self.device = config.device
        # the package version is part of every key: a new release never reuses an old cache
        self.data_key = stage_key(__version__, config_to_dict(config.data))

    def _model(self) -> UNet:
        return build_unet(self.config.model, self.splits.labeled.images.shape[1])

    def base(self, seed: int) -> tuple[str, UNet, list[dict[str, torch.Tensor]]]:
        cfg = self.config
        key = stage_key(self.data_key, config_to_dict(cfg.model), config_to_dict(cfg.base), seed)
        folder = self.stages / f"base-{key}"
        if not stage_ready(folder):
            log.info("seed %d: training the base model on %d labeled images", seed, len(self.splits.labeled))
            torch.manual_seed(seed)
            model = self._model()
            base_cfg = dataclasses.replace(cfg.base, seed=seed, device=self.device)
            result = train_base(model, self.splits.labeled, self.splits.val, base_cfg, progress=self.progress)
            with atomic_dir(folder) as tmp:
                torch.save({"best": result.state_dict, "snapshots": result.snapshots}, tmp / "model.pt")
                write_json(tmp / "history.json", {"history": [list(h) for h in result.history]})
        state = load_weights(folder / "model.pt")
        model = self._model()
        model.load_state_dict(state["best"])
        return key, model, state["snapshots"]

    def bank(
        self, seed: int, base_key: str, model: UNet, snapshots: list[dict[str, torch.Tensor]]
    ) -> tuple[str, ProposalBank]:
        cfg = self.config
        key = stage_key(base_key, config_to_dict(cfg.proposals), cfg.data.max_unlabeled, seed)
        folder = self.stages / f"bank-{key}"
        if not stage_ready(folder):
            unlabeled = self.splits.unlabeled
            if cfg.data.max_unlabeled and len(unlabeled) > cfg.data.max_unlabeled:
                unlabeled = unlabeled.subset(np.arange(cfg.data.max_unlabeled))
            log.info(
                "seed %d: generating %d proposals for %d unlabeled images",
                seed,
                cfg.proposals.k,
                len(unlabeled),
            )
            bank = self._proposals(model, snapshots, unlabeled, seed)
            bank.save(folder)
        return key, ProposalBank.load(folder, mmap=True)

    def _proposals(
        self, model: UNet, snapshots: list[dict[str, torch.Tensor]], data: SegmentationDataset, seed: int
    ) -> ProposalBank:
        proposal_cfg = dataclasses.replace(self.config.proposals, seed=seed)
        return generate_proposals(
            model,
            data.images,
            config=proposal_cfg,
            snapshots=snapshots,
            ground_truth=data.masks,
            device=self.device,
            progress=self.progress,
        )

    def scores(
        self,
        seed: int,
        bank_key: str,
        bank: ProposalBank,
        label: str,
        name: str,
        kwargs: dict[str, Any],
        model: UNet,
        snapshots: list[dict[str, torch.Tensor]],
    ) -> tuple[str, np.ndarray, dict[str, Any]]:
        cfg = self.config
        extra = cfg.judges.qc_steps if name == "learned_qc" else None
        key = stage_key(bank_key, label, kwargs, extra, seed)
        path = self.stages / f"scores-{key}.npz"
        if not stage_ready(path):
            log.info("seed %d: scoring proposals with judge %s", seed, label)
            judge: Judge
            if name == "noisy_oracle":
                judge = make_judge(name, seed=seed, **kwargs)
            elif name == "learned_qc":
                judge = qc = LearnedQCJudge(**kwargs)
                train_bank = self._proposals(model, snapshots, self.splits.labeled, seed)
                qc.fit(train_bank, steps=cfg.judges.qc_steps, seed=seed, progress=self.progress)
                qc.save(self.stages / f"qc-{key}")
            else:
                judge = make_judge(name, **kwargs)
            scores = np.asarray(judge.score(bank), dtype=np.float64)
            write_npz(path, checksum=True, scores=scores)
        scores = np.load(path)["scores"]
        true_dice = OracleJudge().score(bank)
        rel = judge_reliability(scores, true_dice)
        return key, scores, {"judge_spearman": rel.spearman, "judge_top1_accuracy": rel.top1_accuracy}

    def pairs(
        self, scores_key: str, bank: ProposalBank, scores: np.ndarray, miner: str
    ) -> tuple[str, PairSet]:
        m = self.config.mining
        key = stage_key(scores_key, miner, config_to_dict(m))
        path = self.stages / f"pairs-{key}.npz"
        if not stage_ready(path):
            strategy, min_margin = m.parse_strategy(miner)
            pairs = mine_pairs(
                bank.masks,
                scores,
                cast(Strategy, strategy),
                min_margin=min_margin,
                min_region=m.min_region,
                max_region=m.max_region or None,
                max_pairs_per_image=m.max_pairs_per_image or None,
                seed=0,
            )
            arrays = {f.name: getattr(pairs, f.name) for f in dataclasses.fields(pairs)}
            write_npz(path, checksum=True, **arrays)
        with np.load(path) as z:
            return key, PairSet(**{k: z[k] for k in z.files})


def run_experiment(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ExperimentResult:
    """Run every (method, judge, miner, seed) of ``config``; write results into ``out``.

    An existing non-empty ``out`` needs ``resume=True`` (reuse finished stages) or ``overwrite=True``
    (empty it first); either needs ``out`` to hold an rndpo run. Everything that can be checked (the
    folder, the device, the data) is checked before anything is created or removed. The folder is
    locked for the whole run; leftovers of interrupted writes are removed on start.
    """
    out = Path(out)
    if _rank() == 0:
        check_out(out, resume=resume, overwrite=overwrite)
    check_device(config.device)
    data = load_data(config.data)
    splits = split_data(config.data, data)
    _barrier()
    lock: AbstractContextManager[Any] = lock_out(out) if _rank() == 0 else nullcontext()
    with lock:
        return _run_locked(config, out, splits, data.name, overwrite=overwrite, progress=progress)


def _run_locked(
    config: RunConfig, out: Path, splits: DatasetSplits, name: str, *, overwrite: bool, progress: bool
) -> ExperimentResult:
    marker = out / RUN_MARKER
    if _rank() == 0:
        if overwrite and marker.exists():
            clear_out(out)
        remove_leftovers(out)
    log.info(
        "data %s: %d labeled, %d unlabeled, %d val, %d test images of %s",
        name,
        len(splits.labeled),
        len(splits.unlabeled),
        len(splits.val),
        len(splits.test),
        "x".join(map(str, splits.labeled.images.shape[1:])),
    )
    if _rank() == 0:
        write_json(marker, {"version": __version__, "config": config_to_dict(config)})
    _barrier()
    stages = _Stages(config, out, splits, progress)
    rows: list[dict[str, Any]] = []
    for seed in config.seeds:
        rows += _run_seed(stages, seed)
    if _rank() == 0:
        write_reports(rows, config, out)
    _barrier()
    return ExperimentResult(rows, out)


def _shared_stages(
    stages: _Stages, seed: int
) -> tuple[str, UNet, list[dict[str, torch.Tensor]], str, ProposalBank]:
    """Base model and bank; under torchrun rank 0 computes them and the other ranks read the cache."""
    if _rank() == 0:
        base_key, model, snapshots = stages.base(seed)
        stages.bank(seed, base_key, model, snapshots)
    _barrier()
    base_key, model, snapshots = stages.base(seed)
    bank_key, bank = stages.bank(seed, base_key, model, snapshots)
    return base_key, model, snapshots, bank_key, bank


def _training_data(
    stages: _Stages,
    scores_key: str,
    bank: ProposalBank,
    scores: np.ndarray,
    true_dice: np.ndarray,
    miner: str,
) -> tuple[str, TrainingPairs, dict[str, Any]]:
    """Pairs of one miner (or the judge's top pick for ``top1``) and their quality against true Dice."""
    if miner == "top1":
        data = top_choice_pairs(bank.images, bank.masks, scores)
        picked = true_dice[np.arange(len(data)), data.chosen]
        top1 = float(np.mean(picked >= true_dice.max(axis=1)))
        return (
            stage_key(scores_key, "top1"),
            data,
            {"n_pairs": len(data), "pair_accuracy": top1, "harmful_leverage": None},
        )
    pairs_key, pairs = stages.pairs(scores_key, bank, scores, miner)
    q = pair_quality(pairs, true_dice)
    quality = {"n_pairs": q.n_pairs, "pair_accuracy": q.pair_accuracy, "harmful_leverage": q.harmful_leverage}
    return pairs_key, TrainingPairs.from_pairs(bank.images, bank.masks, pairs), quality


def _run_seed(stages: _Stages, seed: int) -> list[dict[str, Any]]:
    config = stages.config
    _, model, snapshots, bank_key, bank = _shared_stages(stages, seed)
    test = stages.splits.test
    ref = reference_logits(model, bank.images, device=config.device)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    base_hd95 = evaluate(model, test, device=config.device).means()["hd95"]
    true_dice = OracleJudge().score(bank)
    rows = []
    for label, name, kwargs in config.judges.judge_labels():
        if _rank() == 0:
            stages.scores(seed, bank_key, bank, label, name, kwargs, model, snapshots)
        _barrier()
        scores_key, scores, judge_stats = stages.scores(
            seed, bank_key, bank, label, name, kwargs, model, snapshots
        )
        for method_name, method in config.methods.items():
            miners = ["top1"] if method.objective == "sft_top" else list(config.mining.strategies)
            for miner in miners:
                pairs_key, data, quality = _training_data(stages, scores_key, bank, scores, true_dice, miner)
                key = stage_key(pairs_key, config_to_dict(method), config_to_dict(config.finetune))
                run_id = f"{method_name}-{label}-{miner}-s{seed}-{key}".replace("@", "")
                path = stages.out / "runs" / f"{run_id}.json"
                if not stage_ready(path):
                    log.info("fine-tuning %s on %d pairs", run_id, len(data))
                    model.load_state_dict(base_state)
                    record = _finetune_run(stages, model, data, method_name, seed, ref, path, base_hd95)
                    record.update(
                        method=method_name, judge=label, miner=miner, seed=seed, **quality, **judge_stats
                    )
                    if _rank() == 0:
                        write_json(path, record, checksum=True)
                        path.with_suffix(".ckpt").unlink(missing_ok=True)
                        path.with_suffix(".ckpt.sha256").unlink(missing_ok=True)
                    _barrier()
                rows.append(json.loads(path.read_text()))
                examples = stages.out / "examples.png"
                if miner != "top1" and len(data) and _rank() == 0 and not examples.exists():
                    plot_pair_examples(
                        bank.images,
                        bank.masks,
                        data.image,
                        data.chosen,
                        data.rejected,
                        examples,
                        ground_truth=bank.ground_truth,
                    )
    model.load_state_dict(base_state)
    return rows


def _finetune_run(
    stages: _Stages,
    model: UNet,
    data: TrainingPairs,
    method_name: str,
    seed: int,
    ref: torch.Tensor,
    path: Path,
    base_hd95: float,
) -> dict[str, Any]:
    config = stages.config
    method = config.methods[method_name]
    test = stages.splits.test
    if len(data) == 0:
        log.warning("no pairs were mined: the run keeps the base model")
        dice0 = evaluate(model, test, distances=False, device=config.device).means()["dice"]
        curve = [(0, dice0), (config.finetune.steps, dice0)]
        summary = summarize_curve(curve, config.finetune.final_window)
        return {
            **summary,
            "base_hd95": base_hd95,
            "final_hd95": base_hd95,
            "curve": [list(c) for c in curve],
            "train_log": [],
        }
    torch.manual_seed(seed)
    result = finetune(
        model,
        data,
        method,
        config.finetune,
        test,
        seed=seed,
        ref_logits=ref if method.objective == "preference" else None,
        labeled=stages.splits.labeled,
        device=config.device,
        checkpoint=path.with_suffix(".ckpt"),
        progress=stages.progress,
    )
    summary = summarize_curve(result.curve, config.finetune.final_window)
    log.info(
        "  base %.4f  peak %.4f  final %.4f  auc %.4f",
        summary["base_dice"],
        summary["peak_dice"],
        summary["final_dice"],
        summary["auc_dice"],
    )
    return {
        **summary,
        "base_hd95": base_hd95,
        "final_hd95": result.final_hd95,
        "curve": [list(c) for c in result.curve],
        "train_log": result.train_log,
    }
