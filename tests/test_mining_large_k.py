"""The Rust core on large K (issue 30): thousands of proposals per image, tables too large to allocate.

Mining keeps memory proportional to what its strategy compares: only ``all_pairs`` holds a K x K table,
refused with a ValueError naming the sizes above 8 GB per image; statistics whose sizes overflow or
cannot be allocated are ValueErrors too, never an abort or a ``PanicException``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from oracles import oracle_mine_pairs
from rndpo.mining import STRATEGIES, PairSet, Strategy, mine_pairs

LARGE_KS = (1, 2, 3, 1000, 3000)
FILTERS: tuple[dict[str, Any], ...] = (
    {},
    {
        "min_margin": 0.1,
        "min_region": 2,
        "max_region": 3,
        "max_region_fraction": 0.75,
        "max_pairs_per_image": 5,
        "seed": 7,
    },
)


def rows(pairs: PairSet) -> list[tuple[int, int, int, int, float]]:
    cols = (pairs.image, pairs.chosen, pairs.rejected, pairs.region_size, pairs.margin)
    return [(int(i), int(c), int(r), int(z), float(m)) for i, c, r, z, m in zip(*cols, strict=True)]


def tiny_bank(k: int, num_classes: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2, 2) masks of 4 pixels (many proposals identical) and (N, K) scores with ties."""
    rng = np.random.default_rng([k, seed])
    n = 2 if k < 1000 else 1
    masks = rng.integers(0, num_classes or 2, (n, k, 2, 2), dtype=np.uint8)
    scores = rng.integers(0, 50, (n, k)) / 50
    return masks, scores


def numpy_all_pairs(masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """``all_pairs`` with the default filters, vectorised (the loop oracle takes seconds at K = 3000):
    the five (M,) columns of a PairSet."""
    cols: list[tuple[np.ndarray, ...]] = []
    for i in range(masks.shape[0]):
        flat = masks[i].reshape(masks.shape[1], -1)
        order = np.argsort(-scores[i], kind="stable")
        a, b = np.triu_indices(len(order), k=1)  # ordered by a, then b
        chosen, rejected = order[a], order[b]
        margin = scores[i, chosen] - scores[i, rejected]
        region = (flat[chosen] != flat[rejected]).sum(axis=1)
        keep = (margin > 0) & (region >= 1)
        cols.append((np.full(int(keep.sum()), i), chosen[keep], rejected[keep], region[keep], margin[keep]))
    return tuple(np.concatenate(col) for col in zip(*cols, strict=True))


def assert_columns_equal(pairs: PairSet, want: tuple[np.ndarray, ...]) -> None:
    got = (pairs.image, pairs.chosen, pairs.rejected, pairs.region_size, pairs.margin)
    for name, g, w in zip(("image", "chosen", "rejected", "region_size", "margin"), got, want, strict=True):
        np.testing.assert_array_equal(g, w, err_msg=name)  # exact, margins included


@pytest.mark.parametrize("num_classes", [None, 3], ids=["binary", "labels"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("k", LARGE_KS)
def test_every_strategy_matches_the_oracle_up_to_thousands_of_proposals(
    k: int, strategy: Strategy, num_classes: int | None
) -> None:
    masks, scores = tiny_bank(k, num_classes, seed=0)
    if strategy == "all_pairs" and k > 1000:
        assert_columns_equal(
            mine_pairs(masks, scores, strategy, num_classes=num_classes), numpy_all_pairs(masks, scores)
        )
        return
    for filters in FILTERS:
        pairs = mine_pairs(masks, scores, strategy, num_classes=num_classes, **filters)
        want = oracle_mine_pairs(masks, scores, strategy, num_classes=num_classes, **filters)
        assert rows(pairs) == want, filters


def test_the_vectorised_all_pairs_check_agrees_with_the_oracle() -> None:
    masks, scores = tiny_bank(1000, None, seed=1)
    want = oracle_mine_pairs(masks, scores, "all_pairs")
    assert want
    columns = [np.array(col) for col in zip(*want, strict=True)]
    for got, expected in zip(numpy_all_pairs(masks, scores), columns, strict=True):
        np.testing.assert_array_equal(got, expected)


_FIFTY_THOUSAND = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from rndpo.mining import STRATEGIES, mine_pairs

    masks = np.load(sys.argv[1], mmap_mode="r")
    scores = np.load(sys.argv[2])
    out = {}
    for num_classes in (None, 3):
        for strategy in STRATEGIES:
            try:
                p = mine_pairs(masks, scores, strategy, num_classes=num_classes)
                cols = (p.image, p.chosen, p.rejected, p.region_size, p.margin)
                got = [[int(i), int(c), int(r), int(z), float(m)] for i, c, r, z, m in zip(*cols)]
            except Exception as err:
                got = f"{type(err).__name__}: {err}"
            out[f"{strategy} {num_classes}"] = got
    # peak RSS of this process (ru_maxrss would count the forked parent's pages before exec)
    status = Path("/proc/self/status")
    peak = [line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM")]
    out["peak_mib"] = int(peak[0]) / 1024 if peak else 0.0
    print(json.dumps(out))
    """
)


def test_a_50_kb_bank_of_50000_proposals_mines_or_refuses_all_pairs_cleanly(tmp_path) -> None:
    """Before: every strategy allocated a 2 x K x K table per thread, `memory allocation of 40000000000
    bytes failed`, exit 134. Now the streamed strategies mine in a few MiB, all_pairs is a ValueError."""
    k = 50_000
    rng = np.random.default_rng(30)
    masks = np.zeros((1, k, 1), dtype=np.uint8)
    masks[0, :, 0] = rng.integers(0, 3, k) > 0  # 2 of 3 proposals cover the pixel: label 1 or 0
    scores = rng.random((1, k))
    np.save(tmp_path / "masks.npy", masks)
    np.save(tmp_path / "scores.npy", scores)
    assert (tmp_path / "masks.npy").stat().st_size < 51_000
    env = {**os.environ, "RAYON_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", _FIFTY_THOUSAND, str(tmp_path / "masks.npy"), str(tmp_path / "scores.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    for num_classes in (None, 3):
        for strategy in STRATEGIES:
            got = out[f"{strategy} {num_classes}"]
            if strategy == "all_pairs":
                assert isinstance(got, str)
                head = (
                    "ValueError: masks: K = 50000 proposals need a 50000 x 50000 int64 pair table (20.0 GB) "
                    "for strategy all_pairs, more than the 8.0 GB"
                    if num_classes is None
                    else "ValueError: masks: K = 50000 label maps of C = 3 classes need a 4 x 50000 x 50000 "
                    "int64 pair table (80.0 GB) for strategy all_pairs, more than the 8.0 GB"
                )
                assert got.startswith(head), got
                assert "top_vs_rest" in got  # the way out
                continue
            want = oracle_mine_pairs(masks, scores, strategy, num_classes=num_classes)
            assert [tuple(row) for row in got] == want, (strategy, num_classes)
    assert len(out["top_vs_rest None"]) > 20_000
    # O(K) scratch: the old 2 x K x K table alone was 40 GB per thread
    assert out["peak_mib"] < 1024, out["peak_mib"]


_ZERO_BYTES = textwrap.dedent(
    """
    import json
    import numpy as np
    from rndpo.mining import pairwise_stats

    masks = np.zeros((2**20, 2**20, 0), dtype=np.uint8)
    out = {"nbytes": masks.nbytes}
    for num_classes in (None, 3):
        try:
            pairwise_stats(masks, num_classes=num_classes)
            out[str(num_classes)] = "no error"
        except Exception as err:  # the point: an ordinary exception
            out[str(num_classes)] = f"{type(err).__name__}: {err}"
    print(json.dumps(out))
    """
)


def test_statistics_of_a_zero_byte_bank_of_2_20_by_2_20_proposals_are_a_value_error() -> None:
    """Before: `PanicException: capacity overflow` (binary; not an Exception) and an abort, exit 134
    (label maps: `memory allocation of 26388279066624 bytes failed`), hence the subprocess."""
    done = subprocess.run([sys.executable, "-c", _ZERO_BYTES], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["nbytes"] == 0
    assert out["None"] == (
        "ValueError: masks: (N, K) = (1048576, 1048576) need 2 x N x K x K int64 pairwise counts (18.4 EB), "
        "more than can be allocated; compute the statistics of fewer images at a time, or use fewer proposals"
    )
    assert out["3"].startswith(
        "ValueError: masks: (N, K, C) = (1048576, 1048576, 3) need N x K x K x (C + 1) int64 pairwise counts"
    ), out["3"]
