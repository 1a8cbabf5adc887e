"""The end-to-end experiment: base model -> proposals -> judges -> pairs -> fine-tuning runs -> results.

Each stage is cached in the output folder under a key hashed from the part of the config it depends
on, and every file is written atomically, so an interrupted experiment (even ``kill -9``) resumes with
``resume=True`` and redoes only unfinished work. Output layout::

    OUT/config.json                     the resolved config and package version
    OUT/stages/base-<key>/              base U-Net (best + snapshots) per seed
    OUT/stages/bank-<key>/              proposal bank (memory-mappable .npy files)
    OUT/stages/calibration-<key>.json   every judge's reliability on the validation split
    OUT/stages/scores-<key>.npz         judge scores (N, K) and the judge's reliability
    OUT/stages/pairs-<key>.npz          mined pairs
    OUT/stages/policy-<key>.pt          a round's selected weights (``finetune.rounds > 1``, rndpo.pipeline.rounds)
    OUT/runs/<run>.json                 one fine-tuning run (curves, train log); .ckpt while running
    OUT/models/<run>.pt|json            the run's validation-selected model (``keep``), base.pt|json
    OUT/results.json|csv|md, curves.png, examples.png, rndpo.log
    OUT/.rndpo.lock                     held while a run uses the folder (names the owner's pid)

Stage folders hold a SHA256SUMS file and single-file stages a ``<file>.sha256``; ``resume`` verifies
them and recomputes a stage that fails (see :mod:`rndpo.storage`). Weights are loaded with
``torch.load(weights_only=True)``: nothing in an output folder can run code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist

from rndpo import __version__
from rndpo.config import (
    AUTO,
    JUDGE_FREE,
    TOP_PICK,
    ConfigError,
    DataConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    config_to_dict,
)
from rndpo.data import (
    DatasetSplits,
    SegmentationDataset,
    load_folder,
    load_nifti,
    load_npz,
    load_unlabeled,
    split_dataset,
    synthetic_dataset,
)
from rndpo.judges import (
    RANKING,
    EnsembleJudge,
    Judge,
    JudgeCalibration,
    LearnedQCJudge,
    OracleJudge,
    auto_label_smoothing,
    calibrate_judges,
    choose_strategy,
    ensemble_components,
    ensemble_weights,
    judge_reliability,
    make_judge,
    pair_quality,
)
from rndpo.metrics import evaluate
from rndpo.mining import PairSet, mine_configured
from rndpo.nets import UNet, save_model
from rndpo.pipeline.ladder import LADDER_METHOD, mask_pairs, oracle_pairs, perfect_label_pairs, pool_dice
from rndpo.pipeline.report import has_matplotlib, plot_pair_examples, write_reports
from rndpo.pipeline.rounds import JudgeRun, RoundOne, Rounds, finetune_key, method_key, round_note, round_seed
from rndpo.pipeline.rundir import RUN_MARKER, check_device, check_out, clear_out, lock_out, remove_leftovers
from rndpo.proposals import ProposalBank, generate_proposals
from rndpo.storage import (
    atomic_dir,
    atomic_write,
    load_weights,
    stage_key,
    stage_ready,
    write_json,
    write_npz,
)
from rndpo.training import (
    TrainingPairs,
    finetune,
    reference_logits,
    summarize_curve,
    summarize_selection,
    top_choice_pairs,
    train_base,
)

__all__ = [
    "KEEP_CHOICES",
    "ExperimentResult",
    "build_unet",
    "load_data",
    "load_pool",
    "run_experiment",
    "split_data",
]

log = logging.getLogger("rndpo")

_T = TypeVar("_T")

#: which fine-tuned models an experiment writes to OUT/models: the validation-selected one of every run
#: (and the base), also every run's final weights (``<run>-final.pt``), or none
KEEP_CHOICES: tuple[str, ...] = ("selected", "all", "none")
Keep = Literal["selected", "all", "none"]


@dataclass(frozen=True)
class ExperimentResult:
    """rows: one dict per (method, judge, miner, seed); out: the output folder; ladder: one headroom
    ladder dict per seed (see :mod:`rndpo.pipeline.ladder`), empty when the pool has no ground truth."""

    rows: list[dict[str, Any]]
    out: Path
    ladder: list[dict[str, Any]] = field(default_factory=list)


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
    """The seeded splits a config names; ``label_budget`` > 1 is a count of labeled images.

    With ``unlabeled_path`` every labeled image not in val or test trains the base model (the
    ``unlabeled`` split is then empty: the pool comes from ``unlabeled_path``).
    """
    budget = int(cfg.label_budget) if cfg.label_budget > 1 else cfg.label_budget
    if cfg.unlabeled_path:
        budget = 1.0
    return split_dataset(
        data,
        label_budget=budget,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
    )


def normalisation(cfg: DataConfig) -> dict[str, Any]:
    """How the loaders turned this config's files into model inputs (recorded with saved models)."""
    if cfg.kind == "nifti":
        return {"kind": "volume_percentile", "axis": cfg.nifti_axis, "window": None}
    return {"kind": "unit"}


def load_pool(cfg: DataConfig, splits: DatasetSplits) -> tuple[np.ndarray, np.ndarray | None]:
    """The unlabeled pool: images float32 (N, C, H, W) and their ground truth uint8 (N, H, W), or None
    for a truly unlabeled pool (``unlabeled_path``); at most ``max_unlabeled`` images (None: all)."""
    truth: np.ndarray | None
    if cfg.unlabeled_path:
        path = Path(cfg.unlabeled_path)
        if not path.exists():
            raise ConfigError(f"data.unlabeled_path: not found: {path} (relative to {Path.cwd()})")
        channels = splits.labeled.images.shape[1]
        images, _ = load_unlabeled(path, image_size=cfg.image_size, channels=channels)
        truth = None
    else:
        images, truth = splits.unlabeled.images, splits.unlabeled.masks
    if cfg.max_unlabeled is not None and len(images) > cfg.max_unlabeled:
        images = images[: cfg.max_unlabeled]
        truth = None if truth is None else truth[: cfg.max_unlabeled]
    return images, truth


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

    def __init__(
        self,
        config: RunConfig,
        out: Path,
        splits: DatasetSplits,
        pool: tuple[np.ndarray, np.ndarray | None],
        progress: bool,
        keep: Keep,
        name: str,
    ) -> None:
        self.config = config
        self.out = out
        self.stages = out / "stages"
        self.splits = splits
        self.progress = progress
        self.keep = keep
        self.dataset = name
        self.plots = True
        self.device = config.device
        self.test: SegmentationDataset | None = splits.test if len(splits.test) else None
        # the unlabeled pool: images float32 (N, C, H, W) and, in studies, their ground truth (N, H, W)
        self.pool, self.pool_truth = pool
        # the package version is part of every key: a new release never reuses an old cache
        self.data_key = stage_key(__version__, config_to_dict(config.data))

    def _model(self) -> UNet:
        return build_unet(self.config.model, self.splits.labeled.images.shape[1])

    def base_key(self, seed: int) -> str:
        cfg = self.config
        return stage_key(self.data_key, config_to_dict(cfg.model), config_to_dict(cfg.base), seed)

    def base(self, seed: int) -> tuple[str, UNet, list[dict[str, torch.Tensor]]]:
        cfg = self.config
        key = self.base_key(seed)
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
            log.info(
                "seed %d: generating %d proposals for %d unlabeled images",
                seed,
                cfg.proposals.k,
                len(self.pool),
            )
            bank = self._proposals(model, snapshots, self.pool, self.pool_truth, seed)
            bank.save(folder)
        return key, ProposalBank.load(folder, mmap=True)

    def _proposals(
        self,
        model: UNet,
        snapshots: list[dict[str, torch.Tensor]],
        images: np.ndarray,
        truth: np.ndarray | None,
        seed: int,
    ) -> ProposalBank:
        proposal_cfg = dataclasses.replace(self.config.proposals, seed=seed)
        return generate_proposals(
            model,
            images,
            config=proposal_cfg,
            snapshots=snapshots,
            ground_truth=truth,
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
        true_dice: np.ndarray | None,
        *,
        round: int = 1,
        qc_dir: Path | None = None,
    ) -> tuple[str, np.ndarray, dict[str, Any]]:
        """The judge's scores (N, K) of the bank, cached; with the bank's true Dice (N, K) (None for a
        truly unlabeled pool) also the judge's reliability on it.

        round: the fine-tuning round whose bank this is (rounds >= 2 key and reseed the noisy oracle by
        round); qc_dir: the learned QC judge's folder (default ``qc-<key>``), loaded when it is there,
        else fitted on the base model's labeled proposals and saved there (later rounds reuse round 1's).
        """
        extra = [self.config.judges.qc_steps, self.qc_settings()] if name == "learned_qc" else None
        key = stage_key(bank_key, label, kwargs, extra, seed, *([round] if round > 1 else []))
        path = self.stages / f"scores-{key}.npz"
        if not stage_ready(path):
            log.info("seed %d: scoring proposals with judge %s%s", seed, label, round_note(round))
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
        model: UNet,
        snapshots: list[dict[str, torch.Tensor]],
        *,
        round: int = 1,
        qc_dir: Path | None = None,
    ) -> Judge:
        """The judge ``label``; a learned QC judge is fitted on the base ``model``'s proposals of the
        labeled split once per seed (cached in ``qc_dir``, default :meth:`qc_folder`); an ensemble's
        kwargs name its components and weights; round: rounds >= 2 reseed the noisy oracle."""
        cfg = self.config
        if name == "noisy_oracle":
            return make_judge(name, seed=round_seed(seed, round), **kwargs)
        if name == "ensemble":
            parts = {lab: (n, kw) for lab, n, kw in ensemble_components(cfg.judges)}
            judges = [
                self.judge(seed, p, *parts[p], model, snapshots, round=round) for p in kwargs["components"]
            ]
            return EnsembleJudge(judges, kwargs["weights"])
        if name != "learned_qc":
            return make_judge(name, **kwargs)
        folder = qc_dir or self.qc_folder(seed, label, kwargs)
        if stage_ready(folder):
            return LearnedQCJudge.load(folder, device=self.device)
        qc = LearnedQCJudge(**self.qc_settings(), **kwargs)
        labeled = self.splits.labeled
        train_bank = self._proposals(model, snapshots, labeled.images, labeled.masks, seed)
        qc.fit(train_bank, steps=cfg.judges.qc_steps, seed=seed, progress=self.progress)
        qc.save(folder)
        return qc

    def qc_folder(self, seed: int, label: str, kwargs: dict[str, Any]) -> Path:
        """Where the learned QC judge ``label`` of seed ``seed`` is cached (shared by the validation
        calibration, the pool scoring and every round)."""
        qc = [self.config.judges.qc_steps, self.qc_settings()]
        key = stage_key(self.base_key(seed), label, kwargs, qc, seed)
        return self.stages / f"qc-{key}"

    def qc_settings(self) -> dict[str, Any]:
        """The learned QC judge's training options from ``[judges]`` (part of its cache keys)."""
        j = self.config.judges
        return {
            "n_synthetic": j.qc_synthetic,
            "rank_weight": j.qc_rank_weight,
            "jitter": j.qc_jitter,
            "tta": j.qc_tta,
        }

    def calibration(
        self, seed: int, model: UNet, snapshots: list[dict[str, torch.Tensor]]
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
            *([RANKING] if "ensemble" in cfg.judges.names else []),
        )
        path = self.stages / f"calibration-{key}.json"
        if not stage_ready(path):
            val = self.splits.val
            log.info("seed %d: calibrating the judges on %d validation images", seed, len(val))
            bank = self._proposals(model, snapshots, val.images, val.masks, seed)
            labels = [j for j in cfg.judges.judge_labels() if j[1] != "ensemble"]
            if "ensemble" in cfg.judges.names:
                labels += ensemble_components(cfg.judges)
            scores = {
                label: np.asarray(self.judge(seed, label, name, kw, model, snapshots).score(bank), np.float64)
                for label, name, kw in dict((j[0], j) for j in labels).values()
            }
            truth = OracleJudge().score(bank)
            result = calibrate_judges(scores, truth, bank.masks, cfg.judges, cfg.mining, seed=seed)
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
            pairs = mine_configured(bank.masks, scores, miner, m, seed=seed)
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
    keep: Keep = "selected",
) -> ExperimentResult:
    """Run every (method, judge, miner, seed) of ``config``; write results into ``out``.

    An existing non-empty ``out`` needs ``resume=True`` (reuse finished stages) or ``overwrite=True``
    (empty it first); either needs ``out`` to hold an rndpo run. Everything that can be checked (the
    folder, the device, the data) is checked before anything is created or removed. The folder is
    locked for the whole run; leftovers of interrupted writes are removed on start.
    keep: which models to write to ``out/models`` (see :data:`KEEP_CHOICES`). The log lines of the run
    are also appended to ``out/rndpo.log``.
    """
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {list(KEEP_CHOICES)}, got {keep!r}")
    out = Path(out)
    if _rank() == 0:
        check_out(out, resume=resume, overwrite=overwrite)
    check_device(config.device)
    data = load_data(config.data)
    splits = split_data(config.data, data)
    if len(splits.val) == 0:
        raise ConfigError("data.val_fraction leaves no validation images: models are selected on them")
    pool = load_pool(config.data, splits)
    _barrier()
    lock: AbstractContextManager[Any] = lock_out(out) if _rank() == 0 else nullcontext()
    with lock:
        stages = _Stages(config, out, splits, pool, progress, keep, data.name)
        return _run_locked(stages, overwrite=overwrite)


def _run_locked(stages: _Stages, *, overwrite: bool) -> ExperimentResult:
    config, out, splits = stages.config, stages.out, stages.splits
    marker = out / RUN_MARKER
    if _rank() == 0:
        if overwrite and marker.exists():
            clear_out(out)
        remove_leftovers(out)
    with _log_file(out / "rndpo.log" if _rank() == 0 else None):
        log.info(
            "data %s: %d labeled, %d unlabeled%s, %d val, %d test images of %s",
            stages.dataset,
            len(splits.labeled),
            len(stages.pool),
            " (no ground truth)" if stages.pool_truth is None else "",
            len(splits.val),
            len(splits.test),
            "x".join(map(str, splits.labeled.images.shape[1:])),
        )
        if _rank() == 0:
            write_json(marker, {"version": __version__, "config": config_to_dict(config)})
        _barrier()
        stages.plots = has_matplotlib()
        if not stages.plots:
            log.info("matplotlib is not installed: skipping curves.png and examples.png (rndpo[plots])")
        rows: list[dict[str, Any]] = []
        ladder: list[dict[str, Any]] = []
        for seed in config.seeds:
            seed_rows, entry = _run_seed(stages, seed)
            rows += seed_rows
            if entry is not None:
                ladder.append(entry)
        if _rank() == 0:
            write_reports(rows, config, out, plots=stages.plots, dataset=stages.dataset, ladder=ladder)
        _barrier()
    return ExperimentResult(rows, out, ladder)


class _log_file:
    """Append the ``rndpo`` logger's INFO lines to ``path`` while the block runs (None: do nothing)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.handler: logging.Handler | None = None
        self.level = log.level

    def __enter__(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setLevel(logging.INFO)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(self.handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)

    def __exit__(self, *exc: object) -> None:
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()
            log.setLevel(self.level)


def _cached(stage: Callable[[], _T]) -> _T:
    """A cached stage under torchrun: rank 0 computes and caches it first; after the barrier every rank
    calls it again, which reads the cache. With one process it is simply called (twice: the second
    call only reads)."""
    if _rank() == 0:
        stage()
    _barrier()
    return stage()


def _shared_stages(
    stages: _Stages, seed: int
) -> tuple[str, UNet, list[dict[str, torch.Tensor]], str, ProposalBank]:
    """Base model and bank of one seed (cached; see :func:`_cached`)."""

    def both() -> tuple[str, UNet, list[dict[str, torch.Tensor]], str, ProposalBank]:
        base_key, model, snapshots = stages.base(seed)
        bank_key, bank = stages.bank(seed, base_key, model, snapshots)
        return base_key, model, snapshots, bank_key, bank

    return _cached(both)


def _training_data(
    stages: _Stages,
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


# label_smoothing = "auto" at or above this flip rate gets a warning with loss_type robust (it collapsed
# from 0.24 in the robust_cpu study; docs/judges.md)
ROBUST_WARN_SMOOTHING = 0.2


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _val_stats(calib: JudgeCalibration) -> dict[str, Any]:
    """The validation estimates a row carries next to the pool's realised judge figures."""
    return {
        "val_judge_spearman": calib.spearman,
        "val_judge_spearman_interval": calib.spearman_interval,
        "val_judge_kendall": calib.kendall,
        "val_judge_top1_accuracy": calib.top1_accuracy,
        "val_judge_mean_image_spearman": calib.mean_image_spearman,
        "val_pair_accuracy": calib.pair_accuracy,
        "val_top_pair_accuracy": calib.top_pair_accuracy,
    }


def _resolve_miner(
    miner: str, calib: JudgeCalibration, label: str, seed: int
) -> tuple[str | None, str | None]:
    """(the miner to mine with, why) for one ``mining.strategies`` entry; ``auto`` is decided by
    :func:`rndpo.judges.calibration.choose_strategy` and may abstain (None)."""
    if miner != AUTO:
        return miner, None
    choice = choose_strategy(calib)
    log.info(
        "seed %d, judge %s: strategy auto -> %s (%s)", seed, label, choice.miner or "no pairs", choice.reason
    )
    return choice.miner, choice.reason


def _model_name(stages: _Stages, seed: int) -> str:
    """base.pt for a single seed, base-s<seed>.pt when the experiment has several."""
    return "base" if len(stages.config.seeds) == 1 else f"base-s{seed}"


def _model_info(stages: _Stages, **fields: Any) -> dict[str, Any]:
    cfg = stages.config
    return {
        "in_channels": int(stages.splits.labeled.images.shape[1]),
        "image_size": cfg.data.image_size,
        "normalisation": normalisation(cfg.data),
        "threshold": 0.5,
        "dataset": stages.dataset,
        **fields,
    }


def _save_base(stages: _Stages, seed: int, model: UNet) -> None:
    dev = stages.device
    val_dice = evaluate(model, stages.splits.val, distances=False, device=dev).means()["dice"]
    test = stages.test
    test_dice = (
        evaluate(model, test, distances=False, device=dev).means()["dice"] if test is not None else None
    )
    log.info("seed %d: base model: validation Dice %.4f", seed, val_dice)
    info = _model_info(stages, method="base", judge=None, miner=None, seed=seed, selected_step=None)
    save_model(
        stages.out / "models" / f"{_model_name(stages, seed)}.pt",
        model,
        **info,
        val_dice=val_dice,
        test_dice=test_dice,
    )


def _cached_run(
    stages: _Stages,
    model: UNet,
    base_state: dict[str, torch.Tensor],
    data: TrainingPairs,
    method: MethodConfig,
    run_id: str,
    seed: int,
    ref: torch.Tensor,
    base_hd95: float | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """One fine-tuning run from the base state, cached as OUT/runs/<run_id>.json with ``extra`` (the
    ladder's rungs and the judge-free baselines; no model file is kept for them)."""
    path = stages.out / "runs" / f"{run_id}.json"
    if not stage_ready(path):
        log.info("fine-tuning %s on %d pairs", run_id, len(data))
        model.load_state_dict(base_state)
        record, _, _ = _finetune_run(stages, model, data, method, seed, ref, path, base_hd95)
        record.update(extra)
        if _rank() == 0:
            write_json(path, record, checksum=True)
            path.with_suffix(".ckpt").unlink(missing_ok=True)
            path.with_suffix(".ckpt.sha256").unlink(missing_ok=True)
        _barrier()
    return cast(dict[str, Any], json.loads(path.read_text()))


def _run_seed(stages: _Stages, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of one seed, and its headroom ladder (None when the pool has no ground truth)."""
    config = stages.config
    _, model, snapshots, bank_key, bank = _shared_stages(stages, seed)
    test = stages.test
    ref = reference_logits(model, bank.images, device=config.device)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    base_hd95 = evaluate(model, test, device=config.device).means()["hd95"] if test is not None else None
    true_dice = OracleJudge().score(bank) if bank.ground_truth is not None else None
    calibration = _cached(partial(stages.calibration, seed, model, snapshots))
    if _rank() == 0 and stages.keep != "none":
        _save_base(stages, seed, model)
    has_truth = true_dice is not None and test is not None
    ladder: dict[str, Any] = {"seed": seed, "judges": {}, "methods": {}}
    ft = finetune_key(config.finetune)
    multi = Rounds(stages, model, snapshots, base_state, base_hd95) if config.finetune.rounds > 1 else None
    if test is not None:
        base_eval = evaluate(model, test, distances=False, device=config.device)
        ladder |= {"base_dice": float(base_eval.dice.mean()), "base_dice_per_image": base_eval.dice.tolist()}
        labeled = stages.splits.labeled
        rungs = [("labeled_only", mask_pairs(labeled.images, labeled.masks))]
        if true_dice is not None:
            ladder |= pool_dice(bank, true_dice)
            rungs += [
                ("perfect_label", perfect_label_pairs(bank)),
                ("oracle_best_of_k", oracle_pairs(bank, true_dice)),
            ]
        for rung, rung_data in rungs:
            key = stage_key(bank_key, rung, method_key(LADDER_METHOD), ft)
            record = _cached_run(
                stages,
                model,
                base_state,
                rung_data,
                LADDER_METHOD,
                f"ladder-{rung}-s{seed}-{key}",
                seed,
                ref,
                base_hd95,
                {"rung": rung, "seed": seed},
            )
            ladder[f"{rung}_dice"] = record["final_dice"]
            ladder[f"{rung}_peak_dice"] = record["peak_dice"]
            ladder[f"{rung}_dice_per_image"] = record["final_dice_per_image"]
    rows = []
    pool_pairs = TrainingPairs(
        bank.images,
        bank.masks,
        np.arange(len(bank.images), dtype=np.int64),
        np.zeros(len(bank.images), dtype=np.int64),
        np.full(len(bank.images), -1, dtype=np.int64),
    )
    for method_name, method in config.methods.items():
        if method.objective not in JUDGE_FREE:
            continue
        key = stage_key(bank_key, "pool", method_key(method), ft)
        extra = dict(
            method=method_name,
            judge="none",
            miner="pool",
            seed=seed,
            n_pairs=len(pool_pairs),
            pair_accuracy=None,
            harmful_leverage=None,
            judge_spearman=None,
            judge_top1_accuracy=None,
            judge_top1_dice=None,
        )
        run_id = f"{method_name}-none-pool-s{seed}-{key}"
        row = _cached_run(stages, model, base_state, pool_pairs, method, run_id, seed, ref, base_hd95, extra)
        rows.append(row)
        ladder["methods"][f"{method_name} (no judge)"] = row["final_dice"]
    for label, name, kwargs in config.judges.judge_labels():
        if name == "ensemble":
            parts = [part[0] for part in ensemble_components(config.judges)]
            kwargs = {
                "components": parts,
                "weights": ensemble_weights(calibration, parts),
                "ranking": RANKING,
            }
        scores_key, scores, judge_stats = _cached(
            partial(stages.scores, seed, bank_key, bank, label, name, kwargs, model, snapshots, true_dice)
        )
        calib = calibration[label]
        val_stats = _val_stats(calib)
        ladder["judges"][label] = {
            "top1_dice": judge_stats.get("judge_top1_dice"),
            "spearman": judge_stats.get("judge_spearman"),
            "image_spearman": judge_stats.get("judge_mean_image_spearman"),
            "val_image_spearman": calib.mean_image_spearman,
            "top1_accuracy": judge_stats.get("judge_top1_accuracy"),
            "val_spearman": calib.spearman,
            "val_top1_accuracy": calib.top1_accuracy,
            "val_pair_accuracy": calib.pair_accuracy,
        }
        for method_name, method in config.methods.items():
            if method.objective in JUDGE_FREE:
                continue
            miners = [TOP_PICK] if method.objective == "sft_top" else list(config.mining.strategies)
            for miner in miners:
                resolved, reason = _resolve_miner(miner, calib, label, seed)
                if resolved is None:  # auto abstains: no pairs, the run keeps the base model
                    pairs_key = stage_key(scores_key, AUTO, "abstain")
                    data = TrainingPairs.from_pairs(bank.images, bank.masks, PairSet.empty())
                    quality: dict[str, Any] = {"n_pairs": 0}
                    if true_dice is not None:
                        quality |= {"pair_accuracy": None, "harmful_leverage": None, "flip_rate": None}
                else:
                    pairs_key, data, quality = _training_data(
                        stages, scores_key, bank, scores, true_dice, resolved, seed
                    )
                run_method, smoothing = method, method.label_smoothing
                if method.label_smoothing == AUTO:
                    smoothing = auto_label_smoothing(calib, resolved or "top_vs_bottom")
                    run_method = dataclasses.replace(method, label_smoothing=smoothing)
                    log.info("%s with judge %s: label_smoothing auto -> %.4f", method_name, label, smoothing)
                    if method.loss_type == "robust" and smoothing >= ROBUST_WARN_SMOOTHING:
                        log.warning(
                            "%s: loss_type robust with label_smoothing %.2f: its loss is unbounded below and"
                            " collapsed on Kvasir-SEG at flip rates from 0.24 (docs/judges.md); loss_type"
                            " cdpo uses the same flip rate safely",
                            method_name,
                            smoothing,
                        )
                run_fields = {
                    "miner_resolved": resolved,
                    "miner_reason": reason,
                    "abstained": resolved is None,
                    "label_smoothing_used": smoothing,
                    **val_stats,
                    "val_flip_rate": calib.flip_rates.get(resolved) if resolved else None,
                }
                key = stage_key(pairs_key, method_key(run_method), ft)
                run_id = f"{method_name}-{label}-{miner}-s{seed}-{key}".replace("@", "")
                run = JudgeRun(method_name, run_method, label, name, kwargs, miner, seed, resolved)
                row = _judge_run(
                    stages,
                    model,
                    base_state,
                    data,
                    run,
                    ref,
                    base_hd95,
                    run_id,
                    {**quality, **judge_stats, **run_fields},
                    last=multi is None or resolved is None,
                    policy=None if multi is None or resolved is None else stages.stages / f"policy-{key}.pt",
                )
                if multi is not None and resolved is not None:  # an abstaining auto miner has no rounds
                    first = RoundOne(key, row, bank, true_dice, stages.qc_folder(seed, label, kwargs))
                    row = {**multi.run(run, first), **run_fields}
                rows.append(row)
                ladder["methods"][f"{method_name} ({label}, {miner})"] = row["final_dice"]
                examples = stages.out / "examples.png"
                first_pairs = miner != TOP_PICK and len(data) and not examples.exists()
                if first_pairs and _rank() == 0 and stages.plots:
                    plot_pair_examples(
                        bank.images,
                        bank.masks,
                        data.image,
                        data.chosen,
                        data.rejected,
                        examples,
                        ground_truth=bank.ground_truth,
                        scores=scores,
                        true_dice=true_dice,
                        title=f"{stages.dataset}: judge {label}, miner {miner}",
                    )
    model.load_state_dict(base_state)
    return rows, ladder if has_truth else None


def _judge_run(
    stages: _Stages,
    model: UNet,
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
        record, selected, final = _finetune_run(
            stages, model, data, run.method, run.seed, ref, path, base_hd95, reference
        )
        record.update(run=run_id, method=run.method_name, judge=run.label, miner=run.miner, seed=run.seed)
        record.update(({"round": round} if round > 1 else {}), **fields)
        if _rank() == 0:
            if last and stages.keep != "none":
                info = _model_info(
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
        _barrier()
    elif last and stages.keep != "none" and not model_path.exists():
        log.warning("run %s is cached but its model was not kept (an earlier --keep none)", run_id)
    row = cast(dict[str, Any], json.loads(path.read_text()))
    row["model"] = str(model_path.relative_to(stages.out)) if last and model_path.exists() else None
    return row


def _finetune_run(
    stages: _Stages,
    model: UNet,
    data: TrainingPairs,
    method: MethodConfig,
    seed: int,
    ref: torch.Tensor,
    path: Path,
    base_hd95: float | None,
    reference: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The run's record (summaries and curves), its validation-selected weights and its final weights;
    ``reference``: see :func:`rndpo.training.finetune.finetune`."""
    config = stages.config
    test, val = stages.test, stages.splits.val
    if len(data) == 0:
        log.warning("no pairs were mined: the run keeps the base model")
        dev = config.device
        per_image = evaluate(model, test, distances=False, device=dev).dice if test is not None else None
        dice0 = float(per_image.mean()) if per_image is not None else None
        val0 = evaluate(model, val, distances=False, device=dev).means()["dice"]
        steps = [0, config.finetune.steps]
        curve = [(s, dice0) for s in steps] if dice0 is not None else []
        val_curve = [(s, val0) for s in steps]
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        record = _record(stages, curve, val_curve, 0, base_hd95, base_hd95, [], per_image)
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
    )
    record = _record(
        stages,
        result.curve,
        result.val_curve,
        result.selected_step,
        base_hd95,
        result.final_hd95,
        result.train_log,
        result.final_dice_per_image,
    )
    return record, result.selected_state_dict, result.state_dict


def _record(
    stages: _Stages,
    curve: list[tuple[int, float]],
    val_curve: list[tuple[int, float]],
    selected_step: int,
    base_hd95: float | None,
    final_hd95: float | None,
    train_log: list[dict[str, float]],
    dice_per_image: Any = None,
) -> dict[str, Any]:
    """Summaries and curves of one run; ``dice_per_image`` (test images,) of the final weights or None."""
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
