"""Rounds that compound (``finetune.rounds``, ``finetune.reference``): config checks, the per-round rows,
the reference of later rounds, and bit-for-bit resume after an interruption in round 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import rndpo.training.finetuning as finetune_module
from rndpo.config import METHOD_PRESETS, ConfigError, FinetuneConfig, config_from_dict, config_to_dict
from rndpo.pipeline import choose_reference, finetune_key, method_key, round_seed
from rndpo.pipeline.report import rounds_table
from rndpo.proposals import ProposalBank
from rndpo.storage import load_weights, stage_key
from runs import copy_run, rows, run, stage_files, tiny_run

# the smallest config whose base model segments (test Dice ~0.4) and whose round-1 DPO run selects a
# later step than 0, so that round 2 starts from a policy that differs from the base model (the base is
# the fixed 150-step cosine recipe: these properties were found for it)
TWO_ROUNDS = """
seeds = [0]
methods = ["dpo"]
[data]
n_images = 32
image_size = 16
label_budget = 0.3
[model]
channels = [4, 8]
[base]
steps = 150
eval_every = 50
batch_size = 8
lr = 2e-3
schedule = "cosine"
warmup_steps = 0
patience = 0
[proposals]
k = 3
[judges]
names = ["noisy_oracle"]
[mining]
strategies = ["all_pairs"]
[finetune]
rounds = 2
steps = 4
eval_every = 1
batch_size = 4
lr = 2e-3
warmup_steps = 0
"""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rounds": 0}, "finetune.rounds must be >= 1, got 0"),
        ({"rounds": 1.5}, "finetune.rounds must be an integer"),
        ({"reference": "last"}, "finetune.reference must be one of ['base', 'previous'], got 'last'"),
    ],
)
def test_bad_rounds_and_reference_are_config_errors_naming_the_key(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict({"finetune": fields})
    cfg = config_from_dict({"finetune": {"rounds": 3, "reference": "previous"}}).finetune
    assert (cfg.rounds, cfg.reference) == (3, "previous")
    assert (FinetuneConfig().rounds, FinetuneConfig().reference) == (1, "base")


def test_round_one_keys_ignore_rounds_and_reference() -> None:
    one, three = FinetuneConfig(), FinetuneConfig(rounds=3, reference="previous")
    assert finetune_key(one) == finetune_key(three) and "rounds" not in finetune_key(one)
    assert finetune_key(FinetuneConfig(steps=7)) != finetune_key(one)
    assert round_seed(5, 1) == 5 and len({round_seed(5, r) for r in (1, 2, 3)}) == 3


def test_a_later_added_method_field_at_its_default_keeps_earlier_keys() -> None:
    """chosen_sft_weight = 0 leaves a method's key as it was before the field existed (cached runs stay
    valid); any other value keys the run."""
    rndpo = METHOD_PRESETS["rndpo"]
    before_the_field = {k: v for k, v in config_to_dict(rndpo).items() if k != "chosen_sft_weight"}
    assert method_key(rndpo) == before_the_field
    tuned = dataclasses.replace(rndpo, chosen_sft_weight=1.0)
    assert method_key(tuned)["chosen_sft_weight"] == 1.0
    assert stage_key(method_key(tuned)) != stage_key(method_key(rndpo))


def test_choose_reference_picks_the_base_or_the_previous_policy() -> None:
    base, previous = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    assert choose_reference("base", base, previous) is base
    assert choose_reference("previous", base, previous) is previous
    with pytest.raises(ValueError, match="reference must be 'base' or 'previous', got 'x'"):
        choose_reference("x", base, previous)


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-round run to completion: (config, out)."""
    return tiny_run(tmp_path_factory, "rounds", TWO_ROUNDS)


def _run_records(out: Path) -> dict[str, dict[str, Any]]:
    """Every record in out/runs (ladder rungs included) by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def test_two_rounds_give_one_row_with_two_entries_on_distinct_banks(two_rounds: tuple[Path, Path]) -> None:
    _, out = two_rounds
    (row,) = rows(out)
    first, second = row["rounds"]
    assert (first["round"], second["round"]) == (1, 2) and row["round"] == 2
    assert (
        row["run"] == second["run"] and "-r2-" in second["run"] and "-r" not in first["run"].split("-s0-")[1]
    )
    assert row["final_dice"] == second["final_dice"] and row["selected_dice"] == second["selected_dice"]
    # the row's base figures are the base model's; round 2 starts from round 1's selected weights
    assert row["base_dice"] == first["start_dice"]
    assert first["selected_dice"] != first["start_dice"], "round 1 kept the base model: the test is void"
    assert second["start_dice"] == pytest.approx(first["selected_dice"])
    for entry in (first, second):
        assert entry["n_pairs"] > 0
        # each round's judge calibrated on validation proposals of the policy the round starts from
        calibration = entry["calibration"]
        assert calibration["judge"] == row["judge"] and calibration["n_images"] > 0
        assert -1 <= calibration["spearman"] <= 1 and 0 <= calibration["pair_accuracy"] <= 1
        assert 0 <= entry["pool_base_dice"] <= entry["pool_best_of_k_dice"] <= 1
    assert first["calibration"] != second["calibration"], "round 2 recalibrated on the same proposals"
    assert len(list((out / "stages").glob("calibration-*.json"))) == 2
    banks = [ProposalBank.load(p) for p in sorted((out / "stages").glob("bank-*"))]
    assert len(banks) == 2
    assert not np.array_equal(banks[0].masks, banks[1].masks)
    probs = [b.probs for b in banks]
    assert probs[0] is not None and probs[1] is not None
    assert not np.array_equal(probs[0], probs[1])  # a new policy made the second bank
    # only the last round's model is kept
    assert sorted(p.name for p in (out / "models").glob("dpo-*.pt")) == [f"{second['run']}.pt"]
    assert "## Rounds" in (out / "results.md").read_text()


def test_reference_previous_changes_only_round_two(two_rounds: tuple[Path, Path], tmp_path: Path) -> None:
    config, out = two_rounds
    prev = copy_run(out, tmp_path)
    assert run(config, prev, "--resume", "--set", "finetune.reference=previous") == 0
    base_runs, prev_runs = _run_records(out), _run_records(prev)
    round1 = [n for n in base_runs if n.startswith("dpo-") and "-r2-" not in n]
    assert round1 and all(base_runs[n] == prev_runs[n] for n in round1)  # round 1 is reused as it was
    (base_r2,) = [r for n, r in base_runs.items() if "-r2-" in n]
    (prev_r2,) = [r for n, r in prev_runs.items() if "-r2-" in n and n not in base_runs]  # a new run
    # DPO's first step against the policy it starts from has zero log-ratios, so zero implicit rewards;
    # against the base model (a different network) it does not; the anchor term is the same in both
    first_prev, first_base = prev_r2["train_log"][0], base_r2["train_log"][0]
    assert first_prev["rewards/chosen"] == first_prev["rewards/rejected"] == 0.0
    assert first_base["rewards/chosen"] != 0.0 and first_base["rewards/rejected"] != 0.0
    assert first_prev["anchor_loss"] == first_base["anchor_loss"]


class _Interrupted(Exception):
    """Raised by the test in place of a kill."""


def test_two_rounds_resume_bit_for_bit_after_an_interruption_in_round_two(
    two_rounds: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, out = two_rounds
    target = tmp_path / "interrupted"
    write = finetune_module.atomic_write
    interrupted: list[Path] = []

    def write_then_stop(path: Any, *args: Any, **kwargs: Any) -> Path:
        written = write(path, *args, **kwargs)
        if "-r2-" in Path(path).name and Path(path).suffix == ".ckpt" and not interrupted:
            interrupted.append(Path(path))
            raise _Interrupted(str(path))
        return written

    monkeypatch.setattr(finetune_module, "atomic_write", write_then_stop)
    with pytest.raises(_Interrupted):
        run(config, target)
    assert interrupted and interrupted[0].exists()  # stopped within round 2, its checkpoint on disk
    assert not (target / "results.json").exists()
    assert run(config, target, "--resume") == 0
    assert not list((target / "runs").glob("*.ckpt"))
    assert rows(target) == rows(out)
    assert _run_records(target) == _run_records(out)
    models = sorted(p.name for p in (out / "models").glob("*.pt"))
    assert models == sorted(p.name for p in (target / "models").glob("*.pt"))
    for name in models:
        state_a, state_b = load_weights(out / "models" / name), load_weights(target / "models" / name)
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_rounds_one_reuses_round_one_of_a_two_round_run_unchanged(
    two_rounds: tuple[Path, Path], tmp_path: Path
) -> None:
    """Round 1 has the keys and numbers of ``rounds = 1``: a ``rounds = 1`` resume computes nothing new
    and its row is round 1's record (no ``round``, no ``rounds``)."""
    config, out = two_rounds
    one = copy_run(out, tmp_path)
    before = stage_files(one)
    assert run(config, one, "--resume", "--set", "finetune.rounds=1", "--keep", "none") == 0
    assert stage_files(one) == before
    (row,) = rows(one)
    (two_row,) = rows(out)
    assert row["run"] == two_row["rounds"][0]["run"] and "rounds" not in row and "round" not in row
    record = _run_records(out)[f"{row['run']}.json"]
    assert {k: v for k, v in row.items() if k != "model"} == {
        k: v for k, v in record.items() if k != "train_log"
    }


def test_rounds_table_gives_mean_and_std_over_seeds_per_round() -> None:
    def row(seed: int, dice: tuple[float, float]) -> dict[str, Any]:
        entries = [{"round": r + 1, "selected_dice": d, "n_pairs": 10 + r} for r, d in enumerate(dice)]
        return {
            "method": "rndpo",
            "judge": "agreement",
            "miner": "top_vs_rest",
            "seed": seed,
            "rounds": entries,
        }

    table = rounds_table([row(0, (0.5, 0.6)), row(1, (0.7, 0.8)), {"method": "mean_teacher"}])
    lines = table.splitlines()
    assert len(lines) == 4 and "mean_teacher" not in table
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:5] == ["rndpo", "agreement", "top_vs_rest", "2", "2"]
    assert cells[6] == f"0.7000 ± {np.std([0.6, 0.8], ddof=1):.4f}" and cells[8] == "11.0000 ± 0.0000"
    assert cells[5] == "-"  # start_dice absent
    assert rounds_table([{"method": "dpo", "judge": "j", "miner": "m"}]) == ""
