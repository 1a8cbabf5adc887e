"""Validation calibration of judges, the automatic miner, label_smoothing = "auto" and the ensemble judge."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from rndpo.config import ConfigError, MethodConfig, MiningConfig, config_from_dict
from rndpo.judges import NoisyOracleJudge, OracleJudge, make_judge
from rndpo.judges.calibration import (
    ABSTAIN_MAX_ACCURACY,
    TOP_ANCHORED_MIN_ACCURACY,
    JudgeCalibration,
    auto_label_smoothing,
    calibrate_judge,
    choose_strategy,
    margin_quantile,
    pair_accuracy,
    spearman_interval,
    top_pair_accuracy,
)
from rndpo.judges.ensemble import EnsembleJudge, rank_average, reliability_weights
from rndpo.metrics import spearman
from rndpo.proposals import ProposalBank
from runs import run, write_config


def _nested_bank(
    n: int, k: int, size: int = 12, seed: int = 0, jitter: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks (N, K, S, S) of discs of distinct radii (``jitter``: random radii and centres, so that the
    true Dice takes many distinct values over the bank); the truth is a disc of radius S/3. Returns
    masks, their true Dice (N, K) (distinct within an image) and the truth (N, S, S)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.broadcast_to(np.hypot(yy - size / 2, xx - size / 2) < size / 3, (n, size, size)).astype(
        np.uint8
    )
    if jitter:
        radii = rng.uniform(2, size / 2, (n, k))
        centres = size / 2 + rng.uniform(-size / 6, size / 6, (n, k, 2))
    else:
        radii = rng.permuted(np.tile(np.linspace(1.0, size / 2, k), (n, 1)), axis=1)
        centres = np.full((n, k, 2), size / 2)
    r = np.hypot(yy - centres[..., 0, None, None], xx - centres[..., 1, None, None])
    masks = (r < radii[..., None, None]).astype(np.uint8)
    bank = ProposalBank(images=np.zeros((n, 1, size, size), np.float32), masks=masks, ground_truth=truth)
    return masks, OracleJudge().score(bank), truth


def _brute_pair_accuracy(s: np.ndarray, d: np.ndarray) -> float:
    good = total = 0
    for i in range(s.shape[0]):
        for a in range(s.shape[1]):
            for b in range(a + 1, s.shape[1]):
                if d[i, a] == d[i, b]:
                    continue
                total += 1
                good += (s[i, a] - s[i, b]) * (d[i, a] - d[i, b]) > 0
    return good / total


def test_pair_accuracies_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    d = rng.integers(0, 4, (30, 5)) / 4  # ties in the truth
    s = rng.integers(0, 3, (30, 5)).astype(float)  # ties in the scores
    assert pair_accuracy(s, d) == pytest.approx(_brute_pair_accuracy(s, d))
    top = np.argmax(s, axis=1)
    good = total = 0
    for i in range(30):
        for j in range(5):
            if j != top[i] and d[i, j] != d[i, top[i]]:
                total += 1
                good += s[i, top[i]] > s[i, j] and d[i, top[i]] > d[i, j]
    assert top_pair_accuracy(s, d) == pytest.approx(good / total)
    assert pair_accuracy(np.zeros((2, 3)), np.ones((2, 3))) is None


def test_perfect_and_reversed_judges() -> None:
    masks, dice, _ = _nested_bank(20, 5)
    mining = MiningConfig(strategies=("top_vs_rest", "all_pairs"))
    perfect = calibrate_judge("p", dice, dice, masks, mining)
    assert (perfect.pair_accuracy, perfect.top_pair_accuracy, perfect.top1_accuracy) == (1.0, 1.0, 1.0)
    assert perfect.flip_rate == 0.0 and perfect.flip_miner == "top_vs_rest"
    assert all(v == 0.0 for v in perfect.flip_rates.values())
    assert perfect.spearman == pytest.approx(1.0)
    reversed_ = calibrate_judge("r", -dice, dice, masks, mining)
    assert (reversed_.pair_accuracy, reversed_.top_pair_accuracy, reversed_.top1_accuracy) == (0.0, 0.0, 0.0)
    assert reversed_.flip_rate == 1.0 and reversed_.flip_rates["all_pairs"] == 1.0
    assert reversed_.spearman == pytest.approx(-1.0)
    assert JudgeCalibration.from_dict(json.loads(json.dumps(perfect.to_dict()))) == perfect


@pytest.mark.parametrize("rho", [0.3, 0.7])
def test_calibration_recovers_a_noisy_oracles_reliability(rho: float) -> None:
    masks, dice, truth = _nested_bank(400, 6, size=32, seed=2, jitter=True)
    assert len(np.unique(dice)) > 0.6 * dice.size  # many distinct true Dice values: few ties
    bank = ProposalBank(images=np.zeros((400, 1, 32, 32), np.float32), masks=masks, ground_truth=truth)
    scores = NoisyOracleJudge(rho, seed=3).score(bank)
    cal = calibrate_judge("noisy", scores, dice, masks, MiningConfig(strategies=("all_pairs",)))
    assert cal.spearman == pytest.approx(rho, abs=0.03)
    # a Gaussian-copula judge at Spearman rho orders a pair correctly with probability about
    # 1/2 + arcsin(r)/pi (r its Pearson correlation): the flip rate follows it
    r = 2 * np.sin(np.pi * rho / 6)
    assert cal.pair_accuracy == pytest.approx(0.5 + np.arcsin(r) / np.pi, abs=0.05)
    assert cal.flip_rates["all_pairs"] == pytest.approx(1 - cal.pair_accuracy, abs=0.01)  # but ties


def _judged_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(scores, true Dice) float64 (n, 6) of a noisy judge on images of varied difficulty."""
    difficulty = rng.uniform(0.1, 0.9, (n, 1))
    dice = np.clip(difficulty + rng.normal(0, 0.08, (n, 6)), 0, 1)
    return dice + rng.normal(0, 0.25, (n, 1)) + rng.normal(0, 0.2, (n, 6)), dice


def test_the_validation_spearman_interval_covers_the_pools_figure() -> None:
    """A 95% bootstrap interval from 30 validation images holds the Spearman of a large pool from the
    same images' distribution in most repetitions, contains its own estimate, and narrows with more
    images."""
    rng = np.random.default_rng(0)
    pool = spearman(*_judged_images(5000, rng))
    covered, widths = 0, []
    for rep in range(60):
        scores, dice = _judged_images(30, rng)
        low, high = spearman_interval(scores, dice, n_boot=300, seed=rep)
        assert low <= spearman(scores, dice) <= high
        covered += low <= pool <= high
        widths.append(high - low)
    assert covered >= 50, covered  # nominal 57 of 60; percentile intervals run a little short
    wide = spearman_interval(*_judged_images(120, rng), n_boot=300)
    assert wide is not None and wide[1] - wide[0] < 0.7 * np.mean(widths)
    assert spearman_interval(np.ones((1, 6)), np.ones((1, 6))) is None
    assert spearman_interval(np.ones((5, 6)), np.arange(30.0).reshape(5, 6)) is None  # constant scores


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (
            {"true_dice": np.ones((4, 5))},
            r"scores and true_dice must both be \(N, K\), got \(4, 6\) and \(4, 5\)",
        ),
        ({"n_boot": 0}, "n_boot must be a positive int, got 0"),
        ({"level": 1.0}, r"level must lie in \(0, 1\), got 1.0"),
    ],
)
def test_spearman_interval_rejects_bad_arguments(kwargs: dict, needle: str) -> None:
    args = {"scores": np.ones((4, 6)), "true_dice": np.ones((4, 6)), **kwargs}
    with pytest.raises(ValueError, match=needle):
        spearman_interval(args.pop("scores"), args.pop("true_dice"), **args)


def test_calibrations_cached_before_the_interval_still_load() -> None:
    cal = _calibration(0.8, 0.7)
    raw = json.loads(json.dumps(dataclasses.replace(cal, spearman_interval=(0.1, 0.6)).to_dict()))
    assert JudgeCalibration.from_dict(raw).spearman_interval == (0.1, 0.6)
    del raw["spearman_interval"]
    assert JudgeCalibration.from_dict(raw).spearman_interval is None


def _calibration(top: float | None, pair: float | None, margin: float = 0.05) -> JudgeCalibration:
    return JudgeCalibration(
        judge="j",
        n_images=10,
        spearman=0.5,
        kendall=0.4,
        top1_accuracy=0.3,
        mean_image_spearman=0.5,
        pair_accuracy=pair,
        top_pair_accuracy=top,
        flip_rate=0.2,
        flip_miner="top_vs_bottom",
        auto_min_margin=margin,
        flip_rates={"top_vs_bottom": 0.2, f"all_pairs:{margin!r}": 0.3},
    )


def test_choose_strategy_takes_each_branch() -> None:
    assert choose_strategy(_calibration(TOP_ANCHORED_MIN_ACCURACY, 0.5)).miner == "top_vs_bottom"
    chosen = choose_strategy(_calibration(0.74, 0.6, margin=0.125))
    assert chosen.miner == "all_pairs:0.125"
    assert MiningConfig().parse_strategy(chosen.miner).min_margin == 0.125
    abstain = choose_strategy(_calibration(0.74, ABSTAIN_MAX_ACCURACY))
    assert abstain.miner is None and "no pairs" in abstain.reason
    assert choose_strategy(_calibration(None, None)).miner is None
    assert choose_strategy(_calibration(0.6, 0.6), top_threshold=0.5).miner == "top_vs_bottom"


def test_auto_label_smoothing_uses_the_miners_flip_rate_clipped() -> None:
    cal = _calibration(0.8, 0.7)
    assert auto_label_smoothing(cal, "top_vs_bottom") == 0.2
    assert auto_label_smoothing(cal, "adjacent") == pytest.approx(0.3)  # 1 - pair_accuracy
    high = _calibration(0.1, 0.1)
    assert auto_label_smoothing(high, "random") == 0.49


def test_margin_quantile() -> None:
    s = np.array([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])  # gaps 1, 3, 2; zero gaps are left out
    assert margin_quantile(s, 0.5) == 2.0
    assert margin_quantile(np.zeros((2, 2))) == 0.0


def test_rank_average_by_hand() -> None:
    a = np.array([[0.1, 0.5, 0.3]])  # ranks 1, 3, 2 -> 0, 1, 0.5
    b = np.array([[2.0, 2.0, 1.0]])  # ranks 2.5, 2.5, 1 -> 0.75, 0.75, 0
    out = rank_average([a, b], [3.0, 1.0])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[(0 + 0.75) / 4, (3 + 0.75) / 4, (1.5 + 0) / 4]])
    np.testing.assert_allclose(rank_average([a], [1.0]), [[0.0, 1.0, 0.5]])
    # ranks run over the whole bank, so an image whose scores are all low stays below the others
    two = np.array([[0.9, 0.8], [0.2, 0.1]])  # ranks 4, 3, 2, 1 -> 1, 2/3, 1/3, 0
    np.testing.assert_allclose(rank_average([two], [1.0]), [[1.0, 2 / 3], [1 / 3, 0.0]])
    np.testing.assert_allclose(rank_average([np.array([[7.0]])], [1.0]), [[0.5]])
    np.testing.assert_array_equal(reliability_weights([0.5, -0.2, None]), [0.5, 0.0, 0.0])
    np.testing.assert_array_equal(reliability_weights([-0.5, None]), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"weights must be finite, >= 0 and not all 0"):
        rank_average([a, b], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"scores_list\[1\] must have shape"):
        rank_average([a, np.zeros((2, 3))], [1.0, 1.0])


def test_ensemble_judge_rank_averages_its_components() -> None:
    masks, dice, truth = _nested_bank(6, 4)
    bank = ProposalBank(images=np.zeros((6, 1, 12, 12), np.float32), masks=masks, ground_truth=truth)
    judge = EnsembleJudge([OracleJudge(), NoisyOracleJudge(0.2, seed=1)], [1.0, 0.0])
    # a zero weight drops the noisy component; bank-wide ranks keep the oracle's order exactly
    assert spearman(judge.score(bank), dice) == pytest.approx(1.0)
    assert make_judge("ensemble").score(bank).shape == (6, 4)  # agreement + consensus


def test_config_accepts_auto_and_region_fraction() -> None:
    cfg = config_from_dict(
        {
            "methods": {"r": {"preset": "rn_robust", "label_smoothing": "auto"}},
            "mining": {"strategies": ["auto", "top_vs_rest"], "max_region_fraction": 0.5},
            "judges": {"names": ["agreement", "ensemble"]},
        }
    )
    assert cfg.methods["r"].label_smoothing == "auto"
    with pytest.raises(ValueError, match=r'label_smoothing = "auto" must be resolved'):
        cfg.methods["r"].loss_options()
    with pytest.raises(ConfigError, match=r'methods.r.label_smoothing = "auto" applies to loss_type robust'):
        config_from_dict({"methods": {"r": {"preset": "rndpo", "label_smoothing": "auto"}}})
    with pytest.raises(ConfigError, match=r"mining.max_region_fraction must be a finite number > 0"):
        config_from_dict({"mining": {"max_region_fraction": 0.0}})
    with pytest.raises(
        ConfigError, match=r"'auto' takes no margin and is resolved per judge, got 'auto:0.1'"
    ):
        config_from_dict({"mining": {"strategies": ["auto:0.1"]}})
    assert MethodConfig(loss_type="robust", label_smoothing="auto").loss_type == "robust"


AUTO_RUN = """
seeds = [0]
[data]
n_images = 40
image_size = 16
label_budget = 0.3
val_fraction = 0.2
[model]
channels = [4, 8]
[base]
steps = 6
eval_every = 3
batch_size = 4
[proposals]
k = 4
[judges]
names = ["agreement", "ensemble"]
[mining]
strategies = ["auto"]
max_region_fraction = 2.0
[finetune]
steps = 2
eval_every = 1
batch_size = 2
[methods.robust]
preset = "rn_robust"
label_smoothing = "auto"
"""

VAL_FIELDS = ("val_judge_spearman", "val_judge_top1_accuracy", "val_pair_accuracy", "val_top_pair_accuracy")


def _check_auto_rows(out: Path) -> list[dict]:
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {r["judge"] for r in runs} == {"agreement", "ensemble"}
    calib = [p for p in (out / "stages").iterdir() if p.name.startswith("calibration-")]
    assert len(calib) == 2  # the json and its checksum
    table = json.loads(next(p for p in calib if p.suffix == ".json").read_text())
    assert set(table) == {"agreement", "ensemble"}  # the ensemble combines the configured agreement
    for row in runs:
        assert row["miner"] == "auto"
        cal = table[row["judge"]]
        choice = choose_strategy(JudgeCalibration.from_dict(cal))
        assert row["miner_resolved"] == choice.miner and row["miner_reason"] == choice.reason
        assert row["abstained"] == (choice.miner is None)
        assert row["val_judge_spearman"] == cal["spearman"]
        assert row["val_pair_accuracy"] == cal["pair_accuracy"]
        for key in VAL_FIELDS:
            assert key in row
        want = auto_label_smoothing(JudgeCalibration.from_dict(cal), choice.miner or "top_vs_bottom")
        assert row["label_smoothing_used"] == want
        if choice.miner is not None:
            assert row["val_flip_rate"] == cal["flip_rates"][choice.miner]
    return runs


def test_auto_run_records_calibration_and_choices(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(write_config(tmp_path, AUTO_RUN), out) == 0
    runs = _check_auto_rows(out)
    for row in runs:  # the pool has ground truth here: realised figures sit next to the estimates
        assert row["judge_spearman"] is not None
        assert (row["flip_rate"] is None) == (row["n_pairs"] == 0)
    assert "## Judges: validation estimates and the pool" in (out / "results.md").read_text()


def test_the_ensembles_ranking_scheme_keys_its_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder written under another ranking scheme (earlier builds ranked per image) must not hand
    its ensemble scores, calibration or runs to this one: the scheme is part of their keys."""
    from rndpo.judges import registry  # the one place that puts the scheme into kwargs and keys

    config, out = write_config(tmp_path, AUTO_RUN), tmp_path / "out"
    monkeypatch.setattr(registry, "RANKING", "image")
    assert run(config, out) == 0
    before = {p.name for p in (out / "stages").iterdir()}
    monkeypatch.setattr(registry, "RANKING", "bank")
    assert run(config, out, "--resume") == 0
    added = {p.name for p in (out / "stages").iterdir()} - before
    assert any(n.startswith("calibration-") for n in added)
    assert sum(n.startswith("scores-") and n.endswith(".npz") for n in added) == 1  # the ensemble's only
    runs = {p.name for p in (out / "runs").iterdir()}
    assert any("-ensemble-" in n for n in runs) and any("-agreement-" in n for n in runs)


def test_auto_run_in_the_production_layout(tmp_path: Path) -> None:
    from rndpo.data import synthetic_dataset

    ds = synthetic_dataset(n_images=40, size=16, seed=4)
    labeled, pool = tmp_path / "labeled.npz", tmp_path / "pool.npz"
    images = np.round(ds.images[:, 0] * 255).astype(np.uint8)
    np.savez(labeled, images=images[:28], masks=ds.masks[:28])
    np.savez(pool, images=images[28:])
    text = AUTO_RUN.replace(
        "n_images = 40", f'kind = "npz"\npath = "{labeled}"\nunlabeled_path = "{pool}"\ntest_fraction = 0.1'
    )
    out = tmp_path / "out"
    assert run(write_config(tmp_path, text), out) == 0
    runs = _check_auto_rows(out)
    for row in runs:
        assert "judge_spearman" not in row and "flip_rate" not in row  # no pool truth: absent


def test_judge_table_puts_estimates_next_to_pool_figures() -> None:
    """One line per (judge, miner, round); a seed's methods share its figures and count once; the auto
    miner's resolved strategies are counted without their margins."""
    from rndpo.pipeline.report import judge_table

    row = {"judge": "agreement", "miner": "auto"}
    seed0 = {
        **row,
        "seed": 0,
        "miner_resolved": "all_pairs:0.08",
        "val_judge_spearman": 0.5,
        "judge_spearman": 0.4,
        "val_flip_rate": 0.25,
        "flip_rate": 0.7,
    }
    seed1 = {
        **row,
        "seed": 1,
        "miner_resolved": "top_vs_bottom",
        "val_judge_spearman": 0.7,
        "judge_spearman": 0.6,
        "val_flip_rate": 0.35,
        "flip_rate": 0.8,
    }
    second_method = {**seed0, "method": "dpo"}  # the same seed's judge figures: not counted twice
    round2 = {**seed0, "round": 2, "val_judge_spearman": 0.9}
    text = judge_table([seed0, second_method, seed1, round2])
    line = "| agreement | auto | 1 | 2 | all_pairs x1, top_vs_bottom x1 | 0.6000 ± 0.1414 | 0.5000 ± 0.1414 |"
    assert line + " - | - |" in text
    assert "0.3000 ± 0.0707 | 0.7500 ± 0.0707 |" in text
    assert "| agreement | auto | 2 | 1 | all_pairs x1 | 0.9000 | 0.4000 |" in text
    assert judge_table([{"judge": "x", "miner": "y"}]) == ""
    one_seed = judge_table([{**seed1, "val_judge_spearman_interval": [0.45, 0.85]}])
    assert "| top_vs_bottom x1 | 0.7000 [0.4500, 0.8500] | 0.6000 |" in one_seed


def test_ensemble_components_default_to_agreement_and_consensus() -> None:
    from rndpo.config import JudgeConfig
    from rndpo.judges.calibration import ensemble_components

    labels = [c[0] for c in ensemble_components(JudgeConfig(names=("noisy_oracle", "ensemble")))]
    assert labels == ["agreement", "consensus"]
    cfg = JudgeConfig(names=("uncertainty", "oracle", "learned_qc", "ensemble"))
    assert [c[0] for c in ensemble_components(cfg)] == ["uncertainty", "learned_qc"]


def test_label_smoothing_auto_reaches_the_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rndpo.pipeline import runs, stages

    seen: list[float] = []
    original = runs.finetune

    def recording(model, data, method, *args, **kwargs):  # type: ignore[no-untyped-def]
        if method.loss_type == "robust":  # not the ladder's rungs
            seen.append(method.loss_options()["label_smoothing"])
        return original(model, data, method, *args, **kwargs)

    monkeypatch.setattr(runs, "finetune", recording)
    calibrate = stages.calibrate_judges

    def known_flips(*args, **kwargs):  # type: ignore[no-untyped-def]
        # the tiny bank's judge may flip nothing: plant a known flip rate to follow into the loss
        out = calibrate(*args, **kwargs)
        return {k: dataclasses.replace(c, flip_rates={"all_pairs": 0.23}) for k, c in out.items()}

    monkeypatch.setattr(stages, "calibrate_judges", known_flips)
    text = (
        AUTO_RUN.replace(
            'names = ["agreement", "ensemble"]', 'names = ["noisy_oracle"]\nreliabilities = [0.6]'
        )
        .replace('strategies = ["auto"]', 'strategies = ["all_pairs"]')  # a noisy judge's all pairs flip
        .replace("steps = 6", "steps = 30")
        .replace("val_fraction = 0.2", "val_fraction = 0.2\ntest_fraction = 0")  # no test: no ladder
    )
    out = tmp_path / "out"
    assert run(write_config(tmp_path, text), out) == 0
    (row,) = json.loads((out / "results.json").read_text())["runs"]
    table = json.loads(next((out / "stages").glob("calibration-*.json")).read_text())
    cal = JudgeCalibration.from_dict(table["noisy_oracle@0.6"])
    assert row["miner_resolved"] == "all_pairs" and cal.flip_rates["all_pairs"] == 0.23
    assert seen == [0.23] == [row["label_smoothing_used"]]
    assert (
        "loss_type robust with label_smoothing 0.23: its loss is unbounded below"
        in (out / "rndpo.log").read_text()
    )


def test_auto_miner_keeps_its_resolution_in_later_rounds(tmp_path: Path) -> None:
    text = (
        AUTO_RUN.replace(
            'names = ["agreement", "ensemble"]', 'names = ["noisy_oracle"]\nreliabilities = [0.9]'
        )
        .replace("steps = 6", "steps = 30")
        .replace("val_fraction = 0.2", "val_fraction = 0.2\ntest_fraction = 0")
        .replace("[finetune]\n", "[finetune]\nrounds = 2\n")
    )
    out = tmp_path / "out"
    assert run(write_config(tmp_path, text), out) == 0
    (row,) = json.loads((out / "results.json").read_text())["runs"]
    assert row["miner"] == "auto" and row["miner_resolved"] is not None, row["miner_reason"]
    assert [r["round"] for r in row["rounds"]] == [1, 2] and row["val_judge_spearman"] is not None
    second = [json.loads(p.read_text()) for p in (out / "runs").glob("*-r2-*.json")]
    assert len(second) == 1 and second[0]["miner"] == "auto" and second[0]["n_pairs"] > 0
