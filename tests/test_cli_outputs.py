"""Outputs never land on inputs: ``rndpo predict`` and ``rndpo mine`` refuse an ``--out`` that is, contains
or lies inside an input, and an output file that exists unless ``--overwrite``; a 2D image far larger than
the model's training size is refused, not resized for minutes. Each refusal: exit 2, one line on stderr
naming the file or argument, inputs untouched byte for byte, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from cli_inputs import SIZE, model_2d, one_line_error, prediction_inputs, snapshot
from rndpo.cli import main
from rndpo.inference import MAX_SCALE, predict
from rndpo.nets import load_model, save_model
from rndpo.nets.unet import UNet


def inputs(root: Path) -> dict[str, Path]:
    """A 2D model and its inputs: an npz, a folder of PNGs and a NIfTI volume (see tests/cli_inputs.py)."""
    return prediction_inputs(root, slices=3)


def predict_argv(files: dict[str, Path], images: str, out: Path | str, *flags: str) -> list[str]:
    return ["predict", str(files["model"]), "--images", str(files[images]), "--out", str(out), *flags]


# ---- predict: --out is, contains or lies inside an input

ONTO_INPUTS: dict[str, Callable[[dict[str, Path]], tuple[str, Path, Path]]] = {
    # (which --images, --out, the input it would hit)
    "out is the png folder": lambda f: ("pngs", f["pngs"], f["pngs"]),
    "out inside the png folder": lambda f: ("pngs", f["pngs"] / "masks", f["pngs"]),
    "out contains the png folder": lambda f: ("pngs", f["pngs"].parent, f["pngs"]),
    "out is the npz": lambda f: ("npz", f["npz"], f["npz"]),
    "out is a link to the npz": lambda f: ("npz", f["link"], f["npz"]),
    "out is the model file": lambda f: ("npz", f["model"], f["model"]),
    "out is the model description": lambda f: ("npz", f["model"].with_suffix(".json"), f["model"]),
    "out is the nifti volume": lambda f: ("nifti", f["nifti"], f["nifti"]),
}


@pytest.mark.parametrize("case", sorted(ONTO_INPUTS))
def test_predict_refuses_an_out_that_is_contains_or_lies_inside_an_input(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = inputs(tmp_path / "in")
    files["link"] = tmp_path / "in" / "link.npz"
    files["link"].symlink_to(files["npz"])
    images, out, hit = ONTO_INPUTS[case](files)
    before = snapshot(tmp_path)
    assert main(predict_argv(files, images, out)) == 2
    one_line_error(capsys, "--out", hit.with_suffix("") if "model" in case else hit)
    assert snapshot(tmp_path) == before  # inputs byte for byte, no output, no folder
    # --overwrite never makes an input an output
    assert main(predict_argv(files, images, out, "--overwrite")) == 2
    one_line_error(capsys, "--out")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("which", ["masks", "scores", "folder"])
def test_mine_refuses_an_out_onto_its_inputs(
    which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    masks, scores = tmp_path / "bank" / "masks.npy", tmp_path / "bank" / "scores.npy"
    masks.parent.mkdir()
    np.save(masks, rng.random((3, 4, 8, 8)) > 0.5)
    np.save(scores, rng.random((3, 4)))
    out = {"masks": masks, "scores": scores, "folder": masks.parent}[which]
    before = snapshot(tmp_path)
    for flags in ([], ["--overwrite"]):
        assert main(["mine", str(masks), str(scores), "--out", str(out), *flags]) == 2
        one_line_error(capsys, "--out", scores if which == "scores" else masks)
        assert snapshot(tmp_path) == before


# ---- an existing output file is replaced only with --overwrite


def _existing(files: dict[str, Path], root: Path, images: str, probs: bool) -> tuple[Path, Path]:
    """(--out, the existing output file in it) for predict on ``images``."""
    if images == "npz":
        return root / "pred.npz", root / "pred.npz"
    if images == "nifti":
        return root / "seg.nii.gz", root / ("seg_probs.nii.gz" if probs else "seg.nii.gz")
    return root / "pred", root / "pred" / ("1_probs.npy" if probs else "1.png")


@pytest.mark.parametrize("probs", [False, True], ids=["masks", "probs"])
@pytest.mark.parametrize("images", ["npz", "pngs", "nifti"])
def test_predict_replaces_an_existing_output_only_with_overwrite(
    images: str, probs: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = inputs(tmp_path / "in")
    out, existing = _existing(files, tmp_path / "out", images, probs)
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_bytes(b"an earlier result")
    argv = predict_argv(files, images, out, *(["--probs"] if probs else []))
    before = snapshot(tmp_path)
    assert main(argv) == 2
    assert "pass --overwrite" in one_line_error(capsys, existing)
    assert snapshot(tmp_path) == before  # not one of the other outputs was written either
    assert main([*argv, "--overwrite"]) == 0
    assert existing.read_bytes() not in (b"an earlier result", b"")
    capsys.readouterr()


def test_predict_3d_replaces_an_existing_label_map_only_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=3, channels=(4, 8), spatial_dims=3, norm="instance")
    pt, _ = save_model(
        tmp_path / "m3.pt", net, in_channels=1, image_size=None, num_classes=3, patch_size=[8, 8, 8]
    )
    src = tmp_path / "cases"
    src.mkdir()
    for case in ("a", "b"):
        nib.save(
            nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), np.eye(4)),
            src / f"{case}_0000.nii.gz",
        )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.nii.gz").write_bytes(b"an earlier result")
    argv = ["predict", str(pt), "--images", str(src), "--out", str(tmp_path / "out")]
    before = snapshot(tmp_path)
    assert main(argv) == 2
    one_line_error(capsys, tmp_path / "out" / "b.nii.gz", "--overwrite")
    assert snapshot(tmp_path) == before  # a.nii.gz was not written before b's refusal either
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_mine_replaces_an_existing_output_only_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "m.npy", rng.random((3, 4, 8, 8)) > 0.5)
    np.save(tmp_path / "s.npy", rng.random((3, 4)))
    out = tmp_path / "pairs.npz"
    out.write_bytes(b"an earlier result")
    argv = ["mine", str(tmp_path / "m.npy"), str(tmp_path / "s.npy"), "--out", str(out)]
    before = snapshot(tmp_path)
    assert main(argv) == 2
    one_line_error(capsys, out, "--overwrite")
    assert snapshot(tmp_path) == before
    assert main([*argv, "--overwrite"]) == 0
    with np.load(out) as z:
        assert len(z["image"]) > 0


# ---- a 2D image far larger than the model's image size


@pytest.mark.parametrize("source", ["npz", "pngs"])
def test_predict_refuses_a_2d_image_far_larger_than_the_training_size(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = inputs(tmp_path / "in")
    big = (SIZE * MAX_SCALE + 1, 20)
    if source == "npz":
        np.savez(files["npz"], images=np.zeros((2, *big), np.uint8))
    else:
        Image.fromarray(np.zeros(big, np.uint8)).save(files["pngs"] / "1.png")
    before = snapshot(tmp_path)
    assert main(predict_argv(files, source, tmp_path / ("o.npz" if source == "npz" else "o"))) == 2
    err = one_line_error(capsys, "--images", f"{big[0]} x {big[1]}", "resize")
    assert source == "npz" or "image 1 " in err
    assert snapshot(tmp_path) == before


def test_the_largest_accepted_2d_image_and_volumes_are_still_predicted(tmp_path: Path) -> None:
    """*guard*: the limit is the one stated, and NIfTI slices (resized as in training) are not limited."""
    files = inputs(tmp_path / "in")
    edge = (SIZE * MAX_SCALE, 20)
    np.savez(files["npz"], images=np.zeros((1, *edge), np.uint8))
    assert main(predict_argv(files, "npz", tmp_path / "o.npz")) == 0
    with np.load(tmp_path / "o.npz") as z:
        assert z["masks"].shape == (1, *edge)
    # NIfTI slices are resized to the model's size as in training, whatever their size
    vol = np.random.default_rng(1).random((SIZE * 6, SIZE * 6, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), files["nifti"])
    assert main(predict_argv(files, "nifti", tmp_path / "seg.nii.gz")) == 0
    assert nib.load(tmp_path / "seg.nii.gz").shape == vol.shape  # type: ignore[attr-defined]


def test_the_python_api_refuses_a_far_larger_image_unless_told(tmp_path: Path) -> None:
    model = load_model(model_2d(tmp_path))
    image = np.zeros((1, SIZE * MAX_SCALE + 1, SIZE), np.float32)
    with pytest.raises(ValueError, match=r"images\[0\]: 65 x 16 pixels is more than 4 times .* resize"):
        predict(model, [image])
    assert predict(model, [image], max_scale=None).masks[0].shape == image.shape[1:]
