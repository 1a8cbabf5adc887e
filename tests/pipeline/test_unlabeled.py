"""Truly unlabeled pools: images without masks (a folder or an npz) feed the proposals, the labeled set
gives train / val / test, judges that need the pool's ground truth are refused, pair accuracy is absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imsave

from rndpo.cli import main
from rndpo.config import ConfigError, config_from_dict, load_config, read_toml
from rndpo.data import load_unlabeled, synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "configs" / "production.toml"
TINY = [
    "data.image_size=32",
    "model.channels=[8, 16]",
    "base.steps=30",
    "base.eval_every=10",
    "proposals.k=4",
    "finetune.steps=4",
    "finetune.eval_every=2",
    "finetune.batch_size=4",
]


def _write_folders(root: Path) -> tuple[Path, Path]:
    ds = synthetic_dataset(n_images=40, size=32, seed=4)
    labeled, pool = root / "labeled", root / "unlabeled"
    for sub in (labeled / "images", labeled / "masks", pool):
        sub.mkdir(parents=True)
    for i in range(len(ds)):
        image = np.round(ds.images[i, 0] * 255).astype(np.uint8)
        if i < 24:
            imsave(labeled / "images" / f"case{i:02d}.png", image, check_contrast=False)
            imsave(labeled / "masks" / f"case{i:02d}.png", ds.masks[i] * 255, check_contrast=False)
        else:  # the pool: images only, some at another size
            imsave(
                pool / f"new{i:02d}.png",
                image if i % 2 else np.kron(image, np.ones((2, 2), np.uint8)),
                check_contrast=False,
            )
    return labeled, pool


def test_production_layout_runs_with_a_folder_pool(tmp_path: Path) -> None:
    labeled, pool = _write_folders(tmp_path)
    out = tmp_path / "out"
    # no test split either: every labeled image trains or validates (the few-labels layout)
    sets = [f"data.path={labeled}", f"data.unlabeled_path={pool}", "data.test_fraction=0", *TINY]
    argv = ["run", str(PRODUCTION), "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 1
    row = runs[0]
    for absent in ("pair_accuracy", "harmful_leverage", "flip_rate", "judge_spearman", "judge_top1_accuracy"):
        assert absent not in row, absent  # no ground truth on the pool: absent, not zero
    assert row["n_pairs"] > 0 and row["selected_val_dice"] == max(v for _, v in row["val_curve"])
    assert row["selected_dice"] is None and row["curve"] == [] and row["final_hd95"] is None  # no test split
    # the recipe: learned QC judge calibrated on validation, auto miner, RN-cDPO with its flip rate, 2 rounds
    assert "| rn_cdpo | learned_qc | auto | 1 | - | - | - |" in (out / "results.md").read_text()
    assert row["label_smoothing_used"] == row["val_flip_rate"] and len(row["rounds"]) == 2
    bank = next((out / "stages").glob("bank-*"))
    assert np.load(bank / "masks.npy", mmap_mode="r").shape[:2] == (16, 4)  # the 16 pool images
    assert (out / row["model"]).is_file()


def test_oracle_judges_on_an_unlabeled_pool_are_a_config_error(tmp_path: Path) -> None:
    raw = read_toml(PRODUCTION)
    raw["judges"]["names"] = ["agreement", "noisy_oracle"]
    with pytest.raises(
        ConfigError, match=r"judges.names: \['noisy_oracle'\] need ground truth on the unlabeled"
    ):
        config_from_dict(raw)
    assert load_config(PRODUCTION).data.unlabeled_path == "my_data/unlabeled"


def test_npz_pool_with_images_only(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 20, 24, 3), dtype=np.uint8)
    np.savez(tmp_path / "pool.npz", images=rgb)
    images, ids = load_unlabeled(tmp_path / "pool.npz", image_size=16)
    assert images.shape == (5, 3, 16, 16) and images.dtype == np.float32 and ids[0] == "pool_00000"
    gray, _ = load_unlabeled(tmp_path / "pool.npz", image_size=16, channels=1)
    assert gray.shape == (5, 1, 16, 16)
    np.savez(tmp_path / "bad.npz", masks=rgb[..., 0])
    with pytest.raises(ValueError, match=r"lacks the arrays \['images'\]; it has \['masks'\]"):
        load_unlabeled(tmp_path / "bad.npz", image_size=16)


def test_the_ladder_with_an_unlabeled_pool_keeps_the_rungs_that_need_no_pool_labels(tmp_path: Path) -> None:
    labeled, pool = _write_folders(tmp_path)
    out = tmp_path / "out"
    sets = [f"data.path={labeled}", f"data.unlabeled_path={pool}", "data.test_fraction=0.25", *TINY]
    sets.append("finetune.rounds=1")
    argv = ["run", str(PRODUCTION), "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    results = json.loads((out / "results.json").read_text())
    (entry,) = results["ladder"]  # one seed
    (row,) = results["runs"]
    assert entry["pool_truth"] is False and entry["seed"] == 0
    assert entry["base_dice"] == row["base_dice"]  # the same test split and base model
    control = next((out / "runs").glob("ladder-labeled_only-s0-*.json"))
    assert entry["labeled_only_dice"] == json.loads(control.read_text())["final_dice"]
    assert len(entry["labeled_only_dice_per_image"]) == len(entry["base_dice_per_image"])
    for absent in ("perfect_label_dice", "oracle_best_of_k_dice", "pool_base_dice", "pool_best_of_k_dice"):
        assert absent not in entry, absent  # they need the pool's labels
    assert [p.name for p in (out / "runs").glob("ladder-*.json")] == [control.name]
    assert entry["methods"] == {"rn_cdpo (learned_qc, auto)": row["final_dice"]}
    md = (out / "results.md").read_text()
    assert md.startswith("## Headroom ladder")
    gain = entry["labeled_only_dice"] - entry["base_dice"]
    control_line = (
        f"| fine-tuning on the labeled images alone (recipe control) | {entry['labeled_only_dice']:.4f}"
        f" ({gain:+.4f}) |"
    )
    assert control_line in md
    assert "perfect-label ceiling" not in md and "bank ceiling" not in md
    assert "The pool has no ground truth (`data.unlabeled_path`): the rungs that need its labels" in md
