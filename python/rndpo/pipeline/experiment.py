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
    OUT/stages/policy-<key>.pt          a round's selected weights (``finetune.rounds > 1``: pipeline.rounds)
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
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rndpo import __version__
from rndpo.config import (
    AUTO,
    JUDGE_FREE,
    TOP_PICK,
    ConfigError,
    RunConfig,
    config_to_dict,
)
from rndpo.data import VolumeSlices
from rndpo.judges import (
    JudgeCalibration,
    OracleJudge,
    auto_label_smoothing,
    calibrated_kwargs,
    choose_strategy,
)
from rndpo.metrics import evaluate
from rndpo.mining import PairSet
from rndpo.pipeline.distributed import barrier, cached, rank
from rndpo.pipeline.inputs import load_data, load_pool, split_data
from rndpo.pipeline.keys import finetune_key, method_key
from rndpo.pipeline.ladder import LADDER_METHOD, mask_pairs, oracle_pairs, perfect_label_pairs, pool_dice
from rndpo.pipeline.report import has_matplotlib, plot_pair_examples, write_reports
from rndpo.pipeline.rounds import RoundOne, Rounds
from rndpo.pipeline.rundir import (
    RUN_MARKER,
    check_device,
    check_out,
    clear_out,
    lock_out,
    open_log,
    remove_leftovers,
)
from rndpo.pipeline.runs import JudgeRun, cached_run, judge_run, save_base, training_data
from rndpo.pipeline.stages import KEEP_CHOICES, Keep, Stages, shared_stages
from rndpo.pipeline.timings import read_timings
from rndpo.storage import (
    stage_key,
    write_json,
)
from rndpo.training import (
    TrainingPairs,
    reference_logits,
)

__all__ = [
    "ExperimentResult",
    "run_experiment",
]

log = logging.getLogger("rndpo")


@dataclass(frozen=True)
class ExperimentResult:
    """rows: one dict per (method, judge, miner, seed); out: the output folder; ladder: one headroom
    ladder dict per seed (see :mod:`rndpo.pipeline.ladder`), empty when there is no test split; without
    ground truth on the pool it holds the rungs that need no pool labels."""

    rows: list[dict[str, Any]]
    out: Path
    ladder: list[dict[str, Any]] = field(default_factory=list)


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
    if rank() == 0:
        check_out(out, resume=resume, overwrite=overwrite)
    check_device(config.device)
    with _held_lines() as early:  # what loading says (resizing, skip_empty) goes to rndpo.log too
        data = load_data(config.data)
        splits = split_data(config.data, data)
        if len(splits.val) == 0:
            raise ConfigError("data.val_fraction leaves no validation images: models are selected on them")
        pool = load_pool(config.data, splits)
    barrier()
    lock: AbstractContextManager[Any] = lock_out(out) if rank() == 0 else nullcontext()
    with lock:
        stages = Stages(config, out, splits, pool, progress=progress, keep=keep, dataset=data.name)
        return _run_locked(stages, overwrite=overwrite, early=early.records)


def _run_locked(stages: Stages, *, overwrite: bool, early: Sequence[logging.LogRecord]) -> ExperimentResult:
    config, out, splits = stages.config, stages.out, stages.splits
    marker = out / RUN_MARKER
    if rank() == 0:
        if overwrite and marker.exists():
            clear_out(out)
        remove_leftovers(out)
    with _log_file(out / "rndpo.log" if rank() == 0 else None, early):
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
        if isinstance(splits.val, VolumeSlices):
            log.info(
                "validation and test Dice are per volume (%d and %d volumes, every slice kept, empty ones"
                " too): intersections and sizes are summed over a volume's slices",
                np.unique(splits.val.volumes).size,
                np.unique(splits.test.volumes).size if isinstance(splits.test, VolumeSlices) else 0,
            )
        if rank() == 0:
            write_json(marker, {"version": __version__, "config": config_to_dict(config)})
        barrier()
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
        if rank() == 0:
            recorded = read_timings(out)
            timings = {f"seed {s}": recorded[f"seed {s}"] for s in config.seeds if f"seed {s}" in recorded}
            write_reports(
                rows, config, out, plots=stages.plots, dataset=stages.dataset, ladder=ladder, timings=timings
            )
        barrier()
    return ExperimentResult(rows, out, ladder)


class _held_lines(logging.Handler):
    """Keep the ``rndpo`` logger's INFO lines (in ``records``) while the block runs, before the output
    folder may be written to; :class:`_log_file` writes them first."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.level_before = log.level

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> _held_lines:
        log.addHandler(self)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        log.removeHandler(self)
        log.setLevel(self.level_before)


class _log_file:
    """Append the ``rndpo`` logger's INFO lines to ``path`` while the block runs, after the ``early``
    ones (None: do nothing). A symbolic link at ``path`` is refused (ValueError), never followed."""

    def __init__(self, path: Path | None, early: Sequence[logging.LogRecord] = ()) -> None:
        self.path = path
        self.early = early
        self.handler: logging.StreamHandler[Any] | None = None
        self.level = log.level

    def __enter__(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.StreamHandler(open_log(self.path))
        self.handler.setLevel(logging.INFO)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        for record in self.early:
            self.handler.handle(record)
        log.addHandler(self.handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)

    def __exit__(self, *exc: object) -> None:
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()
            self.handler.stream.close()
            log.setLevel(self.level)


# label_smoothing = "auto" at or above this flip rate gets a warning with loss_type robust (it collapsed
# from 0.24 in the robust_cpu study; docs/judges.md)
ROBUST_WARN_SMOOTHING = 0.2


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


def _run_seed(stages: Stages, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of one seed, and its headroom ladder (None without a test split; without ground truth
    on the pool, only the rungs that need no pool labels)."""
    config = stages.config
    _, model, snapshots, bank_key, bank = shared_stages(stages, seed)
    test = stages.test
    ref = reference_logits(model, bank.images, device=config.device)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    base_hd95 = (
        evaluate(model, test, device=config.device, roi_size=stages.roi_size).means()["hd95"]
        if test is not None
        else None
    )
    true_dice = OracleJudge().score(bank) if bank.ground_truth is not None else None
    calibration = cached(partial(stages.calibration, seed, model, snapshots))
    if rank() == 0 and stages.keep != "none":
        save_base(stages, seed, model)
    ladder: dict[str, Any] = {"seed": seed, "judges": {}, "methods": {}}
    ft = finetune_key(config.finetune)
    multi = Rounds(stages, model, snapshots, base_state, base_hd95) if config.finetune.rounds > 1 else None
    if test is not None:
        base_eval = evaluate(model, test, distances=False, device=config.device, roi_size=stages.roi_size)
        if base_eval.n_excluded:
            log.info(
                "seed %d: %d test volumes are empty in truth and in the base model's prediction: left out"
                " of its test Dice",
                seed,
                base_eval.n_excluded,
            )
        ladder |= {
            "base_dice": base_eval.means()["dice"],
            "base_dice_per_image": base_eval.dice.tolist(),
            "pool_truth": true_dice is not None,
        }
        labeled = stages.splits.labeled
        # rungs that need no pool labels; the pool's true masks add the two ceilings
        rungs = [("labeled_only", mask_pairs(labeled.images, labeled.masks))]
        if true_dice is not None:
            ladder |= pool_dice(bank, true_dice)
            rungs += [
                ("perfect_label", perfect_label_pairs(bank)),
                ("oracle_best_of_k", oracle_pairs(bank, true_dice)),
            ]
        for rung, rung_data in rungs:
            key = stage_key(bank_key, rung, method_key(LADDER_METHOD), ft)
            record = cached_run(
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
                f"ladder {rung}",
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
        row = cached_run(
            stages,
            model,
            base_state,
            pool_pairs,
            method,
            run_id,
            seed,
            ref,
            base_hd95,
            extra,
            f"{method_name} (no judge)",
        )
        rows.append(row)
        ladder["methods"][f"{method_name} (no judge)"] = row["final_dice"]
    for label, name, kwargs in config.judges.judge_labels():
        kwargs = calibrated_kwargs(name, kwargs, config.judges, calibration)
        scores_key, scores, judge_stats = cached(
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
                    pairs_key, data, quality = training_data(
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
                row = judge_run(
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
                    first = RoundOne(key, row, bank, true_dice, stages.fit_folder(seed, label, name, kwargs))
                    row = {**multi.run(run, first), **run_fields}
                rows.append(row)
                ladder["methods"][f"{method_name} ({label}, {miner})"] = row["final_dice"]
                examples = stages.out / "examples.png"
                first_pairs = miner != TOP_PICK and len(data) and not examples.exists()
                if first_pairs and rank() == 0 and stages.plots:
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
    return rows, ladder if test is not None else None
