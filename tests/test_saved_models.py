"""Validation-selected models are saved, reload with weights_only=True, and `rndpo predict` re-scores them:
the test Dice of each saved model, recomputed from the masks `rndpo predict` writes for the raw test
images, equals the reported `selected_dice` exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import rndpo
from rndpo.cli import main
from rndpo.config import load_config
from rndpo.data import synthetic_dataset
from rndpo.metrics import dice
from rndpo.pipeline.experiment import load_data, split_data

CONFIG = """
seeds = [0]
methods = ["sft_top", "rndpo"]
[data]
kind = "npz"
path = "{path}"
image_size = 32
label_budget = 0.25
[model]
channels = [8, 16]
[base]
steps = 40
eval_every = 20
[proposals]
k = 4
sources = ["mc_dropout", "tta", "threshold", "morph"]
[judges]
names = ["agreement"]
[finetune]
steps = 8
eval_every = 2
batch_size = 4
lr = 1e-3
"""


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("saved")
    ds = synthetic_dataset(n_images=48, size=32, seed=3)
    raw = np.round(ds.images[:, 0] * 255).astype(np.uint8)  # what a user stores: uint8 images
    ids = np.array([f"img_{i:03d}" for i in range(len(ds))])
    data = root / "data.npz"
    np.savez(data, images=raw, masks=ds.masks, ids=ids)
    config = root / "run.toml"
    config.write_text(CONFIG.format(path=data.as_posix()))
    out = root / "out"
    argv = ["run", str(config), "--out", str(out), "--quiet", "--device", "cpu", "--keep", "all"]
    assert main(argv) == 0
    return config, data, out


def _runs(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["runs"]


def test_rows_report_the_validation_selected_model(saved_run: tuple[Path, Path, Path]) -> None:
    _, _, out = saved_run
    for row in _runs(out):
        steps = [s for s, _ in row["val_curve"]]
        assert steps == [s for s, _ in row["curve"]] == [0, 2, 4, 6, 8]
        vals = [v for _, v in row["val_curve"]]
        assert row["selected_step"] == steps[int(np.argmax(vals))]  # argmax: the first (earliest) maximum
        assert row["selected_dice"] == dict(row["curve"])[row["selected_step"]]
        assert row["selected_val_dice"] == max(vals)
        assert row["base_val_dice"] == vals[0]
        assert row["peak_dice"] == max(v for _, v in row["curve"])
        assert row["model"] == f"models/{row['run']}.pt"


def test_saved_models_load_with_weights_only_and_describe_themselves(
    saved_run: tuple[Path, Path, Path],
) -> None:
    _, _, out = saved_run
    for row in _runs(out):
        pt = out / row["model"]
        state = torch.load(pt, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
        info = json.loads(pt.with_suffix(".json").read_text())
        assert info["architecture"] == {
            "name": "rndpo.UNet",
            "config": {
                "in_channels": 1,
                "out_channels": 1,
                "channels": [8, 16],
                "dropout": 0.1,
                "norm": "batch",
            },
        }
        assert (info["in_channels"], info["image_size"], info["threshold"]) == (1, 32, 0.5)
        assert info["normalisation"] == {"kind": "unit"}
        assert (info["method"], info["judge"], info["miner"], info["seed"]) == (
            row["method"],
            row["judge"],
            row["miner"],
            0,
        )
        assert (info["val_dice"], info["test_dice"]) == (row["selected_val_dice"], row["selected_dice"])
        assert info["selected_step"] == row["selected_step"] and info["version"] == rndpo.__version__
        final = json.loads((out / "models" / f"{row['run']}-final.json").read_text())  # --keep all
        assert final["test_dice"] == row["curve"][-1][1]
    base = json.loads((out / "models" / "base.json").read_text())
    assert base["method"] == "base" and base["val_dice"] == _runs(out)[0]["base_val_dice"]
    assert base["test_dice"] == _runs(out)[0]["base_dice"]


def test_rndpo_predict_rescores_the_selected_model_exactly(saved_run: tuple[Path, Path, Path]) -> None:
    config, data, out = saved_run
    cfg = load_config(config).data
    test = split_data(cfg, load_data(cfg)).test
    with np.load(data) as z:
        position = {str(i): k for k, i in enumerate(z["ids"])}
        rows = [position[i] for i in test.ids]
        test_npz = out.parent / "test_images.npz"
        np.savez(test_npz, images=z["images"][rows], ids=z["ids"][rows])  # raw uint8 images, no masks
    selected = [r for r in _runs(out)]
    assert any(r["selected_step"] > 0 for r in selected), (
        "every run selected the base: the check would be weak"
    )
    for row in selected:
        pred = out.parent / f"pred-{row['run']}.npz"
        assert main(["predict", str(out / row["model"]), "--images", str(test_npz), "--out", str(pred)]) == 0
        with np.load(pred) as z:
            masks, ids = z["masks"], z["ids"]
        assert list(ids) == list(test.ids) and masks.dtype == np.uint8
        rescored = float(np.asarray(dice(masks, test.masks)).mean())
        assert rescored == row["selected_dice"], row["run"]


def test_python_api_resizes_back_to_each_images_size(saved_run: tuple[Path, Path, Path]) -> None:
    _, _, out = saved_run
    model = rndpo.load_model(out / "models" / "base.pt")
    rng = np.random.default_rng(0)
    images = [rng.random((1, 40, 52), dtype=np.float32), rng.random((3, 32, 32), dtype=np.float32)]
    pred = rndpo.predict(model, images)
    assert [m.shape for m in pred.masks] == [(40, 52), (32, 32)]
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} for m in pred.masks)
    assert np.array_equal(pred.masks[0], (pred.probs[0] > 0.5).astype(np.uint8))
    stacked = rndpo.predict(model, images[1][None, :1])  # an (N, C, H, W) array gives arrays back
    assert stacked.masks.shape == (1, 32, 32) and stacked.probs.dtype == np.float32
    with pytest.raises(ValueError, match=r"images\[0\] must be a float array \(C, H, W\)"):
        rndpo.predict(model, [np.zeros((4, 4), np.float32)])


def test_predict_writes_png_folders_and_nifti_with_the_inputs_affine(
    saved_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    nib = pytest.importorskip("nibabel")
    from skimage.io import imread, imsave

    _, _, out = saved_run
    model_pt = out / "models" / "base.pt"
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    imsave(folder / "a.png", rng.integers(0, 255, (45, 30), dtype=np.uint8), check_contrast=False)
    imsave(folder / "b.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), check_contrast=False)
    assert (
        main(["predict", str(model_pt), "--images", str(folder), "--out", str(tmp_path / "p"), "--probs"])
        == 0
    )
    a = imread(tmp_path / "p" / "a.png")
    assert a.shape == (45, 30) and set(np.unique(a)) <= {0, 255}
    assert np.load(tmp_path / "p" / "b_probs.npy").shape == (32, 32)

    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    affine[:3, 3] = (10.0, -4.0, 3.0)
    vol = rng.normal(100, 20, (48, 40, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "vol.nii.gz")
    target = tmp_path / "seg.nii.gz"
    assert (
        main(["predict", str(model_pt), "--images", str(tmp_path / "vol.nii.gz"), "--out", str(target)]) == 0
    )
    seg = nib.load(target)
    assert seg.shape == vol.shape and np.allclose(seg.affine, affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}

    # a volume at the model's size: the slices are normalised exactly as load_nifti does for training
    from rndpo.data import load_nifti
    from rndpo.inference import predict_probs

    vol = rng.normal(100, 20, (32, 32, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "v32.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(vol.shape, np.uint8), affine), tmp_path / "m32.nii.gz")
    train_view = load_nifti([tmp_path / "v32.nii.gz"], [tmp_path / "m32.nii.gz"], axis=2, image_size=32)
    expected = predict_probs(rndpo.load_model(model_pt).network, train_view.images)  # float32 (4, 32, 32)
    argv = [
        "predict",
        str(model_pt),
        "--images",
        str(tmp_path / "v32.nii.gz"),
        "--out",
        str(target),
        "--probs",
    ]
    assert main(argv) == 0
    probs = np.moveaxis(np.asarray(nib.load(tmp_path / "seg_probs.nii.gz").dataobj), 2, 0)
    assert np.array_equal(probs, expected)
    assert np.array_equal(
        np.moveaxis(np.asarray(nib.load(target).dataobj), 2, 0), (expected > 0.5).astype(np.uint8)
    )


def test_missing_model_files_are_clear_errors(tmp_path: Path) -> None:
    from rndpo.nets.saved import load_model

    with pytest.raises(FileNotFoundError, match=r"a saved model is MODEL\.pt beside MODEL\.json"):
        load_model(tmp_path / "missing.pt")
    assert main(["predict", str(tmp_path / "missing.pt"), "--images", "x.npz", "--out", "y.npz"]) == 2
