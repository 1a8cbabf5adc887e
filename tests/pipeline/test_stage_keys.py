"""Stage keys: changing a field a stage depends on recomputes that stage (and only it and what follows),
and the new results differ; each miner's pairs are what ``mine_pairs`` gives for that miner."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rndpo.mining import mine_pairs
from rndpo.proposals import ProposalBank
from runs import TINIEST, copy_run, rows, run, run_records, stage_files, tiny_run, write_config

TWO_MINERS = TINIEST.replace('strategies = ["all_pairs"]', 'strategies = ["all_pairs", "top_vs_bottom"]')
ORDER = ("base-", "bank-", "scores-", "pairs-", "dpo-")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_run(tmp_path_factory, "keys", TWO_MINERS)


# (override, first stage it must recompute)
CHANGES = [
    ("data.seed=1", "base-"),
    ("base.lr=0.01", "base-"),  # not steps: at a constant lr a higher cap leaves the first steps alone
    ("model.dropout=0.2", "base-"),
    ("proposals.k=4", "bank-"),
    ("data.max_unlabeled=5", "base-"),  # the base key holds the whole data config
    ("judges.reliabilities=[0.4]", "scores-"),
    ("mining.min_margin=0.05", "pairs-"),  # top_vs_bottom keeps its one pair per image: only
    ("mining.max_pairs_per_image=1", "pairs-"),  # all_pairs must change (see CHANGED below)
    ("finetune.lr=0.01", "dpo-"),
    ("methods={dpo={beta=0.5}}", "dpo-"),
]


CHANGED = {"mining.min_margin=0.05": ("all_pairs",), "mining.max_pairs_per_image=1": ("all_pairs",)}


@pytest.mark.parametrize(("override", "first"), CHANGES, ids=[c for c, _ in CHANGES])
def test_changing_a_field_recomputes_its_stage_and_changes_the_results(
    override: str, first: str, tiny: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    before = stage_files(target)
    with caplog.at_level(logging.INFO, logger="rndpo"):
        assert run(config, target, "--resume", "--set", override) == 0
    new = {n for n in stage_files(target) - before if not n.endswith(".sha256")}
    kinds = {p for p in ORDER if any(n.startswith(p) for n in new)}
    assert first in kinds, f"{override}: no new {first} stage (new: {sorted(new)})"
    upstream = set(ORDER[: ORDER.index(first)])
    assert not kinds & upstream, f"{override} recomputed upstream stages {sorted(kinds & upstream)}"
    old_runs = run_records(out)
    new_runs = run_records(target, {n for n in new if n.startswith("dpo-")})
    assert set(new_runs) == set(old_runs) == {"all_pairs", "top_vs_bottom"}
    for miner in CHANGED.get(override, ("all_pairs", "top_vs_bottom")):  # other data or settings
        assert new_runs[miner]["train_log"] != old_runs[miner]["train_log"], miner
    if first != "base-":
        assert "training the base model" not in caplog.text


def test_an_unchanged_config_reuses_every_stage(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    before = stage_files(target)
    assert run(config, target, "--resume") == 0
    assert stage_files(target) == before
    assert rows(target) == rows(out)


def test_each_miners_pairs_equal_mine_pairs_called_directly(tiny: tuple[Path, Path]) -> None:
    _, out = tiny
    (bank_dir,) = (out / "stages").glob("bank-*")
    (scores_file,) = (out / "stages").glob("scores-*.npz")
    bank = ProposalBank.load(bank_dir)
    with np.load(scores_file) as z:
        scores = z["scores"]
    stored = []
    for path in sorted((out / "stages").glob("pairs-*.npz")):
        with np.load(path) as z:
            stored.append({k: z[k] for k in z.files})
    assert len(stored) == 2
    by_miner = {r["miner"]: r for r in rows(out)}
    for miner in ("all_pairs", "top_vs_bottom"):
        direct = mine_pairs(bank.masks, scores, miner, min_region=1, seed=0)
        matches = [
            s
            for s in stored
            if all(
                np.array_equal(s[f], getattr(direct, f)) for f in ("image", "chosen", "rejected", "margin")
            )
        ]
        assert len(matches) == 1, miner
        assert by_miner[miner]["n_pairs"] == len(direct) > 0
    assert by_miner["all_pairs"]["n_pairs"] > by_miner["top_vs_bottom"]["n_pairs"]


def test_the_runs_seed_drives_the_random_miners(tmp_path: Path) -> None:
    """A seed reseeds the whole pipeline, mining included (it was fixed at 0)."""
    text = (
        TINIEST.replace("seeds = [0]", "seeds = [3]")
        .replace("k = 3", "k = 8")
        .replace('strategies = ["all_pairs"]', 'strategies = ["random"]')
    )
    out = tmp_path / "out"
    assert run(write_config(tmp_path, text), out) == 0
    (bank_dir,) = (out / "stages").glob("bank-*")
    (scores_file,) = (out / "stages").glob("scores-*.npz")
    (pairs_file,) = (out / "stages").glob("pairs-*.npz")
    bank = ProposalBank.load(bank_dir)
    with np.load(scores_file) as z:
        scores = z["scores"]
    with np.load(pairs_file) as z:
        stored = {k: z[k] for k in z.files}
    direct = {s: mine_pairs(bank.masks, scores, "random", min_region=1, seed=s) for s in (0, 3)}
    pick = {s: np.stack([direct[s].chosen, direct[s].rejected]) for s in (0, 3)}
    assert not np.array_equal(pick[0], pick[3])  # on this bank seed 0 would give other pairs
    for field in ("image", "chosen", "rejected", "margin"):
        np.testing.assert_array_equal(stored[field], getattr(direct[3], field), err_msg=field)
