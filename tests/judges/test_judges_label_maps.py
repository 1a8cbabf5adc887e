"""Judges on label-map banks (num_classes C > 2, 2D and 3D) against slow, obvious NumPy loops; C = 2
label maps scored label-map-style against the binary judges."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import slow_structure_dice
from rndpo.judges import (
    AgreementJudge,
    ConsensusJudge,
    EnsembleJudge,
    NoisyOracleJudge,
    OracleJudge,
    UncertaintyJudge,
    make_judge,
    proposal_dice,
    rank_average,
)
from rndpo.judges.agreement import agreement_scores, consensus_scores, vote_label_map
from rndpo.judges.uncertainty import fit_scores
from rndpo.proposals import ProposalBank

# --------------------------------------------------------------------------------------------------------
# slow references (loops over structures, proposals and voxels)


def slow_agreement(masks: np.ndarray, num_classes: int) -> np.ndarray:
    n, k = masks.shape[:2]
    out = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            others = [slow_structure_dice(masks[i, j], masks[i, o], num_classes) for o in range(k) if o != j]
            out[i, j] = sum(others) / len(others)
    return out


def slow_mode(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """Per voxel the most frequent label of the K proposals, ties to the lower label."""
    n, k = masks.shape[:2]
    out = np.zeros((n, *masks.shape[2:]), dtype=np.uint8)
    for i in range(n):
        for v in itertools.product(*(range(s) for s in masks.shape[2:])):
            votes = [int(masks[(i, j, *v)]) for j in range(k)]
            counts = [votes.count(c) for c in range(num_classes)]
            out[(i, *v)] = counts.index(max(counts))
    return out


def slow_against(masks: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    n, k = masks.shape[:2]
    return np.array(
        [[slow_structure_dice(masks[i, j], reference[i], num_classes) for j in range(k)] for i in range(n)]
    )


def slow_inner_band(region: np.ndarray) -> np.ndarray:
    """Voxels of a bool (*S) region with a face neighbour outside it (beyond the edge copies the edge)."""
    out = np.zeros_like(region)
    for v in itertools.product(*(range(s) for s in region.shape)):
        if not region[v]:
            continue
        for axis in range(region.ndim):
            for step in (-1, 1):
                u = list(v)
                u[axis] = min(max(u[axis] + step, 0), region.shape[axis] - 1)
                if not region[tuple(u)]:
                    out[v] = True
    return out


def slow_fit(masks: np.ndarray, probs: np.ndarray, mode: str) -> np.ndarray:
    """The uncertainty judge on label maps, one class, proposal and voxel at a time."""
    n, k = masks.shape[:2]
    classes = probs.shape[1]
    out = np.zeros((n, k))
    for i, j in itertools.product(range(n), range(k)):
        total = 0.0
        for c in range(classes):
            region = masks[i, j] == c
            if mode == "boundary":
                region = slow_inner_band(region)
            values = []
            for v in zip(*np.nonzero(region), strict=True):
                p = float(probs[(i, c, *v)])
                values.append(-math.log2(min(max(p, 1e-6), 1 - 1e-6)) if mode == "entropy" else p)
            if values:
                total += sum(values) / len(values)
            else:
                total += math.log2(classes) if mode == "entropy" else 1.0 / classes
        out[i, j] = (-total if mode == "entropy" else total) / classes
    return out


# --------------------------------------------------------------------------------------------------------
# random label-map banks


@st.composite
def label_banks(draw: st.DrawFn, min_k: int = 1) -> ProposalBank:
    """2D or 3D banks with C in 3..5, K in min_k..6, duplicated proposals and absent structures."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dims = draw(st.sampled_from([2, 3]))
    spatial = tuple(draw(st.integers(1, 5 if dims == 2 else 3)) for _ in range(dims))
    n, k, classes = draw(st.integers(1, 3)), draw(st.integers(min_k, 6)), draw(st.integers(3, 5))
    present = int(draw(st.integers(2, classes)))  # labels actually used: some structures may be absent
    masks = rng.integers(0, present, (n, k, *spatial)).astype(np.uint8)
    for j in range(1, k):  # duplicated proposals
        if rng.random() < 0.3:
            masks[:, j] = masks[:, rng.integers(0, j)]
    gt = rng.integers(0, present, (n, *spatial)).astype(np.uint8)
    raw = rng.random((n, classes, *spatial)) ** 3 + 1e-9
    probs = (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)
    images = rng.random((n, 1, *spatial), dtype=np.float32)
    return ProposalBank(images, masks, probs, gt, num_classes=classes)


# --------------------------------------------------------------------------------------------------------
# every judge against its slow reference


@given(label_banks(min_k=2))
def test_agreement_matches_loop(bank: ProposalBank) -> None:
    got = AgreementJudge().score(bank)
    np.testing.assert_allclose(got, slow_agreement(bank.masks, bank.num_classes), rtol=0, atol=1e-12)
    assert got.dtype == np.float64 and got.shape == (bank.n_images, bank.k)


@given(label_banks())
def test_consensus_matches_loop(bank: ProposalBank) -> None:
    mode = slow_mode(bank.masks, bank.num_classes)
    np.testing.assert_array_equal(vote_label_map(bank.masks, num_classes=bank.num_classes), mode)
    expected = slow_against(bank.masks, mode, bank.num_classes)
    np.testing.assert_allclose(ConsensusJudge().score(bank), expected, rtol=0, atol=1e-12)


@given(label_banks())
def test_oracle_and_noisy_oracle_match_loop(bank: ProposalBank) -> None:
    assert bank.ground_truth is not None
    expected = slow_against(bank.masks, bank.ground_truth, bank.num_classes)
    np.testing.assert_allclose(OracleJudge().score(bank), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(NoisyOracleJudge(1.0).score(bank), expected, rtol=0, atol=1e-12)
    noisy = NoisyOracleJudge(0.3, seed=1).score(bank)  # the oracle's values, reordered
    np.testing.assert_allclose(np.sort(noisy, axis=None), np.sort(expected, axis=None), rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["confidence", "boundary", "entropy"])
@given(bank=label_banks())
def test_uncertainty_matches_loop(bank: ProposalBank, mode: str) -> None:
    assert bank.probs is not None
    got = UncertaintyJudge(mode).score(bank)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, slow_fit(bank.masks, bank.probs, mode), rtol=0, atol=1e-9)


@given(label_banks(min_k=2))
def test_ensemble_ranks_the_label_map_judges(bank: ProposalBank) -> None:
    expected = rank_average(
        [slow_agreement(bank.masks, bank.num_classes), ConsensusJudge().score(bank)], [1.0, 1.0]
    )
    np.testing.assert_allclose(make_judge("ensemble").score(bank), expected, rtol=0, atol=1e-12)
    ensemble = EnsembleJudge([AgreementJudge(), UncertaintyJudge("entropy")], weights=[0.3, 0.7])
    assert ensemble.score(bank).shape == (bank.n_images, bank.k)


# --------------------------------------------------------------------------------------------------------
# hand-built cases


def test_absent_structure_counts_as_agreement() -> None:
    # C = 4: structure 3 is absent from both maps (Dice 1 there); structure 1 matches, structure 2 half
    a = np.array([[1, 1, 2, 2], [0, 0, 0, 0]], np.uint8)
    b = np.array([[1, 1, 2, 0], [0, 0, 0, 0]], np.uint8)
    bank = ProposalBank(
        np.zeros((1, 1, 2, 4), np.float32), np.stack([a, b])[None], ground_truth=a[None], num_classes=4
    )
    structure2 = 2 * 1 / (2 + 1)
    np.testing.assert_allclose(OracleJudge().score(bank), [[1.0, (1 + structure2 + 1) / 3]])
    np.testing.assert_allclose(AgreementJudge().score(bank), [[(1 + structure2 + 1) / 3] * 2])
    # an invented structure costs it: b2 labels a voxel 3 that neither a nor the truth has
    b2 = b.copy()
    b2[1, 0] = 3
    bank2 = ProposalBank(bank.images, np.stack([a, b2])[None], ground_truth=a[None], num_classes=4)
    np.testing.assert_allclose(OracleJudge().score(bank2), [[1.0, (1 + structure2 + 0) / 3]])


def test_agreement_needs_two_proposals() -> None:
    bank = ProposalBank(
        np.zeros((1, 1, 2, 2, 2), np.float32), np.zeros((1, 1, 2, 2, 2), np.uint8), num_classes=3
    )
    with pytest.raises(ValueError, match=r"K >= 2\), got K = 1"):
        AgreementJudge().score(bank)


def test_label_inputs_are_validated() -> None:
    masks = np.zeros((1, 2, 3, 3, 3), np.uint8)
    with pytest.raises(
        ValueError, match=r"masks must hold labels 0 to 2 \(num_classes = 3\), got values in \[0, 3\]"
    ):
        proposal_dice(masks + 3 * np.eye(3, dtype=np.uint8), np.zeros((1, 3, 3, 3), np.uint8), num_classes=3)
    with pytest.raises(ValueError, match=r"reference must have shape \(N, D, H, W\) = \(1, 3, 3, 3\)"):
        proposal_dice(masks, np.zeros((2, 3, 3, 3), np.uint8), num_classes=3)
    with pytest.raises(ValueError, match=r"masks must have 5 dimensions \(N, K, D, H, W\)"):
        proposal_dice(masks[0], np.zeros((1, 3, 3, 3), np.uint8), num_classes=3)
    with pytest.raises(TypeError, match="masks must be bool or an integer dtype"):
        proposal_dice(masks.astype(np.float32), np.zeros((1, 3, 3, 3), np.uint8), num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be None or an int from 2 to 255, got 1"):
        proposal_dice(masks, np.zeros((1, 3, 3, 3), np.uint8), num_classes=1)
    with pytest.raises(ValueError, match=r"probs must have shape \(N, C, \*S\) = \(1, 3, 3, 3, 3\)"):
        fit_scores(masks, np.zeros((1, 3, 3, 3), np.float32), num_classes=3)
    with pytest.raises(ValueError, match="mode must be one of"):
        fit_scores(masks, np.zeros((1, 3, 3, 3, 3), np.float32), "sharpness", num_classes=3)  # type: ignore[arg-type]


def test_int32_label_maps_and_3d_binary_banks() -> None:
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, (2, 3, 3, 4, 5))
    ref = rng.integers(0, 4, (2, 3, 4, 5))
    np.testing.assert_allclose(
        proposal_dice(masks.astype(np.int32), ref.astype(np.int64), num_classes=4),
        slow_against(masks, ref, 4),
        rtol=0,
        atol=1e-12,
    )
    # binary 3D banks score the foreground Dice, as in 2D
    binary = (masks > 1).astype(np.uint8)
    gt = (ref > 1).astype(np.uint8)
    bank = ProposalBank(np.zeros((2, 1, 3, 4, 5), np.float32), binary, ground_truth=gt)
    np.testing.assert_allclose(OracleJudge().score(bank), slow_against(binary, gt, 2), rtol=0, atol=1e-12)
    np.testing.assert_allclose(AgreementJudge().score(bank), slow_agreement(binary, 2), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------
# C = 2: label-map-style scoring equals the binary judges


@st.composite
def binary_banks(draw: st.DrawFn) -> ProposalBank:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dims = draw(st.sampled_from([2, 3]))
    spatial = tuple(draw(st.integers(1, 5 if dims == 2 else 3)) for _ in range(dims))
    n, k = draw(st.integers(1, 3)), draw(st.integers(2, 6))
    fill = draw(st.sampled_from([0.0, 0.5, 1.0]))
    masks = (rng.random((n, k, *spatial)) < (fill if fill != 0.5 else rng.random())).astype(np.uint8)
    gt = (rng.random((n, *spatial)) < 0.5).astype(np.uint8)
    probs = rng.random((n, *spatial), dtype=np.float32)
    return ProposalBank(np.zeros((n, 1, *spatial), np.float32), masks, probs, gt)


@given(binary_banks())
def test_two_class_label_maps_score_like_binary_masks(bank: ProposalBank) -> None:
    """Identical for oracle, noisy oracle, agreement, consensus (and so the default ensemble): the mean
    per-structure Dice of one structure is its Dice, and the plurality vote of two labels (ties to 0)
    is the strict majority. The uncertainty modes agree up to float rounding ([1 - p, p] in float32)."""
    masks, gt, probs = bank.masks, bank.ground_truth, bank.probs
    assert gt is not None and probs is not None
    np.testing.assert_array_equal(proposal_dice(masks, gt, num_classes=2), OracleJudge().score(bank))
    np.testing.assert_array_equal(agreement_scores(masks, num_classes=2), AgreementJudge().score(bank))
    np.testing.assert_array_equal(vote_label_map(masks, num_classes=2), vote_label_map(masks))
    np.testing.assert_array_equal(consensus_scores(masks, num_classes=2), ConsensusJudge().score(bank))
    two = np.stack([1.0 - probs, probs], axis=1).astype(np.float32)
    for mode in UncertaintyJudge.MODES:
        np.testing.assert_allclose(
            fit_scores(masks, two, mode, num_classes=2),  # type: ignore[arg-type]
            UncertaintyJudge(mode).score(bank),  # type: ignore[arg-type]
            rtol=0,
            atol=2e-6,
        )
