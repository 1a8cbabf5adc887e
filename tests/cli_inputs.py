"""Shared by the CLI contract and output tests: tiny saved models, prediction inputs of every kind, a
snapshot of a folder, and the one-line error check."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from rndpo.nets import save_model
from rndpo.nets.unet import UNet

SIZE = 16  # the 2D model's image_size, and the inputs' size


def snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every entry under ``root``: file bytes, a link's target, None for a folder."""
    found: dict[str, bytes | str | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = os.readlink(path) if path.is_symlink() else None if path.is_dir() else path.read_bytes()
    return found


def one_line_error(capsys: pytest.CaptureFixture[str], *named: object) -> str:
    """The captured stderr: one ``rndpo: error:`` line, no traceback, naming each of ``named``."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("rndpo: error: ") and "Traceback" not in err, err
    for name in named:
        assert str(name) in err, (name, err)
    return err


def model_2d(root: Path) -> Path:
    """A tiny binary 2D model saved as ``root/model.pt`` (image_size SIZE)."""
    torch.manual_seed(0)
    pt, _ = save_model(
        root / "model.pt",
        UNet(channels=(4, 8)).eval(),
        in_channels=1,
        image_size=SIZE,
        scaling={"kind": "unit"},
    )
    return pt


def prediction_inputs(root: Path, slices: int = 4) -> dict[str, Path]:
    """A 2D model and its inputs under ``root``: an npz, a folder of PNGs, a NIfTI volume of ``slices``
    slices (.nii.gz and .nii), and a bank's masks / scores .npy for ``rndpo mine``."""
    root.mkdir(parents=True, exist_ok=True)
    model = model_2d(root)
    rng = np.random.default_rng(0)
    npz = root / "images.npz"
    np.savez(npz, images=rng.integers(0, 255, (3, SIZE, SIZE), dtype=np.uint8))
    pngs = root / "pngs"
    pngs.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE), dtype=np.uint8)).save(pngs / f"{i}.png")
    nifti = root / "vol.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((SIZE, SIZE, slices)).astype(np.float32), np.eye(4)), nifti)
    nii = root / "vol.nii"
    nii.write_bytes(gzip.decompress(nifti.read_bytes()))
    masks, scores = root / "masks.npy", root / "scores.npy"
    np.save(masks, rng.random((3, 4, 8, 8)) > 0.5)
    np.save(scores, rng.random((3, 4)))
    return {
        "model": model,
        "npz": npz,
        "pngs": pngs,
        "nifti": nifti,
        "nii": nii,
        "masks": masks,
        "scores": scores,
    }
