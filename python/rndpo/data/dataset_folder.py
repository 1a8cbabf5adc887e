"""Dataset folders of NIfTI volumes: the nnU-Net v2 raw layout and the Medical Segmentation Decathlon
(MSD) layout, told apart by their ``dataset.json``, and folders of unlabeled volumes.

- nnU-Net v2: ``dataset.json`` with ``labels`` (name -> value), ``channel_names`` and ``file_ending``;
  ``imagesTr/<case>_<4-digit channel><file_ending>`` and ``labelsTr/<case><file_ending>`` (or an explicit
  ``dataset`` table of {case: {images, label}}).
- MSD: ``dataset.json`` with ``labels`` (value -> name), ``modality`` and a ``training`` list of
  {image, label} paths relative to the folder; a 4-D image holds the channels.

Label values may be non-contiguous (0, 1, 2, 4): classes are 0..C-1 inside (background, value 0, first)
and ``label_values`` maps them back. Region-based labels and an ignore label are refused. Volumes keep
their own voxel order (no reorientation) in rndpo's (z, y, x) layout (see :mod:`rndpo.data.nifti_io`),
and each image channel is normalised on its own by :func:`normalize_volume` (0.5-99.5 percentiles to
[0, 1], see :func:`rndpo.data.scale_volume`). Everything that can be checked from dataset.json and the
headers is checked before any voxel is read, each header's shape against the voxel cap and the bytes the
file holds included (:func:`rndpo.data.input_limits.check_nifti`, ``RNDPO_MAX_VOXELS``); every error
names the file or case.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rndpo.data.dataset import MAX_CLASSES
from rndpo.data.label_scheme import map_label_values
from rndpo.data.nifti_io import (
    NIFTI_ENDINGS,
    VolumeInfo,
    case_name,
    nifti_stem,
    read_volume,
    read_volume_info,
)
from rndpo.data.volume_set import VolumeSet, normalize_volume

__all__ = [
    "CaseFiles",
    "DatasetDescription",
    "check_case_headers",
    "find_cases",
    "load_dataset_folder",
    "read_case_image",
    "read_dataset_json",
    "read_unlabeled_folder",
]

_MAX_LABEL_VALUE = 65535  # label maps are written back as uint8 or uint16
_AFFINE_RTOL = 1e-4
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: ``images`` one path per channel (nnU-Net), or one 4-D file holding all
    channels (MSD); ``label`` the label map, or None for an unlabeled case."""

    name: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass(frozen=True)
class DatasetDescription:
    """What a dataset folder's ``dataset.json`` says.

    layout: "nnunet" or "msd"; class_names / label_values: one per class, sorted by value, background
    (value 0) first; channel_names: one per image channel; file_ending: ".nii.gz" or ".nii"; cases:
    the training cases in dataset order (nnU-Net: sorted by case name).
    """

    folder: Path
    layout: Literal["nnunet", "msd"]
    name: str
    class_names: tuple[str, ...]
    label_values: tuple[int, ...]
    channel_names: tuple[str, ...]
    file_ending: str
    cases: tuple[CaseFiles, ...]

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---
# dataset.json


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"dataset.json not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} does not parse as JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def _int_value(value: object, where: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_LABEL_VALUE:
        raise ValueError(
            f"{where}: label values must be integers from 0 to {_MAX_LABEL_VALUE}, got {value!r}"
        )
    return value


def _classes(pairs: list[tuple[str, int]], path: Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(name, value) pairs -> names and values sorted by value, checked: background 0, distinct."""
    values = [v for _, v in pairs]
    names = [n for n, _ in pairs]
    if len(set(values)) != len(values):
        dup = next(v for v in values if values.count(v) > 1)
        raise ValueError(f"{path}: labels give the value {dup} to more than one name")
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{path}: labels must have distinct non-empty names, got {names}")
    if 0 not in values:
        raise ValueError(
            f"{path}: labels must include the background with value 0, got values {sorted(values)}"
        )
    if not 2 <= len(values) <= MAX_CLASSES:
        raise ValueError(
            f"{path}: labels must name 2 to {MAX_CLASSES} classes (background included), got {len(values)}"
        )
    order = sorted(range(len(pairs)), key=lambda i: values[i])
    return tuple(names[i] for i in order), tuple(values[i] for i in order)


def _nnunet_classes(labels: object, path: Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{path}: 'labels' must be an object of name -> value, got {labels!r}")
    pairs = []
    for name, value in labels.items():
        if name == "ignore":
            raise ValueError(
                f"{path}: an ignore label ('ignore': {value!r}) is not supported yet; remove it and the"
                " ignored voxels' value from the label files"
            )
        if isinstance(value, (list, tuple)):
            raise ValueError(
                f"{path}: region-based labels (label {name!r} = {value!r}, overlapping regions) are not"
                " supported yet; give each label a single value"
            )
        pairs.append((str(name), _int_value(value, f"{path}: label {name!r}")))
    return _classes(pairs, path)


def _msd_classes(labels: object, path: Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{path}: 'labels' must be an object of value -> name, got {labels!r}")
    pairs = [(str(name), _int_value(value, f"{path}: label {name!r}")) for value, name in labels.items()]
    return _classes(pairs, path)


def _channel_names(table: object, key: str, path: Path) -> tuple[str, ...]:
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: {key!r} must be an object of channel index -> name, got {table!r}")
    try:
        indices = sorted(int(k) for k in table)
    except ValueError:
        raise ValueError(
            f"{path}: {key!r} keys must be channel indices 0, 1, ..., got {list(table)}"
        ) from None
    if indices != list(range(len(indices))):
        raise ValueError(
            f"{path}: {key!r} keys must be the channel indices 0 to {len(indices) - 1}, got {list(table)}"
        )
    by_index = {int(k): str(v) for k, v in table.items()}
    return tuple(by_index[i] for i in indices)


def _resolve(folder: Path, entry: object, where: str) -> Path:
    if not isinstance(entry, str) or not entry:
        raise ValueError(f"{where}: expected a file path, got {entry!r}")
    p = Path(entry)
    return p if p.is_absolute() else folder / p


def _nnunet_cases(
    folder: Path, raw: dict[str, Any], ending: str, channels: int, path: Path
) -> list[CaseFiles]:
    table = raw.get("dataset")
    if table is not None:  # nnU-Net v2's explicit {case: {"images": [...], "label": ...}}
        if not isinstance(table, dict):
            raise ValueError(f"{path}: 'dataset' must be an object of case -> {{images, label}}")
        cases = []
        for name, entry in table.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("images"), list):
                raise ValueError(f"{path}: dataset case {name!r} must be {{'images': [...], 'label': ...}}")
            images = tuple(_resolve(folder, p, f"{path}: case {name!r}") for p in entry["images"])
            cases.append(
                CaseFiles(str(name), images, _resolve(folder, entry.get("label"), f"{path}: case {name!r}"))
            )
        return cases
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"nnU-Net dataset folder {folder}: {d.name}/ not found")
    grouped: dict[str, dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(ending):
            continue
        m = _CHANNEL_FILE.match(p.name[: -len(ending)])
        if m is None:
            raise ValueError(
                f"image file {p}: expected nnU-Net naming <case>_<4-digit channel>{ending},"
                f" e.g. case_0000{ending}"
            )
        grouped.setdefault(m["case"], {})[int(m["channel"])] = p
    if not grouped:
        raise ValueError(f"nnU-Net dataset folder {folder}: imagesTr/ holds no files ending in {ending}")
    cases = []
    for name in sorted(grouped):
        files = grouped[name]
        if sorted(files) != list(range(channels)):
            raise ValueError(
                f"case {name}: has channel files {[f'_{c:04d}' for c in sorted(files)]} in {images_dir},"
                f" expected _0000 to _{channels - 1:04d} ({channels} channels in dataset.json)"
            )
        cases.append(
            CaseFiles(name, tuple(files[c] for c in range(channels)), labels_dir / f"{name}{ending}")
        )
    return cases


def _msd_cases(folder: Path, raw: dict[str, Any], path: Path) -> list[CaseFiles]:
    training = raw.get("training")
    if not isinstance(training, list) or not training:
        raise ValueError(f"{path}: 'training' must be a non-empty list of {{image, label}} paths")
    cases = []
    for i, entry in enumerate(training):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: training[{i}] must be {{'image': ..., 'label': ...}}, got {entry!r}")
        image = _resolve(folder, entry.get("image"), f"{path}: training[{i}].image")
        label = _resolve(folder, entry.get("label"), f"{path}: training[{i}].label")
        cases.append(CaseFiles(case_name(image), (image,), label))
    return cases


def read_dataset_json(folder: str | Path) -> DatasetDescription:
    """Read and check a dataset folder's ``dataset.json`` (nnU-Net v2 or MSD, told apart by its keys)
    and list its training cases; every listed file must exist. Reads no voxels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    path = folder / "dataset.json"
    raw = _read_json(path)
    if "channel_names" in raw and "file_ending" in raw:
        layout: Literal["nnunet", "msd"] = "nnunet"
        ending = raw["file_ending"]
        if ending not in NIFTI_ENDINGS:
            raise ValueError(
                f"{path}: file_ending must be one of {NIFTI_ENDINGS} (rndpo reads NIfTI), got {ending!r}"
            )
        if "regions_class_order" in raw:
            raise ValueError(f"{path}: region-based labels (regions_class_order) are not supported yet")
        channel_names = _channel_names(raw["channel_names"], "channel_names", path)
        class_names, label_values = _nnunet_classes(raw.get("labels"), path)
        cases = _nnunet_cases(folder, raw, ending, len(channel_names), path)
    elif "modality" in raw and "training" in raw:
        layout, ending = "msd", ".nii.gz"
        channel_names = _channel_names(raw["modality"], "modality", path)
        class_names, label_values = _msd_classes(raw.get("labels"), path)
        cases = _msd_cases(folder, raw, path)
    else:
        raise ValueError(
            f"{path}: not an nnU-Net v2 (channel_names, file_ending, labels) or MSD (modality, training,"
            f" labels) dataset.json; its keys are {sorted(raw)}"
        )
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"{path}: the case {dup} is listed more than once")
    for case in cases:
        for p in (*case.images, case.label):
            if p is not None and not p.is_file():
                raise FileNotFoundError(f"case {case.name}: file not found: {p}")
    return DatasetDescription(
        folder=folder,
        layout=layout,
        name=str(raw.get("name") or folder.name),
        class_names=class_names,
        label_values=label_values,
        channel_names=channel_names,
        file_ending=ending,
        cases=tuple(cases),
    )


# ---
# volumes


def _same_grid(a: VolumeInfo, b: VolumeInfo) -> bool:
    scale = max(1.0, float(np.abs(a.affine).max()))
    return a.spatial_shape == b.spatial_shape and bool(
        np.all(np.abs(a.affine - b.affine) <= _AFFINE_RTOL * scale)
    )


def _check_case(name: str, images: Sequence[VolumeInfo], label: VolumeInfo | None, channels: int) -> None:
    """Header checks of one case: channel count, and one grid (shape, affine) for all its files."""
    count = sum(info.channels for info in images)
    if count != channels:
        raise ValueError(f"case {name}: its images hold {count} channels, expected {channels}")
    first = images[0]
    for other in (*images[1:], *([label] if label is not None else [])):
        if not _same_grid(first, other):
            raise ValueError(
                f"case {name}: {other.path.name} has shape {other.spatial_shape} and affine"
                f" {np.round(other.affine, 4).tolist()}, but {first.path.name} has shape"
                f" {first.spatial_shape} and affine {np.round(first.affine, 4).tolist()}"
            )


def _read_images(paths: Sequence[Path]) -> np.ndarray:
    return np.concatenate([normalize_volume(read_volume(p).data, p) for p in paths])


def load_dataset_folder(folder: str | Path, *, channels: int | None = None) -> VolumeSet:
    """Read every training case of a dataset folder (nnU-Net v2 or MSD, see :func:`read_dataset_json`).

    ``channels``: the channel count the caller needs (e.g. a model's); None takes dataset.json's.
    Before any voxel is read, all headers are checked (channel count per case; image channels and label
    of a case on one grid: equal shape, affines equal to 1e-4 relative). Label maps are mapped to classes
    0..C-1 (:func:`map_label_values`) and images normalised per channel (:func:`normalize_volume`).
    """
    desc = read_dataset_json(folder)
    expected = desc.num_channels if channels is None else channels
    if expected != desc.num_channels:
        raise ValueError(
            f"channels: expected {expected} image channels, {desc.folder / 'dataset.json'}"
            f" names {desc.num_channels}"
        )
    headers = []
    for case in desc.cases:
        infos = [read_volume_info(p) for p in case.images]
        label = read_volume_info(case.label) if case.label is not None else None
        if label is not None and label.channels != 1:
            raise ValueError(
                f"case {case.name}: label file {label.path} must be one 3-D label map, got shape"
                f" {label.shape} (c, z, y, x)"
            )
        _check_case(case.name, infos, label, expected)
        headers.append(infos[0])
    masks: list[np.ndarray | None] = []
    for case in desc.cases:  # labels first: a wrong value stops the load before images are scaled
        if case.label is None:
            masks.append(None)
            continue
        seg = read_volume(case.label).data
        masks.append(map_label_values(seg.reshape(seg.shape[-3:]), desc.label_values, case.label))
    images = [_read_images(case.images) for case in desc.cases]
    return VolumeSet(
        case_names=tuple(c.name for c in desc.cases),
        images=tuple(images),
        masks=tuple(masks),
        references=tuple(headers),
        image_paths=tuple(c.images for c in desc.cases),
        label_paths=tuple(c.label for c in desc.cases),
        class_names=desc.class_names,
        label_values=desc.label_values,
    )


def _unlabeled_cases(folder: Path, channels: int) -> list[CaseFiles]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(NIFTI_ENDINGS)
    )
    if not files:
        raise ValueError(
            f"folder {folder} holds no NIfTI files (names ending in {' or '.join(NIFTI_ENDINGS)})"
        )
    stems = [nifti_stem(p) for p in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(f"folder {folder}: two files for {dup} ({dup}.nii and {dup}.nii.gz)")
    matches = [_CHANNEL_FILE.match(s) for s in stems]
    if all(m is not None for m in matches):
        grouped: dict[str, dict[int, Path]] = {}
        for m, p in zip(matches, files, strict=True):
            assert m is not None
            grouped.setdefault(m["case"], {})[int(m["channel"])] = p
        bad = [c for c, chans in grouped.items() if sorted(chans) != list(range(channels))]
        if not bad:  # nnU-Net naming: <case>_<channel>
            return [
                CaseFiles(c, tuple(grouped[c][i] for i in range(channels)), None) for c in sorted(grouped)
            ]
        if channels > 1:
            chans = sorted(grouped[bad[0]])
            raise ValueError(
                f"case {bad[0]}: has channel files {[f'_{c:04d}' for c in chans]} in {folder},"
                f" expected _0000 to _{channels - 1:04d} ({channels} channels)"
            )
    return [CaseFiles(s, (p,), None) for s, p in zip(stems, files, strict=True)]


def find_cases(path: str | Path, channels: int) -> list[CaseFiles]:
    """The unlabeled cases at ``path`` (a folder of NIfTI files, or one NIfTI file), ``channels`` each.

    Files named ``<case>_<4 digits>.nii.gz`` that form channels 0..channels-1 of each case are grouped by
    case (nnU-Net naming; the case is the name without the suffix); otherwise each file is one case
    (named by its file name, a 4-D file holding the channels). Only names are read, no header.
    """
    path = Path(path)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be an int >= 1, got {channels!r}")
    if path.is_file():
        if not path.name.endswith(NIFTI_ENDINGS):
            raise ValueError(
                f"{path}: expected a NIfTI file (ending in {' or '.join(NIFTI_ENDINGS)}) or a folder"
            )
        return [CaseFiles(case_name(path), (path,), None)]
    if path.is_dir():
        return _unlabeled_cases(path, channels)
    raise FileNotFoundError(f"folder not found: {path}")


def check_case_headers(case: CaseFiles, channels: int) -> VolumeInfo:
    """Read the headers of one case's image files and check its channel count and grid (one-line
    ValueErrors naming the case); returns the first file's header, the grid its outputs are written on."""
    infos = [read_volume_info(p) for p in case.images]
    _check_case(case.name, infos, None, channels)
    return infos[0]


def read_case_image(case: CaseFiles) -> np.ndarray:
    """The image of one case as float32 (C, z, y, x), each channel normalised (:func:`normalize_volume`)."""
    return _read_images(case.images)


def read_unlabeled_folder(folder: str | Path, channels: int) -> VolumeSet:
    """Volumes without labels: the cases of :func:`find_cases`, all headers checked before any voxels are
    read; images normalised per channel (:func:`normalize_volume`)."""
    cases = find_cases(folder, channels)
    headers = [check_case_headers(case, channels) for case in cases]
    return VolumeSet(
        case_names=tuple(c.name for c in cases),
        images=tuple(read_case_image(c) for c in cases),
        masks=tuple(None for _ in cases),
        references=tuple(headers),
        image_paths=tuple(c.images for c in cases),
        label_paths=tuple(None for _ in cases),
    )
