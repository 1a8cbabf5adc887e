"""Caps on the sizes inputs declare, checked from their headers before anything is allocated, and the one
rule that turns integer images into floats.

Caps (each an environment variable, read at every check, so a CLI flag or a test can raise it):

- ``RNDPO_MAX_VOXELS`` (default 2**31): elements of one array read from an ``.npz`` or ``.npy`` (the
  header's shape, read before the data) and voxels of one NIfTI volume, channels included (the header's
  shape, read without the voxels). 2**31 holds a whole-body CT at native resolution (512 x 512 x 2000
  is 2**29) four times over; it also bounds a saved model's ``patch_size`` and ``inference_size``.
- ``RNDPO_MAX_PIXELS`` (default 16384 * 16384 = 2**28): pixels of one 2D image: an image file (PNG,
  JPEG, TIFF, BMP: the header's size times its frames, read by Pillow without decoding), one image of a
  2D ``.npz``, and a saved model's ``image_size ** 2``. It replaces Pillow's own decompression-bomb
  limit while rndpo reads a file.
- ``RNDPO_MAX_CHANNELS`` (default 4096): every integer of a saved model's architecture (channels per
  layer, in/out channels) and its ``in_channels``; lists in it hold at most 64 entries.

A size beyond a cap is a one-line ValueError naming the file, the declared shape, the cap and the
variable that raises it. Besides the caps, a file must hold the bytes its header declares (an ``.npz``
member at most 1032 times its compressed size, the most deflate gives), so memory stays bounded by the
file's own size too. Data are decoded in their own dtype and converted to float32 without float64 copies:
peak memory is the decoded array plus its float32 result.

Integer images (:func:`unit_divisor`): uint8 is divided by 255 and uint16 by 65535; any other integer
dtype by 255 when all its values lie in 0..255, by 65535 when they lie in 0..65535, and refused
otherwise. bool is 0 or 1; float images must be finite and in [0, 1].
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from rndpo.storage import first_line

__all__ = [
    "HeaderCheck",
    "SizeLimitError",
    "binary_mask",
    "check_image_file",
    "check_nifti",
    "check_npy_file",
    "check_size",
    "max_channels",
    "max_pixels",
    "max_voxels",
    "pillow_limit",
    "read_npz",
    "row_chunks",
    "to_unit_float",
    "unit_divisor",
]

DEFAULT_MAX_VOXELS = 2**31
DEFAULT_MAX_PIXELS = 16384 * 16384
DEFAULT_MAX_CHANNELS = 4096
_DEFLATE_RATIO = 1032  # the largest expansion of deflate (zip, gzip): 258 bytes per 2 bits, plus slack


def _cap(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{variable} must be a positive integer (a count), got {os.environ[variable]!r}")
    return int(raw)


def max_voxels() -> int:
    """Elements of one array / voxels of one volume (``RNDPO_MAX_VOXELS``, default 2**31)."""
    return _cap("RNDPO_MAX_VOXELS", DEFAULT_MAX_VOXELS)


def max_pixels() -> int:
    """Pixels of one 2D image (``RNDPO_MAX_PIXELS``, default 16384 * 16384)."""
    return _cap("RNDPO_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def max_channels() -> int:
    """The largest integer a saved model's architecture may declare (``RNDPO_MAX_CHANNELS``, default 4096)."""
    return _cap("RNDPO_MAX_CHANNELS", DEFAULT_MAX_CHANNELS)


class SizeLimitError(ValueError):
    """A declared size beyond a cap (a ValueError: the CLI reports it in one line, exit 2)."""


_CAPS: dict[str, tuple[Callable[[], int], str, str]] = {
    "voxels": (max_voxels, "RNDPO_MAX_VOXELS", "elements"),
    "pixels": (max_pixels, "RNDPO_MAX_PIXELS", "pixels"),
}


def check_size(shape: tuple[int, ...], what: str, kind: str = "voxels") -> int:
    """The element count of ``shape``; a ValueError naming ``what``, the shape and the cap if it exceeds the
    cap of ``kind`` ("voxels" or "pixels")."""
    get, variable, unit = _CAPS[kind]
    count = prod(int(d) for d in shape)
    cap = get()
    if count > cap:
        raise SizeLimitError(
            f"{what}: declares shape {tuple(int(d) for d in shape)}, {count} {unit}, more than the cap of"
            f" {cap}; set the environment variable {variable} higher to read it"
        )
    return count


def row_chunks(shape: tuple[int, ...], elements: int = 2**22) -> Iterator[slice]:
    """Slices of the first axis of an array of ``shape``, each about ``elements`` elements (at least one
    row): the blocks in which large arrays are checked and converted."""
    if not shape:
        yield slice(None)
        return
    step = max(1, elements // max(1, prod(shape[1:])))
    for start in range(0, shape[0], step):
        yield slice(start, start + step)


# ---
# .npy and .npz headers


def _npy_header(fp: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy stream at ``fp``, which is left at the data."""
    fmt = np.lib.format
    version = fmt.read_magic(fp)
    if version == (1, 0):
        return fmt.read_array_header_1_0(fp)
    if version == (2, 0):
        return fmt.read_array_header_2_0(fp)
    read = getattr(fmt, "_read_array_header", None)
    if version == (3, 0) and read is not None:
        found: tuple[tuple[int, ...], bool, np.dtype] = read(fp, version)
        return found
    raise ValueError(f"unsupported .npy format version {version}")


def _check_declared(
    shape: tuple[int, ...], dtype: np.dtype, stored: int, what: str, kind: str = "voxels"
) -> int:
    """Cap the element count, then check that ``stored`` bytes can hold the data; returns its bytes."""
    count = check_size(shape, what, kind)
    if dtype.hasobject:
        raise ValueError(f"{what}: holds Python objects (dtype {dtype}), which rndpo does not read")
    nbytes = count * dtype.itemsize
    if nbytes > stored:
        raise ValueError(
            f"{what}: declares shape {shape} of {dtype} ({nbytes} bytes) but holds at most {stored} bytes;"
            " the file is truncated or corrupt"
        )
    return nbytes


def check_npy_file(path: str | Path, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Read only the header of the ``.npy`` at ``path`` and check it (cap, bytes present); returns
    (shape, dtype). Call it before ``np.load(path)``."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            shape, _, dtype = _npy_header(fh)
            offset = fh.tell()
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{what}: {path} is not a readable .npy file ({first_line(err)})") from None
    _check_declared(shape, dtype, path.stat().st_size - offset, f"{what}: {path}")
    return shape, dtype


def _member_bytes(info: zipfile.ZipInfo, archive_size: int) -> int:
    """The most bytes a zip member can expand to, from its sizes and the archive's."""
    if info.compress_size > archive_size:  # a lie: the member cannot hold what it declares
        return 0
    if info.compress_type == zipfile.ZIP_STORED:
        return min(info.file_size, info.compress_size)
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return min(info.file_size, info.compress_size * _DEFLATE_RATIO + 1024)
    return info.file_size


#: ``check(name, shape, dtype)``: called for each array of an .npz before any data is read
HeaderCheck = Callable[[str, tuple[int, ...], np.dtype], None]


def read_npz(
    path: str | Path,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    check: HeaderCheck | None = None,
) -> dict[str, np.ndarray]:
    """The ``required`` (and present ``optional``) arrays of an ``.npz``, each in its stored dtype.

    Every header is read and checked first (the cap, the bytes its member can hold, then ``check``), so
    nothing is allocated for a file that declares more than it holds. A missing array, a broken archive
    or a refused header is a ValueError naming the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            if fh.read(6) == b"\x93NUMPY":
                raise ValueError(f"path: {path} holds one array, not an .npz archive of named arrays")
        with zipfile.ZipFile(path) as archive:
            members = {
                info.filename[: -len(".npy")]: info
                for info in archive.infolist()
                if info.filename.endswith(".npy")
            }
            missing = [k for k in required if k not in members]
            if missing:
                raise ValueError(f"path: {path} lacks the arrays {missing}; it has {sorted(members)}")
            wanted = [k for k in (*required, *optional) if k in members]
            size = path.stat().st_size
            for key in wanted:
                with archive.open(members[key]) as fp:
                    shape, _, dtype = _npy_header(fp)
                    stored = max(0, _member_bytes(members[key], size) - fp.tell())
                check_size(shape, f"path: {path}: array {key!r}")
                if check is not None:
                    check(key, shape, dtype)
                _check_declared(shape, dtype, stored, f"path: {path}: array {key!r}")
            out = {}
            for key in wanted:
                with archive.open(members[key]) as fp:
                    out[key] = np.lib.format.read_array(fp, allow_pickle=False)
            return out
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"path: {path} is not a readable .npz archive ({first_line(err)})") from None
    except ValueError as err:
        if str(err).startswith("path: "):
            raise
        raise ValueError(f"path: {path} is not a readable .npz archive ({first_line(err)})") from None


# ---
# image files and NIfTI headers


@contextmanager
def pillow_limit() -> Iterator[None]:
    """Pillow's own decompression-bomb check off while rndpo reads image files: rndpo checks each file's
    header against its pixel cap (:func:`check_image_file`) before decoding it, so a refusal names the
    cap and the variable that raises it. Not thread-safe (Pillow's limit is a global)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def check_image_file(image: Any, path: Path, what: str) -> None:
    """Check an opened, not yet decoded Pillow image (its header's size and frame count) against the
    pixel cap."""
    width, height = image.size
    frames = int(getattr(image, "n_frames", 1) or 1)
    shape = (frames, height, width) if frames > 1 else (height, width)
    check_size(shape, f"{what} {path}", "pixels")


def check_nifti(image: Any, path: Path, what: str) -> None:
    """Check a nibabel image whose voxels are not read yet: its header's shape against the voxel cap and,
    for a ``.nii`` / ``.nii.gz`` file, that it holds the bytes the shape declares (``.gz``: at most 1032
    times its size)."""
    shape = tuple(int(d) for d in image.shape)
    name = path.name
    if not name.endswith((".nii", ".nii.gz")):  # e.g. a .hdr whose voxels are in another file: cap only
        check_size(shape, f"{what} {path}")
        return
    size = path.stat().st_size
    stored = size * _DEFLATE_RATIO + 1024 if name.endswith(".gz") else size - image.header.get_data_offset()
    _check_declared(shape, np.dtype(image.header.get_data_dtype()), stored, f"{what} {path}")


# ---
# the one rule for integer images


def unit_divisor(image: np.ndarray, what: str) -> float:
    """The number ``image`` is divided by to lie in [0, 1] (see the module docstring); 1.0 for bool and
    float images, after checking floats are finite and in [0, 1]. Reads the values once, copies nothing."""
    dtype = image.dtype
    if dtype == np.bool_:
        return 1.0
    if dtype.kind == "u" and dtype.itemsize <= 2:
        return 255.0 if dtype.itemsize == 1 else 65535.0
    if dtype.kind in "iu":
        if image.size == 0:
            return 255.0
        lo, hi = int(image.min()), int(image.max())
        if lo >= 0 and hi <= 255:
            return 255.0
        if lo >= 0 and hi <= 65535:
            return 65535.0
        raise ValueError(
            f"{what}: {dtype.name} values {lo}..{hi} are outside 0..65535; convert them to float"
            " (in [0, 1]) yourself"
        )
    if dtype.kind == "f":
        if image.size:
            lo_f, hi_f = float(np.min(image)), float(np.max(image))
            if not (np.isfinite(lo_f) and np.isfinite(hi_f)) or lo_f < 0.0 or hi_f > 1.0:
                raise ValueError(
                    f"{what}: float image values must be finite and in [0, 1], got [{lo_f}, {hi_f}]"
                )
        return 1.0
    raise TypeError(f"{what}: unsupported image dtype {dtype}")


def to_unit_float(image: np.ndarray, what: str, divisor: float | None = None) -> np.ndarray:
    """``image`` (any shape, any layout) as a new C-contiguous float32 array in [0, 1]: divided by
    ``divisor`` (default :func:`unit_divisor`) in float32, which equals the float64 quotient rounded.
    No temporary copy: numpy converts in small buffers."""
    if divisor is None:
        divisor = unit_divisor(image, what)
    out = np.empty(image.shape, dtype=np.float32)
    if divisor == 1.0:
        np.copyto(out, image, casting="unsafe")
    else:
        np.divide(image, np.float32(divisor), out=out, dtype=np.float32, casting="unsafe")
    return out


def binary_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """A stored mask uint8 (H, W) in {0, 1}; accepts {0, 1}, {0, 255}, bool, or float {0.0, 1.0}. Checked
    in row blocks: no copy of the mask besides the result (a uint8 mask in {0, 1} is returned as it is)."""
    from rndpo.data.dataset import _some_values

    zero_one = True
    if mask.dtype != np.bool_:
        zero_one, zero_255 = True, mask.dtype.kind in "iu"
        for rows in row_chunks(mask.shape):
            block = mask[rows]
            zero_one = zero_one and bool(((block == 0) | (block == 1)).all())
            zero_255 = zero_255 and bool(((block == 0) | (block == 255)).all())
            if not (zero_one or zero_255):
                raise ValueError(
                    f"{what}: mask must be binary with values {{0, 1}} or {{0, 255}}, got values"
                    f" {_some_values(mask)} (a label map? binarise it first)"
                )
    if zero_one and mask.dtype == np.uint8:
        return mask
    out = np.empty(mask.shape, dtype=np.uint8)
    np.not_equal(mask, 0, out=out.view(np.bool_))
    return out
