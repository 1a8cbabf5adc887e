"""Tests of the pipeline's building blocks: data, splits, pool, model and the cached-stage helper.

Whole runs (stages, caching, resume, results) are tested through the CLI in tests/test_cli.py,
tests/pipeline/test_stage_keys.py and tests/test_integrity.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rndpo import pipeline
from rndpo.config import ConfigError, DataConfig, ModelConfig
from rndpo.nets import network_from_config
from rndpo.pipeline import cached


def test_load_data_builds_the_synthetic_default_and_names_a_missing_path() -> None:
    data = pipeline.load_data(DataConfig(n_images=12, image_size=16, seed=3))
    assert data.images.shape == (12, 1, 16, 16) and data.masks.shape == (12, 16, 16)
    with pytest.raises(ConfigError, match=r"^data.path: npz dataset not found: nowhere.npz"):
        pipeline.load_data(DataConfig(kind="npz", path="nowhere.npz"))


def test_split_data_reads_a_budget_above_one_as_a_count() -> None:
    cfg = DataConfig(n_images=40, image_size=16, label_budget=5)
    splits = pipeline.split_data(cfg, pipeline.load_data(cfg))
    assert len(splits.labeled.images) == 5
    total = sum(len(s.images) for s in (splits.labeled, splits.unlabeled, splits.val, splits.test))
    assert total == 40


def test_load_pool_caps_the_pool_and_keeps_its_ground_truth_aligned() -> None:
    cfg = DataConfig(n_images=40, image_size=16, max_unlabeled=7)
    splits = pipeline.split_data(cfg, pipeline.load_data(cfg))
    images, truth = pipeline.load_pool(cfg, splits)
    assert truth is not None and len(images) == len(truth) == 7
    np.testing.assert_array_equal(images, splits.unlabeled.images[:7])
    np.testing.assert_array_equal(truth, splits.unlabeled.masks[:7])


def test_a_truly_unlabeled_pool_has_no_ground_truth_and_trains_on_every_labeled_image(tmp_path: Path) -> None:
    pool = tmp_path / "pool.npz"
    np.savez(pool, images=np.random.default_rng(0).integers(0, 255, (6, 20, 20), dtype=np.uint8))
    cfg = DataConfig(n_images=30, image_size=16, unlabeled_path=str(pool))
    splits = pipeline.split_data(cfg, pipeline.load_data(cfg))
    assert len(splits.unlabeled.images) == 0
    images, truth = pipeline.load_pool(cfg, splits)
    assert truth is None and images.shape == (6, 1, 16, 16)
    with pytest.raises(ConfigError, match=r"^data.unlabeled_path: not found"):
        pipeline.load_pool(DataConfig(unlabeled_path=str(tmp_path / "none.npz")), splits)


def test_the_network_follows_the_model_config() -> None:
    model = network_from_config(ModelConfig(channels=(4, 8), dropout=0.2), in_channels=3)
    assert model.in_channels == 3
    assert pipeline.image_scaling(DataConfig()) == {"kind": "unit"}


def test_cached_runs_the_stage_then_returns_what_a_second_call_reads() -> None:
    calls: list[int] = []

    def stage() -> int:
        calls.append(len(calls))
        return len(calls)

    assert cached(stage) == 2  # one process is rank 0: compute, then read back
    assert calls == [0, 1]
