"""The volume route end to end: an nnU-Net dataset folder of NIfTI label maps in, per-structure results
and NIfTI label maps out (tiny synthetic volumes, a few steps of each stage)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rndpo.cli import main

CONFIG = """
seeds = [0]
methods = ["dpo", "rndpo"]

[data]
kind = "nifti"
path = "{folder}"
label_budget = 6
val_fraction = 0.15
test_fraction = 0.2

[model]
channels = [4, 8]
kwargs = {norm = "instance"}
patch_size = [6, 8, 8]

[base]
steps = 12
eval_every = 6
batch_size = 2
patience = 0
cooldown = 0.0
n_snapshots = 1

[proposals]
k = 3

[judges]
names = ["oracle", "agreement"]

[finetune]
steps = 2
eval_every = 1
batch_size = 2
"""


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with two boxes, labels 0 / 1 / 4 (non-contiguous values, as files may have)."""
    labels = np.zeros(shape, np.uint8)
    z, y, x = (int(rng.integers(1, 3)) for _ in range(3))
    labels[z : z + 4, y : y + 5, x : x + 4] = 1
    labels[z + 1 : z + 5, y + 6 : y + 10, x + 1 : x + 5] = 4
    image = labels * 40.0 + rng.normal(0, 10, shape)
    return image.astype(np.float32), labels


def _write_dataset(folder: Path, n: int = 14) -> None:
    rng = np.random.default_rng(0)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for i in range(n):
        image, labels = _blobs(rng, (8, 14, 10) if i % 2 else (9, 14, 11))
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.Nifti1Image(image.T, affine).to_filename(folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        nib.Nifti1Image(labels.T, affine).to_filename(folder / "labelsTr" / f"case_{i:03d}.nii.gz")
    description = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "head": 1, "tail": 4},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(description))


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("volumes")
    _write_dataset(root / "Dataset001_Toy")
    config = root / "config.toml"
    config.write_text(CONFIG.replace("{folder}", str(root / "Dataset001_Toy")))
    out = root / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    return out


def test_runs_report_every_structure(volume_run: Path) -> None:
    results = json.loads((volume_run / "results.json").read_text())
    rows = [r for r in results["runs"] if r["method"] in ("dpo", "rndpo")]
    assert rows
    # one headline figure everywhere: the mean over structures (curves, rows and the ladder agree)
    assert rows[0]["base_dice"] == pytest.approx(results["ladder"][0]["base_dice"])
    base = rows[0]["base_dice_per_class"]
    scored = [v for v in base.values() if v is not None]
    assert rows[0]["base_dice"] == pytest.approx(sum(scored) / len(scored))
    for row in rows:
        for field in ("base_dice_per_class", "selected_dice_per_class", "final_dice_per_class"):
            assert set(row[field]) == {"head", "tail"}
            assert all(v is None or 0.0 <= v <= 1.0 for v in row[field].values())
        assert set(row["final_hd95_mm_per_class"]) == {"head", "tail"}
    md = (volume_run / "results.md").read_text()
    assert "## Structures: test Dice" in md
    assert "## Where the time went" in md
    stages = json.loads((volume_run / "timings.json").read_text())["seed 0"]
    expected = ["base", "proposals", "calibration", "ladder labeled_only", "ladder perfect_label"]
    assert set(expected) <= set(stages) and "rndpo (agreement, top_vs_bottom)" in stages
    assert all(seconds >= 0 for seconds in stages.values()) and stages["base"] > 0
    table = md.split("## Structures")[1]
    assert "| head | tail | gain spread across structures |" in table and "| rndpo |" in table


def test_the_saved_model_writes_label_maps_in_the_dataset_values(volume_run: Path, tmp_path: Path) -> None:
    info = json.loads((volume_run / "models" / "base.json").read_text())
    assert info["num_classes"] == 3 and info["label_values"] == [0, 1, 4]
    assert info["class_names"] == ["background", "head", "tail"]
    assert info["architecture"]["spatial_dims"] == 3 and info["spacing"] == [2.0, 1.0, 1.0]
    assert info["patch_size"] == [6, 8, 8]
    rng = np.random.default_rng(5)
    image, _ = _blobs(rng, (8, 14, 10))
    src = tmp_path / "new_0000.nii.gz"
    nib.Nifti1Image(image.T, np.diag([1.0, 1.0, 2.0, 1.0])).to_filename(src)
    argv = [
        "predict",
        str(volume_run / "models" / "base.pt"),
        "--images",
        str(src),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    out = nib.load(tmp_path / "o" / "new.nii.gz")
    assert out.shape == (10, 14, 8)  # type: ignore[attr-defined]
    assert set(np.unique(np.asarray(out.dataobj)).tolist()) <= {0, 1, 4}  # type: ignore[attr-defined]


def test_a_target_spacing_trains_resampled_and_predicts_on_the_files_grid(tmp_path: Path) -> None:
    _write_dataset(tmp_path / "D", n=10)
    config = tmp_path / "c.toml"
    text = CONFIG.replace("{folder}", str(tmp_path / "D")).replace(
        'methods = ["dpo", "rndpo"]', 'methods = ["rndpo"]'
    )
    text = text.replace("label_budget = 6", "label_budget = 4\nspacing = [2.0, 2.0, 2.0]")
    # an inference window larger than any volume: each is predicted whole
    text = text.replace("patch_size = [6, 8, 8]", "patch_size = [6, 8, 8]\ninference_size = [64, 64, 64]")
    config.write_text(text.replace('names = ["oracle", "agreement"]', 'names = ["agreement"]'))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    info = json.loads((out / "models" / "base.json").read_text())
    assert info["spacing"] == [2.0, 2.0, 2.0] and info["resample"] is True
    assert info["patch_size"] == [6, 8, 8] and info["inference_size"] == [64, 64, 64]
    image, _ = _blobs(np.random.default_rng(9), (8, 14, 10))
    src = tmp_path / "new_0000.nii.gz"
    nib.Nifti1Image(image.T, np.diag([1.0, 1.0, 2.0, 1.0])).to_filename(src)
    argv = ["predict", str(out / "models" / "base.pt"), "--images", str(src), "--out", str(tmp_path / "o")]
    assert main([*argv, "--probs"]) == 0
    labels = nib.load(tmp_path / "o" / "new.nii.gz")
    assert labels.shape == (10, 14, 8)  # type: ignore[attr-defined]
    probs = np.asarray(nib.load(tmp_path / "o" / "new_probs.nii.gz").dataobj)  # type: ignore[attr-defined]
    assert probs.shape == (10, 14, 8, 3)
    # the labels are the argmax of the probabilities written beside them, in the dataset's values
    np.testing.assert_array_equal(np.asarray(labels.dataobj), np.array([0, 1, 4])[probs.argmax(-1)])  # type: ignore[attr-defined]
