"""Tests of rndpo.mining (Rust core) against hand-computed cases and the slow oracles of tests/oracles.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
import tracemalloc

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rndpo
from oracles import SplitMix64, oracle_mine_pairs, oracle_pairwise_stats
from rndpo import _core
from rndpo.mining import STRATEGIES, PairSet, PairwiseStats, _as_bank, mine_pairs, pairwise_stats

STATS_FIELDS = ("sizes", "intersection", "disagreement")
PAIR_FIELDS = ("image", "chosen", "rejected", "region_size", "margin")


def pairs_as_rows(pairs: PairSet) -> list[tuple[int, int, int, int, float]]:
    return [
        (int(i), int(c), int(r), int(z), float(m))
        for i, c, r, z, m in zip(
            pairs.image, pairs.chosen, pairs.rejected, pairs.region_size, pairs.margin, strict=True
        )
    ]


def assert_pairs_match_oracle(pairs: PairSet, masks, scores, strategy: str, **kwargs) -> None:
    assert pairs.margin.dtype == np.float64
    for name in PAIR_FIELDS[:4]:
        assert getattr(pairs, name).dtype == np.int64, name
    assert pairs_as_rows(pairs) == oracle_mine_pairs(masks, scores, strategy, **kwargs)


def assert_stats_match_oracle(stats: PairwiseStats, masks) -> None:
    for name, want in zip(STATS_FIELDS, oracle_pairwise_stats(masks), strict=True):
        got = getattr(stats, name)
        assert got.dtype == np.int64, name
        np.testing.assert_array_equal(got, want, err_msg=name)


# --- hand-computed cases -------------------------------------------------------------------------

# One image, 4 proposals of 4 pixels. Scores rank them 1, 2, 3, 0.
HAND_MASKS = np.array([[[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]], dtype=np.uint8)
HAND_SCORES = np.array([[0.1, 0.9, 0.5, 0.3]])
S = HAND_SCORES[0]
# |xor|: (1,2)=2 (1,3)=3 (1,0)=4 (2,3)=1 (2,0)=2 (3,0)=1.
ROW = {
    (1, 2): (0, 1, 2, 2, S[1] - S[2]),
    (1, 3): (0, 1, 3, 3, S[1] - S[3]),
    (1, 0): (0, 1, 0, 4, S[1] - S[0]),
    (2, 3): (0, 2, 3, 1, S[2] - S[3]),
    (2, 0): (0, 2, 0, 2, S[2] - S[0]),
    (3, 0): (0, 3, 0, 1, S[3] - S[0]),
}
HAND_CASES = [
    ("top_vs_bottom", {}, [(1, 0)]),
    ("top_vs_rest", {}, [(1, 2), (1, 3), (1, 0)]),
    ("adjacent", {}, [(1, 2), (2, 3), (3, 0)]),
    ("all_pairs", {}, [(1, 2), (1, 3), (1, 0), (2, 3), (2, 0), (3, 0)]),
    ("all_pairs", {"min_region": 2}, [(1, 2), (1, 3), (1, 0), (2, 0)]),
    ("all_pairs", {"max_region": 2}, [(1, 2), (2, 3), (2, 0), (3, 0)]),
    ("all_pairs", {"min_region": 2, "max_region": 3}, [(1, 2), (1, 3), (2, 0)]),
    ("all_pairs", {"min_region": 2, "max_region": 2}, [(1, 2), (2, 0)]),  # equal bounds: |D| == 2 only
    ("all_pairs", {"min_region": 1, "max_region": 1}, [(2, 3), (3, 0)]),
    ("all_pairs", {"min_region": 0, "max_region": 0}, []),  # |D| >= max(1, min_region) still holds
    ("all_pairs", {"min_margin": 0.5}, [(1, 3), (1, 0)]),
    ("all_pairs", {"max_pairs_per_image": 2}, [(1, 2), (1, 3)]),
    ("all_pairs", {"max_pairs_per_image": 0}, []),
    ("all_pairs", {"min_region": 3, "max_pairs_per_image": 1}, [(1, 3)]),
    ("adjacent", {"min_region": 0}, [(1, 2), (2, 3), (3, 0)]),
    ("top_vs_rest", {"min_margin": 10.0}, []),
]


@pytest.mark.parametrize(("strategy", "kwargs", "expected"), HAND_CASES)
def test_hand_computed_pairs(strategy, kwargs, expected) -> None:
    pairs = mine_pairs(HAND_MASKS, HAND_SCORES, strategy, **kwargs)
    assert pairs_as_rows(pairs) == [ROW[p] for p in expected]
    assert len(pairs) == len(expected)


def test_hand_computed_stats() -> None:
    stats = pairwise_stats(HAND_MASKS.astype(bool))
    np.testing.assert_array_equal(stats.sizes, [[0, 4, 2, 1]])
    np.testing.assert_array_equal(
        stats.intersection[0], [[0, 0, 0, 0], [0, 4, 2, 1], [0, 2, 2, 1], [0, 1, 1, 1]]
    )
    np.testing.assert_array_equal(
        stats.disagreement[0], [[0, 4, 2, 1], [4, 0, 2, 3], [2, 2, 0, 1], [1, 3, 1, 0]]
    )


def test_stats_of_3d_masks() -> None:
    masks = np.zeros((2, 3, 2, 3, 4), dtype=bool)
    masks[0, 0, 0] = True  # 12 voxels
    masks[0, 1, :, 0, 0] = True  # 2 voxels, one shared with mask 0
    masks[1, 2] = True  # 24 voxels
    stats = pairwise_stats(masks)
    np.testing.assert_array_equal(stats.sizes, [[12, 2, 0], [0, 0, 24]])
    assert stats.intersection[0, 0, 1] == 1 and stats.disagreement[0, 0, 1] == 12 + 2 - 2
    assert stats.disagreement[1, 2, 0] == 24 and stats.intersection[1, 2, 2] == 24
    assert stats.sizes.shape == (2, 3) and stats.disagreement.shape == (2, 3, 3)


def test_stats_arrays_are_independent_contiguous_int64() -> None:
    # The Rust core hands both count arrays back as halves of one buffer: they must still
    # behave as two separate arrays.
    stats = pairwise_stats(np.ones((3, 2, 5), dtype=np.uint8))
    for arr in (stats.sizes, stats.intersection, stats.disagreement):
        assert arr.dtype == np.int64 and arr.flags.c_contiguous and arr.flags.writeable
    assert not np.shares_memory(stats.intersection, stats.disagreement)
    stats.intersection[...] = -1
    np.testing.assert_array_equal(stats.disagreement, np.zeros((3, 2, 2)))


def test_ties_break_to_lower_index_and_equal_scores_never_pair() -> None:
    masks = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=bool)
    pairs = mine_pairs(masks, [[0.5, 0.5, 0.1]], "all_pairs")
    # Ranking 0, 1, 2: (0, 1) has margin 0 and is dropped.
    assert pairs_as_rows(pairs) == [(0, 0, 2, 2, 0.4), (0, 1, 2, 2, 0.4)]
    assert len(mine_pairs(masks, [[0.0, -0.0, 0.0]], "all_pairs")) == 0


def test_identical_masks_never_pair() -> None:
    masks = np.ones((1, 3, 5), dtype=np.uint8)
    assert len(mine_pairs(masks, [[3.0, 2.0, 1.0]], "all_pairs", min_region=0)) == 0


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (3, 1, 3, 3), (2, 0, 5), (2, 3, 0, 4)])
def test_degenerate_shapes_give_empty_results(shape) -> None:
    masks = np.zeros(shape, dtype=bool)
    pairs = mine_pairs(masks, np.zeros(shape[:2]), "all_pairs")
    assert len(pairs) == 0
    for name in PAIR_FIELDS:
        assert getattr(pairs, name).shape == (0,)
    assert pairs.margin.dtype == np.float64 and pairs.image.dtype == np.int64
    stats = pairwise_stats(masks)
    assert stats.sizes.shape == shape[:2] and stats.intersection.shape == (*shape[:2], shape[1])
    assert_stats_match_oracle(stats, masks)


def test_splitmix64_matches_published_outputs() -> None:
    # Outputs of the reference splitmix64.c (Vigna) from state 0.
    g = SplitMix64(0)
    assert [g.next_u64() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_random_strategies_follow_the_documented_draws() -> None:
    rng = np.random.default_rng(1)
    n, k = 6, 5
    masks = np.stack([np.eye(k, 8, j, dtype=bool) for j in range(n)])  # all masks distinct
    scores = rng.permutation(n * k).reshape(n, k).astype(float)  # no ties
    for strategy in ("top_vs_random", "random"):
        pairs = mine_pairs(masks, scores, strategy, seed=123)
        assert len(pairs) == n
        for i in range(n):
            order = np.argsort(-scores[i], kind="stable")
            g = SplitMix64.for_image(123, i)
            if strategy == "top_vs_random":
                a, b = 0, 1 + (g.next_u64() * (k - 1) >> 64)
            else:
                x, y = g.next_u64() * k >> 64, g.next_u64() * (k - 1) >> 64
                y += y >= x
                a, b = min(x, y), max(x, y)
            assert (pairs.chosen[i], pairs.rejected[i]) == (order[a], order[b])
    a, b = mine_pairs(masks, scores, "random", seed=1), mine_pairs(masks, scores, "random", seed=2)
    assert not np.array_equal(a.chosen * k + a.rejected, b.chosen * k + b.rejected)


def test_results_are_frozen_and_exported() -> None:
    pairs = rndpo.mine_pairs(HAND_MASKS, HAND_SCORES)
    stats = rndpo.pairwise_stats(HAND_MASKS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pairs.image = np.zeros(0, dtype=np.int64)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.sizes = np.zeros(0, dtype=np.int64)  # type: ignore[misc]
    assert {"PairSet", "PairwiseStats", "mine_pairs", "pairwise_stats"} <= set(rndpo.__all__)
    assert len(PairSet.empty()) == 0


# --- property tests against the naive oracles -------------------------------------------------


@st.composite
def banks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(masks (N, K, *S) bool or uint8, scores (N, K)) with duplicate masks and score ties."""
    n = draw(st.integers(0, 3))
    k = draw(st.integers(0, 5))
    ndim = draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(300,), (129,), (64,), (7,), (0,)])) if ndim == 1 else ()
    if ndim > 1:
        spatial = tuple(draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim)))
    density = draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    masks = rng.random((n, k, *spatial)) < density
    if k > 1 and draw(st.booleans()):
        masks[:, 1] = masks[:, 0]  # duplicates
    levels = draw(st.integers(1, 4))  # few levels -> ties
    scores = rng.integers(0, levels, size=(n, k)) / levels + draw(st.sampled_from([0.0, -2.5]))
    if draw(st.booleans()):
        masks = masks.astype(np.uint8)
    return masks, scores


mining_kwargs = st.fixed_dictionaries(
    {
        "min_margin": st.sampled_from([0.0, 0.2, 0.5]),
        "min_region": st.integers(0, 40),
        "max_pairs_per_image": st.none() | st.integers(0, 4),
        "seed": st.integers(0, 2**64 - 1),
    },
    optional={"max_region": st.integers(40, 400)},
)
fraction_kwargs = st.fixed_dictionaries(
    {
        "min_margin": st.sampled_from([0.0, 0.2]),
        "max_region_fraction": st.sampled_from([0.05, 0.25, 0.5, 1.0, 2.5]),
        "seed": st.integers(0, 2**64 - 1),
    },
    optional={"max_region": st.integers(1, 400), "max_pairs_per_image": st.integers(0, 4)},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bank=banks())
def test_stats_equal_the_oracle(bank) -> None:
    masks, _ = bank
    assert_stats_match_oracle(pairwise_stats(masks), masks)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bank=banks(), strategy=st.sampled_from(STRATEGIES), kwargs=mining_kwargs)
def test_mining_equals_the_oracle(bank, strategy, kwargs) -> None:
    masks, scores = bank
    pairs = mine_pairs(masks, scores, strategy, **kwargs)
    assert_pairs_match_oracle(pairs, masks, scores, strategy, **kwargs)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bank=banks(), strategy=st.sampled_from(STRATEGIES), kwargs=fraction_kwargs)
def test_region_fraction_equals_the_oracle(bank, strategy, kwargs) -> None:
    masks, scores = bank
    pairs = mine_pairs(masks, scores, strategy, **kwargs)
    assert_pairs_match_oracle(pairs, masks, scores, strategy, **kwargs)
    m = np.asarray(masks)
    sizes = m.reshape(*m.shape[:2], int(np.prod(m.shape[2:]))).astype(bool).sum(axis=-1)
    chosen_area = sizes[pairs.image, pairs.chosen] if len(pairs) else np.zeros(0)
    assert np.all(pairs.region_size <= kwargs["max_region_fraction"] * chosen_area)


def test_region_fraction_drops_whole_shape_disagreements() -> None:
    masks = np.zeros((1, 3, 10), dtype=bool)
    masks[0, 0, :8] = True  # chosen: 8 pixels
    masks[0, 1, :7] = True  # |D| = 1
    masks[0, 2, 5:] = True  # |D| = 5 + 2 = 7 > 0.5 * 8
    scores = np.array([[1.0, 0.5, 0.0]])
    kept = mine_pairs(masks, scores, "top_vs_rest", max_region_fraction=0.5)
    assert kept.rejected.tolist() == [1]
    assert mine_pairs(masks, scores, "top_vs_rest").rejected.tolist() == [1, 2]


@settings(max_examples=30, deadline=None)
@given(
    masks=hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=3, max_dims=4, max_side=6), elements=st.integers(0, 3)
    )
)
def test_non_binary_values_are_reported_at_the_first_one_in_c_order(masks) -> None:
    if not (masks > 1).any():
        assert_stats_match_oracle(pairwise_stats(masks), masks)
        return
    n, k = masks.shape[:2]
    flat = masks.reshape(n, k, -1)
    i, j, pixel = np.unravel_index(int(np.argmax(flat > 1)), flat.shape)
    expected = (
        f"masks must contain only 0 and 1, got {flat[i, j, pixel]} at image {i}, proposal {j}, "
        f"flat pixel {pixel}"
    )
    with pytest.raises(ValueError) as rust:
        pairwise_stats(masks)
    assert str(rust.value) == expected
    scores = np.zeros(masks.shape[:2])
    with pytest.raises(ValueError) as mined:
        mine_pairs(masks, scores)
    assert str(mined.value) == str(rust.value)


# --- bad input ---------------------------------------------------------------------------------------

GOOD_MASKS = np.zeros((2, 3, 4, 4), dtype=bool)
GOOD_SCORES = np.zeros((2, 3))
BAD_MINING = [
    ({"masks": GOOD_MASKS.astype(np.int64)}, TypeError, r"masks must have dtype bool or uint8, got int64"),
    (
        {"masks": GOOD_MASKS.astype(np.float32)},
        TypeError,
        r"masks must have dtype bool or uint8, got float32",
    ),
    (
        {"masks": np.zeros((2, 3), dtype=bool)},
        ValueError,
        r"masks must have shape \(N, K, \*S\).*got shape \(2, 3\)",
    ),
    ({"scores": np.zeros((2, 4))}, ValueError, r"scores must have shape \(N, K\) = \(2, 3\), got \(2, 4\)"),
    ({"scores": np.zeros(6)}, ValueError, r"scores must have shape \(N, K\) = \(2, 3\), got \(6,\)"),
    (
        {"scores": np.array([[0, np.nan, 0], [0, 0, 0]])},
        ValueError,
        r"scores must be finite, got nan at image 0, proposal 1",
    ),
    (
        {"scores": np.array([[0, 0, 0], [0, 0, -np.inf]])},
        ValueError,
        r"scores must be finite, got -inf at image 1, proposal 2",
    ),
    (
        {"scores": np.zeros((2, 3), dtype=complex)},
        TypeError,
        r"scores must have a real .* dtype, got complex128",
    ),
    ({"strategy": "best"}, ValueError, r"strategy must be one of 'top_vs_bottom', .*'random', got 'best'"),
    ({"strategy": 3}, TypeError, r"strategy must be a str, got int 3"),
    ({"min_margin": float("nan")}, ValueError, r"min_margin must be a number >= 0, got nan"),
    ({"min_margin": -0.1}, ValueError, r"min_margin must be a number >= 0, got -0.1"),
    ({"min_margin": "0"}, TypeError, r"min_margin must be a real number, got str '0'"),
    ({"min_region": -1}, ValueError, r"min_region must be an integer >= 0 and < 2\*\*63, got -1"),
    ({"min_region": 1.5}, TypeError, r"min_region must be an integer, got float 1.5"),
    ({"max_region": -3}, ValueError, r"max_region must be an integer >= 0 and < 2\*\*63, got -3"),
    ({"min_region": 5, "max_region": 4}, ValueError, r"max_region must be None or >= min_region = 5, got 4"),
    (
        {"max_pairs_per_image": -1},
        ValueError,
        r"max_pairs_per_image must be an integer >= 0 and < 2\*\*63, got -1",
    ),
    (
        {"max_pairs_per_image": True},
        TypeError,
        r"max_pairs_per_image must be None or an integer, got bool True",
    ),
    ({"seed": -1}, ValueError, r"seed must be an integer >= 0 and < 2\*\*64, got -1"),
    (
        {"max_region_fraction": 0.0},
        ValueError,
        r"max_region_fraction must be None or a finite number > 0, got 0.0",
    ),
    (
        {"max_region_fraction": float("inf")},
        ValueError,
        r"max_region_fraction must be None or a finite number > 0, got inf",
    ),
    (
        {"max_region_fraction": "0.5"},
        TypeError,
        r"max_region_fraction must be None or a real number, got str '0.5'",
    ),
    ({"seed": 2**64}, ValueError, r"seed must be an integer >= 0 and < 2\*\*64"),
    ({"seed": 1.0}, TypeError, r"seed must be an integer, got float 1.0"),
    (
        {"masks": np.full((2, 3, 4, 4), 2, dtype=np.uint8)},
        ValueError,
        r"masks must contain only 0 and 1, got 2 at image 0, proposal 0, flat pixel 0",
    ),
]


@pytest.mark.parametrize(("override", "error", "message"), BAD_MINING)
def test_bad_mining_input_raises_naming_the_argument(override, error, message) -> None:
    kwargs = {"masks": GOOD_MASKS, "scores": GOOD_SCORES, **override}
    masks, scores = kwargs.pop("masks"), kwargs.pop("scores")
    with pytest.raises(error, match=f"^{message}"):
        mine_pairs(masks, scores, **kwargs)


@pytest.mark.parametrize(
    ("masks", "error", "message"),
    [(row[0]["masks"], row[1], row[2]) for row in BAD_MINING if list(row[0]) == ["masks"]],
)
def test_bad_stats_input_raises_naming_the_argument(masks, error, message) -> None:
    with pytest.raises(error, match=f"^{message}"):
        pairwise_stats(masks)


def test_binding_rejects_non_contiguous_arrays_instead_of_copying() -> None:
    bank = np.zeros((2, 3, 8), dtype=np.uint8)[:, :, ::2]
    with pytest.raises(ValueError, match=r"^masks must be a C-contiguous array"):
        _core.pairwise_stats(bank)
    scores = np.zeros(12)[::2]
    with pytest.raises(ValueError, match=r"^scores must be a C-contiguous array"):
        _core.mine_pairs(np.ascontiguousarray(bank), scores, "top_vs_rest", 0.0, 1, None, None, 0)
    with pytest.raises(ValueError, match=r"^scores must have shape \(N, K\) = \(2, 3\), i\.e\. 6 values"):
        _core.mine_pairs(np.ascontiguousarray(bank), np.zeros(5), "top_vs_rest", 0.0, 1, None, None, 0)
    with pytest.raises(ValueError, match=r"^strategy must be one of"):
        _core.mine_pairs(np.ascontiguousarray(bank), np.zeros(6), "nope", 0.0, 1, None, None, 0)
    with pytest.raises(ValueError, match=r"^max_region must be None or >= min_region = 4, got 3"):
        _core.mine_pairs(np.ascontiguousarray(bank), np.zeros(6), "adjacent", 0.0, 4, 3, None, 0)


def test_non_contiguous_input_is_normalised_by_the_wrapper() -> None:
    rng = np.random.default_rng(3)
    masks = rng.random((3, 8, 5, 6)) < 0.4
    view = masks[:, ::2, :, ::-1]
    assert_stats_match_oracle(pairwise_stats(view), view)
    scores = rng.random((3, 8))[:, ::2]
    assert_pairs_match_oracle(mine_pairs(view, scores, "all_pairs"), view, scores, "all_pairs")


# --- threads, GIL, memory ------------------------------------------------------------------------------

_THREAD_SCRIPT = """
import hashlib, numpy as np, rndpo
rng = np.random.default_rng(5)
masks = rng.random((64, 6, 200)) < 0.3
masks[:, 1] = masks[:, 0]
scores = rng.integers(0, 3, size=(64, 6)).astype(float)
h = hashlib.sha256()
s = rndpo.pairwise_stats(masks)
for a in (s.sizes, s.intersection, s.disagreement):
    h.update(a.tobytes())
for strategy in ("all_pairs", "random", "top_vs_random"):
    p = rndpo.mine_pairs(masks, scores, strategy, seed=9, max_pairs_per_image=3)
    for a in (p.image, p.chosen, p.rejected, p.region_size, p.margin):
        h.update(a.tobytes())
print(h.hexdigest())
"""


def test_results_do_not_depend_on_the_thread_count() -> None:
    digests = set()
    for threads in ("1", "2", "5"):
        env = {**os.environ, "RAYON_NUM_THREADS": threads}
        out = subprocess.run(
            [sys.executable, "-c", _THREAD_SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def _ticks_inside_calls(work, repeats: int = 3) -> list[int]:
    """Runs ``work()`` while a second Python thread ticks; returns the ticks strictly inside each call.

    The switch interval is raised so the main thread never gives up the GIL by itself: the ticker
    can only run inside a call if that call releases the GIL.
    """
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)  # releases the GIL, so the main thread can always take it back

    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    thread = threading.Thread(target=ticker)
    thread.start()
    counts = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            end = time.perf_counter()
            counts.append(sum(start < t < end for t in list(ticks)))
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
    return counts


def test_gil_is_released_during_a_call() -> None:
    masks = np.zeros((64, 16, 128 * 128), dtype=np.uint8)
    for j in range(16):
        masks[:, j, :: j + 2] = 1  # every word mixed: no shortcut, several ms of work
    scores = np.arange(64 * 16, dtype=float).reshape(64, 16)
    # The OS may not schedule the ticker during every call on a busy machine, so count over all calls.
    assert sum(_ticks_inside_calls(lambda: pairwise_stats(masks), repeats=5)) > 0
    assert sum(_ticks_inside_calls(lambda: mine_pairs(masks, scores, "all_pairs"), repeats=5)) > 0
    # Control: calls of similar length that hold the GIL let no tick through.
    assert sum(_ticks_inside_calls(lambda: sum(range(300_000)), repeats=5)) == 0


def test_memmap_input_is_read_in_place(tmp_path) -> None:
    rng = np.random.default_rng(11)
    shape = (32, 8, 64, 64)  # 1 MiB
    mm = np.lib.format.open_memmap(tmp_path / "bank.npy", mode="w+", dtype=np.uint8, shape=shape)
    mm[:] = rng.random(shape) < 0.3
    mm.flush()
    bank = np.load(tmp_path / "bank.npy", mmap_mode="r")
    assert np.shares_memory(_as_bank(bank), bank)
    assert np.shares_memory(_as_bank(bank.astype(bool)), bank) is False  # sanity: a copy is detected
    scores = rng.random(shape[:2])
    tracemalloc.start()
    try:
        stats = pairwise_stats(bank)
        pairs = mine_pairs(bank, scores, "all_pairs")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < bank.nbytes // 8  # outputs only, no copy of the bank
    sub = np.asarray(bank[:4])
    assert_stats_match_oracle(pairwise_stats(sub), sub)
    np.testing.assert_array_equal(stats.sizes, np.asarray(bank).reshape(32, 8, -1).sum(-1))
    assert_pairs_match_oracle(pairs, np.asarray(bank), scores, "all_pairs")


def test_bool_input_is_viewed_not_copied() -> None:
    masks = np.zeros((2, 3, 5, 7), dtype=bool)
    view = _as_bank(masks)
    assert view.dtype == np.uint8 and view.shape == (2, 3, 35)
    assert np.shares_memory(view, masks)


def test_strategy_names_are_the_rust_cores_in_the_same_order() -> None:
    from rndpo.config import STRATEGIES as CONFIG_STRATEGIES

    bank = np.zeros((1, 2, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"^strategy must be one of") as err:
        _core.mine_pairs(bank, np.zeros(2), "nope", 0.0, 1, None, None, 0)
    listed = str(err.value).removeprefix("strategy must be one of ").split(", got")[0]
    assert tuple(name.strip("'") for name in listed.split(", ")) == CONFIG_STRATEGIES == STRATEGIES
