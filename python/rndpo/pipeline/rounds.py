"""Rounds that compound: ``finetune.rounds = N`` repeats each judge-driven run N times.

Round 1 is the ordinary run from the base model (same stage keys and numbers as ``rounds = 1``). Round
r >= 2 starts from round r-1's validation-selected weights (what the product keeps), generates a new
proposal bank on the pool with that policy (same proposal config, seed :func:`round_seed`; the
``snapshot`` source keeps the base model's training snapshots), scores it with the same judge (the
learned QC judge is round 1's network, reused, not refitted: it was trained on labeled proposals and
judges any mask), mines it with the same miner and fine-tunes against the reference that
``finetune.reference`` names: the base model (``"base"``) or round r-1's policy (``"previous"``).

Every round's bank, scores, pairs, run record and selected weights are stages keyed on the previous
round's run key, so changing round 1 recomputes round 2 and an interrupted round resumes from its
checkpoint. Judge-free methods and the ladder's rungs run once. Output of round r >= 2::

    OUT/stages/bank-<key>/, scores-<key>.npz, pairs-<key>.npz   the round's bank, scores and pairs
    OUT/stages/policy-<run key>.pt                              a round's selected weights (rounds > 1)
    OUT/runs/<method>-<judge>-<miner>-s<seed>-r<round>-<key>.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rndpo.config import config_to_dict
from rndpo.judges import OracleJudge, calibrate_judge
from rndpo.pipeline.distributed import cached
from rndpo.pipeline.keys import finetune_key, method_key, round_seed
from rndpo.pipeline.ladder import pool_dice
from rndpo.pipeline.runs import JudgeRun, judge_run, training_data
from rndpo.pipeline.stages import Stages
from rndpo.proposals import ProposalBank
from rndpo.storage import load_weights, stage_key, stage_ready, write_json
from rndpo.training import reference_logits

__all__ = [
    "ROUND_FIELDS",
    "RoundOne",
    "Rounds",
    "choose_reference",
    "round_entry",
]


#: the figures of one round in a row's ``rounds`` list (None where the pool or test set lacks ground truth)
ROUND_FIELDS: tuple[str, ...] = (
    "round",
    "run",
    "start_dice",
    "selected_dice",
    "final_dice",
    "peak_dice",
    "selected_val_dice",
    "n_pairs",
    "pair_accuracy",
    "judge_spearman",
    "judge_top1_accuracy",
    "judge_top1_dice",
    "pool_base_dice",
    "pool_median_proposal_dice",
    "pool_best_of_k_dice",
)


def choose_reference(reference: str, base: torch.nn.Module, previous: torch.nn.Module) -> torch.nn.Module:
    """The frozen reference of a round >= 2: the ``base`` model or the ``previous`` round's policy."""
    if reference == "base":
        return base
    if reference == "previous":
        return previous
    raise ValueError(f"reference must be 'base' or 'previous', got {reference!r}")


def round_entry(
    round: int,
    record: dict[str, Any],
    bank: ProposalBank,
    true_dice: np.ndarray | None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One round's figures (:data:`ROUND_FIELDS`) from its run record and its bank on the pool, with
    ``calibration``: the judge's validation calibration on the proposals of the policy the round
    starts from (:meth:`rndpo.judges.calibration.JudgeCalibration.to_dict`; None where there is none)."""
    pool = pool_dice(bank, true_dice) if true_dice is not None and bank.probs is not None else {}
    entry = {f: record.get(f) for f in ROUND_FIELDS}
    entry |= {"round": round, "start_dice": record.get("base_dice"), **pool, "calibration": calibration}
    return entry


@dataclass(frozen=True)
class RoundOne:
    """Round 1 of a run: its stage key, its row, the base bank, its true Dice (N, K) or None, and the
    folder of its learned QC judge (used only by ``learned_qc``)."""

    key: str
    row: dict[str, Any]
    bank: ProposalBank
    true_dice: np.ndarray | None
    qc_dir: Path


class Rounds:
    """Runs rounds 2..N of the judge-driven runs of one seed (see the module docstring)."""

    def __init__(
        self,
        stages: Stages,
        base: nn.Module,
        snapshots: list[dict[str, torch.Tensor]],
        base_state: dict[str, torch.Tensor],
        base_hd95: float | None,
    ) -> None:
        self.stages = stages
        self.snapshots = snapshots
        self.base_state = base_state
        self.base_hd95 = base_hd95
        self.base = stages.model()
        self.base.load_state_dict(base_state)
        self.base.eval()

    def run(self, run: JudgeRun, first: RoundOne) -> dict[str, Any]:
        """Rounds 2..N of ``run`` after ``first``; the row of the last round with ``rounds`` (one
        :func:`round_entry` per round) and the base figures of round 1."""

        stages, cfg = self.stages, self.stages.config
        total = cfg.finetune.rounds
        base_calibration = cached(partial(stages.calibration, run.seed, self.base, self.snapshots)).get(
            run.label
        )
        first_calibration = base_calibration.to_dict() if base_calibration is not None else None
        entries = [round_entry(1, first.row, first.bank, first.true_dice, first_calibration)]
        prev_key, row = first.key, first.row
        for r in range(2, total + 1):
            policy = stages.model()
            policy.load_state_dict(load_weights(stages.stages / f"policy-{prev_key}.pt")["selected"])
            policy.eval()
            bank_key, bank = cached(partial(self._bank, policy, prev_key, run.seed, r))
            true_dice = OracleJudge().score(bank) if bank.ground_truth is not None else None
            score = partial(stages.scores, run.seed, bank_key, bank, run.label, run.judge, run.kwargs)
            scores_key, scores, judge_stats = cached(
                partial(score, self.base, self.snapshots, true_dice, round=r, qc_dir=first.qc_dir)
            )
            pairs_key, data, quality = training_data(
                stages, scores_key, bank, scores, true_dice, run.mine_with or run.miner, run.seed
            )
            reference = choose_reference(cfg.finetune.reference, self.base, policy)
            ref = reference_logits(reference, bank.images, device=cfg.device)
            key = stage_key(pairs_key, method_key(run.method), finetune_key(cfg.finetune), r)
            key = stage_key(key, cfg.finetune.reference)
            run_id = f"{run.method_name}-{run.label}-{run.miner}-s{run.seed}-r{r}-{key}".replace("@", "")
            row = judge_run(
                stages,
                policy,
                {k: v.clone() for k, v in policy.state_dict().items()},
                data,
                run,
                ref,
                self.base_hd95,
                run_id,
                {**quality, **judge_stats},
                last=r == total,
                policy=None if r == total else stages.stages / f"policy-{key}.pt",
                round=r,
                reference=reference,
            )
            calibration = cached(partial(self._calibration, policy, run, prev_key, r, first.qc_dir))
            entries.append(round_entry(r, row, bank, true_dice, calibration))
            prev_key = key
        base_fields = ("base_dice", "base_val_dice", "base_hd95")
        return {**row, **{f: first.row.get(f) for f in base_fields}, "rounds": entries}

    def _calibration(
        self, policy: nn.Module, run: JudgeRun, prev_key: str, round: int, qc_dir: Path
    ) -> dict[str, Any]:
        """The judge's calibration (as a dict) on validation proposals of round ``round``'s starting
        ``policy``: what validation says of the judge on the banks this round mines (cached)."""
        stages, cfg = self.stages, self.stages.config
        key = stage_key(
            prev_key, "calibration", round, config_to_dict(cfg.proposals), config_to_dict(cfg.mining)
        )
        path = stages.stages / f"calibration-{key}.json"
        if not stage_ready(path):
            val = stages.splits.val
            seed = round_seed(run.seed, round)
            bank = stages.proposals(policy, self.snapshots, val.images, val.masks, seed)
            judge = stages.judge(
                run.seed,
                run.label,
                run.judge,
                run.kwargs,
                self.base,
                self.snapshots,
                round=round,
                qc_dir=qc_dir,
            )
            scores = np.asarray(judge.score(bank), dtype=np.float64)
            result = calibrate_judge(
                run.label, scores, OracleJudge().score(bank), bank.masks, cfg.mining, seed=run.seed
            )
            write_json(path, result.to_dict(), checksum=True)
        return dict(json.loads(path.read_text()))

    def _bank(self, policy: nn.Module, prev_key: str, seed: int, round: int) -> tuple[str, ProposalBank]:
        """Round ``round``'s proposal bank on the pool, generated with ``policy`` (cached)."""
        stages, cfg = self.stages, self.stages.config
        key = stage_key(prev_key, "round", round, config_to_dict(cfg.proposals), cfg.data.max_unlabeled, seed)
        folder = stages.stages / f"bank-{key}"
        if not stage_ready(folder):
            proposal_seed = round_seed(seed, round)
            bank = stages.proposals(policy, self.snapshots, stages.pool, stages.pool_truth, proposal_seed)
            bank.save(folder)
        return key, ProposalBank.load(folder, mmap=True)
