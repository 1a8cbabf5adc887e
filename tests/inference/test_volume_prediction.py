"""rndpo predict with a 3D label-map model: one NIfTI label map per case on the input's grid."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from rndpo.cli import main
from rndpo.data import scale_volume
from rndpo.inference import predict_path, predict_volumes
from rndpo.nets import load_model, save_model
from rndpo.nets.unet import UNet

LABEL_VALUES = (0, 1, 4)


def _affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxel (i, j, k) -> mm with zooms (i, j, k) = reversed (z, y, x) spacing and an offset."""
    aff = np.diag([*reversed(spacing), 1.0])
    aff[:3, 3] = [-3.0, 5.0, 1.5]
    return aff


def _write_case(folder: Path, name: str, zyx: np.ndarray, spacing: tuple[float, float, float]) -> Path:
    path = folder / f"{name}_0000.nii.gz"
    img = nib.Nifti1Image(zyx.T.astype(np.float32), _affine(spacing))
    img.header.set_qform(_affine(spacing), code=1)
    img.to_filename(path)
    return path


def _model(tmp_path: Path, patch: list[int] | None, inference: list[int] | None = None) -> Path:
    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=3, channels=(4, 8), spatial_dims=3, norm="instance")
    path = tmp_path / "model.pt"
    save_model(
        path,
        net,
        in_channels=1,
        image_size=None,
        scaling={"kind": "volume_percentile"},
        num_classes=3,
        class_names=["background", "anterior", "posterior"],
        label_values=list(LABEL_VALUES),
        spacing=[1.0, 1.0, 1.0],
        patch_size=patch,
        **({} if inference is None else {"inference_size": inference}),
    )
    return path


def _expected(model_path: Path, zyx: np.ndarray) -> np.ndarray:
    """The independent route: percentile scaling, one whole-volume forward, argmax, file values."""
    saved = load_model(model_path)
    x = torch.from_numpy(scale_volume(zyx.astype(np.float32), None, Path("x"))[None, None])
    with torch.no_grad():
        classes = saved.network(x)[0].argmax(0).numpy()
    return np.asarray(LABEL_VALUES)[classes]


def test_each_case_gets_a_label_map_on_its_own_grid_in_the_dataset_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    vols = {"a": rng.random((6, 10, 8)) * 300, "b": rng.random((5, 12, 9)) * 90}
    for name, v in vols.items():
        _write_case(src, name, v, (1.0, 1.0, 1.0))
    model = _model(tmp_path, None)
    written = predict_path(load_model(model), src, tmp_path / "out", probs=True)
    assert sorted(p.name for p in written) == ["a.nii.gz", "a_probs.nii.gz", "b.nii.gz", "b_probs.nii.gz"]
    for name, v in vols.items():
        src_img: nib.Nifti1Image = nib.load(src / f"{name}_0000.nii.gz")  # type: ignore[assignment]
        out: nib.Nifti1Image = nib.load(tmp_path / "out" / f"{name}.nii.gz")  # type: ignore[assignment]
        assert out.shape == src_img.shape
        np.testing.assert_allclose(out.affine, src_img.affine)
        assert int(out.header["qform_code"]) == 1
        got = np.asarray(out.dataobj).T
        assert set(np.unique(got).tolist()) <= set(LABEL_VALUES)
        np.testing.assert_array_equal(got, _expected(model, v))
        probs = np.asarray(nib.load(tmp_path / "out" / f"{name}_probs.nii.gz").dataobj)  # type: ignore[attr-defined]
        assert probs.shape == (*src_img.shape, 3)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_a_sliding_window_covers_volumes_larger_than_the_patch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    src = tmp_path / "case_0000.nii.gz"
    vol = rng.random((12, 20, 16)) * 100
    _write_case(tmp_path, "case", vol, (1.0, 1.0, 1.0))
    written = predict_volumes(load_model(_model(tmp_path, [8, 8, 8])), src, tmp_path / "one.nii.gz")
    assert [p.name for p in written] == ["one.nii.gz"]
    assert nib.load(written[0]).shape == (16, 20, 12)  # type: ignore[attr-defined]


def test_a_recorded_inference_window_beyond_the_volume_predicts_it_whole(tmp_path: Path) -> None:
    vol = np.random.default_rng(3).random((12, 20, 16)) * 100
    src = _write_case(tmp_path, "case", vol, (1.0, 1.0, 1.0))
    whole = _model(tmp_path, [8, 8, 8], inference=[64, 64, 64])
    written = predict_volumes(load_model(whole), src, tmp_path / "whole.nii.gz")
    labels = np.asarray(nib.load(written[0]).dataobj).T  # type: ignore[attr-defined]
    np.testing.assert_array_equal(labels, _expected(whole, vol))
    # the same weights in 8^3 windows give other maps: the window recorded is the one used
    windows = predict_volumes(load_model(_model(tmp_path, [8, 8, 8])), src, tmp_path / "win.nii.gz")
    assert not np.array_equal(np.asarray(nib.load(windows[0]).dataobj).T, labels)  # type: ignore[attr-defined]


def test_a_spacing_far_from_training_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_case(tmp_path, "thick", np.random.default_rng(2).random((4, 8, 8)), (3.0, 1.0, 1.0))
    with caplog.at_level(logging.WARNING, logger="rndpo"):
        predict_volumes(load_model(_model(tmp_path, None)), tmp_path / "thick_0000.nii.gz", tmp_path / "o")
    assert "case thick: spacing [3.0, 1.0, 1.0] mm differs from the training spacing" in caplog.text


def test_wrong_inputs_are_one_line_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path, None)
    src = tmp_path / "two"
    src.mkdir()
    for ch in range(2):  # two channels of one case for a 1-channel model: each file is read as a case
        img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
        img.to_filename(src / f"c_000{ch}.nii.gz")
    four_d = tmp_path / "fourd.nii.gz"
    nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)).to_filename(four_d)
    assert main(["predict", str(model), "--images", str(four_d), "--out", str(tmp_path / "o")]) == 2
    assert "case fourd: its images hold 2 channels, expected 1" in capsys.readouterr().err
    np.savez(tmp_path / "x.npz", images=np.zeros((1, 4, 4), np.uint8))
    assert (
        main(["predict", str(model), "--images", str(tmp_path / "x.npz"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "a 3D model segments NIfTI volumes" in capsys.readouterr().err
    assert main(["predict", str(model), "--images", str(src), "--out", str(tmp_path / "ok")]) == 0
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["c_0000.nii.gz", "c_0001.nii.gz"]
