"""Judges (rndpo.judges): hand-built banks with known answers, loop oracles, properties; the registry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from factories import disc_bank
from oracles import (
    oracle_agreement,
    oracle_consensus_mask,
    oracle_proposal_dice,
    oracle_uncertainty,
)
from rndpo.judges import (
    JUDGE_NAMES,
    AgreementJudge,
    ConsensusJudge,
    Judge,
    LearnedQCJudge,
    NoisyOracleJudge,
    OracleJudge,
    UncertaintyJudge,
    make_judge,
    proposal_dice,
)
from rndpo.proposals import ProposalBank

# --------------------------------------------------------------------------------------------------------
# bank factories


def bank_of(masks, *, gt=None, probs=None, images=None, channels: int = 1) -> ProposalBank:
    masks = np.asarray(masks, dtype=np.uint8)
    n, _, h, w = masks.shape
    if images is None:
        images = np.zeros((n, channels, h, w), dtype=np.float32)
    gt = None if gt is None else np.asarray(gt, dtype=np.uint8)
    probs = None if probs is None else np.asarray(probs, dtype=np.float32)
    return ProposalBank(images=images, masks=masks, probs=probs, ground_truth=gt, sources=())


binary_masks = hnp.arrays(
    np.uint8,
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
    elements=st.integers(0, 1),
)


@st.composite
def banks(draw, min_k: int = 1):
    """Random small banks including empty and full masks, with ground truth and probabilities."""
    n = draw(st.integers(1, 3))
    k = draw(st.integers(min_k, 4))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    fill = draw(st.sampled_from(["random", "empty", "full"]))
    masks = draw(hnp.arrays(np.uint8, (n, k, h, w), elements=st.integers(0, 1)))
    gt = draw(hnp.arrays(np.uint8, (n, h, w), elements=st.integers(0, 1)))
    if fill == "empty":
        masks[:] = 0
        gt[:] = draw(st.sampled_from([0, 1]))
    elif fill == "full":
        masks[:, 0] = 1
    probs = draw(
        hnp.arrays(
            np.float32,
            (n, h, w),
            elements=st.floats(0, 1, width=32) | st.sampled_from([np.float32(0), np.float32(1)]),
        )
    )
    return bank_of(masks, gt=gt, probs=probs)


# --------------------------------------------------------------------------------------------------------
# OracleJudge


def test_oracle_known_values() -> None:
    gt = np.zeros((1, 4, 4), np.uint8)
    gt[0, :2, :2] = 1  # 4 pixels
    same = gt[0].copy()
    disjoint = np.zeros((4, 4), np.uint8)
    disjoint[3, 3] = 1
    half = np.zeros((4, 4), np.uint8)
    half[0, :2] = 1  # 2 pixels inside the truth: 2 * 2 / (2 + 4)
    bigger = np.zeros((4, 4), np.uint8)
    bigger[:2, :4] = 1  # 8 pixels containing the truth: 2 * 4 / (8 + 4)
    empty = np.zeros((4, 4), np.uint8)
    bank = bank_of(np.stack([same, disjoint, half, bigger, empty])[None], gt=gt)
    np.testing.assert_allclose(OracleJudge().score(bank), [[1.0, 0.0, 2 / 3, 2 / 3, 0.0]])

    empty_gt = bank_of(np.stack([empty, same])[None], gt=np.zeros((1, 4, 4), np.uint8))
    np.testing.assert_allclose(OracleJudge().score(empty_gt), [[1.0, 0.0]])  # both empty -> 1


@settings(max_examples=40, deadline=None)
@given(bank=banks())
def test_oracle_matches_loop_oracle(bank: ProposalBank) -> None:
    got = OracleJudge().score(bank)
    assert got.dtype == np.float64 and got.shape == (bank.n_images, bank.k)
    np.testing.assert_allclose(got, oracle_proposal_dice(bank.masks, bank.ground_truth), rtol=0, atol=1e-12)
    as_bool = proposal_dice(bank.masks.astype(bool), bank.ground_truth.astype(bool))
    np.testing.assert_array_equal(as_bool, got)


def test_oracle_agrees_with_evaluation_dice(big_bank: ProposalBank) -> None:
    """The judge's Dice is the same number the evaluation reports (rndpo.metrics.dice)."""
    from rndpo.metrics import dice

    got = OracleJudge().score(big_bank)
    for j in range(big_bank.k):
        np.testing.assert_array_equal(got[:, j], dice(big_bank.masks[:, j], big_bank.ground_truth))


def test_oracle_needs_ground_truth() -> None:
    bank = bank_of(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"OracleJudge needs bank\.ground_truth"):
        OracleJudge().score(bank)
    with pytest.raises(ValueError, match=r"NoisyOracleJudge|bank\.ground_truth"):
        NoisyOracleJudge(0.5).score(bank)


# --------------------------------------------------------------------------------------------------------
# NoisyOracleJudge


@pytest.fixture(scope="module")
def big_bank() -> ProposalBank:
    return disc_bank(300, 6, 24, seed=3)


@pytest.mark.parametrize("rho", [0.9, 0.7, 0.5, 0.3])
@pytest.mark.parametrize("calibrate", [True, False])
def test_noisy_oracle_hits_reliability(big_bank: ProposalBank, rho: float, calibrate: bool) -> None:
    truth = OracleJudge().score(big_bank)
    for seed in (0, 1):
        scores = NoisyOracleJudge(rho, seed=seed, calibrate=calibrate).score(big_bank)
        got = stats.spearmanr(scores.ravel(), truth.ravel()).statistic
        assert abs(got - rho) < 0.05, (rho, seed, got)
        if calibrate:
            assert abs(got - rho) < 0.005, (rho, seed, got)
        # the scores keep the true Dice's distribution (margins stay on the Dice scale)
        np.testing.assert_array_equal(np.sort(scores.ravel()), np.sort(truth.ravel()))


def test_noisy_oracle_deterministic_per_seed(big_bank: ProposalBank) -> None:
    a = NoisyOracleJudge(0.5, seed=7).score(big_bank)
    b = NoisyOracleJudge(0.5, seed=7).score(big_bank)
    c = NoisyOracleJudge(0.5, seed=8).score(big_bank)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noisy_oracle_extremes(big_bank: ProposalBank) -> None:
    truth = OracleJudge().score(big_bank)
    np.testing.assert_array_equal(NoisyOracleJudge(1.0).score(big_bank), truth)
    zero = NoisyOracleJudge(0.0, seed=2).score(big_bank)
    assert abs(stats.spearmanr(zero.ravel(), truth.ravel()).statistic) < 0.05
    # higher reliability -> more images where the judge's pick is truly best (same noise)
    hits = [
        np.mean(
            truth[np.arange(300), np.argmax(NoisyOracleJudge(r, seed=0).score(big_bank), 1)] >= truth.max(1)
        )
        for r in (0.3, 0.9)
    ]
    assert hits[0] < hits[1]


def test_noisy_oracle_constant_truth() -> None:
    gt = np.ones((2, 3, 3), np.uint8)
    bank = bank_of(np.ones((2, 3, 3, 3)), gt=gt)
    np.testing.assert_array_equal(NoisyOracleJudge(0.4).score(bank), np.ones((2, 3)))


@pytest.mark.parametrize("rho", [-0.1, 1.5, float("nan")])
def test_noisy_oracle_rejects_bad_reliability(rho: float) -> None:
    with pytest.raises(ValueError, match=r"reliability must lie in \[0, 1\]"):
        NoisyOracleJudge(rho)


def test_noisy_oracle_rejects_bad_types() -> None:
    with pytest.raises(TypeError, match="reliability must be a float"):
        NoisyOracleJudge("0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an int"):
        NoisyOracleJudge(0.5, seed=1.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# AgreementJudge


def test_agreement_known_values() -> None:
    a = np.zeros((2, 4), np.uint8)
    a[0, :2] = 1  # 2 pixels
    b = np.zeros((2, 4), np.uint8)
    b[0, :4] = 1  # 4 pixels, contains a: Dice(a, b) = 4 / 6
    c = np.zeros((2, 4), np.uint8)  # empty: Dice with a or b is 0
    bank = bank_of(np.stack([a, b, c])[None])
    np.testing.assert_allclose(AgreementJudge().score(bank), [[(2 / 3) / 2, (2 / 3) / 2, 0.0]])
    empties = bank_of(np.zeros((1, 3, 2, 4)))
    np.testing.assert_allclose(AgreementJudge().score(empties), [[1.0, 1.0, 1.0]])  # empty vs empty -> 1


@settings(max_examples=40, deadline=None)
@given(bank=banks(min_k=2))
def test_agreement_matches_loop_oracle(bank: ProposalBank) -> None:
    got = AgreementJudge().score(bank)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, oracle_agreement(bank.masks), rtol=0, atol=1e-12)


def test_agreement_needs_two_proposals() -> None:
    with pytest.raises(ValueError, match=r"K >= 2.*got K = 1"):
        AgreementJudge().score(bank_of(np.ones((2, 1, 3, 3))))


# --------------------------------------------------------------------------------------------------------
# ConsensusJudge


def test_consensus_known_values() -> None:
    # three 1x4 proposals; the strict majority (>= 2 of 3) is pixels 0..1
    m = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1]], np.uint8)[None, :, None, :]
    # consensus {0, 1}: Dice 1; 2*2/(3+2); 2*1/(2+2)
    np.testing.assert_allclose(ConsensusJudge().score(bank_of(m)), [[1.0, 0.8, 0.5]])
    # K = 2 with a tie on pixel 1: 1 of 2 votes is not a strict majority -> consensus {0}
    m2 = np.array([[1, 1], [1, 0]], np.uint8)[None, :, None, :]
    np.testing.assert_allclose(ConsensusJudge().score(bank_of(m2)), [[2 / 3, 1.0]])
    # all proposals empty: the consensus is empty and every proposal has Dice 1
    np.testing.assert_allclose(ConsensusJudge().score(bank_of(np.zeros((1, 3, 2, 2)))), [[1.0, 1.0, 1.0]])


@settings(max_examples=40, deadline=None)
@given(bank=banks())
def test_consensus_matches_loop_oracle(bank: ProposalBank) -> None:
    expected = oracle_proposal_dice(bank.masks, oracle_consensus_mask(bank.masks))
    np.testing.assert_allclose(ConsensusJudge().score(bank), expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------
# UncertaintyJudge


def test_uncertainty_known_values() -> None:
    probs = np.array([[[0.9, 0.8, 0.1, 0.2]]], np.float32)  # (1, 1, 4)
    good = np.array([1, 1, 0, 0], np.uint8)
    wrong = np.array([0, 0, 1, 1], np.uint8)
    empty = np.zeros(4, np.uint8)
    full = np.ones(4, np.uint8)
    bank = bank_of(np.stack([good, wrong, empty, full])[None, :, None, :], probs=probs)
    conf = UncertaintyJudge("confidence").score(bank)
    np.testing.assert_allclose(
        conf,
        [[(0.85 + 0.85) / 2, (0.15 + 0.15) / 2, (0.5 + 0.5) / 2, (0.5 + 0.5) / 2]],
        atol=1e-6,
    )
    # boundary: good mask's inner band is pixel 1 (p=0.8), outer band pixel 2 (1-p=0.9)
    bnd = UncertaintyJudge("boundary").score(bank)
    np.testing.assert_allclose(bnd[0, :2], [(0.8 + 0.9) / 2, (0.1 + 0.2) / 2], atol=1e-6)
    np.testing.assert_allclose(bnd[0, 2:], [0.5, 0.5])  # no boundary band: chance value
    ent = UncertaintyJudge("entropy").score(bank)
    expected_good = -(np.mean(-np.log2([0.9, 0.8])) + np.mean(-np.log2([0.9, 0.8]))) / 2
    np.testing.assert_allclose(ent[0, 0], expected_good, rtol=1e-5)
    assert ent[0, 0] > ent[0, 2] > ent[0, 1]  # right > empty (1 bit each side) > wrong
    assert conf[0, 0] > conf[0, 1] and bnd[0, 0] > bnd[0, 1]


@pytest.mark.parametrize("mode", ["confidence", "entropy", "boundary"])
@settings(max_examples=25, deadline=None)
@given(bank=banks())
def test_uncertainty_matches_loop_oracle(mode: str, bank: ProposalBank) -> None:
    got = UncertaintyJudge(mode).score(bank)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, oracle_uncertainty(bank.masks, bank.probs, mode), rtol=1e-5, atol=1e-6)


def test_uncertainty_prefers_good_masks(big_bank: ProposalBank) -> None:
    truth = OracleJudge().score(big_bank)
    for mode in ("confidence", "entropy", "boundary"):
        s = UncertaintyJudge(mode).score(big_bank)  # type: ignore[arg-type]
        assert stats.spearmanr(s.ravel(), truth.ravel()).statistic > 0.3, mode


def test_uncertainty_needs_probs_and_valid_mode() -> None:
    with pytest.raises(ValueError, match=r"UncertaintyJudge\(mode='entropy'\) needs bank\.probs"):
        UncertaintyJudge("entropy").score(bank_of(np.zeros((1, 2, 3, 3))))
    with pytest.raises(
        ValueError, match=r"mode must be one of \['confidence', 'entropy', 'boundary'\], got 'x'"
    ):
        UncertaintyJudge("x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# all label-free and oracle judges: finite, shaped, validated


@settings(max_examples=40, deadline=None)
@given(bank=banks(min_k=2), rho=st.floats(0, 1))
def test_no_nan_ever(bank: ProposalBank, rho: float) -> None:
    judges: list[Judge] = [
        OracleJudge(),
        NoisyOracleJudge(rho, seed=0),
        AgreementJudge(),
        ConsensusJudge(),
        *(UncertaintyJudge(m) for m in ("confidence", "entropy", "boundary")),  # type: ignore[arg-type]
    ]
    for judge in judges:
        s = judge.score(bank)
        assert s.dtype == np.float64 and s.shape == (bank.n_images, bank.k), judge.name
        assert np.all(np.isfinite(s)), judge.name


def test_masks_are_validated() -> None:
    # ProposalBank validates its own arrays; proposal_dice and the bank check guard raw inputs
    ok = np.zeros((1, 2, 3, 3), np.uint8)
    with pytest.raises(
        ValueError, match=r"masks must be binary with values \{0, 1\}, got values in \[0, 2\]"
    ):
        proposal_dice(np.eye(3, dtype=np.uint8)[None, None].repeat(2, 1) * 2, np.zeros((1, 3, 3), np.uint8))
    with pytest.raises(
        TypeError, match=r"masks must be bool or an integer dtype with values \{0, 1\}, got dtype float32"
    ):
        proposal_dice(ok.astype(np.float32), np.zeros((1, 3, 3), np.uint8))
    with pytest.raises(
        ValueError, match=r"masks must have 4 dimensions \(N, K, H, W\), got shape \(2, 3, 3\)"
    ):
        proposal_dice(ok[0], np.zeros((1, 3, 3), np.uint8))
    with pytest.raises(
        ValueError, match=r"reference must have shape \(N, H, W\) = \(1, 3, 3\), got \(2, 3, 3\)"
    ):
        proposal_dice(ok, np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(TypeError, match="bank must be a ProposalBank, got ndarray"):
        ConsensusJudge().score(ok)  # type: ignore[arg-type]


def test_make_judge() -> None:
    kwargs = {"noisy_oracle": {"reliability": 0.5, "seed": 3}, "uncertainty": {"mode": "entropy"}}
    for name in JUDGE_NAMES:
        judge = make_judge(name, **kwargs.get(name, {}))
        assert judge.name == name
        assert isinstance(judge, Judge)
    assert make_judge("noisy_oracle", reliability=0.5, seed=3).seed == 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"unknown judge 'oracel'; valid names: \['oracle', 'noisy_oracle'"):
        make_judge("oracel")
    with pytest.raises(
        TypeError, match=r"judge 'oracle' got invalid arguments \['reliability'\]; it accepts \[\]"
    ):
        make_judge("oracle", reliability=0.5)


# --------------------------------------------------------------------------------------------------------
# LearnedQCJudge (unit level; the quality test against a constant predictor is at the end)


@pytest.fixture(scope="module")
def qc_bank() -> ProposalBank:
    return disc_bank(16, 4, 16, seed=5)


def test_learned_qc_fit_score_save_load(qc_bank: ProposalBank, tmp_path) -> None:
    judge = LearnedQCJudge(width=4, batch_size=16)
    with pytest.raises(ValueError, match="no trained model: call fit"):
        judge.score(qc_bank)
    result = judge.fit(qc_bank, steps=4, val_fraction=0.25, seed=0, progress=False)
    assert (result.n_train_images, result.n_val_images) == (12, 4)
    assert (result.n_train_proposals, result.n_val_proposals) == (48, 16)
    assert result.val_mae is not None and np.isfinite(result.val_mae) and np.isfinite(result.train_loss)
    scores = judge.score(qc_bank)
    assert scores.shape == (16, 4) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))

    path = judge.save(tmp_path / "qc")
    assert sorted(p.name for p in path.iterdir()) == [
        "SHA256SUMS",
        "config.json",
        "model.pt",
    ]  # checksums: storage.atomic_dir
    loaded = LearnedQCJudge.load(path)
    np.testing.assert_array_equal(loaded.score(qc_bank), scores)
    assert loaded.fit_result == result

    # deterministic per seed, and the global torch RNG is untouched by fitting
    import torch

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    again = LearnedQCJudge(width=4, batch_size=16)
    again.fit(qc_bank, steps=4, val_fraction=0.25, seed=0, progress=False)
    assert torch.rand(1) == before
    np.testing.assert_array_equal(again.score(qc_bank), scores)


def test_learned_qc_scores_a_memory_mapped_bank(qc_bank: ProposalBank, tmp_path) -> None:
    # A cached bank loads as read-only memmaps; torch warns (an error under this suite's filterwarnings)
    # when it wraps a non-writable array, which the CUDA full-grid run hit.
    qc_bank.save(tmp_path / "bank")
    mapped = ProposalBank.load(tmp_path / "bank", mmap=True)
    assert not mapped.images.flags.writeable
    judge = LearnedQCJudge(width=4, batch_size=16)
    judge.fit(qc_bank, steps=2, seed=0, progress=False)
    np.testing.assert_array_equal(judge.score(mapped), judge.score(qc_bank))


def test_learned_qc_missing_inputs(qc_bank: ProposalBank, tmp_path) -> None:
    no_gt = ProposalBank(qc_bank.images, qc_bank.masks, qc_bank.probs, None)
    with pytest.raises(ValueError, match=r"needs bank\.ground_truth"):
        LearnedQCJudge().fit(no_gt, steps=1, progress=False)
    no_images = ProposalBank(qc_bank.images[:, :0], qc_bank.masks, qc_bank.probs, qc_bank.ground_truth)
    with pytest.raises(ValueError, match=r"LearnedQCJudge\.fit needs bank\.images"):
        LearnedQCJudge().fit(no_images, steps=1, progress=False)
    judge = LearnedQCJudge(width=4)
    judge.fit(qc_bank, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"LearnedQCJudge needs bank\.images"):
        judge.score(no_images)
    rgb = ProposalBank(np.repeat(qc_bank.images, 3, axis=1), qc_bank.masks)
    with pytest.raises(ValueError, match=r"bank\.images must have 1 channels \(as in training\), got 3"):
        judge.score(rgb)
    nan_images = ProposalBank(np.full_like(qc_bank.images, np.nan), qc_bank.masks)
    with pytest.raises(ValueError, match=r"bank\.images must be finite, got 256 non-finite values"):
        judge.score(nan_images.subset([0]))
    with pytest.raises(ValueError, match="no trained model to save"):
        LearnedQCJudge().save(tmp_path / "x")
    with pytest.raises(ValueError, match=r"config\.json and model\.pt"):
        LearnedQCJudge.load(tmp_path / "missing")


def test_learned_qc_with_corruptions_ranks_held_out_proposals(tmp_path) -> None:
    """Trained on 24 disc images' proposals plus corruptions of their masks (32 x 32, 250 steps), the
    judge ranks the proposals of 24 other images far better than chance; save/load keeps its settings
    and reproduces its scores exactly."""
    from rndpo.metrics import spearman

    train, held_out = disc_bank(24, 4, 32, seed=1), disc_bank(24, 4, 32, seed=2)
    judge = LearnedQCJudge(width=8, batch_size=32, n_synthetic=8, rank_weight=1.0, jitter=0.1)
    judge.fit(train, steps=250, val_fraction=0.0, seed=0, progress=False)
    scores = judge.score(held_out)
    rho = spearman(scores, OracleJudge().score(held_out))
    assert rho is not None and rho > 0.5, rho
    loaded = LearnedQCJudge.load(judge.save(tmp_path / "qc"))
    assert (loaded.n_synthetic, loaded.rank_weight, loaded.jitter) == (8, 1.0, 0.1)
    np.testing.assert_array_equal(loaded.score(held_out), scores)


@pytest.mark.slow
def test_learned_qc_beats_constant_on_builtin_default() -> None:
    """Real stack: base U-Net on the built-in synthetic default, K = 6 proposals; the QC judge is trained on
    the labeled images' proposals and must beat the mean-training-Dice constant on held-out images."""
    import torch

    from rndpo.data import split_dataset, synthetic_dataset
    from rndpo.nets.unet import UNet
    from rndpo.proposals import ProposalConfig, generate_proposals
    from rndpo.training.supervised import BaseTrainConfig, train_base

    data = synthetic_dataset(n_images=120, size=32, seed=0)
    splits = split_dataset(data, label_budget=0.5, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNet(in_channels=data.images.shape[1], channels=(8, 16, 32))
    train_base(
        model,
        splits.labeled,
        splits.val,
        BaseTrainConfig(steps=30, eval_every=15, n_snapshots=0),
        progress=False,
    )
    cfg = ProposalConfig(k=6, sources=("mc_dropout", "tta", "threshold", "morph"))
    train_bank = generate_proposals(
        model, splits.labeled.images, config=cfg, ground_truth=splits.labeled.masks, progress=False
    )
    held_out = generate_proposals(
        model, splits.unlabeled.images, config=cfg, ground_truth=splits.unlabeled.masks, progress=False
    )
    judge = LearnedQCJudge()
    fit = judge.fit(train_bank, steps=100, seed=0, progress=False)
    truth_train = OracleJudge().score(train_bank)
    truth = OracleJudge().score(held_out)
    pred = judge.score(held_out)
    mae = float(np.mean(np.abs(pred - truth)))
    constant_mae = float(np.mean(np.abs(truth_train.mean() - truth)))
    assert mae < constant_mae, (mae, constant_mae, fit)


@pytest.mark.parametrize("rho", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_closed_form_starting_correlation_gives_the_spearman_asked_for(rho: float) -> None:
    """The uncalibrated conversion on its own: bivariate normal samples with Pearson r =
    pearson_for_spearman(rho) have Spearman rho (n = 400k: standard error < 0.0016)."""
    from rndpo.judges import pearson_for_spearman

    r = pearson_for_spearman(rho)
    rng = np.random.default_rng(0)
    x, e = rng.standard_normal((2, 400_000))
    y = r * x + np.sqrt(1 - r * r) * e
    assert abs(stats.spearmanr(x, y).statistic - rho) < 0.005
    assert (6 / np.pi) * np.arcsin(r / 2) == pytest.approx(rho, abs=1e-12)
    assert pearson_for_spearman(0.0) == 0.0 and pearson_for_spearman(1.0) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------------
# the registry (rndpo.judges.registry): builds every judge, the default ensemble included


def test_the_registry_knows_exactly_the_configs_judge_names() -> None:
    from rndpo.config import JUDGE_NAMES as CONFIG_NAMES
    from rndpo.judges import JUDGE_SPECS

    assert tuple(JUDGE_SPECS) == CONFIG_NAMES == JUDGE_NAMES
    assert all(spec.name == name for name, spec in JUDGE_SPECS.items())
    kinds = {n: (s.seeded, s.trained, s.composite) for n, s in JUDGE_SPECS.items()}
    assert {n for n, k in kinds.items() if any(k)} == {"noisy_oracle", "learned_qc", "ensemble"}
    assert kinds["noisy_oracle"] == (True, False, False)
    assert kinds["learned_qc"] == (False, True, False)
    assert kinds["ensemble"] == (False, False, True)


def test_build_judge_builds_every_judge_and_passes_the_seed_only_to_seeded_ones() -> None:
    from rndpo.judges import build_judge

    for name in JUDGE_NAMES:
        judge = build_judge(name, seed=5)
        assert judge.name == name and isinstance(judge, Judge)
    assert build_judge("noisy_oracle", {"reliability": 0.4}, seed=7).seed == 7  # type: ignore[attr-defined]
    assert build_judge("noisy_oracle", {"reliability": 0.4}).seed == 0  # type: ignore[attr-defined]
    unc = build_judge("uncertainty", {"mode": "boundary"}, seed=3)
    assert unc.mode == "boundary"  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"judge 'noisy_oracle': \['seed'\] given both"):
        build_judge("noisy_oracle", {"seed": 1}, seed=2)
    with pytest.raises(ValueError, match=r"unknown judge 'nope'; valid names: \['oracle'"):
        build_judge("nope")


def test_the_default_ensemble_scores_as_agreement_and_consensus_did(big_bank: ProposalBank) -> None:
    from rndpo.config import JudgeConfig
    from rndpo.judges import EnsembleJudge, build_judge

    parts = [AgreementJudge(), ConsensusJudge()]
    expected = EnsembleJudge(parts).score(big_bank)
    for judge in (
        make_judge("ensemble"),
        build_judge("ensemble"),
        build_judge("ensemble", config=JudgeConfig(names=("noisy_oracle", "ensemble"))),
    ):
        assert isinstance(judge, EnsembleJudge)
        assert [j.name for j in judge.judges] == ["agreement", "consensus"]
        np.testing.assert_array_equal(judge.weights, [1.0, 1.0])
        assert judge.score(big_bank).tobytes() == expected.tobytes()
    weighted = EnsembleJudge(parts, [0.25, 0.75]).score(big_bank)
    built = make_judge("ensemble", weights=[0.25, 0.75])
    assert built.score(big_bank).tobytes() == weighted.tobytes()
    assert not np.array_equal(weighted, expected)
    given = make_judge("ensemble", judges=[OracleJudge(), AgreementJudge()], weights=[1.0, 0.0])
    assert [j.name for j in given.judges] == ["oracle", "agreement"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'judges'"):
        EnsembleJudge()  # type: ignore[call-arg]  # the registry builds the components, not the ensemble
    with pytest.raises(TypeError, match=r"judges\[1\] must be a Judge .*got str"):
        EnsembleJudge([AgreementJudge(), "consensus"])  # type: ignore[list-item]


def test_an_experiments_ensemble_is_built_from_the_configs_components(big_bank: ProposalBank) -> None:
    from rndpo.config import JudgeConfig
    from rndpo.judges import EnsembleJudge, build_judge

    cfg = JudgeConfig(
        names=("noisy_oracle", "uncertainty", "agreement", "ensemble"), uncertainty_mode="entropy"
    )
    kwargs = {"components": ["uncertainty", "agreement"], "weights": [0.4, 0.6], "ranking": "bank"}
    seen: list[tuple[str, str, dict]] = []

    def component(label: str, name: str, kw: dict) -> Judge:
        seen.append((label, name, kw))
        return make_judge(name, **kw)

    judge = build_judge("ensemble", kwargs, config=cfg, seed=3, component=component)
    assert seen == [("uncertainty", "uncertainty", {"mode": "entropy"}), ("agreement", "agreement", {})]
    expected = EnsembleJudge([UncertaintyJudge("entropy"), AgreementJudge()], [0.4, 0.6]).score(big_bank)
    assert judge.score(big_bank).tobytes() == expected.tobytes()
    # without a builder the registry builds the components itself; configured labels get their kwargs
    same = build_judge("ensemble", kwargs, config=cfg)
    assert same.score(big_bank).tobytes() == expected.tobytes()
    # without a config, component labels are judge names
    plain = build_judge("ensemble", {"components": ["agreement", "consensus"]})
    assert [j.name for j in plain.judges] == ["agreement", "consensus"]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"'consensus' is no component of 'ensemble' under this config"):
        build_judge("ensemble", {"components": ["consensus"]}, config=cfg)
    with pytest.raises(ValueError, match=r"ranking must be 'bank'"):
        build_judge("ensemble", {**kwargs, "ranking": "image"}, config=cfg)
    with pytest.raises(TypeError, match=r"judge 'ensemble' got invalid arguments \['mode'\]"):
        build_judge("ensemble", {"mode": "x"})
    with pytest.raises(ValueError, match=r"components: unknown judge 'ensemble'"):
        build_judge("ensemble", {"components": ["ensemble"]})


def test_a_trained_judge_is_fitted_once_into_its_folder_then_loaded(qc_bank: ProposalBank, tmp_path) -> None:
    from rndpo.config import JudgeConfig
    from rndpo.judges import FitSource, build_judge

    cfg = JudgeConfig(qc_steps=3, qc_synthetic=1, qc_rank_weight=0.5, qc_jitter=0.0, qc_tta=False)
    calls: list[int] = []

    def labeled() -> ProposalBank:
        calls.append(1)
        return qc_bank

    fit = FitSource(tmp_path / "qc", labeled, seed=2)
    first = build_judge("learned_qc", {"width": 4}, config=cfg, fit=fit)
    assert calls == [1] and (tmp_path / "qc" / "model.pt").is_file()
    assert isinstance(first, LearnedQCJudge)
    assert (first.n_synthetic, first.rank_weight, first.jitter, first.tta) == (1, 0.5, 0.0, False)
    assert first.fit_result is not None and first.fit_result.steps == 3
    again = build_judge("learned_qc", {"width": 4}, config=cfg, fit=fit)
    assert calls == [1]  # loaded, not refitted: the labeled bank is never made
    assert again.score(qc_bank).tobytes() == first.score(qc_bank).tobytes()
    # the same fit by hand: same numbers
    by_hand = LearnedQCJudge(width=4, n_synthetic=1, rank_weight=0.5, jitter=0.0, tta=False)
    by_hand.fit(qc_bank, steps=3, seed=2, progress=False)
    assert by_hand.score(qc_bank).tobytes() == first.score(qc_bank).tobytes()
    unfitted = build_judge("learned_qc", config=cfg)  # no FitSource: an unfitted judge with the settings
    assert isinstance(unfitted, LearnedQCJudge) and unfitted.model is None and unfitted.n_synthetic == 1
    with pytest.raises(TypeError, match=r"judge 'learned_qc': \['n_synthetic'\] given both"):
        build_judge("learned_qc", {"n_synthetic": 2}, config=cfg)


def test_the_registry_answers_what_the_pipeline_asked_by_name() -> None:
    """calibration_judges, calibration_settings, key_settings and calibrated_kwargs give exactly what
    the pipeline computed from judge names before the registry (cache keys must not change)."""
    from rndpo.config import JudgeConfig, MiningConfig
    from rndpo.judges import (
        RANKING,
        calibrate_judge,
        calibrated_kwargs,
        calibration_judges,
        calibration_settings,
        ensemble_components,
        ensemble_weights,
        judge_settings,
        key_settings,
    )

    configs = [
        JudgeConfig(),
        JudgeConfig(names=("noisy_oracle", "ensemble"), reliabilities=(0.3, 0.9)),
        JudgeConfig(names=("uncertainty", "learned_qc", "agreement", "ensemble", "oracle")),
        JudgeConfig(names=("learned_qc",), qc_steps=7, qc_synthetic=2, qc_rank_weight=0.0, qc_tta=False),
    ]
    bank = disc_bank(6, 4, 16, seed=0)
    truth = OracleJudge().score(bank)
    for cfg in configs:
        old = [j for j in cfg.judge_labels() if j[1] != "ensemble"]
        if "ensemble" in cfg.names:
            old += ensemble_components(cfg)
        assert calibration_judges(cfg) == list(dict((j[0], j) for j in old).values())
        assert calibration_settings(cfg) == ([RANKING] if "ensemble" in cfg.names else [])
        qc = {"n_synthetic": cfg.qc_synthetic, "rank_weight": cfg.qc_rank_weight}
        qc |= {"jitter": cfg.qc_jitter, "tta": cfg.qc_tta}
        assert judge_settings("learned_qc", cfg) == qc
        assert key_settings("learned_qc", cfg) == [cfg.qc_steps, qc]
        # the learned QC judge is unfitted here: agreement's scores stand in for its calibration
        calibration = {}
        for label, name, kw in calibration_judges(cfg):
            judge = AgreementJudge() if name == "learned_qc" else make_judge(name, **kw)
            calibration[label] = calibrate_judge(label, judge.score(bank), truth, bank.masks, MiningConfig())
        for _, name, kwargs in cfg.judge_labels():
            if name != "learned_qc":
                assert key_settings(name, cfg) is None and judge_settings(name, cfg) == {}
            if name == "ensemble":
                parts = [part[0] for part in ensemble_components(cfg)]
                expected = {"components": parts, "weights": ensemble_weights(calibration, parts)}
                expected["ranking"] = RANKING
                assert calibrated_kwargs(name, kwargs, cfg, calibration) == expected
            else:
                assert calibrated_kwargs(name, kwargs, cfg, calibration) is kwargs
