"""Paired bootstrap verdicts: against scipy.stats.bootstrap, the closed-form normal interval, and
known-mean synthetic differences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rndpo.metrics.stats import bootstrap_mean_ci, paired_verdict


def test_one_seed_matches_scipy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(0)
    d = rng.normal(0.03, 0.1, size=200)
    mean, low, high = bootstrap_mean_ci(d[None, :], n_boot=20000, seed=1)
    ref = stats.bootstrap((d,), np.mean, n_resamples=20000, method="percentile", random_state=2)
    assert mean == pytest.approx(d.mean())
    assert low == pytest.approx(ref.confidence_interval.low, abs=2e-3)
    assert high == pytest.approx(ref.confidence_interval.high, abs=2e-3)


def test_per_seed_values_match_the_closed_form_normal_interval() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(-0.02, 0.05, size=400)  # one value per seed: (S,)
    mean, low, high = bootstrap_mean_ci(d, n_boot=20000)
    half = 1.959964 * d.std(ddof=0) / np.sqrt(d.size)
    assert low == pytest.approx(mean - half, abs=1e-3)
    assert high == pytest.approx(mean + half, abs=1e-3)


def test_crossed_bootstrap_widens_for_seed_effects() -> None:
    """A seed-level offset shared by all images is variance that the image-only bootstrap misses."""
    rng = np.random.default_rng(4)
    seed_effect = rng.normal(0, 0.05, size=(5, 1))
    d = 0.01 + seed_effect + rng.normal(0, 0.01, size=(5, 300))
    _, low, high = bootstrap_mean_ci(d)
    _, low1, high1 = bootstrap_mean_ci(d.mean(axis=0)[None, :])  # images only
    assert high - low > 3 * (high1 - low1)


@pytest.mark.parametrize(("mu", "expected"), [(0.05, "holds"), (-0.05, "refuted"), (0.0, "inconclusive")])
def test_verdict_on_known_mean_differences(mu: float, expected: str) -> None:
    rng = np.random.default_rng(5)
    b = rng.uniform(0.4, 0.8, size=(5, 60))
    a = b + mu + rng.normal(0, 0.02, size=b.shape) * (mu != 0)
    if mu == 0:
        a = b + rng.normal(0, 0.02, size=b.shape)
        a -= (a - b).mean()  # exactly zero mean difference
    res = paired_verdict(a, b)
    assert res.verdict == expected
    assert res.low <= res.mean <= res.high
    assert res.mean == pytest.approx(mu, abs=1e-2)
    # the opposite claim gets the mirrored verdict
    flipped = {"holds": "refuted", "refuted": "holds", "inconclusive": "inconclusive"}[expected]
    assert paired_verdict(a, b, direction=-1).verdict == flipped


def test_margin_shifts_the_claim() -> None:
    rng = np.random.default_rng(6)
    b = rng.uniform(0.4, 0.8, size=(5, 60))
    a = b + 0.01 + rng.normal(0, 0.005, size=b.shape)
    assert paired_verdict(a, b).verdict == "holds"
    res = paired_verdict(a, b, margin=0.02)  # "A beats B by more than 0.02" is false
    assert res.verdict == "refuted"
    assert res.mean == pytest.approx(-0.01, abs=2e-3)


def test_coverage_of_the_interval_is_near_nominal() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    trials = 200
    for t in range(trials):
        d = rng.normal(0.02, 0.1, size=(1, 80))
        _, low, high = bootstrap_mean_ci(d, n_boot=1000, seed=t)
        hits += low <= 0.02 <= high
    assert 0.88 <= hits / trials <= 0.99


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"a": np.zeros((2, 3)), "b": np.zeros((3, 2))}, "same shape"),
        ({"a": np.zeros((0, 3)), "b": np.zeros((0, 3))}, "S, N >= 1"),
        ({"a": np.full((2, 3), np.nan), "b": np.zeros((2, 3))}, "finite"),
        ({"a": np.zeros((2, 3)), "b": np.zeros((2, 3)), "direction": 0}, "direction"),
        ({"a": np.zeros((2, 3)), "b": np.zeros((2, 3)), "confidence": 1.5}, "confidence"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_verdict(**kwargs)


def test_table_row_is_one_markdown_row_of_the_verdict() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.1, 0.01, (2, 30))
    res = paired_verdict(a, np.zeros_like(a))
    row = res.table_row("A > B")
    assert row == f"| A > B | {res.mean:+.4f} | [{res.low:+.4f}, {res.high:+.4f}] | 2 x 30 | **holds** |"
