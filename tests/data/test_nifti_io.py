"""rndpo.data.nifti_io: one NIfTI volume in rndpo's (z, y, x) order with its affine, header and spacing,
and label maps / probabilities written back on an input's grid (checked against nibabel directly)."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rndpo.data import (
    Volume,
    case_name,
    read_volume,
    read_volume_info,
    write_label_map,
    write_probabilities,
)


def _load(path: Path) -> Any:
    """nibabel's image, typed loosely (nib.load is typed as the base image class)."""
    return nib.load(path)


def _affine(zooms: tuple[float, float, float] = (0.7, 0.8, 3.0), origin: float = 5.0) -> np.ndarray:
    """A rotated (axes permuted, one flipped) affine with voxel sizes ``zooms`` along i, j, k."""
    aff = np.zeros((4, 4))
    aff[1, 0] = zooms[0]
    aff[0, 1] = -zooms[1]
    aff[2, 2] = zooms[2]
    aff[:3, 3] = (origin, -2.0 * origin, 1.5)
    aff[3, 3] = 1.0
    return aff


def _write_ijk(
    path: Path, data_ijk: np.ndarray, affine: np.ndarray | None, codes: tuple[int, int] = (1, 1)
) -> Path:
    """Write an (i, j, k[, c]) array with nibabel, with the given qform and sform codes."""
    img = nib.Nifti1Image(data_ijk, affine, dtype=data_ijk.dtype)
    if affine is not None:
        img.header.set_qform(affine, code=codes[0])
        img.header.set_sform(affine, code=codes[1])
    img.to_filename(path)
    return path


# --- reading


def test_read_volume_reverses_axes_and_spacing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ijk = rng.integers(-100, 3000, size=(5, 6, 7), dtype=np.int16)
    path = _write_ijk(tmp_path / "ct.nii.gz", ijk, _affine((0.7, 0.8, 3.0)))
    vol = read_volume(path)
    assert isinstance(vol, Volume)
    assert vol.shape == vol.data.shape == (7, 6, 5)
    for i, j, k in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        assert vol.data[k, j, i] == ijk[i, j, k]
    np.testing.assert_array_equal(vol.data, np.transpose(ijk, (2, 1, 0)))
    assert vol.data.flags.c_contiguous
    np.testing.assert_allclose(vol.spacing, (3.0, 0.8, 0.7), rtol=1e-6)
    np.testing.assert_allclose(vol.affine, _affine((0.7, 0.8, 3.0)), rtol=1e-6)
    assert vol.affine.dtype == np.float64 and vol.path == path
    info = read_volume_info(path)
    assert info.shape == vol.shape and info.spatial_shape == (7, 6, 5) and info.channels == 1
    np.testing.assert_array_equal(info.affine, vol.affine)


def test_read_volume_4d_channels_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ijkc = rng.random((4, 5, 6, 2), dtype=np.float32)
    vol = read_volume(_write_ijk(tmp_path / "mr.nii", ijkc, _affine()))
    assert vol.shape == (2, 6, 5, 4) and vol.channels == 2 and vol.spatial_shape == (6, 5, 4)
    for c in range(2):
        np.testing.assert_array_equal(vol.data[c], ijkc[..., c].T)


def test_read_volume_applies_scaling(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4), dtype=np.int16)
    img.header.set_slope_inter(2.5, -1.0)
    img.to_filename(tmp_path / "s.nii.gz")
    vol = read_volume(tmp_path / "s.nii.gz")
    np.testing.assert_allclose(vol.data, np.arange(8).reshape(2, 2, 2).T * 2.5 - 1.0)


@pytest.mark.parametrize(
    ("name", "case"),
    [
        ("la_003_0000.nii.gz", "la_003"),
        ("la_003_0001.nii", "la_003"),
        ("hippocampus_367.nii.gz", "hippocampus_367"),
        ("BRATS_001.nii.gz", "BRATS_001"),
        ("case.nii", "case"),
        ("a_b_12345.nii.gz", "a_b_12345"),
        ("x_0000_0002.nii.gz", "x_0000"),
    ],
)
def test_case_name(name: str, case: str) -> None:
    assert case_name(name) == case
    assert case_name(Path("/some/folder") / name) == case


# --- read errors


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"NIfTI file not found: .*nope\.nii\.gz"):
        read_volume(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.nii.gz", b"this is not a nifti file at all" * 20),
        ("garbage.nii", b"\x00" * 100),
        ("empty.nii.gz", b""),
    ],
)
def test_read_corrupt_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^cannot read NIfTI file {path}: [^\n]+$"):
        read_volume(path)


def test_read_truncated_file(tmp_path: Path) -> None:
    """The header reads, the voxels do not: the error still names the file."""
    full = _write_ijk(tmp_path / "full.nii", np.ones((20, 20, 20), np.float32), np.eye(4))
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(gzip.compress(full.read_bytes()[:1000]))
    with pytest.raises(ValueError, match=rf"^cannot read NIfTI file {path}: "):
        read_volume(path)


def test_read_wrong_ending_and_dims(tmp_path: Path) -> None:
    path = tmp_path / "volume.mha"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"volume\.mha: expected a name ending in \.nii\.gz or \.nii"):
        read_volume(path)
    flat = _write_ijk(tmp_path / "flat.nii.gz", np.zeros((4, 5), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match=r"flat\.nii\.gz: expected a 3-D volume .* got shape \(4, 5\)"):
        read_volume(flat)


def test_missing_nibabel_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"pip install 'rndpo\[nifti\]'"):
        read_volume(tmp_path / "any.nii.gz")


# --- writing


@pytest.mark.parametrize("codes", [(1, 1), (1, 0), (0, 2), (1, 4), (2, 3)])
def test_label_map_round_trip_keeps_data_affine_and_codes(tmp_path: Path, codes: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    values = (0, 1, 2, 4)
    file_data = rng.choice(np.array(values, dtype=np.uint8), size=(6, 7, 5))
    src = _write_ijk(tmp_path / "lab.nii.gz", file_data, _affine((1.2, 0.9, 2.5)), codes)
    vol = read_volume(src)
    classes = np.searchsorted(np.array(values), vol.data).astype(np.uint8)  # file values -> 0..3
    out = write_label_map(tmp_path / "out" / "lab.nii.gz", classes, values, vol)
    assert out == tmp_path / "out" / "lab.nii.gz"
    back, orig = _load(out), _load(src)
    np.testing.assert_array_equal(np.asarray(back.dataobj), file_data)
    assert back.shape == orig.shape and back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(back.affine, orig.affine)
    for key in (
        "qform_code",
        "sform_code",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "srow_x",
        "srow_y",
        "srow_z",
    ):
        np.testing.assert_array_equal(back.header[key], orig.header[key])
    np.testing.assert_array_equal(back.header.get_zooms(), orig.header.get_zooms())
    assert sorted(p.name for p in out.parent.iterdir()) == ["lab.nii.gz"]  # no temporary file left


def test_label_map_on_a_scaled_4d_reference(tmp_path: Path) -> None:
    """A 4-D float image with intensity scaling and display range: the label map is 3-D, unscaled."""
    img = nib.Nifti1Image(np.ones((4, 5, 6, 2), np.int16), _affine(), dtype=np.int16)
    img.header.set_slope_inter(3.0, 7.0)
    img.header["cal_max"] = 900.0
    img.to_filename(tmp_path / "img.nii.gz")
    ref = read_volume_info(tmp_path / "img.nii.gz")
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1, 2, 3] = 1
    write_label_map(tmp_path / "seg.nii.gz", labels, (0, 1), ref)
    back = _load(tmp_path / "seg.nii.gz")
    assert back.shape == (4, 5, 6) and back.header["cal_max"] == 0
    assert back.dataobj.slope == 1.0 and back.dataobj.inter == 0.0
    raw = np.asarray(back.dataobj)
    assert raw[3, 2, 1] == 1 and raw.sum() == 1
    np.testing.assert_array_equal(back.affine, _load(tmp_path / "img.nii.gz").affine)


def test_label_map_dtype_follows_values(tmp_path: Path) -> None:
    ref = read_volume(_write_ijk(tmp_path / "r.nii.gz", np.zeros((3, 3, 3), np.float32), np.eye(4)))
    labels = np.array([0, 1, 2] * 9, np.uint8).reshape(3, 3, 3)
    write_label_map(tmp_path / "small.nii.gz", labels, (0, 10, 255), ref)
    write_label_map(tmp_path / "big.nii", labels, (0, 256, 1000), ref)
    small, big = _load(tmp_path / "small.nii.gz"), _load(tmp_path / "big.nii")
    assert small.get_data_dtype() == np.uint8 and big.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asarray(big.dataobj), np.array([0, 256, 1000])[labels].T)


def test_label_map_bytes_are_reproducible(tmp_path: Path) -> None:
    ref = read_volume(_write_ijk(tmp_path / "r.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4)))
    labels = (np.arange(64).reshape(4, 4, 4) % 3).astype(np.uint8)
    a = write_label_map(tmp_path / "a.nii.gz", labels, (0, 1, 2), ref).read_bytes()
    b = write_label_map(tmp_path / "b.nii.gz", labels, (0, 1, 2), ref).read_bytes()
    assert a == b


@given(
    labels=hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=3, max_dims=3, max_side=5), elements=st.integers(0, 3)
    ),
    values=st.lists(st.integers(1, 600), min_size=3, max_size=3, unique=True),
)
def test_label_map_writes_file_values(
    tmp_path_factory: pytest.TempPathFactory, labels: np.ndarray, values: list[int]
) -> None:
    folder = tmp_path_factory.mktemp("w")
    label_values = (0, *sorted(values))
    ref = read_volume(_write_ijk(folder / "r.nii", np.zeros(labels.shape[::-1], np.float32), _affine()))
    write_label_map(folder / "l.nii.gz", labels, label_values, ref)
    raw = np.asarray(_load(folder / "l.nii.gz").dataobj)
    expected = np.zeros(labels.shape, dtype=np.int64)
    for c, v in enumerate(label_values):  # the obvious loop
        expected[labels == c] = v
    np.testing.assert_array_equal(raw, expected.T)
    back = read_volume(folder / "l.nii.gz")
    np.testing.assert_array_equal(back.data, expected)


def test_write_probabilities_last_axis(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ref = read_volume(_write_ijk(tmp_path / "r.nii.gz", np.zeros((4, 5, 6), np.int16), _affine(), (1, 2)))
    probs = rng.random((3, 6, 5, 4)).astype(np.float32)
    write_probabilities(tmp_path / "case_probs.nii.gz", probs, ref)
    back = _load(tmp_path / "case_probs.nii.gz")
    assert back.shape == (4, 5, 6, 3) and back.get_data_dtype() == np.float32
    raw = np.asarray(back.dataobj)
    for c in range(3):
        np.testing.assert_array_equal(raw[..., c], probs[c].T)
    np.testing.assert_array_equal(back.affine, _load(tmp_path / "r.nii.gz").affine)
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (1, 2)
    np.testing.assert_allclose(back.header.get_zooms()[:3], (0.7, 0.8, 3.0), rtol=1e-6)
    again = read_volume(tmp_path / "case_probs.nii.gz")
    np.testing.assert_array_equal(again.data, probs)


# --- write errors


def test_write_errors(tmp_path: Path) -> None:
    ref = read_volume(_write_ijk(tmp_path / "r.nii.gz", np.zeros((4, 5, 6), np.float32), np.eye(4)))
    good = np.zeros((6, 5, 4), np.uint8)
    with pytest.raises(
        ValueError, match=r"labels must have the reference's shape \(z, y, x\) = \(6, 5, 4\).*got \(4, 5, 6\)"
    ):
        write_label_map(tmp_path / "o.nii.gz", np.zeros((4, 5, 6), np.uint8), (0, 1), ref)
    with pytest.raises(ValueError, match=r"labels must hold classes 0 to 1 .* got values 0\.\.2"):
        write_label_map(tmp_path / "o.nii.gz", good + (np.arange(4) == 3) * 2, (0, 1), ref)
    with pytest.raises(ValueError, match=r"label_values must be integers from 0 to 65535"):
        write_label_map(tmp_path / "o.nii.gz", good, (0, 70000), ref)
    with pytest.raises(TypeError, match=r"labels must be an integer array"):
        write_label_map(tmp_path / "o.nii.gz", good.astype(np.float32), (0, 1), ref)
    with pytest.raises(
        ValueError, match=r"path must be a file name ending in \.nii\.gz or \.nii, got .*o\.png"
    ):
        write_label_map(tmp_path / "o.png", good, (0, 1), ref)
    with pytest.raises(TypeError, match=r"reference must be a Volume or VolumeInfo"):
        write_label_map(tmp_path / "o.nii.gz", good, (0, 1), np.eye(4))  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"probs must have shape \(C, z, y, x\) with \(z, y, x\) = \(6, 5, 4\)"
    ):
        write_probabilities(tmp_path / "p.nii.gz", np.zeros((2, 4, 5, 6), np.float32), ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nii.gz"]  # nothing written
