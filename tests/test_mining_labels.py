"""Label maps in mining (issue 28): ``pairwise_stats`` and ``mine_pairs`` with ``num_classes``, against
hand-computed cases and the slow oracles of tests/oracles.py."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rndpo
from oracles import oracle_first_bad_label, oracle_label_pairwise_stats, oracle_mine_pairs
from rndpo.cli import main
from rndpo.mining import STRATEGIES, PairSet, PairwiseStats, _as_label_bank, mine_pairs, pairwise_stats

ROOT = Path(__file__).resolve().parents[1]
STATS_FIELDS = ("sizes", "intersection", "disagreement")
PAIR_FIELDS = ("image", "chosen", "rejected", "region_size", "margin")
INT_DTYPES = (np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.dtype(">i2"))


def examples(n: int) -> settings:
    """Hypothesis settings with n examples (more under a profile that asks for more, e.g. thorough)."""
    return settings(
        max_examples=max(n, settings().max_examples),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def rows(pairs: PairSet) -> list[tuple[int, int, int, int, float]]:
    return [
        (int(i), int(c), int(r), int(z), float(m))
        for i, c, r, z, m in zip(
            pairs.image, pairs.chosen, pairs.rejected, pairs.region_size, pairs.margin, strict=True
        )
    ]


def assert_label_stats_match_oracle(stats: PairwiseStats, masks, num_classes: int) -> None:
    for name, want in zip(STATS_FIELDS, oracle_label_pairwise_stats(masks, num_classes), strict=True):
        got = getattr(stats, name)
        assert got.dtype == np.int64, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def assert_same_stats(a: PairwiseStats, b: PairwiseStats) -> None:
    for name in STATS_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype == np.int64


def bad_label_message(value: int, image: int, proposal: int, pixel: int, num_classes: int) -> str:
    return (
        f"masks must contain only labels 0 to {num_classes - 1} (num_classes = {num_classes}), "
        f"got {value} at image {image}, proposal {proposal}, flat pixel {pixel}"
    )


# --- hand-computed cases ------------------------------------------------------------------------

# One image, 4 proposals of 6 voxels, C = 3. Proposal 2 swaps the two structures of proposal 0: the
# foregrounds agree (binary xor 0) but 4 labels differ. Foregrounds (non-zero): 4, 3, 4, 6.
HAND = np.array(
    [[[0, 1, 1, 2, 2, 0], [0, 1, 1, 2, 0, 0], [0, 2, 2, 1, 1, 0], [1, 1, 1, 2, 2, 1]]], dtype=np.uint8
)
HAND_SCORES = np.array([[0.9, 0.5, 0.7, 0.1]])  # ranking 0, 2, 1, 3
HAND_DIS = [[0, 1, 4, 2], [1, 0, 4, 3], [4, 4, 0, 6], [2, 3, 6, 0]]
S = HAND_SCORES[0]
LABEL_ROW = {(c, r): (0, c, r, HAND_DIS[c][r], S[c] - S[r]) for c in range(4) for r in range(4)}
# all_pairs in rank order: (0,2) (0,1) (0,3) (2,1) (2,3) (1,3), |D| 4 1 2 4 6 3.
LABEL_CASES = [
    ("all_pairs", {}, [(0, 2), (0, 1), (0, 3), (2, 1), (2, 3), (1, 3)]),
    ("top_vs_bottom", {}, [(0, 3)]),
    ("adjacent", {}, [(0, 2), (2, 1), (1, 3)]),
    ("all_pairs", {"min_region": 3}, [(0, 2), (2, 1), (2, 3), (1, 3)]),
    ("all_pairs", {"max_region": 2}, [(0, 1), (0, 3)]),
    # |D| <= 0.5 * foreground of chosen (4, 4, 3): not 0.5 * the 6 voxels of a proposal
    ("all_pairs", {"max_region_fraction": 0.5}, [(0, 1), (0, 3)]),
    ("all_pairs", {"max_region_fraction": 1.0}, [(0, 2), (0, 1), (0, 3), (2, 1), (1, 3)]),
    ("all_pairs", {"min_margin": 0.3}, [(0, 1), (0, 3), (2, 3), (1, 3)]),
    ("all_pairs", {"max_pairs_per_image": 2, "min_region": 2}, [(0, 2), (0, 3)]),
]


@pytest.mark.parametrize(("strategy", "kwargs", "expected"), LABEL_CASES)
def test_hand_computed_label_pairs(strategy, kwargs, expected) -> None:
    pairs = mine_pairs(HAND, HAND_SCORES, strategy, num_classes=3, **kwargs)
    assert rows(pairs) == [LABEL_ROW[p] for p in expected]


def test_hand_computed_label_stats() -> None:
    stats = pairwise_stats(HAND, num_classes=3)
    np.testing.assert_array_equal(stats.sizes[0], [[2, 2, 2], [3, 2, 1], [2, 2, 2], [0, 4, 2]])
    np.testing.assert_array_equal(stats.disagreement[0], HAND_DIS)
    np.testing.assert_array_equal(stats.intersection[0, 0, 1], [2, 2, 1])
    np.testing.assert_array_equal(stats.intersection[0, 0, 2], [2, 0, 0])  # swapped structures
    np.testing.assert_array_equal(stats.intersection[0, 3, 3], stats.sizes[0, 3])
    assert stats.sizes.shape == (1, 4, 3) and stats.intersection.shape == (1, 4, 4, 3)
    # the binary view of the same maps sees no disagreement between the swapped proposals
    assert pairwise_stats(HAND != 0).disagreement[0, 0, 2] == 0


def test_label_stats_arrays_are_independent_contiguous_int64() -> None:
    stats = pairwise_stats(np.ones((3, 2, 5), dtype=np.uint8), num_classes=4)
    for arr in (stats.sizes, stats.intersection, stats.disagreement):
        assert arr.dtype == np.int64 and arr.flags.c_contiguous and arr.flags.writeable
    assert not np.shares_memory(stats.intersection, stats.disagreement)
    assert not np.shares_memory(stats.sizes, stats.intersection)
    stats.intersection[...] = -1
    np.testing.assert_array_equal(stats.disagreement, np.zeros((3, 2, 2)))
    np.testing.assert_array_equal(stats.sizes, np.broadcast_to([0, 5, 0, 0], (3, 2, 4)))


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (3, 1, 3, 3), (2, 0, 5), (2, 3, 0, 4), (1, 2, 0)])
def test_degenerate_label_banks(shape) -> None:
    masks = np.zeros(shape, dtype=np.int16)
    stats = pairwise_stats(masks, num_classes=5)
    assert stats.sizes.shape == (*shape[:2], 5) and stats.intersection.shape == (*shape[:2], shape[1], 5)
    assert_label_stats_match_oracle(stats, masks, 5)
    pairs = mine_pairs(masks, np.zeros(shape[:2]), "all_pairs", num_classes=5)
    assert len(pairs) == 0 and all(getattr(pairs, f).shape == (0,) for f in PAIR_FIELDS)


# --- property tests against the oracles ----------------------------------------------------------


@st.composite
def label_banks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    """(label maps (N, K, *S) of an integer dtype, scores (N, K), C): 1-4 spatial dims, C in 2..6,
    duplicated proposals, score ties, and maps that are noise, mostly background, small changes of
    one map (as MC dropout and TTA give) or constant."""
    c = draw(st.integers(2, 6))
    n, k, ndim = draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(1, 4))
    if ndim == 1:
        spatial: tuple[int, ...] = (draw(st.sampled_from([1, 7, 64, 129, 300])),)
    else:
        side = {2: 9, 3: 6, 4: 4}[ndim]
        spatial = tuple(draw(st.lists(st.integers(2, side), min_size=ndim, max_size=ndim)))
    degenerate = draw(st.sampled_from(["", "", "", "n", "k", "voxels", *[""] * 6]))  # 1 in 4
    if degenerate == "n":
        n = draw(st.integers(0, 1))
    elif degenerate == "k":
        k = draw(st.integers(0, 1))
    elif degenerate == "voxels":
        spatial = (0, *spatial[1:])
    shape = (n, k, *spatial)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "background", "changes", "constant"]))
    if kind == "noise":
        masks = rng.integers(0, c, shape)
    elif kind == "background":
        masks = np.where(rng.random(shape) < 0.1, rng.integers(1, c, shape), 0)
    elif kind == "changes":
        base = rng.integers(0, c, (n, 1, *spatial))
        rate = draw(st.sampled_from([0.02, 0.1, 0.3]))
        masks = np.where(rng.random(shape) < rate, rng.integers(0, c, shape), base)
    else:
        masks = np.full(shape, draw(st.integers(0, c - 1)))
    if k > 1 and draw(st.booleans()):
        masks[:, 1] = masks[:, 0]  # duplicates
    if k > 3 and draw(st.booleans()):
        masks[:, 3] = masks[:, 0]
    levels = draw(st.sampled_from([1000, 4, 2, 1]))  # few levels -> ties
    scores = rng.integers(0, levels, size=(n, k)) / levels + draw(st.sampled_from([0.0, -2.5]))
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.uint8, *INT_DTYPES]))
    return masks.astype(dtype), scores, c


label_mining_kwargs = st.fixed_dictionaries(
    {
        "min_margin": st.sampled_from([0.0, 0.0, 0.1, 0.3]),
        "min_region": st.sampled_from([0, 1, 2, 5]) | st.integers(0, 30),
        "max_pairs_per_image": st.none() | st.integers(0, 4),
        "seed": st.integers(0, 2**64 - 1),
    },
    optional={
        "max_region": st.integers(30, 400),
        "max_region_fraction": st.sampled_from([0.05, 0.25, 0.5, 1.0, 2.5]),
    },
)


@examples(150)
@given(bank=label_banks())
def test_label_stats_equal_the_oracle(bank) -> None:
    masks, _, c = bank
    assert_label_stats_match_oracle(pairwise_stats(masks, num_classes=c), masks, c)


@examples(300)
@given(bank=label_banks(), strategy=st.sampled_from(STRATEGIES), kwargs=label_mining_kwargs)
def test_label_mining_equals_the_oracle(bank, strategy, kwargs) -> None:
    masks, scores, c = bank
    pairs = mine_pairs(masks, scores, strategy, num_classes=c, **kwargs)
    for name in PAIR_FIELDS:
        assert getattr(pairs, name).dtype == (np.float64 if name == "margin" else np.int64), name
    assert rows(pairs) == oracle_mine_pairs(masks, scores, strategy, num_classes=c, **kwargs)


fraction_kwargs = st.fixed_dictionaries(
    {
        "max_region_fraction": st.sampled_from([0.05, 0.2, 0.5, 1.0, 2.5]),
        "min_margin": st.sampled_from([0.0, 0.1]),
        "seed": st.integers(0, 2**64 - 1),
    },
    optional={"max_pairs_per_image": st.integers(0, 4)},
)


@examples(100)
@given(bank=label_banks(), strategy=st.sampled_from(STRATEGIES), kwargs=fraction_kwargs)
def test_label_region_fraction_equals_the_oracle(bank, strategy, kwargs) -> None:
    masks, scores, c = bank
    pairs = mine_pairs(masks, scores, strategy, num_classes=c, **kwargs)
    assert rows(pairs) == oracle_mine_pairs(masks, scores, strategy, num_classes=c, **kwargs)
    for i, chosen, rejected, size, _ in rows(pairs):
        a, b = masks[i, chosen], masks[i, rejected]
        assert size == np.count_nonzero(a != b) <= kwargs["max_region_fraction"] * np.count_nonzero(a)


@st.composite
def binary_banks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(bool or uint8 0/1 masks (N, K, *S), scores (N, K)) with duplicates, ties and degenerate shapes."""
    n, k = draw(st.integers(1, 3)), draw(st.integers(2, 6))
    lists = st.lists(st.integers(1, 9), min_size=2, max_size=3).map(tuple)
    spatial = draw(st.sampled_from([(300,), (129,), (64,), (7,)]) | lists)
    degenerate = draw(st.sampled_from(["", "", "", "n", "k", "voxels", *[""] * 6]))
    n = draw(st.integers(0, 1)) if degenerate == "n" else n
    k = draw(st.integers(0, 1)) if degenerate == "k" else k
    spatial = (0, *spatial[1:]) if degenerate == "voxels" else spatial
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    masks = rng.random((n, k, *spatial)) < draw(st.sampled_from([0.5, 0.1, 0.95, 0.0, 1.0]))
    if k > 1 and draw(st.booleans()):
        masks[:, 1] = masks[:, 0]
    levels = draw(st.sampled_from([1000, 4, 2, 1]))
    scores = rng.integers(0, levels, size=(n, k)) / levels
    return (masks if draw(st.booleans()) else masks.astype(np.uint8)), scores


@examples(80)
@given(bank=binary_banks())
def test_two_class_label_stats_equal_the_binary_stats(bank) -> None:
    masks, _ = bank
    binary, labels = pairwise_stats(masks), pairwise_stats(masks, num_classes=2)
    np.testing.assert_array_equal(labels.sizes[..., 1], binary.sizes)
    np.testing.assert_array_equal(labels.intersection[..., 1], binary.intersection)
    np.testing.assert_array_equal(labels.disagreement, binary.disagreement)
    voxels = int(np.prod(masks.shape[2:]))
    np.testing.assert_array_equal(labels.sizes[..., 0], voxels - binary.sizes)
    union = binary.sizes[:, :, None] + binary.sizes[:, None, :] - binary.intersection
    np.testing.assert_array_equal(labels.intersection[..., 0], voxels - union)


@examples(80)
@given(bank=binary_banks(), strategy=st.sampled_from(STRATEGIES), kwargs=label_mining_kwargs)
def test_two_class_label_mining_equals_binary_mining(bank, strategy, kwargs) -> None:
    masks, scores = bank
    binary = mine_pairs(masks, scores, strategy, **kwargs)
    labels = mine_pairs(masks, scores, strategy, num_classes=2, **kwargs)
    assert rows(labels) == rows(binary)


@pytest.mark.parametrize("num_classes", [7, 64, 127, 128, 129, 200, 255])
@pytest.mark.parametrize("voxels", [1, 63, 64, 65, 191, 257])
def test_large_class_counts_and_line_boundaries_equal_the_oracle(num_classes, voxels) -> None:
    """Labels from 127 up (bytes with the high bit set) and masks that end inside a 64-voxel line."""
    rng = np.random.default_rng(num_classes * 1000 + voxels)
    high = [v for v in (0, 1, 126, 127, 128, 129, 200, 254) if v < num_classes] + [num_classes - 1]
    masks = rng.choice(np.array(high, dtype=np.uint8), size=(2, 4, voxels))
    masks[:, 1] = np.where(rng.random((2, voxels)) < 0.2, num_classes - 1, masks[:, 0])
    masks[1, 2] = 0  # one proposal of background only
    assert_label_stats_match_oracle(pairwise_stats(masks, num_classes=num_classes), masks, num_classes)
    scores = rng.random((2, 4))
    for kwargs in ({}, {"max_region_fraction": 0.5}, {"min_region": 2, "max_region": max(2, voxels // 3)}):
        pairs = mine_pairs(masks, scores, "all_pairs", num_classes=num_classes, **kwargs)
        assert rows(pairs) == oracle_mine_pairs(masks, scores, "all_pairs", num_classes=num_classes, **kwargs)


def test_one_foreground_voxel_at_line_edges_equals_the_oracle() -> None:
    """Lines of background around single labelled voxels at 64-voxel line edges and the bank's end."""
    edges = [0, 1, 62, 63, 64, 65, 127, 128, 255, 256]
    masks = np.zeros((3, len(edges), 257), dtype=np.uint8)
    for j, v in enumerate(edges):
        masks[:, j, v] = 1 + j % 4
    masks[1, ::2] = 0
    masks[2, :, 256] = 4  # every proposal ends in the same label
    assert_label_stats_match_oracle(pairwise_stats(masks, num_classes=5), masks, 5)
    scores = np.linspace(1, 0, 3 * len(edges)).reshape(3, len(edges))
    pairs = mine_pairs(masks, scores, "all_pairs", num_classes=5, max_region_fraction=2.0)
    assert rows(pairs) == oracle_mine_pairs(
        masks, scores, "all_pairs", num_classes=5, max_region_fraction=2.0
    )


# --- the dtypes and the errors -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_other_integer_dtypes_equal_uint8(dtype) -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, (3, 4, 6, 7)).astype(np.uint8)
    labels[:, 1] = labels[:, 0]
    scores = rng.random((3, 4))
    want, want_pairs = pairwise_stats(labels, num_classes=5), mine_pairs(labels, scores, num_classes=5)
    other = labels.astype(dtype)
    assert_same_stats(pairwise_stats(other, num_classes=5), want)
    assert rows(mine_pairs(other, scores, num_classes=5)) == rows(want_pairs)
    assert not np.shares_memory(_as_label_bank(other, 5), other)  # the documented copy
    view = other[:, ::-1, :, ::2]  # non-contiguous
    assert_same_stats(
        pairwise_stats(view, num_classes=5), pairwise_stats(labels[:, ::-1, :, ::2], num_classes=5)
    )


def test_bool_and_uint8_label_banks_are_read_in_place() -> None:
    for masks in (np.zeros((2, 3, 4, 5), dtype=np.uint8), np.zeros((2, 3, 4, 5), dtype=bool)):
        bank = _as_label_bank(masks, 3)
        assert bank.dtype == np.uint8 and bank.shape == (2, 3, 20) and np.shares_memory(bank, masks)
    rng = np.random.default_rng(2)
    masks = rng.random((2, 3, 4, 5)) < 0.5
    assert_same_stats(
        pairwise_stats(masks, num_classes=4), pairwise_stats(masks.astype(np.uint8), num_classes=4)
    )


@examples(40)
@given(
    masks=st.integers(0, 2**32 - 1).flatmap(
        lambda seed: st.just(np.random.default_rng(seed).integers(-2, 8, (2, 3, 4, 5)))
    ),
    c=st.integers(2, 6),
    dtype=st.sampled_from([np.uint8, np.int16, np.int64]),
)
def test_bad_labels_are_reported_at_the_first_one_in_c_order(masks, c, dtype) -> None:
    if dtype == np.uint8:
        masks = np.maximum(masks, 0)  # the core's check; int16 and int64 are checked in Python
    masks = masks.astype(dtype)
    bad = oracle_first_bad_label(masks, c)
    if bad is None:
        assert_label_stats_match_oracle(pairwise_stats(masks, num_classes=c), masks, c)
        return
    message = re.escape(bad_label_message(*bad, c))
    with pytest.raises(ValueError, match=f"^{message}$"):
        pairwise_stats(masks, num_classes=c)
    with pytest.raises(ValueError, match=f"^{message}$"):
        mine_pairs(masks, np.zeros(masks.shape[:2]), "all_pairs", num_classes=c)


@pytest.mark.parametrize("num_classes", [2, 100, 127, 128, 129, 200, 254, 255])
@pytest.mark.parametrize("pixel", [0, 63, 64, 149])
def test_high_bad_labels_are_reported_exactly(num_classes, pixel) -> None:
    """Bad bytes from 128 up (the high bit set) at line edges and in the last, partial line."""
    for value in sorted({num_classes, 127, 128, 200, 254, 255}):
        if value < num_classes:
            continue
        masks = np.full((2, 3, 150), num_classes - 1, dtype=np.uint8)
        masks[1, 2, pixel] = value
        masks[1, 2, pixel + 1 :] = 255  # later bad values are not the first
        message = re.escape(bad_label_message(value, 1, 2, pixel, num_classes))
        with pytest.raises(ValueError, match=f"^{message}$"):
            pairwise_stats(masks, num_classes=num_classes)
        with pytest.raises(ValueError, match=f"^{message}$"):
            mine_pairs(masks, np.zeros((2, 3)), "top_vs_bottom", num_classes=num_classes)


def _planted(dtype, value: int, at: tuple[int, int, int, int]) -> np.ndarray:
    masks = np.ones((2, 3, 4, 5), dtype=dtype)
    masks[at] = value
    return masks


BAD_LABELS = [
    # (masks, num_classes, error, message)
    (_planted(np.uint8, 3, (1, 2, 1, 0)), 3, ValueError, bad_label_message(3, 1, 2, 5, 3)),
    (_planted(np.uint8, 255, (0, 0, 0, 0)), 255, ValueError, bad_label_message(255, 0, 0, 0, 255)),
    (_planted(np.int16, -1, (0, 1, 3, 4)), 4, ValueError, bad_label_message(-1, 0, 1, 19, 4)),
    (_planted(np.int16, -300, (1, 0, 0, 2)), 2, ValueError, bad_label_message(-300, 1, 0, 2, 2)),
    (_planted(np.int32, 256, (1, 1, 2, 3)), 255, ValueError, bad_label_message(256, 1, 1, 13, 255)),
    (_planted(np.int32, 70000, (0, 2, 0, 1)), 6, ValueError, bad_label_message(70000, 0, 2, 1, 6)),
    (_planted(np.uint64, 2**64 - 1, (0, 0, 1, 1)), 6, ValueError, bad_label_message(2**64 - 1, 0, 0, 6, 6)),
    (np.ones((2, 3, 4), np.uint8), 1, ValueError, "num_classes must be an integer from 2 to 255, got 1"),
    (np.ones((2, 3, 4), np.uint8), 256, ValueError, "num_classes must be an integer from 2 to 255, got 256"),
    (np.ones((2, 3, 4), np.uint8), -3, ValueError, "num_classes must be an integer from 2 to 255, got -3"),
    (np.ones((2, 3, 4), np.uint8), True, TypeError, "num_classes must be None or an integer, got bool True"),
    (np.ones((2, 3, 4), np.uint8), 3.0, TypeError, "num_classes must be None or an integer, got float 3.0"),
    (np.ones((2, 3, 4), np.uint8), "3", TypeError, "num_classes must be None or an integer, got str '3'"),
    (
        np.ones((2, 3, 4), np.float32),
        3,
        TypeError,
        "masks must have an integer or bool dtype with num_classes, got float32",
    ),
    (
        np.ones((2, 3, 4), np.complex64),
        3,
        TypeError,
        "masks must have an integer or bool dtype with num_classes, got complex64",
    ),
    (
        np.ones((2, 3, 4), object),
        3,
        TypeError,
        "masks must have an integer or bool dtype with num_classes, got object",
    ),
    (np.ones((2, 3), np.uint8), 3, ValueError, r"masks must have shape (N, K, *S) with at least one spatial"),
    # without num_classes nothing changes: binary only, bool/uint8 only
    (np.full((2, 3, 4), 2, np.uint8), None, ValueError, "masks must contain only 0 and 1, got 2 at image 0"),
    (np.ones((2, 3, 4), np.int16), None, TypeError, "masks must have dtype bool or uint8, got int16"),
]


@pytest.mark.parametrize(("masks", "num_classes", "error", "message"), BAD_LABELS)
def test_bad_label_input_raises_naming_the_argument(masks, num_classes, error, message) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        pairwise_stats(masks, num_classes=num_classes)
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        mine_pairs(masks, np.zeros(masks.shape[:2]), "all_pairs", num_classes=num_classes)


@pytest.mark.parametrize("num_classes", [np.int64(4), np.uint8(4), np.int32(4)], ids=repr)
def test_numpy_integer_class_counts_are_accepted(num_classes) -> None:
    masks = np.random.default_rng(0).integers(0, 4, (2, 3, 7), dtype=np.uint8)
    assert_same_stats(pairwise_stats(masks, num_classes=num_classes), pairwise_stats(masks, num_classes=4))


# --- memory maps, threads, forks -------------------------------------------------------------------


def test_memmap_label_bank_is_read_in_place(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    shape, c = (32, 8, 64, 64), 4  # 1 MiB
    mm = np.lib.format.open_memmap(tmp_path / "bank.npy", mode="w+", dtype=np.uint8, shape=shape)
    mm[:] = np.where(rng.random(shape) < 0.1, rng.integers(0, c, shape), rng.integers(0, c, (32, 1, 64, 64)))
    mm.flush()
    bank = np.load(tmp_path / "bank.npy", mmap_mode="r")
    assert isinstance(bank, np.memmap) and np.shares_memory(_as_label_bank(bank, c), bank)
    scores = rng.random(shape[:2])
    tracemalloc.start()
    try:
        stats = pairwise_stats(bank, num_classes=c)
        pairs = mine_pairs(bank, scores, "all_pairs", num_classes=c, max_region_fraction=0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < bank.nbytes // 8  # outputs only, no copy of the bank
    in_memory = np.array(bank)
    assert_same_stats(stats, pairwise_stats(in_memory, num_classes=c))
    assert rows(pairs) == rows(
        mine_pairs(in_memory, scores, "all_pairs", num_classes=c, max_region_fraction=0.5)
    )
    assert_label_stats_match_oracle(pairwise_stats(in_memory[:2], num_classes=c), in_memory[:2], c)
    assert len(pairs) > 0


def test_memmap_int16_label_bank_is_converted_one_image_at_a_time(tmp_path: Path) -> None:
    shape = (32, 8, 64, 64)
    mm = np.lib.format.open_memmap(tmp_path / "bank.npy", mode="w+", dtype=np.int16, shape=shape)
    mm[:] = np.random.default_rng(1).integers(0, 3, shape)
    mm.flush()
    bank = np.load(tmp_path / "bank.npy", mmap_mode="r")
    tracemalloc.start()
    try:
        stats = pairwise_stats(bank, num_classes=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    copy_bytes = bank.size  # the uint8 bank: half the int16 file
    assert peak < copy_bytes + bank.nbytes // 8  # plus a few one-image temporaries
    assert_same_stats(stats, pairwise_stats(np.asarray(bank).astype(np.uint8), num_classes=3))


_THREAD_SCRIPT = """
import hashlib, numpy as np, rndpo
rng = np.random.default_rng(5)
masks = rng.integers(0, 5, (64, 6, 200), dtype=np.uint8)
masks[:, 1] = masks[:, 0]
scores = rng.integers(0, 3, size=(64, 6)).astype(float)
h = hashlib.sha256()
s = rndpo.pairwise_stats(masks, num_classes=5)
for a in (s.sizes, s.intersection, s.disagreement):
    h.update(a.tobytes())
for strategy in ("all_pairs", "random", "top_vs_random"):
    p = rndpo.mine_pairs(masks, scores, strategy, seed=9, max_pairs_per_image=3, num_classes=5)
    for a in (p.image, p.chosen, p.rejected, p.region_size, p.margin):
        h.update(a.tobytes())
print(h.hexdigest())
"""


def test_label_results_do_not_depend_on_the_thread_count() -> None:
    digests = set()
    for threads in ("1", "3"):
        env = {**os.environ, "RAYON_NUM_THREADS": threads}
        out = subprocess.run(
            [sys.executable, "-c", _THREAD_SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_label_calls_release_the_gil() -> None:
    from test_mining import _ticks_inside_calls

    masks = np.zeros((64, 16, 128 * 128), dtype=np.uint8)
    for j in range(16):
        masks[:, j, :: j + 2] = 1 + j % 3
    scores = np.arange(64 * 16, dtype=float).reshape(64, 16)
    assert sum(_ticks_inside_calls(lambda: pairwise_stats(masks, num_classes=4), repeats=5)) > 0
    assert (
        sum(_ticks_inside_calls(lambda: mine_pairs(masks, scores, "all_pairs", num_classes=4), repeats=5)) > 0
    )


# --- the command line and the README ---------------------------------------------------------------


def test_mine_command_with_num_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, (5, 1, 6, 8, 8))
    labels = np.where(rng.random((5, 4, 6, 8, 8)) < 0.1, rng.integers(0, 3, (5, 4, 6, 8, 8)), base)
    np.save(tmp_path / "m.npy", labels.astype(np.int16))  # any integer dtype with --num-classes
    np.save(tmp_path / "s.npy", rng.random((5, 4)))
    argv = ["mine", str(tmp_path / "m.npy"), str(tmp_path / "s.npy"), "--strategy", "all_pairs"]
    assert main([*argv, "--num-classes", "3", "--out", str(tmp_path / "p.npz")]) == 0
    assert (
        main([*argv, "--num-classes", "3", "--max-region-fraction", "0.2", "--out", str(tmp_path / "f.npz")])
        == 0
    )
    scores = np.load(tmp_path / "s.npy")
    for name, kwargs in (("p.npz", {}), ("f.npz", {"max_region_fraction": 0.2})):
        with np.load(tmp_path / name) as z:
            got = list(zip(*(z[f].tolist() for f in PAIR_FIELDS), strict=True))
        assert got == oracle_mine_pairs(labels, scores, "all_pairs", num_classes=3, **kwargs)
        assert 0 < len(got) <= 5 * 6
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "b.npz")]) == 2  # no --num-classes: binary only
    assert "rndpo: error: masks must have dtype bool or uint8, got int16" in capsys.readouterr().err
    assert main([*argv, "--num-classes", "2", "--out", str(tmp_path / "b.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rndpo: error: masks must contain only labels 0 to 1 (num_classes = 2), got 2 at")
    assert len(err.splitlines()) == 1
    assert main([*argv, "--num-classes", "1", "--out", str(tmp_path / "b.npz")]) == 2
    assert "num_classes must be an integer from 2 to 255, got 1" in capsys.readouterr().err
    assert not (tmp_path / "b.npz").exists()


def test_readme_label_map_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"\*\*Label maps\.\*\*.*?```python\n(.*?)```", text, re.S)
    assert "num_classes=" in code
    exec(compile(code, "README.md (label maps)", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_num_classes_is_keyword_only_and_defaults_to_binary() -> None:
    for func in (rndpo.pairwise_stats, rndpo.mine_pairs):
        param = inspect.signature(func).parameters["num_classes"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is None
        assert list(inspect.signature(func).parameters)[-1] == "num_classes"
    with pytest.raises(TypeError):
        pairwise_stats(HAND, 3)  # type: ignore[misc]  # num_classes is keyword-only


def test_mine_configured_passes_num_classes_to_mine_pairs() -> None:
    from rndpo.config import MiningConfig
    from rndpo.mining import mine_configured

    rng = np.random.default_rng(3)
    masks = rng.integers(0, 4, (5, 6, 7, 8), dtype=np.uint8)
    scores = rng.random((5, 6))
    cfg = MiningConfig(max_region_fraction=0.9, max_pairs_per_image=2)
    got = mine_configured(masks, scores, "all_pairs", cfg, seed=1, num_classes=4)
    want = rndpo.mine_pairs(
        masks, scores, "all_pairs", seed=1, max_region_fraction=0.9, max_pairs_per_image=2, num_classes=4
    )
    np.testing.assert_array_equal(got.region_size, want.region_size)
    np.testing.assert_array_equal(got.chosen, want.chosen)
    with pytest.raises(ValueError, match="masks must contain only 0 and 1"):
        mine_configured(masks, scores, "all_pairs", cfg)  # label maps without num_classes are refused
