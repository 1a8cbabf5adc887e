"""Inputs that declare huge sizes in small files are refused from their headers, before anything is
allocated (one-line ValueError naming the file, the shape, the cap and how to raise it); integer images
follow one rule (uint8 / 255, uint16 / 65535, other integer dtypes by their value range); and the
conversions keep no float64 copies (rndpo.data.input_limits, issue 30)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from skimage.transform import resize

import rndpo.data.image_resize as image_resize
from rndpo.data import (
    load_dataset_folder,
    load_folder,
    load_nifti,
    load_npz,
    load_npz_volumes,
    load_unlabeled,
    read_images,
    read_volume,
    resize_image,
)
from rndpo.data.input_limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VOXELS, check_npy_file

MIB = 2**20


@contextmanager
def _peak(limit_bytes: int) -> Iterator[None]:
    """Assert that Python and NumPy allocate at most ``limit_bytes`` more at the peak inside the block."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= limit_bytes, f"peak {peak / MIB:.1f} MiB > {limit_bytes / MIB:.1f} MiB"


def _npy(shape: tuple[int, ...], dtype: Any, payload: bytes = b"\0" * 16) -> bytes:
    """A valid .npy header declaring ``shape`` followed by ``payload`` (not the data it declares)."""
    fh = io.BytesIO()
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)
    return fh.getvalue() + payload


def _npz(path: Path, **members: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return path


def _single_line(err: pytest.ExceptionInfo[ValueError], *parts: str) -> str:
    text = str(err.value)
    assert "\n" not in text
    for part in parts:
        assert part in text, (part, text)
    return text


# --- the integer-image rule

#: dtype, highest value -> the divisor, or None: refused
INTEGER_CASES = [
    ("uint8", 200, 255.0),  # guard: as before
    ("uint16", 200, 65535.0),  # guard: uint16 is always 16-bit, even when dark
    ("uint16", 60000, 65535.0),  # guard
    ("int8", 100, 255.0),
    ("int16", 200, 255.0),
    ("int16", 3000, 65535.0),
    ("int32", 255, 255.0),
    ("int32", 3000, 65535.0),
    ("int32", 65535, 65535.0),
    ("int64", 200, 255.0),
    ("int64", 40000, 65535.0),
    ("uint32", 200, 255.0),
    ("uint32", 65535, 65535.0),
    ("uint64", 255, 255.0),
    ("uint64", 256, 65535.0),
    ("int32", 70000, None),
    ("uint64", 2**40, None),
]


def _integer_images(dtype: str, hi: int) -> np.ndarray:
    values = np.linspace(0, hi, 5 * 6 * 6).round().astype(np.int64)  # 0 and hi included
    return np.random.default_rng(1).permutation(values).reshape(5, 6, 6).astype(dtype)


@pytest.mark.parametrize(("dtype", "hi", "divisor"), INTEGER_CASES)
def test_integer_images_follow_one_rule_everywhere(
    dtype: str, hi: int, divisor: float | None, tmp_path: Path
) -> None:
    images = _integer_images(dtype, hi)
    masks = (images == images.max()).astype(np.uint8)
    np.savez(tmp_path / "d.npz", images=images, masks=masks)
    np.savez(tmp_path / "v.npz", images=images[None], masks=masks[None])
    readers: list[Callable[[], np.ndarray]] = [
        lambda: load_npz(tmp_path / "d.npz").images[:, 0],
        lambda: np.stack(read_images(tmp_path / "d.npz")[0])[:, 0],
        lambda: load_unlabeled(tmp_path / "d.npz", image_size=6)[0][:, 0],
        lambda: load_npz_volumes(tmp_path / "v.npz").images[0, 0],
    ]
    for read in readers:
        if divisor is None:
            with pytest.raises(ValueError) as err:
                read()
            _single_line(err, str(tmp_path), f"{dtype} values 0..{hi} are outside 0..65535")
        else:
            got = read()
            expected = (images.astype(np.float64) / divisor).astype(np.float32)  # independent of the code
            assert got.dtype == np.float32 and got.max() > 0.5 / 65535
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", ["int16", "int32", "int64"])
def test_negative_or_too_large_integer_images_are_refused_naming_the_range(
    dtype: str, tmp_path: Path
) -> None:
    images = np.array([[[-5, 0], [70000 if dtype != "int16" else 7000, 3]]], dtype=dtype)
    np.savez(tmp_path / "d.npz", images=images, masks=np.zeros(images.shape, np.uint8))
    with pytest.raises(ValueError) as err:
        load_npz(tmp_path / "d.npz")
    hi = 70000 if dtype != "int16" else 7000
    _single_line(err, str(tmp_path / "d.npz"), f"{dtype} values -5..{hi} are outside 0..65535")


def test_a_32_bit_integer_tiff_in_a_folder_is_not_near_zero(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    pixels = np.arange(48, dtype=np.int32).reshape(6, 8) * 1000  # 0..47000: 16-bit data stored as int32
    Image.fromarray(pixels).save(tmp_path / "images" / "a.tif")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    expected = (pixels / 65535.0).astype(np.float32)
    np.testing.assert_array_equal(load_folder(tmp_path / "images", tmp_path / "masks").images[0, 0], expected)
    np.testing.assert_array_equal(read_images(tmp_path / "images")[0][0][0], expected)


def test_npz_images_are_converted_without_float64_copies(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 128, 128), dtype=np.uint8)  # 0.8 MiB
    np.savez_compressed(tmp_path / "d.npz", images=images, masks=np.zeros(images.shape, np.uint8))
    # decoded images and masks (1.6 MiB) plus the float32 result (3.1 MiB); a float64 copy adds 6.3 MiB
    with _peak(6 * MIB):
        ds = load_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(ds.images[:, 0], (images / 255.0).astype(np.float32))


# --- declared sizes: .npz and .npy


def _huge_npz(path: Path) -> Path:
    return _npz(path, images=_npy((10**6, 10**6, 3), np.uint8), masks=_npy((10**6, 10**6), np.uint8))


def test_an_npz_declaring_a_huge_array_is_refused_from_its_header(tmp_path: Path) -> None:
    path = _huge_npz(tmp_path / "huge.npz")
    assert path.stat().st_size < 1000
    readers = [
        lambda: load_npz(path),
        lambda: read_images(path),
        lambda: load_unlabeled(path, image_size=8),
        lambda: load_npz_volumes(path),
    ]
    for read in readers:
        with _peak(MIB), pytest.raises(ValueError) as err:
            read()
        _single_line(err, str(path), "(1000000, 1000000, 3)", str(DEFAULT_MAX_VOXELS), "RNDPO_MAX_VOXELS")


def test_an_npz_member_smaller_than_its_header_says_allocates_nothing(tmp_path: Path) -> None:
    # within the caps (1.6e9 elements, 4000 x 4000 per image) but 100 bytes of data: refused before reading
    path = _npz(tmp_path / "short.npz", images=_npy((100, 4000, 4000), np.uint8), masks=_npy((3,), np.uint8))
    with _peak(MIB), pytest.raises(ValueError) as err:
        load_npz(path)
    _single_line(err, str(path), "'images'", "(100, 4000, 4000)", "truncated or corrupt")


def test_a_2d_npz_image_beyond_the_pixel_cap_is_refused(tmp_path: Path) -> None:
    path = _npz(tmp_path / "wide.npz", images=_npy((1, 20000, 20000), np.uint8), masks=_npy((1,), np.uint8))
    with _peak(MIB), pytest.raises(ValueError) as err:
        load_npz(path)
    _single_line(err, str(path), "(20000, 20000)", str(DEFAULT_MAX_PIXELS), "RNDPO_MAX_PIXELS")


def test_an_npy_declaring_a_huge_array_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "masks.npy"
    path.write_bytes(_npy((10**6, 10**6, 3), np.uint8))
    with _peak(MIB), pytest.raises(ValueError) as err:
        check_npy_file(path, "masks")
    _single_line(err, f"masks: {path}", "(1000000, 1000000, 3)", str(DEFAULT_MAX_VOXELS), "RNDPO_MAX_VOXELS")
    path.write_bytes(_npy((1000, 1000), np.float32))  # within the cap, but 16 bytes of data
    with pytest.raises(ValueError) as err:
        check_npy_file(path, "scores")
    _single_line(err, "truncated or corrupt")
    np.save(path, np.ones((3, 4), np.float32))
    assert check_npy_file(path, "scores") == ((3, 4), np.dtype(np.float32))


def test_the_caps_are_raised_and_lowered_by_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = np.zeros((5, 8, 8), np.uint8)
    np.savez(tmp_path / "d.npz", images=images, masks=images)
    monkeypatch.setenv("RNDPO_MAX_VOXELS", "100")
    with pytest.raises(ValueError) as err:
        load_npz(tmp_path / "d.npz")
    _single_line(err, "(5, 8, 8)", "320 elements, more than the cap of 100", "RNDPO_MAX_VOXELS")
    monkeypatch.setenv("RNDPO_MAX_VOXELS", "320")
    assert load_npz(tmp_path / "d.npz").images.shape == (5, 1, 8, 8)
    monkeypatch.setenv("RNDPO_MAX_VOXELS", "lots")
    with pytest.raises(ValueError, match="RNDPO_MAX_VOXELS must be a positive integer"):
        load_npz(tmp_path / "d.npz")


# --- declared sizes: image files


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1 x 1 PNG whose IHDR is patched to say width x height (CRC recomputed)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_a_png_whose_header_declares_huge_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    victim = _png_claiming(tmp_path / "images" / "a.png", 100000, 100000)
    assert struct.unpack(">II", victim.read_bytes()[16:24]) == (100000, 100000)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "a.png")
    for read in (
        lambda: load_folder(tmp_path / "images", tmp_path / "masks"),
        lambda: read_images(tmp_path / "images"),
        lambda: load_unlabeled(tmp_path, image_size=8),
    ):
        with _peak(MIB), pytest.raises(ValueError) as err:
            read()
        _single_line(err, str(victim), "(100000, 100000)", str(DEFAULT_MAX_PIXELS), "RNDPO_MAX_PIXELS")


def test_the_pixel_cap_applies_to_masks_and_can_be_lowered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "masks" / "a.png")
    monkeypatch.setenv("RNDPO_MAX_PIXELS", "1000")
    with pytest.raises(ValueError) as err:
        load_folder(tmp_path / "images", tmp_path / "masks")
    _single_line(err, "image " + str(tmp_path / "images" / "a.png"), "1600 pixels, more than the cap of 1000")
    monkeypatch.setenv("RNDPO_MAX_PIXELS", "1600")
    assert load_folder(tmp_path / "images", tmp_path / "masks").images.shape == (1, 1, 40, 40)


def test_a_large_image_is_shrunk_by_the_sparse_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Images over _SPARSE_RESIZE_PIXELS go through the sparse-matrix path (its speed is measured in
    benches, not here); that path gives scikit-image's values."""
    rng = np.random.default_rng(0)
    calls: list[tuple[int, int]] = []
    axis_matrix = image_resize._axis_matrix
    monkeypatch.setattr(
        image_resize, "_axis_matrix", lambda n, m, aa: calls.append((n, m)) or axis_matrix(n, m, aa)
    )
    big = rng.random((1, 2100, 2100), dtype=np.float32)  # 4.4 M pixels > 2**22
    out = resize_image(big, 64)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32 and (2100, 64) in calls
    monkeypatch.setattr(image_resize, "_SPARSE_RESIZE_PIXELS", 0)  # the sparse path on small images too
    for shape, size in [((1, 50, 70), 16), ((3, 33, 20), 64), ((2, 40, 41), 40), ((1, 9, 300), 30)]:
        image = rng.random(shape, dtype=np.float32)
        expected = resize(
            image,
            (shape[0], size, size),
            order=1,
            mode="edge",
            anti_aliasing=size < max(shape[1:]),
            preserve_range=True,
        )
        np.testing.assert_allclose(resize_image(image, size), expected, atol=1e-6)


# --- declared sizes: NIfTI


def _nifti_claiming(path: Path, shape: tuple[int, ...]) -> Path:
    """A NIfTI file whose header declares ``shape`` (int16) but which holds 16 bytes of voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 16
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_nifti_declaring_a_huge_volume_is_refused_from_its_header(suffix: str, tmp_path: Path) -> None:
    image = _nifti_claiming(tmp_path / f"im{suffix}", (30000, 30000, 3000))
    mask = _nifti_claiming(tmp_path / f"mk{suffix}", (30000, 30000, 3000))
    for read in (lambda: read_volume(image), lambda: load_nifti([image], [mask])):
        with _peak(MIB), pytest.raises(ValueError) as err:
            read()
        _single_line(err, str(image), "(30000, 30000, 3000)", str(DEFAULT_MAX_VOXELS), "RNDPO_MAX_VOXELS")


def test_a_gzipped_nifti_that_cannot_hold_its_declared_volume_allocates_nothing(tmp_path: Path) -> None:
    image = _nifti_claiming(tmp_path / "im.nii.gz", (1000, 1000, 100))  # 200 MB declared, within the cap
    with _peak(MIB), pytest.raises(ValueError) as err:
        read_volume(image)
    _single_line(err, str(image), "(1000, 1000, 100)", "truncated or corrupt")


def test_a_dataset_folder_with_a_huge_header_is_refused_before_any_voxel_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "Dataset001_X"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    description = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "organ": 1},
        "file_ending": ".nii.gz",
        "numTraining": 1,
    }
    (folder / "dataset.json").write_text(json.dumps(description))
    image = _nifti_claiming(folder / "imagesTr" / "case_0000.nii.gz", (30000, 30000, 3000))
    _nifti_claiming(folder / "labelsTr" / "case.nii.gz", (30000, 30000, 3000))
    with _peak(MIB), pytest.raises(ValueError) as err:
        load_dataset_folder(folder)
    _single_line(err, str(image), "(30000, 30000, 3000)", "RNDPO_MAX_VOXELS")
