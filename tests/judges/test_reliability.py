"""Reliability report (rndpo.judges.reliability): rank statistics, top-1 accuracy, pair quality vs oracles."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from oracles import oracle_mean_image_spearman, oracle_pair_quality, oracle_top1_accuracy
from rndpo.judges import NoisyOracleJudge, OracleJudge
from rndpo.judges.reliability import PairQuality, ReliabilityReport, judge_reliability, pair_quality
from rndpo.proposals import ProposalBank


@dataclass(frozen=True)
class Pairs:
    """Stand-in with the fields of rndpo.mining.PairSet (struct of int64/float64 arrays)."""

    image: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    region_size: np.ndarray
    margin: np.ndarray


def pairs_of(rows: list[tuple[int, int, int, int]]) -> Pairs:
    arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return Pairs(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], np.zeros(len(arr)))


# small value sets make ties in scores and truth likely
matrices = st.tuples(st.integers(1, 6), st.integers(1, 5)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(
            np.float64, shape, elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0, 1)
        ),
        hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0, 1)),
    )
)


# --------------------------------------------------------------------------------------------------------
# judge_reliability


def test_perfect_and_reversed_judges() -> None:
    truth = np.array([[0.1, 0.5, 0.9], [0.8, 0.2, 0.4]])
    perfect = judge_reliability(truth * 10, truth)
    assert perfect.spearman == pytest.approx(1.0) and perfect.kendall == pytest.approx(1.0)
    assert perfect.mean_image_spearman == pytest.approx(1.0) and perfect.n_images_ranked == 2
    assert perfect.top1_accuracy == 1.0 and perfect.top1_regret == 0.0
    assert perfect.top1_dice == pytest.approx(0.85) and perfect.best_dice == pytest.approx(0.85)
    reversed_ = judge_reliability(-truth, truth)
    assert reversed_.spearman == pytest.approx(-1.0) and reversed_.kendall == pytest.approx(-1.0)
    assert reversed_.mean_image_spearman == pytest.approx(-1.0)
    assert reversed_.top1_accuracy == 0.0
    assert reversed_.top1_regret == pytest.approx(((0.9 - 0.1) + (0.8 - 0.2)) / 2)
    assert (reversed_.n_images, reversed_.n_proposals) == (2, 6)


def test_ties() -> None:
    # tie in the truth: either pick is a truly best one
    assert judge_reliability(np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]])).top1_accuracy == 1.0
    # tie in the scores: the lower index is the judge's pick (as in mining)
    assert judge_reliability(np.array([[1.0, 1.0]]), np.array([[0.2, 0.9]])).top1_accuracy == 0.0
    assert judge_reliability(np.array([[1.0, 1.0]]), np.array([[0.9, 0.2]])).top1_accuracy == 1.0


def test_undefined_correlations_are_none() -> None:
    truth = np.array([[0.1, 0.5, 0.9], [0.3, 0.3, 0.3]])
    constant = judge_reliability(np.ones((2, 3)), truth)
    assert constant.spearman is None and constant.kendall is None
    # image 1 has constant truth (skipped); image 0 has a constant judge (counts 0)
    assert constant.mean_image_spearman == 0.0 and constant.n_images_ranked == 1
    flat_truth = judge_reliability(np.array([[0.1, 0.2]]), np.array([[0.4, 0.4]]))
    assert flat_truth.spearman is None and flat_truth.mean_image_spearman is None
    assert flat_truth.n_images_ranked == 0
    json.dumps(constant.to_dict(), allow_nan=False)  # stays valid JSON


@settings(max_examples=60, deadline=None)
@given(pair=matrices)
def test_reliability_matches_oracles(pair: tuple[np.ndarray, np.ndarray]) -> None:
    scores, truth = pair
    rep = judge_reliability(scores, truth)
    assert isinstance(rep, ReliabilityReport)
    s, d = scores.ravel(), truth.ravel()
    if np.ptp(s) > 0 and np.ptp(d) > 0:
        assert rep.spearman == pytest.approx(stats.spearmanr(s, d).statistic, abs=1e-12)
        assert rep.kendall == pytest.approx(stats.kendalltau(s, d).statistic, abs=1e-12)
    else:
        assert rep.spearman is None and rep.kendall is None
    mean, count = oracle_mean_image_spearman(scores, truth)
    assert rep.n_images_ranked == count
    if mean is None:
        assert rep.mean_image_spearman is None
    else:
        assert rep.mean_image_spearman == pytest.approx(mean, abs=1e-12)
    assert rep.top1_accuracy == pytest.approx(oracle_top1_accuracy(scores, truth))
    assert rep.top1_regret >= 0.0
    json.dumps(rep.to_dict(), allow_nan=False)


def _disc_bank(n: int = 40, k: int = 5, size: int = 16, seed: int = 0) -> ProposalBank:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    r = rng.uniform(2, 5, (n, 1, 1))
    gt = ((yy - c) ** 2 + (xx - c) ** 2 < r**2).astype(np.uint8)
    rr = r[:, None] * rng.uniform(0.5, 1.5, (n, k, 1, 1))
    masks = ((yy - c) ** 2 + (xx - c) ** 2 < rr**2).astype(np.uint8)
    return ProposalBank(np.zeros((n, 1, size, size), np.float32), masks, None, gt)


def test_reliability_accepts_a_bank() -> None:
    bank = _disc_bank()
    scores = NoisyOracleJudge(0.6, seed=1).score(bank)
    from_bank = judge_reliability(scores, bank)
    assert from_bank == judge_reliability(scores, OracleJudge().score(bank))
    assert from_bank.spearman == pytest.approx(0.6, abs=0.01)
    with pytest.raises(
        ValueError, match=r"scores must have shape \(N, K\) = \(40, 5\) of the bank, got \(40, 4\)"
    ):
        judge_reliability(scores[:, :4], bank)
    no_truth = ProposalBank(bank.images, bank.masks)
    with pytest.raises(ValueError, match=r"needs bank\.ground_truth"):
        judge_reliability(scores, no_truth)


def test_reliability_bad_input() -> None:
    truth = np.full((3, 4), 0.5)
    with pytest.raises(ValueError, match=r"true_dice must have shape \(N, K\) = \(3, 5\), got \(3, 4\)"):
        judge_reliability(np.zeros((3, 5)), truth)
    with pytest.raises(ValueError, match=r"scores must have shape \(N, K\) with N, K >= 1, got \(12,\)"):
        judge_reliability(np.zeros(12), truth)
    bad = np.zeros((3, 4))
    bad[1, 2] = np.nan
    with pytest.raises(
        ValueError, match=r"scores must be finite, got 1 non-finite values \(first at \(1, 2\)\)"
    ):
        judge_reliability(bad, truth)
    with pytest.raises(ValueError, match=r"true_dice must lie in \[0, 1\], got values in \[0.5, 2.0\]"):
        judge_reliability(np.zeros((3, 4)), truth + np.eye(3, 4) * 1.5)
    with pytest.raises(TypeError, match="scores must be a float array \\(N, K\\), got dtype bool"):
        judge_reliability(np.zeros((3, 4), bool), truth)
    with pytest.raises(TypeError, match="scores must be a float array \\(N, K\\), got str"):
        judge_reliability("scores", truth)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# pair_quality


def test_pair_quality_known_values() -> None:
    truth = np.array([[0.9, 0.5, 0.5], [0.2, 0.7, 0.1]])
    pairs = pairs_of(
        [
            (0, 0, 1, 10),  # correct
            (0, 1, 2, 4),  # tie in true Dice: neither correct nor wrong
            (1, 0, 1, 30),  # wrong: chosen 0.2 < rejected 0.7
            (1, 1, 2, 6),  # correct
        ]
    )
    q = pair_quality(pairs, truth)
    assert isinstance(q, PairQuality)
    assert (q.n_pairs, q.n_correct, q.n_wrong, q.n_ties) == (4, 2, 1, 1)
    assert q.pair_accuracy == pytest.approx(0.5)
    assert q.harmful_leverage == pytest.approx(30 / 50)
    json.dumps(q.to_dict(), allow_nan=False)


def test_pair_quality_no_pairs_and_empty_regions() -> None:
    q = pair_quality(pairs_of([]), np.full((2, 3), 0.5))
    assert q == PairQuality(0, 0, 0, 0, None, None)
    json.dumps(q.to_dict(), allow_nan=False)
    tied = pair_quality(pairs_of([(0, 0, 1, 0)]), np.full((1, 2), 0.5))
    assert tied.harmful_leverage == 0.0 and tied.pair_accuracy == 0.0 and tied.n_ties == 1


@st.composite
def pair_cases(draw):
    n, k = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    truth = draw(hnp.arrays(np.float64, (n, k), elements=st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0, 1)))
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1), st.integers(0, k - 1), st.integers(0, k - 1), st.integers(0, 50)
            ),
            max_size=12,
        )
    )
    return truth, rows


@settings(max_examples=80, deadline=None)
@given(case=pair_cases())
def test_pair_quality_matches_oracle(case) -> None:
    truth, rows = case
    pairs = pairs_of(rows)
    q = pair_quality(pairs, truth)
    acc, leverage, ties = oracle_pair_quality(
        pairs.image, pairs.chosen, pairs.rejected, pairs.region_size, truth
    )
    assert q.n_pairs == len(rows) and q.n_ties == ties
    assert q.n_correct + q.n_wrong + q.n_ties == q.n_pairs
    if acc is None:
        assert q.pair_accuracy is None and q.harmful_leverage is None
    else:
        assert q.pair_accuracy == pytest.approx(acc)
        assert q.harmful_leverage == pytest.approx(leverage)
        assert 0.0 <= q.harmful_leverage <= 1.0


def test_pair_quality_bad_input() -> None:
    truth = np.full((2, 3), 0.5)
    with pytest.raises(
        ValueError, match=r"pairs\.image must lie in \[0, 2\) for true_dice with N = 2, got \[0, 2\]"
    ):
        pair_quality(pairs_of([(0, 0, 1, 1), (2, 0, 1, 1)]), truth)
    with pytest.raises(ValueError, match=r"pairs\.rejected must lie in \[0, 3\) for true_dice with K = 3"):
        pair_quality(pairs_of([(0, 0, 3, 1)]), truth)
    with pytest.raises(ValueError, match=r"pairs\.region_size must be >= 0, got minimum -1"):
        pair_quality(pairs_of([(0, 0, 1, -1)]), truth)
    short = Pairs(
        np.zeros(2, np.int64), np.zeros(1, np.int64), np.ones(2, np.int64), np.ones(2, np.int64), np.zeros(2)
    )
    with pytest.raises(ValueError, match=r"pairs\.chosen must have length 2 like pairs\.image, got 1"):
        pair_quality(short, truth)
    with pytest.raises(TypeError, match="pairs must be a PairSet with field 'image', got dict"):
        pair_quality({}, truth)  # type: ignore[arg-type]
    floats = Pairs(np.zeros(1), np.zeros(1), np.ones(1), np.ones(1), np.zeros(1))
    with pytest.raises(ValueError, match=r"pairs\.image must be a 1-D integer array, got dtype float64"):
        pair_quality(floats, truth)


def test_pair_quality_on_mined_pairs() -> None:
    """With the real miner: the oracle's own pairs are all correct, the reversed oracle's all wrong."""
    from rndpo.mining import mine_pairs

    bank = _disc_bank(n=30, k=5, seed=4)
    truth = OracleJudge().score(bank)
    good = pair_quality(mine_pairs(bank.masks, truth, "all_pairs"), truth)
    assert good.n_pairs > 0 and good.n_wrong == 0 and good.harmful_leverage == 0.0
    bad = pair_quality(mine_pairs(bank.masks, 1.0 - truth, "all_pairs"), truth)
    assert bad.n_correct == 0 and bad.harmful_leverage == pytest.approx(1.0)
    noisy = pair_quality(
        mine_pairs(bank.masks, NoisyOracleJudge(0.5, seed=0).score(bank), "all_pairs"), truth
    )
    assert 0.0 < noisy.harmful_leverage < 1.0
