"""The cached stages of one experiment: base model, proposal bank, judges and their validation
calibration, judge scores and mined pairs, each keyed on the part of the config it depends on
(see :mod:`rndpo.pipeline.experiment` for the folder layout)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rndpo import __version__
from rndpo.config import (
    ConfigError,
    RunConfig,
    config_to_dict,
)
from rndpo.data import (
    DatasetSplits,
    SegmentationDataset,
)
from rndpo.judges import (
    FitSource,
    Judge,
    JudgeCalibration,
    OracleJudge,
    build_judge,
    calibrate_judges,
    calibration_judges,
    calibration_settings,
    judge_reliability,
    key_settings,
)
from rndpo.mining import PairSet, mine_configured
from rndpo.nets import network_from_config
from rndpo.pipeline.distributed import cached
from rndpo.pipeline.keys import round_note, round_seed
from rndpo.pipeline.timings import stage_timer
from rndpo.proposals import ProposalBank, generate_proposals
from rndpo.storage import (
    atomic_dir,
    load_weights,
    stage_key,
    stage_ready,
    write_json,
    write_npz,
)
from rndpo.training import (
    train_base,
)

__all__ = [
    "KEEP_CHOICES",
    "Keep",
    "Stages",
    "shared_stages",
]

log = logging.getLogger("rndpo")


#: which fine-tuned models an experiment writes to OUT/models: the validation-selected one of every run
#: (and the base), also every run's final weights (``<run>-final.pt``), or none
KEEP_CHOICES: tuple[str, ...] = ("selected", "all", "none")


Keep = Literal["selected", "all", "none"]


def label_classes(bank: ProposalBank) -> int | None:
    """The ``num_classes`` mining needs: C for a bank of label maps with C > 2, None for binary masks."""
    return bank.num_classes if bank.num_classes > 2 else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class Stages:
    """Computes or loads each cached stage of one experiment, under ``out/stages``.

    config: the run config; splits: the labeled / val / test splits (:func:`rndpo.pipeline.split_data`);
    pool: the unlabeled images float32 (N, C, H, W) and their ground truth uint8 (N, H, W) or None
    (:func:`rndpo.pipeline.load_pool`); progress: show progress bars; keep: which models the runs write
    to ``out/models`` (:data:`KEEP_CHOICES`); dataset: the name reports and saved models carry.
    """

    def __init__(
        self,
        config: RunConfig,
        out: Path,
        splits: DatasetSplits,
        pool: tuple[np.ndarray, np.ndarray | None],
        *,
        progress: bool = True,
        keep: Keep = "selected",
        dataset: str = "data",
    ) -> None:
        self.config = config
        self.out = out
        self.stages = out / "stages"
        self.splits = splits
        self.progress = progress
        self.keep = keep
        self.dataset = dataset
        self.plots = True
        self.device = config.device
        self.test: SegmentationDataset | None = splits.test if len(splits.test) else None
        # the unlabeled pool: images float32 (N, C, H, W) and, in studies, their ground truth (N, H, W)
        self.pool, self.pool_truth = pool
        # the package version is part of every key: a new release never reuses an old cache
        self.data_key = stage_key(__version__, config_to_dict(config.data))

    def model(self) -> nn.Module:
        """The configured network for this data: its spatial dims, and C output channels (softmax) for
        label maps with C > 2 structures-plus-background, one (sigmoid) for binary masks."""
        labeled = self.splits.labeled
        dims = self.config.model.spatial_dims
        if dims is not None and dims != labeled.spatial_dims:
            raise ConfigError(f"model.spatial_dims = {dims}, but the data is {labeled.spatial_dims}D")
        out = labeled.num_classes if labeled.num_classes > 2 else 1
        return network_from_config(self.config.model, labeled.images.shape[1], labeled.spatial_dims, out)

    @property
    def patch_size(self) -> tuple[int, ...] | None:
        """``[model] patch_size`` (training patches), None: whole images."""
        return tuple(self.config.model.patch_size) or None

    @property
    def roi_size(self) -> tuple[int, ...] | None:
        """The sliding-window inference size: ``[model] inference_size``, else the patch size; None: whole
        images."""
        return tuple(self.config.model.inference_size) or self.patch_size

    def base_key(self, seed: int) -> str:
        cfg = self.config
        return stage_key(self.data_key, config_to_dict(cfg.model), config_to_dict(cfg.base), seed)

    def base(self, seed: int) -> tuple[str, nn.Module, list[dict[str, torch.Tensor]]]:
        cfg = self.config
        key = self.base_key(seed)
        folder = self.stages / f"base-{key}"
        if not stage_ready(folder):
            log.info("seed %d: training the base model on %d labeled images", seed, len(self.splits.labeled))
            torch.manual_seed(seed)
            model = self.model()
            labeled, val = self.splits.labeled, self.splits.val
            with stage_timer(self.out, seed, "base"):
                result = train_base(
                    model,
                    labeled,
                    val,
                    cfg.base,
                    seed=seed,
                    device=self.device,
                    progress=self.progress,
                    patch_size=self.patch_size,
                    roi_size=self.roi_size,
                    flip_axes=cfg.base.flip_axes,
                )
            with atomic_dir(folder) as tmp:
                torch.save({"best": result.state_dict, "snapshots": result.snapshots}, tmp / "model.pt")
                write_json(tmp / "history.json", {"history": [list(h) for h in result.history]})
        state = load_weights(folder / "model.pt")
        model = self.model()
        model.load_state_dict(state["best"])
        return key, model, state["snapshots"]

    def bank(
        self, seed: int, base_key: str, model: nn.Module, snapshots: list[dict[str, torch.Tensor]]
    ) -> tuple[str, ProposalBank]:
        cfg = self.config
        key = stage_key(base_key, config_to_dict(cfg.proposals), cfg.data.max_unlabeled, seed)
        folder = self.stages / f"bank-{key}"
        if not stage_ready(folder):
            log.info(
                "seed %d: generating %d proposals for %d unlabeled images",
                seed,
                cfg.proposals.k,
                len(self.pool),
            )
            with stage_timer(self.out, seed, "proposals"):
                bank = self.proposals(model, snapshots, self.pool, self.pool_truth, seed)
                bank.save(folder)
        return key, ProposalBank.load(folder, mmap=True)

    def proposals(
        self,
        model: nn.Module,
        snapshots: list[dict[str, torch.Tensor]],
        images: np.ndarray,
        truth: np.ndarray | None,
        seed: int,
    ) -> ProposalBank:
        return generate_proposals(
            model,
            images,
            config=self.config.proposals,
            seed=seed,
            snapshots=snapshots,
            ground_truth=truth,
            device=self.device,
            progress=self.progress,
            roi_size=self.roi_size,
        )

    def scores(
        self,
        seed: int,
        bank_key: str,
        bank: ProposalBank,
        label: str,
        name: str,
        kwargs: dict[str, Any],
        model: nn.Module,
        snapshots: list[dict[str, torch.Tensor]],
        true_dice: np.ndarray | None,
        *,
        round: int = 1,
        qc_dir: Path | None = None,
    ) -> tuple[str, np.ndarray, dict[str, Any]]:
        """The judge's scores (N, K) of the bank, cached; with the bank's true Dice (N, K) (None for a
        truly unlabeled pool) also the judge's reliability on it.

        round: the fine-tuning round whose bank this is (rounds >= 2 key and reseed seeded judges by
        round); qc_dir: a trained judge's folder (default :meth:`fit_folder`), loaded when it is there,
        else fitted on the base model's labeled proposals and saved there (later rounds reuse round 1's).
        """
        extra = key_settings(name, self.config.judges)
        key = stage_key(bank_key, label, kwargs, extra, seed, *([round] if round > 1 else []))
        path = self.stages / f"scores-{key}.npz"
        if not stage_ready(path):
            log.info("seed %d: scoring proposals with judge %s%s", seed, label, round_note(round))
            with stage_timer(self.out, seed, f"scores {label}{round_note(round)}"):
                judge = self.judge(seed, label, name, kwargs, model, snapshots, round=round, qc_dir=qc_dir)
                scores = np.asarray(judge.score(bank), dtype=np.float64)
            write_npz(path, checksum=True, scores=scores)
        scores = np.load(path)["scores"]
        if true_dice is None:  # a truly unlabeled pool: no reliability to report
            return key, scores, {}
        rel = judge_reliability(scores, true_dice)
        return (
            key,
            scores,
            {
                "judge_spearman": rel.spearman,
                "judge_mean_image_spearman": rel.mean_image_spearman,
                "judge_top1_accuracy": rel.top1_accuracy,
                "judge_top1_dice": rel.top1_dice,
            },
        )

    def judge(
        self,
        seed: int,
        label: str,
        name: str,
        kwargs: dict[str, Any],
        model: nn.Module,
        snapshots: list[dict[str, torch.Tensor]],
        *,
        round: int = 1,
        qc_dir: Path | None = None,
    ) -> Judge:
        """The judge ``label``, built by :func:`rndpo.judges.build_judge`: a seeded judge gets the seed
        of round ``round`` (:func:`rndpo.pipeline.keys.round_seed`); a trained judge is fitted on the
        base ``model``'s proposals of the labeled split once per seed (cached in ``qc_dir``, default
        :meth:`fit_folder`); a composite judge's components are built here, from its kwargs."""
        labeled = self.splits.labeled
        fit = FitSource(
            qc_dir or self.fit_folder(seed, label, name, kwargs),
            lambda: self.proposals(model, snapshots, labeled.images, labeled.masks, seed),
            seed=seed,
            device=self.device,
            progress=self.progress,
        )

        def component(part: str, part_name: str, part_kwargs: dict[str, Any]) -> Judge:
            return self.judge(seed, part, part_name, part_kwargs, model, snapshots, round=round)

        return build_judge(
            name,
            kwargs,
            config=self.config.judges,
            seed=round_seed(seed, round),
            fit=fit,
            component=component,
        )

    def fit_folder(self, seed: int, label: str, name: str, kwargs: dict[str, Any]) -> Path:
        """Where the trained judge ``label`` (judge ``name``) of seed ``seed`` is cached, ``qc-<key>``
        (shared by the validation calibration, the pool scoring and every round)."""
        key = stage_key(self.base_key(seed), label, kwargs, key_settings(name, self.config.judges), seed)
        return self.stages / f"qc-{key}"

    def calibration(
        self, seed: int, model: nn.Module, snapshots: list[dict[str, torch.Tensor]]
    ) -> dict[str, JudgeCalibration]:
        """Every judge's reliability on proposals for the validation images (see
        :mod:`rndpo.judges.calibration`), cached; uses no test and no pool labels."""
        cfg = self.config
        key = stage_key(
            self.base_key(seed),
            "calibration",
            config_to_dict(cfg.proposals),
            config_to_dict(cfg.judges),
            config_to_dict(cfg.mining),
            seed,
            *calibration_settings(cfg.judges),
        )
        path = self.stages / f"calibration-{key}.json"
        if not stage_ready(path):
            val = self.splits.val
            log.info("seed %d: calibrating the judges on %d validation images", seed, len(val))
            with stage_timer(self.out, seed, "calibration"):
                bank = self.proposals(model, snapshots, val.images, val.masks, seed)
                scores = {
                    label: np.asarray(
                        self.judge(seed, label, name, kw, model, snapshots).score(bank), np.float64
                    )
                    for label, name, kw in calibration_judges(cfg.judges)
                }
                truth = OracleJudge().score(bank)
                result = calibrate_judges(
                    scores,
                    truth,
                    bank.masks,
                    cfg.judges,
                    cfg.mining,
                    seed=seed,
                    num_classes=label_classes(bank),
                )
            for label, c in result.items():
                ci = c.spearman_interval
                interval = "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
                log.info(
                    "  judge %s on validation: spearman %s%s, pair accuracy %s, top-pair accuracy %s,"
                    " flip rate (%s) %s",
                    label,
                    _fmt(c.spearman),
                    interval,
                    _fmt(c.pair_accuracy),
                    _fmt(c.top_pair_accuracy),
                    c.flip_miner,
                    _fmt(c.flip_rate),
                )
            write_json(path, {label: c.to_dict() for label, c in result.items()}, checksum=True)
        raw = json.loads(path.read_text())
        return {label: JudgeCalibration.from_dict(c) for label, c in raw.items()}

    def pairs(
        self, scores_key: str, bank: ProposalBank, scores: np.ndarray, miner: str, seed: int
    ) -> tuple[str, PairSet]:
        """The miner's pairs, cached; ``seed`` (the run's) drives the random strategies."""
        m = self.config.mining
        key = stage_key(scores_key, miner, config_to_dict(m), seed)
        path = self.stages / f"pairs-{key}.npz"
        if not stage_ready(path):
            pairs = mine_configured(bank.masks, scores, miner, m, seed=seed, num_classes=label_classes(bank))
            arrays = {f.name: getattr(pairs, f.name) for f in dataclasses.fields(pairs)}
            write_npz(path, checksum=True, **arrays)
        with np.load(path) as z:
            return key, PairSet(**{k: z[k] for k in z.files})


def shared_stages(
    stages: Stages, seed: int
) -> tuple[str, nn.Module, list[dict[str, torch.Tensor]], str, ProposalBank]:
    """Base model and bank of one seed (cached; see :func:`cached`)."""

    def both() -> tuple[str, nn.Module, list[dict[str, torch.Tensor]], str, ProposalBank]:
        base_key, model, snapshots = stages.base(seed)
        bank_key, bank = stages.bank(seed, base_key, model, snapshots)
        return base_key, model, snapshots, bank_key, bank

    return cached(both)
