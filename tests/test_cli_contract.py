"""One error contract for every command (``rndpo run``'s): an expected problem (a device that is not here, a
corrupt, truncated or missing file of any kind, a full or read-only disk) is one line on stderr naming the
file or argument, exit 2, no traceback, inputs untouched and nothing half-written; an unexpected exception
keeps its traceback."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cli_inputs import one_line_error, prediction_inputs, snapshot
from rndpo.cli import main
from rndpo.nets import save_model
from rndpo.nets.unet import UNet


def setup(root: Path) -> dict[str, Path]:
    """A tiny 2D model, a tiny 3D model and inputs of every kind."""
    files = prediction_inputs(root)
    net3 = UNet(in_channels=1, out_channels=3, channels=(4, 8), spatial_dims=3, norm="instance")
    model3, _ = save_model(
        root / "m3.pt", net3, in_channels=1, image_size=None, num_classes=3, patch_size=[8, 8, 8]
    )
    return files | {"model3": model3}


def predict_argv(files: dict[str, Path], images: str, out: Path, model: str = "model") -> list[str]:
    return ["predict", str(files[model]), "--images", str(files[images]), "--out", str(out)]


def mine_argv(files: dict[str, Path], out: Path) -> list[str]:
    return ["mine", str(files["masks"]), str(files["scores"]), "--out", str(out)]


# ---- devices


@pytest.mark.parametrize(
    "device",
    [
        "bogus",
        "cuda:x",
        pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
    ],
)
def test_predict_on_a_device_that_is_not_here_is_refused_before_loading(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = setup(tmp_path)
    files["model"].write_bytes(b"not a model")  # the device is checked first: the model is never read
    before = snapshot(tmp_path)
    assert main([*predict_argv(files, "npz", tmp_path / "o.npz"), "--device", device]) == 2
    one_line_error(capsys, repr(device))
    assert snapshot(tmp_path) == before


# ---- corrupt, truncated and missing files of every kind


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def flip(data: bytes) -> bytes:
        at = offset % len(data)
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]

    return flip


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return b"not what it should be\n" * 20


# (which file is damaged, how, the command's argv given the files and an output path)
CORRUPT: dict[str, tuple[str, Callable[[bytes], bytes], Callable[[dict[str, Path], Path], list[str]]]] = {
    "png garbage": ("pngs/1.png", _garbage, lambda f, o: predict_argv(f, "pngs", o / "out")),
    "png truncated": ("pngs/1.png", _truncate, lambda f, o: predict_argv(f, "pngs", o / "out")),
    "npz garbage": ("images.npz", _garbage, lambda f, o: predict_argv(f, "npz", o / "o.npz")),
    "npz truncated": ("images.npz", _truncate, lambda f, o: predict_argv(f, "npz", o / "o.npz")),
    "nii.gz garbage (2D model)": (
        "vol.nii.gz",
        _garbage,
        lambda f, o: predict_argv(f, "nifti", o / "s.nii.gz"),
    ),
    "nii.gz truncated (2D model)": (
        "vol.nii.gz",
        _truncate,
        lambda f, o: predict_argv(f, "nifti", o / "s.nii.gz"),
    ),
    "nii truncated (2D model)": ("vol.nii", _truncate, lambda f, o: predict_argv(f, "nii", o / "s.nii.gz")),
    "nii.gz garbage (3D model)": (
        "vol.nii.gz",
        _garbage,
        lambda f, o: predict_argv(f, "nifti", o / "s.nii.gz", "model3"),
    ),
    "nii.gz truncated (3D model)": (
        "vol.nii.gz",
        _truncate,
        lambda f, o: predict_argv(f, "nifti", o / "s.nii.gz", "model3"),
    ),
    "model.pt first byte flipped": ("model.pt", _flip(0), lambda f, o: predict_argv(f, "npz", o / "o.npz")),
    "model.pt pickle byte flipped": (
        "model.pt",
        _flip(100),
        lambda f, o: predict_argv(f, "npz", o / "o.npz"),
    ),
    "model.pt directory byte flipped": (
        "model.pt",
        _flip(-30),
        lambda f, o: predict_argv(f, "npz", o / "o.npz"),
    ),
    "model.pt truncated": ("model.pt", _truncate, lambda f, o: predict_argv(f, "npz", o / "o.npz")),
    "model.json truncated": ("model.json", _truncate, lambda f, o: predict_argv(f, "npz", o / "o.npz")),
    "model.json garbage bytes": (
        "model.json",
        lambda d: b"\xff\xfe" + d,
        lambda f, o: predict_argv(f, "npz", o / "o.npz"),
    ),
    "masks.npy truncated": ("masks.npy", _truncate, lambda f, o: mine_argv(f, o / "p.npz")),
    "masks.npy garbage": ("masks.npy", _garbage, lambda f, o: mine_argv(f, o / "p.npz")),
    "scores.npy truncated": ("scores.npy", _truncate, lambda f, o: mine_argv(f, o / "p.npz")),
}


def _corrupt_run(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = setup(tmp_path / "in")
    name, damage, argv = CORRUPT[case]
    victim = tmp_path / "in" / name
    victim.write_bytes(damage(victim.read_bytes()))
    before = snapshot(tmp_path)
    assert main(argv(files, tmp_path)) == 2
    one_line_error(capsys, victim)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", sorted(c for c in CORRUPT if "(2D model)" in c))
def test_a_corrupt_nifti_given_to_a_2d_model_is_one_line_naming_it(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _corrupt_run(case, tmp_path, capsys)


@pytest.mark.parametrize("case", sorted(c for c in CORRUPT if "(2D model)" not in c))
def test_every_other_corrupt_or_truncated_file_is_one_line_naming_it(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """*guard*: these were one line already (the loaders and load_model name the file); the contract
    holds for every kind of file the commands read."""
    _corrupt_run(case, tmp_path, capsys)


@pytest.mark.parametrize("missing", ["images", "model", "description", "masks", "scores"])
def test_a_missing_file_is_one_line_naming_it(
    missing: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """*guard*: one line before and after the checks were reordered (device, outputs, then the model)."""
    files = setup(tmp_path / "in")
    gone = {
        "images": files["npz"],
        "model": files["model"],
        "description": files["model"].with_suffix(".json"),
        "masks": files["masks"],
        "scores": files["scores"],
    }[missing]
    gone.unlink()
    before = snapshot(tmp_path)
    mine = missing in ("masks", "scores")
    out = tmp_path / ("p.npz" if mine else "o.npz")
    assert main(mine_argv(files, out) if mine else predict_argv(files, "npz", out)) == 2
    one_line_error(capsys, gone)
    assert snapshot(tmp_path) == before


# ---- a full or read-only disk


def _failing_write(code: int, after: int = 0) -> Callable[..., None]:
    """A stand-in for Path.write_bytes / numpy.savez that succeeds ``after`` times, then writes a few bytes
    and fails as a disk does (an OSError without a file name, raised mid-write)."""
    calls = {"n": 0}
    real_write_bytes, real_savez = Path.write_bytes, np.savez

    def fail(target: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= after:
            if isinstance(target, Path):
                real_write_bytes(target, *args)
            else:
                real_savez(target, *args, **kwargs)
            return
        if isinstance(target, Path):
            real_write_bytes(target, b"half")
        else:
            target.write(b"half")
        raise OSError(code, os.strerror(code))

    return fail


DISK = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk full", errno.EROFS: "read-only file system"}


@pytest.mark.parametrize("code", sorted(DISK), ids=[errno.errorcode[c] for c in sorted(DISK)])
@pytest.mark.parametrize("command", ["predict npz", "predict pngs", "predict nifti", "predict 3d", "mine"])
def test_a_full_or_read_only_disk_is_one_line_naming_the_output_and_leaves_nothing(
    command: str,
    code: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = setup(tmp_path / "in")
    if command == "mine":
        out, target = tmp_path / "p.npz", tmp_path / "p.npz"
        argv = mine_argv(files, out)
        monkeypatch.setattr(np, "savez", _failing_write(code))
    elif command == "predict npz":
        out, target = tmp_path / "o.npz", tmp_path / "o.npz"
        argv = predict_argv(files, "npz", out)
        monkeypatch.setattr(np, "savez", _failing_write(code))
    elif command == "predict pngs":  # the third mask fails: the two written before are removed
        out, target = tmp_path / "new" / "out", tmp_path / "new" / "out" / "2.png"
        argv = predict_argv(files, "pngs", out)
        monkeypatch.setattr(Path, "write_bytes", _failing_write(code, after=2))
    elif command == "predict nifti":
        out, target = tmp_path / "seg.nii.gz", tmp_path / "seg_probs.nii.gz"
        argv = [*predict_argv(files, "nifti", out), "--probs"]
        monkeypatch.setattr(Path, "write_bytes", _failing_write(code, after=1))
    else:  # the label map is written, then its probabilities fail: the label map is removed
        out, target = tmp_path / "seg.nii.gz", tmp_path / "seg_probs.nii.gz"
        argv = [*predict_argv(files, "nifti", out, "model3"), "--probs"]

        def probabilities_fail(path: Path, *args: object) -> Path:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr("rndpo.inference.volume_prediction.write_probabilities", probabilities_fail)
    before = snapshot(tmp_path)
    assert main(argv) == 2
    assert one_line_error(capsys).startswith(f"rndpo: error: cannot write {target}: {DISK[code]}")
    assert snapshot(tmp_path) == before  # no output, no temporary file, no folder created for it


@pytest.mark.parametrize("access", ["chmod 0o555", "os.access says no"])
@pytest.mark.parametrize("command", ["predict", "mine"])
def test_an_out_on_a_folder_that_cannot_be_written(
    command: str,
    access: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real read-only folder (skipped as root, who may write anywhere), and the same check as root sees
    it when ``os.access`` reports the folder unwritable (a read-only mount answers so for root too)."""
    files = setup(tmp_path / "in")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if access == "os.access says no":
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real(p, mode, **kw))
        elif os.access(locked, os.W_OK):
            pytest.skip("running as root: a 0o555 folder is still writable")
        before = snapshot(tmp_path)
        argv = (
            mine_argv(files, locked / "p.npz")
            if command == "mine"
            else predict_argv(files, "pngs", locked / "sub" / "o")
        )
        assert main(argv) == 2
        one_line_error(capsys, "--out", f"{locked} is not writable")
        assert snapshot(tmp_path) == before
    finally:
        locked.chmod(0o755)


def test_a_write_refused_on_its_temporary_file_names_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES raised on ``.<name>.<8 hex>.tmp`` (a folder made read-only while predicting) names <name>."""
    import rndpo.storage

    files = setup(tmp_path / "in")

    def refuse(path: Path) -> Path:
        raise PermissionError(
            errno.EACCES, "Permission denied", str(path.parent / f".{path.name}.0123abcd.tmp")
        )

    monkeypatch.setattr(rndpo.storage, "_new_temp_file", refuse)
    before = snapshot(tmp_path)
    assert main(predict_argv(files, "npz", tmp_path / "o.npz")) == 2
    assert one_line_error(capsys) == f"rndpo: error: cannot write {tmp_path / 'o.npz'}: permission denied"
    assert snapshot(tmp_path) == before


# ---- unexpected errors are not hidden


@pytest.mark.parametrize("error", [RuntimeError("a bug"), OSError(errno.EIO, "Input/output error")])
def test_an_unexpected_error_keeps_its_traceback(
    error: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """*guard*: main now catches OSError to name full and read-only disks; any other errno, and any other
    exception, still propagates with its traceback."""
    files = setup(tmp_path / "in")

    def broken(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("rndpo.inference.predict_path", broken)
    with pytest.raises(type(error)):
        main(predict_argv(files, "npz", tmp_path / "o.npz"))


def test_mine_reads_no_npy_beyond_the_voxel_cap_and_the_flag_moves_the_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An .npy whose header declares 10**7 elements: refused under --max-voxels 1000 before it is read,
    accepted past the header check (and mined) with the default cap."""
    monkeypatch.setenv("RNDPO_MAX_VOXELS", str(2**31))  # restored afterwards: main() sets it from the flag
    masks, scores = tmp_path / "masks.npy", tmp_path / "scores.npy"
    np.save(masks, np.zeros((10, 4, 50, 50), np.uint8))  # 100000 elements
    np.save(scores, np.linspace(0, 1, 40).reshape(10, 4))
    argv = ["mine", str(masks), str(scores), "--out", str(tmp_path / "pairs.npz")]
    assert main([*argv, "--max-voxels", "1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "masks" in err and "RNDPO_MAX_VOXELS" in err and "1000" in err
    assert not (tmp_path / "pairs.npz").exists()
    monkeypatch.setenv("RNDPO_MAX_VOXELS", str(2**31))
    assert main(argv) == 0
    assert main([*argv, "--overwrite", "--max-voxels", "0"]) == 2
    assert "--max-voxels must be a positive number" in capsys.readouterr().err
