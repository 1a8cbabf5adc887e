"""One NIfTI volume in and out (nibabel): its voxels in array-axis order with the affine, header and
spacing, and label maps or class probabilities written back on the grid of an input volume.

Axis order: a NIfTI file's voxel axes are (i, j, k[, c]); rndpo stores them reversed as (z, y, x) =
(k, j, i), and a 4-D file's channels first, (c, z, y, x) (the SimpleITK convention, the same as the
shared ``msd_hippocampus`` data). Reading is ``np.asarray(img.dataobj).T``; writing is the exact inverse,
so a label map read and written again has the same voxels, shape, affine and qform/sform codes.
Spacing is the header's voxel size (pixdim, as nibabel reads it) reversed, in mm, (z, y, x).
Volumes are never reoriented.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rndpo.data.input_limits import check_nifti
from rndpo.storage import atomic_write, first_line

__all__ = [
    "NIFTI_ENDINGS",
    "Volume",
    "VolumeInfo",
    "case_name",
    "read_volume",
    "read_volume_info",
    "write_label_map",
    "write_probabilities",
]

#: File name endings read as NIfTI (case-sensitive, as nnU-Net's ``file_ending``).
NIFTI_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii")

_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")
_GZIP_LEVEL = 1  # nibabel's own default for .gz files: fast, and label maps compress well anyway


def _nibabel() -> ModuleType:
    try:
        import nibabel
    except ImportError:  # pragma: no cover - nibabel is installed in development
        raise ImportError(
            "reading and writing NIfTI files needs nibabel: pip install 'rndpo[nifti]'"
        ) from None
    return nibabel


def nifti_stem(path: str | Path) -> str:
    """The file name without ``.nii.gz`` / ``.nii`` (other names: without their last suffix)."""
    name = Path(path).name
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


def case_name(path: str | Path) -> str:
    """The nnU-Net case of a file: its name without ``.nii.gz`` / ``.nii`` and without a trailing
    4-digit channel suffix (``la_003_0000.nii.gz`` -> ``la_003``; ``hippocampus_367.nii.gz`` is kept)."""
    return _CHANNEL_SUFFIX.sub("", nifti_stem(path))


@dataclass(frozen=True, eq=False)
class VolumeInfo:
    """What a NIfTI file's header says, without its voxels.

    shape: the array shape in rndpo's order, (z, y, x) or (c, z, y, x) for a 4-D file; affine: float64
    (4, 4) voxel (i, j, k) -> world mm; header: the nibabel header; spacing: voxel size in mm (z, y, x);
    path: the file.
    """

    shape: tuple[int, ...]
    affine: np.ndarray
    header: Any
    spacing: tuple[float, float, float]
    path: Path

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(z, y, x) of the volume."""
        z, y, x = self.shape[-3:]
        return (z, y, x)

    @property
    def channels(self) -> int:
        """1 for a 3-D file, c for a 4-D file."""
        return self.shape[0] if len(self.shape) == 4 else 1


@dataclass(frozen=True, eq=False)
class Volume(VolumeInfo):
    """A NIfTI volume: :class:`VolumeInfo` plus ``data``, the stored values (scaling applied, dtype as
    nibabel gives it) as an array (z, y, x), or (c, z, y, x) for a 4-D file."""

    data: np.ndarray


def _load(path: Path) -> tuple[Any, tuple[int, ...]]:
    """The nibabel image and its shape (i, j, k[, c]); errors name the file."""
    nib = _nibabel()
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file not found: {path}")
    if not path.name.endswith(NIFTI_ENDINGS):
        raise ValueError(
            f"cannot read NIfTI file {path}: expected a name ending in {' or '.join(NIFTI_ENDINGS)}"
        )
    try:
        img = nib.load(path)
    except Exception as err:
        raise ValueError(f"cannot read NIfTI file {path}: {first_line(err)}") from None
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise ValueError(f"cannot read NIfTI file {path}: nibabel reads it as {type(img).__name__}")
    check_nifti(img, path, "NIfTI file")  # the header's shape within the cap, its bytes present
    shape = tuple(int(d) for d in img.shape)
    if len(shape) == 5 and shape[3] == 1:  # (i, j, k, t=1, c): vector data in the 5th dimension
        shape = (*shape[:3], shape[4])
    if len(shape) not in (3, 4):
        raise ValueError(
            f"cannot read NIfTI file {path}: expected a 3-D volume or a 4-D volume with channels last,"
            f" got shape {tuple(img.shape)}"
        )
    return img, shape


def _info(img: Any, shape: tuple[int, ...], path: Path) -> VolumeInfo:
    affine = np.asarray(img.affine, dtype=np.float64)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms) or not np.isfinite(affine).all():
        raise ValueError(
            f"cannot read NIfTI file {path}: voxel sizes {zooms} must be positive and the affine finite"
        )
    return VolumeInfo(
        shape=tuple(reversed(shape)) if len(shape) == 3 else (shape[3], shape[2], shape[1], shape[0]),
        affine=affine,
        header=img.header,
        spacing=(zooms[2], zooms[1], zooms[0]),
        path=path,
    )


def read_volume_info(path: str | Path) -> VolumeInfo:
    """Read only the header of a NIfTI file (shape, affine, spacing), not its voxels."""
    path = Path(path)
    img, shape = _load(path)
    return _info(img, shape, path)


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI file: voxels as (z, y, x), or (c, z, y, x) for a 4-D file, with affine, header and
    spacing. An unreadable, truncated or corrupt file is a ValueError naming it."""
    path = Path(path)
    img, shape = _load(path)
    info = _info(img, shape, path)
    try:
        raw = np.asarray(img.dataobj)
    except Exception as err:
        raise ValueError(f"cannot read NIfTI file {path}: {first_line(err)}") from None
    data = raw.reshape(shape).T  # (i, j, k[, c]) -> (z, y, x) or (c, z, y, x); F-order file: no copy
    return Volume(
        shape=info.shape,
        affine=info.affine,
        header=info.header,
        spacing=info.spacing,
        path=path,
        data=np.ascontiguousarray(data),
    )


def _check_out_path(path: Path) -> None:
    if not path.name.endswith(NIFTI_ENDINGS) or path.name in NIFTI_ENDINGS:
        raise ValueError(f"path must be a file name ending in .nii.gz or .nii, got {path}")


def _write_image(path: Path, data_ijk: np.ndarray, reference: VolumeInfo) -> Path:
    """Write ``data_ijk`` (i, j, k[, c]) with the reference's affine and header (qform/sform and their
    codes, units, description); scaling, display range and intent are reset for the new data."""
    nib = _nibabel()
    cls = nib.Nifti2Image if isinstance(reference.header, nib.Nifti2Header) else nib.Nifti1Image
    header = reference.header.copy()
    img = cls(data_ijk, reference.affine, header=header, dtype=data_ijk.dtype)
    out = img.header
    out.set_slope_inter(None, None)
    out["cal_min"] = 0.0
    out["cal_max"] = 0.0
    out.set_intent("none")
    if data_ijk.ndim == 4:
        out.set_zooms((*(float(z) for z in reference.header.get_zooms()[:3]), 1.0))
    # keep the reference's qform and sform exactly (nibabel would rebuild them from the affine)
    ref = reference.header
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d"):
        out[key] = ref[key]
    for key in ("qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):
        out[key] = ref[key]
    out["pixdim"][0] = ref["pixdim"][0]  # qfac

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            if path.name.endswith(".gz"):
                # no file name and no time stamp in the gzip header: equal data, equal bytes
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=fh, compresslevel=_GZIP_LEVEL, mtime=0
                ) as gz:
                    img.to_stream(gz)
            else:
                img.to_stream(fh)

    return atomic_write(path, write)


def _check_reference(reference: object) -> VolumeInfo:
    if not isinstance(reference, VolumeInfo):
        raise TypeError(
            f"reference must be a Volume or VolumeInfo (from read_volume / read_volume_info),"
            f" got {type(reference).__name__}"
        )
    return reference


def write_label_map(
    path: str | Path,
    labels: np.ndarray,
    label_values: tuple[int, ...] | list[int],
    reference: VolumeInfo,
) -> Path:
    """Write a label map as NIfTI on the grid of ``reference``, in the dataset's own label values.

    labels: integer (z, y, x) with values 0..C-1 and the reference's spatial shape; label_values: the
    file value of each class (C,), so class c is written as ``label_values[c]``; the file's dtype is
    uint8, or uint16 when a value exceeds 255. The write is atomic (temporary file, then rename).
    """
    path = Path(path)
    _check_out_path(path)
    reference = _check_reference(reference)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui" and labels.dtype != np.bool_:
        raise TypeError(f"labels must be an integer array (z, y, x), got dtype {labels.dtype}")
    if labels.shape != reference.spatial_shape:
        raise ValueError(
            f"labels must have the reference's shape (z, y, x) = {reference.spatial_shape}"
            f" ({reference.path}), got {labels.shape}"
        )
    values = np.asarray([int(v) for v in label_values], dtype=np.int64)
    if values.ndim != 1 or values.size < 1 or values.min() < 0 or values.max() > np.iinfo(np.uint16).max:
        raise ValueError(
            f"label_values must be integers from 0 to 65535, one per class, got {list(label_values)}"
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= values.size):
        raise ValueError(
            f"labels must hold classes 0 to {values.size - 1} (one per label value), got values"
            f" {int(labels.min())}..{int(labels.max())}"
        )
    dtype = np.uint8 if values.max() <= np.iinfo(np.uint8).max else np.uint16
    file_values = values.astype(dtype)[labels.astype(np.intp, copy=False)]
    return _write_image(path, np.asfortranarray(file_values.T), reference)


def write_probabilities(path: str | Path, probs: np.ndarray, reference: VolumeInfo) -> Path:
    """Write class probabilities float32 (C, z, y, x) as a 4-D NIfTI (i, j, k, C) on the grid of
    ``reference`` (class c is volume c of the last axis). Atomic like the label map."""
    path = Path(path)
    _check_out_path(path)
    reference = _check_reference(reference)
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[1:] != reference.spatial_shape:
        raise ValueError(
            f"probs must have shape (C, z, y, x) with (z, y, x) = {reference.spatial_shape}"
            f" ({reference.path}), got {probs.shape}"
        )
    if probs.dtype.kind != "f":
        raise TypeError(f"probs must be a float array (C, z, y, x), got dtype {probs.dtype}")
    data = probs.astype(np.float32, copy=False)
    return _write_image(path, np.asfortranarray(data.T), reference)
