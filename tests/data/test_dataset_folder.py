"""rndpo.data.dataset_folder and volume_set: nnU-Net v2 and MSD dataset folders of NIfTI volumes, unlabeled
NIfTI folders, and padding to one dataset; synthetic folders written here with nibabel, plus six real
hippocampus volumes when ../shared/data is present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

import rndpo.data.dataset_folder as dataset_folder
from rndpo.data import (
    VolumeSet,
    load_dataset_folder,
    read_dataset_json,
    read_unlabeled_folder,
    write_label_map,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


# --- helpers that write dataset folders (arrays in rndpo's order: (C, z, y, x) images, (z, y, x) labels)


def _load(path: Path) -> Any:
    """nibabel's image, typed loosely (nib.load is typed as the base image class)."""
    return nib.load(path)


def _affine(
    spacing_zyx: tuple[float, float, float], origin: tuple[float, float, float] = (1.0, -2.0, 3.0)
) -> np.ndarray:
    aff = np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1.0])
    aff[:3, 3] = origin
    return aff


def _write(path: Path, zyx: np.ndarray, affine: np.ndarray) -> None:
    """(z, y, x) or (C, z, y, x) -> a NIfTI file (i, j, k[, C])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.asarray(zyx).T, affine, dtype=zyx.dtype).to_filename(path)


Case = tuple[np.ndarray, np.ndarray, np.ndarray]  # image (C, z, y, x), label (z, y, x), affine


def write_nnunet(
    folder: Path, cases: dict[str, Case], labels: dict[str, Any], channels: int, **extra: Any
) -> Path:
    """An nnU-Net v2 raw folder: imagesTr/<case>_<c:04d>.nii.gz, labelsTr/<case>.nii.gz, dataset.json."""
    for name, (image, label, affine) in cases.items():
        for c in range(image.shape[0]):
            _write(folder / "imagesTr" / f"{name}_{c:04d}.nii.gz", image[c], affine)
        _write(folder / "labelsTr" / f"{name}.nii.gz", label, affine)
    meta = {
        "channel_names": {str(c): f"mod{c}" for c in range(channels)},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        **extra,
    }
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def write_msd(folder: Path, cases: dict[str, Case], labels: dict[str, str], channels: int) -> Path:
    """An MSD folder: imagesTr/<case>.nii.gz (4-D when several channels), labelsTr/<case>.nii.gz."""
    training = []
    for name, (image, label, affine) in cases.items():
        _write(folder / "imagesTr" / f"{name}.nii.gz", image if image.shape[0] > 1 else image[0], affine)
        _write(folder / "labelsTr" / f"{name}.nii.gz", label, affine)
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    meta = {
        "name": "Toy",
        "labels": labels,
        "modality": {str(c): f"mod{c}" for c in range(channels)},
        "numTraining": len(cases),
        "training": training,
        "test": [],
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def _cases(values: tuple[int, ...], channels: int, seed: int = 0) -> dict[str, Case]:
    """Three cases of different shapes and anisotropic spacing, labels drawn from ``values``."""
    rng = np.random.default_rng(seed)
    out: dict[str, Case] = {}
    for n, shape in enumerate([(3, 5, 4), (4, 6, 5), (2, 7, 3)]):
        image = rng.normal(100 * (n + 1), 30, size=(channels, *shape)).astype(np.float32)
        label = rng.choice(np.array(values, dtype=np.uint8), size=shape)
        out[f"case_{n:03d}"] = (image, label, _affine((2.5, 0.8, 0.6), origin=(n, 0.5, -1.0)))
    return out


def _scaled(channel: np.ndarray) -> np.ndarray:
    """The percentile rule written out (oracle for the loaded images)."""
    lo, hi = np.percentile(channel.astype(np.float64), [0.5, 99.5])
    return np.clip((np.clip(channel, lo, hi) - lo) / (hi - lo), 0, 1).astype(np.float32)


NNUNET_LABELS = {"background": 0, "liver": 1, "tumour": 2, "vessel": 4}


# --- nnU-Net v2


def test_nnunet_folder_with_non_contiguous_labels(tmp_path: Path) -> None:
    cases = _cases((0, 1, 2, 4), channels=2)
    folder = write_nnunet(tmp_path / "Dataset001_Toy", cases, {"vessel": 4, **NNUNET_LABELS}, channels=2)
    desc = read_dataset_json(folder)
    assert desc.layout == "nnunet" and desc.num_channels == 2 and desc.channel_names == ("mod0", "mod1")
    assert desc.class_names == ("background", "liver", "tumour", "vessel")
    assert desc.label_values == (0, 1, 2, 4)
    assert [c.name for c in desc.cases] == list(cases)
    vs = load_dataset_folder(folder)
    assert vs.case_names == tuple(cases) and vs.label_values == (0, 1, 2, 4)
    for n, (image, label, affine) in enumerate(cases.values()):
        mask = vs.masks[n]
        assert mask is not None and mask.dtype == np.uint8 and mask.shape == label.shape
        expected = np.full(label.shape, 255, np.uint8)
        for c, v in enumerate((0, 1, 2, 4)):
            expected[label == v] = c
        np.testing.assert_array_equal(mask, expected)
        assert vs.images[n].dtype == np.float32 and vs.images[n].shape == image.shape
        for c in range(2):
            np.testing.assert_allclose(vs.images[n][c], _scaled(image[c]), atol=1e-6)
        np.testing.assert_allclose(vs.affines[n], affine, rtol=1e-6)
    np.testing.assert_allclose(vs.spacings, np.tile([2.5, 0.8, 0.6], (3, 1)), rtol=1e-6)


def test_non_contiguous_labels_write_back_to_the_file_values(tmp_path: Path) -> None:
    cases = _cases((0, 1, 2, 4), channels=1)
    folder = write_nnunet(tmp_path / "d", cases, NNUNET_LABELS, channels=1)
    vs = load_dataset_folder(folder)
    for n, name in enumerate(vs.case_names):
        mask = vs.masks[n]
        assert mask is not None
        out = write_label_map(tmp_path / "out" / f"{name}.nii.gz", mask, vs.label_values, vs.references[n])
        written, source = _load(out), _load(folder / "labelsTr" / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj))
        np.testing.assert_array_equal(written.affine, source.affine)


def test_nnunet_explicit_dataset_table(tmp_path: Path) -> None:
    cases = _cases((0, 1), channels=1)
    folder = write_nnunet(tmp_path / "d", cases, {"background": 0, "fg": 1}, channels=1)
    (folder / "imagesTr" / "case_000_0000.nii.gz").rename(folder / "other.nii.gz")
    table = {"only": {"images": ["other.nii.gz"], "label": "labelsTr/case_000.nii.gz"}}
    meta = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**meta, "dataset": table}))
    vs = load_dataset_folder(folder)
    assert vs.case_names == ("only",)
    np.testing.assert_allclose(vs.images[0][0], _scaled(cases["case_000"][0][0]), atol=1e-6)


# --- MSD


def test_msd_folder_with_4d_images(tmp_path: Path) -> None:
    cases = _cases((0, 1, 2), channels=2, seed=5)
    folder = write_msd(
        tmp_path / "Task99_Toy", cases, {"0": "background", "1": "edema", "2": "core"}, channels=2
    )
    desc = read_dataset_json(folder)
    assert desc.layout == "msd" and desc.name == "Toy" and desc.num_channels == 2
    assert desc.class_names == ("background", "edema", "core") and desc.label_values == (0, 1, 2)
    assert desc.cases[0].images == (folder / "imagesTr" / "case_000.nii.gz",)
    vs = load_dataset_folder(folder)
    assert vs.case_names == tuple(cases)
    for n, (image, label, _) in enumerate(cases.values()):
        assert vs.images[n].shape == image.shape
        for c in range(2):
            np.testing.assert_allclose(vs.images[n][c], _scaled(image[c]), atol=1e-6)
        np.testing.assert_array_equal(vs.masks[n], label)
        assert vs.references[n].channels == 2


# --- to_dataset: padding to one shape


def test_to_dataset_pads_centred_and_gives_boxes(tmp_path: Path) -> None:
    cases = _cases((0, 1, 2, 4), channels=2)
    vs = load_dataset_folder(write_nnunet(tmp_path / "d", cases, NNUNET_LABELS, channels=2))
    ds, boxes = vs.to_dataset("toy")
    assert ds.images.shape == (3, 2, 4, 7, 5) and ds.masks.shape == (3, 4, 7, 5)
    assert ds.num_classes == 4 and ds.class_names == ("background", "liver", "tumour", "vessel")
    assert ds.label_values == (0, 1, 2, 4) and ds.name == "toy" and ds.spatial_dims == 3
    assert list(ds.ids) == list(cases)
    np.testing.assert_allclose(ds.spacing, vs.spacings)  # type: ignore[arg-type]
    assert boxes.dtype == np.int64 and boxes.shape == (3, 3, 2)
    for n, shape in enumerate([(3, 5, 4), (4, 6, 5), (2, 7, 3)]):
        for a in range(3):
            start = (ds.masks.shape[1 + a] - shape[a]) // 2
            assert tuple(boxes[n, a]) == (start, start + shape[a])
        z, y, x = (slice(*b) for b in boxes[n])
        np.testing.assert_array_equal(ds.images[n][:, z, y, x], vs.images[n])
        np.testing.assert_array_equal(ds.masks[n][z, y, x], vs.masks[n])
        outside = np.ones(ds.masks.shape[1:], bool)
        outside[z, y, x] = False
        assert not ds.images[n][:, outside].any() and not ds.masks[n][outside].any()
    ds2, boxes2 = vs.to_dataset("toy", shape=(8, 8, 8))
    assert ds2.images.shape == (3, 2, 8, 8, 8)
    np.testing.assert_array_equal(boxes2[0], [[2, 5], [1, 6], [2, 6]])
    with pytest.raises(
        ValueError,
        match=r"^shape \(3, 8, 8\) is smaller than case case_001 of shape \(4, 6, 5\)$",
    ):
        vs.to_dataset("toy", shape=(3, 8, 8))


def test_to_dataset_of_an_empty_set() -> None:
    with pytest.raises(ValueError, match="volume set is empty"):
        VolumeSet((), (), (), (), (), ()).to_dataset("x")


# --- errors, each one line and before any voxel is read


def _fails(folder: Path, match: str, exc: type[Exception] = ValueError) -> None:
    with pytest.raises(exc, match=match) as info:
        load_dataset_folder(folder)
    assert "\n" not in str(info.value)


def test_label_value_missing_from_dataset_json(tmp_path: Path) -> None:
    cases = _cases((0, 1, 2, 4), channels=1)
    folder = write_nnunet(tmp_path / "d", cases, {"background": 0, "liver": 1, "tumour": 2}, channels=1)
    _fails(
        folder,
        r"label file .*labelsTr/case_000\.nii\.gz: holds the value 4, which dataset\.json does not name",
    )


def test_float_label_file_with_a_fraction(tmp_path: Path) -> None:
    cases = _cases((0, 1), channels=1)
    image, label, affine = cases["case_001"]
    cases["case_001"] = (image, label.astype(np.float32) * 1.5, affine)
    folder = write_nnunet(tmp_path / "d", cases, {"background": 0, "fg": 1}, channels=1)
    _fails(folder, r"case_001\.nii\.gz: holds the value 1\.5")


def test_shape_mismatch_names_the_case(tmp_path: Path) -> None:
    cases = _cases((0, 1), channels=1)
    image, _, affine = cases["case_002"]
    cases["case_002"] = (image, np.zeros((2, 7, 4), np.uint8), affine)
    _fails(
        write_nnunet(tmp_path / "d", cases, {"background": 0, "fg": 1}, channels=1),
        r"^case case_002: case_002\.nii\.gz has shape \(2, 7, 4\)",
    )


def test_affine_mismatch_names_the_case_and_small_differences_pass(tmp_path: Path) -> None:
    cases = _cases((0, 1), channels=1)
    folder = write_nnunet(tmp_path / "d", cases, {"background": 0, "fg": 1}, channels=1)
    _, label, affine = cases["case_001"]
    nudged = affine.copy()
    nudged[0, 3] += 1e-5
    _write(folder / "labelsTr" / "case_001.nii.gz", label, nudged)
    load_dataset_folder(folder)  # within 1e-4: the same grid
    moved = affine.copy()
    moved[0, 3] += 0.5
    _write(folder / "labelsTr" / "case_001.nii.gz", label, moved)
    _fails(folder, r"^case case_001: case_001\.nii\.gz has shape .* affine .* but case_001_0000\.nii\.gz")


def test_wrong_channel_count(tmp_path: Path) -> None:
    cases = _cases((0, 1), channels=2)
    folder = write_nnunet(tmp_path / "n", cases, {"background": 0, "fg": 1}, channels=2)
    (folder / "imagesTr" / "case_001_0001.nii.gz").unlink()
    _fails(folder, r"^case case_001: has channel files \['_0000'\] .* expected _0000 to _0001 \(2 channels")
    msd = write_msd(tmp_path / "m", _cases((0, 1), channels=3), {"0": "background", "1": "fg"}, channels=2)
    _fails(msd, r"^case case_000: its images hold 3 channels, expected 2$")
    good = write_msd(tmp_path / "g", _cases((0, 1), channels=2), {"0": "background", "1": "fg"}, channels=2)
    with pytest.raises(ValueError, match=r"channels: expected 1 image channels, .*dataset\.json names 2"):
        load_dataset_folder(good, channels=1)


def test_errors_come_before_any_voxel_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _cases((0, 1), channels=1)
    image, _, affine = cases["case_002"]
    cases["case_002"] = (image, np.zeros((9, 9, 9), np.uint8), affine)
    folder = write_nnunet(tmp_path / "d", cases, {"background": 0, "fg": 1}, channels=1)

    def no_voxels(path: object) -> None:
        raise AssertionError(f"voxels of {path} read before the header checks")

    monkeypatch.setattr(dataset_folder, "read_volume", no_voxels)
    _fails(folder, r"^case case_002:")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", r"dataset\.json does not parse as JSON: Expecting property name"),
        ("[1, 2]", r"dataset\.json must hold a JSON object, got list"),
        (
            '{"labels": {"background": 0}, "name": "x"}',
            r"not an nnU-Net v2 .* or MSD .* its keys are \['labels', 'name'\]",
        ),
    ],
)
def test_dataset_json_that_does_not_parse(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "dataset.json").write_text(text)
    _fails(tmp_path, match)


@pytest.mark.parametrize(
    ("labels", "extra", "match"),
    [
        ({"background": 0, "a": 1, "whole": [1, 2]}, {}, r"region-based labels \(label 'whole' = \[1, 2\]"),
        ({"background": 0, "a": 1, "ignore": 3}, {}, r"an ignore label \('ignore': 3\) is not supported"),
        (
            {"background": 0, "a": 1},
            {"regions_class_order": [1]},
            r"region-based labels \(regions_class_order\)",
        ),
        ({"bg": 1, "a": 2}, {}, r"labels must include the background with value 0, got values \[1, 2\]"),
        ({"background": 0, "a": 1, "b": 1}, {}, r"labels give the value 1 to more than one name"),
        ({"background": 0, "a": -1}, {}, r"label 'a': label values must be integers from 0 to 65535, got -1"),
        ({"background": 0, "a": 1.5}, {}, r"label 'a': label values must be integers .* got 1\.5"),
        ({"background": 0}, {}, r"labels must name 2 to 255 classes"),
        ({"background": 0, "a": 1}, {"file_ending": ".png"}, r"file_ending must be one of .* got '\.png'"),
    ],
)
def test_nnunet_dataset_json_refusals(
    tmp_path: Path, labels: dict[str, Any], extra: dict[str, Any], match: str
) -> None:
    folder = write_nnunet(tmp_path / "d", _cases((0, 1), channels=1), labels, channels=1, **extra)
    with pytest.raises(ValueError, match=match):
        read_dataset_json(folder)


def test_missing_files_are_named(tmp_path: Path) -> None:
    cases = _cases((0, 1), channels=1)
    folder = write_nnunet(tmp_path / "d", cases, {"background": 0, "fg": 1}, channels=1)
    (folder / "labelsTr" / "case_001.nii.gz").unlink()
    _fails(folder, r"case case_001: file not found: .*labelsTr/case_001\.nii\.gz", FileNotFoundError)
    msd = write_msd(tmp_path / "m", cases, {"0": "background", "1": "fg"}, channels=1)
    (msd / "imagesTr" / "case_002.nii.gz").unlink()
    _fails(msd, r"case case_002: file not found: .*imagesTr/case_002\.nii\.gz", FileNotFoundError)
    _fails(tmp_path / "nowhere", r"dataset folder not found", FileNotFoundError)
    (tmp_path / "empty").mkdir()
    _fails(tmp_path / "empty", r"dataset\.json not found: .*empty/dataset\.json", FileNotFoundError)


# --- unlabeled folders


def test_unlabeled_nnunet_naming_groups_channels(tmp_path: Path) -> None:
    cases = _cases((0, 1), channels=2)
    folder = write_nnunet(tmp_path / "d", cases, {"background": 0, "fg": 1}, channels=2)
    vs = read_unlabeled_folder(folder / "imagesTr", channels=2)
    assert vs.case_names == tuple(cases) and vs.masks == (None, None, None) and vs.class_names == ()
    for n, (image, _, _) in enumerate(cases.values()):
        for c in range(2):
            np.testing.assert_allclose(vs.images[n][c], _scaled(image[c]), atol=1e-6)
    ds, _ = vs.to_dataset("pool")
    assert ds.images.shape == (3, 2, 4, 7, 5) and not ds.masks.any()
    with pytest.raises(
        ValueError, match=r"^case case_000: has channel files \['_0000', '_0001'\] .* expected _0000 to _0002"
    ):
        read_unlabeled_folder(folder / "imagesTr", channels=3)


def test_unlabeled_one_file_per_case(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vols = {name: rng.random((3, 4, 5)).astype(np.float32) for name in ("img_0001", "img_0002", "scan")}
    for name, v in vols.items():
        _write(tmp_path / "pool" / f"{name}.nii.gz", v, np.eye(4))
    (tmp_path / "pool" / "notes.txt").write_text("not a volume")
    vs = read_unlabeled_folder(tmp_path / "pool", channels=1)
    assert vs.case_names == ("img_0001", "img_0002", "scan")
    for n, v in enumerate(vols.values()):
        np.testing.assert_allclose(vs.images[n][0], _scaled(v), atol=1e-6)
    with pytest.raises(ValueError, match=r"^case img_0001: its images hold 1 channels, expected 2$"):
        read_unlabeled_folder(tmp_path / "pool", channels=2)
    one = read_unlabeled_folder(tmp_path / "pool" / "scan.nii.gz", channels=1)
    assert one.case_names == ("scan",) and one.image_paths == ((tmp_path / "pool" / "scan.nii.gz",),)


def test_unlabeled_4d_files_and_errors(tmp_path: Path) -> None:
    _write(
        tmp_path / "p" / "a.nii.gz",
        np.random.default_rng(0).random((2, 3, 4, 5)).astype(np.float32),
        np.eye(4),
    )
    vs = read_unlabeled_folder(tmp_path / "p", channels=2)
    assert vs.images[0].shape == (2, 3, 4, 5)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.png").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"folder .*e holds no NIfTI files \(names ending in \.nii\.gz or \.nii\)"
    ):
        read_unlabeled_folder(tmp_path / "e", channels=1)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        read_unlabeled_folder(tmp_path / "missing", channels=1)
    with pytest.raises(ValueError, match="channels must be an int >= 1"):
        read_unlabeled_folder(tmp_path / "p", channels=0)


# --- real data: six hippocampus volumes in nnU-Net layout


@pytest.mark.skipif(not (SHARED_DATA / "msd_hippocampus" / "data.npz").is_file(), reason="shared data absent")
def test_hippocampus_volumes_in_nnunet_layout(tmp_path: Path) -> None:
    arrays = np.load(SHARED_DATA / "msd_hippocampus" / "data.npz")
    rows = range(6)
    cases: dict[str, Case] = {}
    for n in rows:
        (o0, o1, o2), (s0, s1, s2) = arrays["offset"][n], arrays["orig_shape"][n]
        crop = (slice(o0, o0 + s0), slice(o1, o1 + s1), slice(o2, o2 + s2))
        image, label = arrays["images"][n][crop], arrays["masks"][n][crop]
        cases[str(arrays["ids"][n])] = (image[None], label, np.eye(4))
    folder = write_nnunet(
        tmp_path / "Dataset004_Hippocampus",
        cases,
        {"background": 0, "Anterior": 1, "Posterior": 2},
        channels=1,
    )
    vs = load_dataset_folder(folder)
    ds, boxes = vs.to_dataset("hippocampus", shape=arrays["masks"].shape[1:])
    np.testing.assert_array_equal(ds.ids, arrays["ids"][:6])
    np.testing.assert_array_equal(ds.masks, arrays["masks"][:6])
    np.testing.assert_array_equal(boxes[:, :, 0], arrays["offset"][:6])
    np.testing.assert_array_equal(boxes[:, :, 1] - boxes[:, :, 0], arrays["orig_shape"][:6])
    np.testing.assert_allclose(ds.spacing, arrays["spacing"][:6])  # type: ignore[arg-type]
    assert ds.class_names == ("background", "Anterior", "Posterior")
    for n, (image, _, _) in enumerate(cases.values()):
        z, y, x = (slice(*b) for b in boxes[n])
        np.testing.assert_allclose(ds.images[n, 0, z, y, x], _scaled(image[0]), atol=1e-6)
        outside = np.ones(ds.masks.shape[1:], bool)
        outside[z, y, x] = False
        assert not ds.images[n, 0][outside].any()
