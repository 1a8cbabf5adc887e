"""The NIfTI slicing route in the pipeline: validation and test keep every slice of their volumes and
are scored per volume; ``[data] skip_empty`` drops empty slices from the labeled training split only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import rndpo
from rndpo import pipeline
from rndpo.config import ConfigError, DataConfig, load_config
from rndpo.data import VolumeSlices
from rndpo.metrics import evaluate
from runs import TINIEST, run, write_config


def _volumes(
    root: Path, n: int = 10, shape: tuple[int, int, int] = (16, 16, 6)
) -> tuple[list[str], list[str]]:
    """``n`` image and mask volumes; the structure (a bright box) on slices 2 and 3 of each only."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    images: list[str] = []
    masks: list[str] = []
    for v in range(n):
        seg = np.zeros(shape, np.uint8)
        seg[4 + v % 3 : 10, 5:11, 2:4] = 1
        vol = (rng.normal(0.0, 0.2, shape) + seg).astype(np.float32)
        for kind, array, out in (("img", vol, images), ("seg", seg, masks)):
            path = root / f"{kind}{v:02d}.nii.gz"
            nib.Nifti1Image(array, np.eye(4)).to_filename(path)
            out.append(str(path))
    return images, masks


def test_skip_empty_drops_empty_slices_from_the_labeled_split_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, masks = _volumes(tmp_path)
    common = dict(kind="nifti", nifti_images=tuple(images), nifti_masks=tuple(masks), image_size=16)
    every_cfg = DataConfig(**common, label_budget=0.5)  # type: ignore[arg-type]
    cfg = DataConfig(**common, label_budget=0.5, skip_empty=True)  # type: ignore[arg-type]
    assert not every_cfg.skip_empty  # the default keeps every slice
    data = pipeline.load_data(cfg)
    assert isinstance(data, VolumeSlices) and len(data) == 60  # 10 volumes x 6 slices, empty ones too
    every = pipeline.split_data(every_cfg, data)
    with caplog.at_level(logging.INFO, logger="rndpo"):
        splits = pipeline.split_data(cfg, data)
    # the same volumes in every split; the labeled split loses its 4 empty slices per volume
    for part in ("val", "test", "unlabeled"):
        np.testing.assert_array_equal(getattr(splits, part).ids, getattr(every, part).ids)
    for part in ("val", "test", "unlabeled"):
        assert not getattr(splits, part).masks.any(axis=(1, 2)).all()  # empty slices kept there
    n_labeled = len(every.labeled)
    keep = every.labeled.masks.any(axis=(1, 2))
    np.testing.assert_array_equal(splits.labeled.ids, every.labeled.ids[keep])
    assert len(splits.labeled) == 2 * n_labeled // 6 and isinstance(splits.labeled, VolumeSlices)
    dropped = f"skip_empty: dropped {n_labeled - len(splits.labeled)} of {n_labeled} labeled training slices"
    assert [r.getMessage() for r in caplog.records if "skip_empty" in r.getMessage()] == [dropped]


def test_skip_empty_is_a_nifti_key() -> None:
    with pytest.raises(ConfigError, match=r"data.skip_empty applies to data.kind = 'nifti' only, got kind"):
        DataConfig(skip_empty=True)


def test_a_sliced_run_reports_per_volume_dice(tmp_path: Path) -> None:
    images, masks = _volumes(tmp_path)
    text = TINIEST.replace(
        "n_images = 24\n",
        f'kind = "nifti"\nnifti_images = {json.dumps(images)}\nnifti_masks = {json.dumps(masks)}\n'
        "skip_empty = true\n",
    )
    # a base model that finds the structure: more labeled volumes, steps and learning rate
    text = text.replace("label_budget = 0.3", "label_budget = 0.6").replace(
        "steps = 4\nwarmup_steps = 0\neval_every = 2\n",
        "steps = 80\nwarmup_steps = 0\neval_every = 20\nlr = 0.01\npatience = 0\n",
    )
    config = write_config(tmp_path / "cfg", text)
    out = tmp_path / "out"
    assert run(config, out) == 0
    cfg = load_config(config)
    test = pipeline.split_data(cfg.data, pipeline.load_data(cfg.data)).test
    assert isinstance(test, VolumeSlices) and not test.masks.any(axis=(1, 2)).all()
    base = rndpo.load_model(out / "models" / "base.pt")
    scored = evaluate(base.network, test, distances=False)
    n_volumes = np.unique(test.volumes).size
    assert scored.dice.size + scored.n_excluded == n_volumes < len(test)
    results = json.loads((out / "results.json").read_text())
    (ladder,) = results["ladder"]
    assert ladder["base_dice"] == pytest.approx(scored.means()["dice"])
    assert ladder["base_dice_per_image"] == pytest.approx(scored.dice.tolist())  # one per volume
    assert base.info["test_dice"] == pytest.approx(scored.means()["dice"])
    for row in results["runs"]:
        assert row["curve"][0][1] == pytest.approx(scored.means()["dice"])  # step 0: the base model
        assert len(row["final_dice_per_image"]) <= n_volumes
    assert "Validation and test Dice are per volume" in (out / "results.md").read_text()
    log = (out / "rndpo.log").read_text()
    assert "validation and test Dice are per volume" in log and "skip_empty: dropped" in log
    assert 0.0 < scored.means()["dice"] < 1.0
