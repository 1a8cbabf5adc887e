"""Validation-selected models are saved, reload with weights_only=True, and `rndpo predict` re-scores them:
the test Dice of each saved model, recomputed from the masks `rndpo predict` writes for the raw test
images, equals the reported `selected_dice` exactly. Every registered network saves and loads through the
registry (MONAI's included), and files written before the registry still load."""

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
from rndpo.nets import UNet, build_network, load_model, save_model
from rndpo.pipeline import load_data, split_data

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
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "kwargs": {"channels": [8, 16], "dropout": 0.1, "norm": "batch"},
        }
        assert (info["in_channels"], info["image_size"], info["threshold"]) == (1, 32, 0.5)
        assert info["scaling"] == {"kind": "unit"} and "normalisation" not in info
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
        "--overwrite",  # seg.nii.gz was written above
    ]
    assert main(argv) == 0
    probs = np.moveaxis(np.asarray(nib.load(tmp_path / "seg_probs.nii.gz").dataobj), 2, 0)
    assert np.array_equal(probs, expected)
    assert np.array_equal(
        np.moveaxis(np.asarray(nib.load(target).dataobj), 2, 0), (expected > 0.5).astype(np.uint8)
    )


def test_missing_model_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"a saved model is MODEL\.pt beside MODEL\.json"):
        load_model(tmp_path / "missing.pt")
    assert main(["predict", str(tmp_path / "missing.pt"), "--images", "x.npz", "--out", "y.npz"]) == 2


def _old_file(tmp_path: Path, network: torch.nn.Module, architecture: dict, **fields: object) -> Path:
    """A model file as rndpo wrote it before the network registry (the same format string)."""
    pt = tmp_path / "old.pt"
    torch.save({k: v.clone() for k, v in network.state_dict().items()}, pt)
    info = {"format": "rndpo-model/1", "version": "0.1.0", "architecture": architecture, **fields}
    pt.with_suffix(".json").write_text(json.dumps(info))
    return pt


def test_files_written_before_the_registry_still_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    unet = UNet(in_channels=3, channels=(4, 8), dropout=0.2, norm="instance").eval()
    config = {"in_channels": 3, "out_channels": 1, "channels": [4, 8], "dropout": 0.2, "norm": "instance"}
    pt = _old_file(
        tmp_path,
        unet,
        {"name": "rndpo.UNet", "config": config},
        in_channels=3,
        image_size=32,
        normalisation={"kind": "volume_percentile", "axis": 1, "window": None},
        threshold=0.4,
    )
    saved = load_model(pt)
    assert isinstance(saved.network, UNet) and saved.network.config() == {**config, "spatial_dims": 2}
    assert saved.scaling == {"kind": "volume_percentile", "axis": 1, "window": None}  # the old key
    assert (saved.in_channels, saved.image_size, saved.threshold) == (3, 32, 0.4)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(saved.network(x), unet(x))

    from monai.networks.nets import BasicUNet

    arch = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "features": [4, 4, 8, 8, 16, 4]}
    basic = BasicUNet(**{**arch, "dropout": 0.1}).eval()  # type: ignore[arg-type]
    config = {**arch, "dropout": 0.1}
    pt = _old_file(
        tmp_path, basic, {"name": "monai.BasicUNet", "config": config}, in_channels=1, image_size=None
    )
    saved = load_model(pt)
    assert isinstance(saved.network, BasicUNet) and saved.scaling == {"kind": "none"}
    x = torch.rand(2, 1, 36, 44)
    with torch.no_grad():
        assert torch.equal(saved.network(x), basic(x))


@pytest.mark.parametrize("name", ["monai.SegResNet", "monai.UNet"])
def test_rndpo_predict_loads_any_registered_network(name: str, tmp_path: Path) -> None:
    pytest.importorskip("monai")
    torch.manual_seed(0)
    network = build_network(name, 2, 1, 1).eval()
    pt, js = save_model(
        tmp_path / "model.pt",
        network,
        in_channels=1,
        image_size=None,
        scaling={"kind": "unit"},
        method="base",
    )
    info = json.loads(js.read_text())
    assert info["architecture"]["name"] == name and info["scaling"] == {"kind": "unit"}
    raw = np.random.default_rng(0).integers(0, 255, (3, 37, 45), dtype=np.uint8)  # any size: padded
    np.savez(tmp_path / "images.npz", images=raw, ids=np.array(["a", "b", "c"]))
    out = tmp_path / "pred.npz"
    assert main(["predict", str(pt), "--images", str(tmp_path / "images.npz"), "--out", str(out)]) == 0
    expected = rndpo.predict(load_model(pt), (raw[:, None] / 255.0).astype(np.float32)).masks
    with np.load(out) as z:
        assert z["masks"].shape == (3, 37, 45) and np.array_equal(z["masks"], expected)
    assert 0 < expected.mean() < 1  # neither all background nor all foreground: a real check


def test_save_model_names_scaling_and_needs_a_description_it_can_rebuild(tmp_path: Path) -> None:
    net = UNet(channels=(4, 8))
    with pytest.raises(TypeError, match=r"normalisation= is now called scaling="):
        save_model(tmp_path / "a.pt", net, in_channels=1, image_size=None, normalisation={"kind": "unit"})
    with pytest.raises(
        ValueError, match=r"scaling\['kind'\] must be one of \['unit', 'volume_percentile', 'none'\]"
    ):
        save_model(tmp_path / "a.pt", net, in_channels=1, image_size=None, scaling={"kind": "zscore"})
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)  # not a registered network: loads only into a given network
    pt, js = save_model(tmp_path / "conv.pt", conv, in_channels=1, image_size=None)
    assert json.loads(js.read_text())["architecture"] == {
        "name": "torch.nn.modules.conv.Conv2d",
        "kwargs": None,
    }
    with pytest.raises(ValueError, match=r"not one the registry builds .*load_model\(path, model=\.\.\.\)"):
        load_model(pt)
    assert isinstance(load_model(pt, model=torch.nn.Conv2d(1, 1, 3, padding=1)).network, torch.nn.Conv2d)
