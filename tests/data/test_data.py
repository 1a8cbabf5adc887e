"""rndpo.data: the dataset container, the synthetic default, the npz / folder / NIfTI loaders, and splits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.io import imsave

from rndpo.data import (
    DatasetSplits,
    SegmentationDataset,
    VolumeSlices,
    load_folder,
    load_nifti,
    load_npz,
    split_dataset,
    synthetic_dataset,
)
from rndpo.data.synthetic import (
    _DISTRACTOR_KINDS,
    _MODALITIES,
    _OBJECT_KINDS,
    _POLARITY,
    _TARGET_KIND,
    _object,
    _synthetic,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _tiny(n: int = 10, size: int = 8, groups: np.ndarray | None = None) -> SegmentationDataset:
    rng = np.random.default_rng(0)
    return SegmentationDataset(
        rng.random((n, 1, size, size), dtype=np.float32),
        (rng.random((n, size, size)) > 0.5).astype(np.uint8),
        np.array([f"img{i}" for i in range(n)]),
        groups,
        "tiny",
    )


# --- the container


def test_dataset_validation_errors() -> None:
    ds = _tiny(3)
    im, mk, ids = ds.images, ds.masks, ds.ids
    with pytest.raises(
        ValueError,
        match=r"images must be a 4-D array \(N, C, H, W\) or a 5-D array \(N, C, D, H, W\),"
        r" got array of shape \(3, 8, 8\)",
    ):
        SegmentationDataset(im[:, 0], mk, ids)
    with pytest.raises(TypeError, match="images must have dtype float32, got float64"):
        SegmentationDataset(im.astype(np.float64), mk, ids)
    with pytest.raises(ValueError, match=r"images must be finite values, got range"):
        SegmentationDataset(np.where(im > 0.5, np.float32(np.inf), im), mk, ids)
    # the one image rule: any finite range is accepted (z-scored, CT units); normalisation is the caller's
    assert len(SegmentationDataset((im - 0.5) * 400, mk, ids)) == 3
    with pytest.raises(TypeError, match="masks must have dtype uint8, got bool"):
        SegmentationDataset(im, mk.astype(bool), ids)
    with pytest.raises(
        ValueError, match=r"masks must have shape \(N, H, W\) = \(3, 8, 8\) to match images, got \(3, 8, 9\)"
    ):
        SegmentationDataset(im, np.zeros((3, 8, 9), np.uint8), ids)
    with pytest.raises(
        ValueError, match=r"masks must be binary with values \{0, 1\}, got values \{0, 1, 2\}"
    ):
        SegmentationDataset(im, np.where(np.arange(8) == 0, 2, mk).astype(np.uint8), ids)
    with pytest.raises(ValueError, match=r"ids must be an array of shape \(N,\) = \(3,\)"):
        SegmentationDataset(im, mk, ids[:2])
    with pytest.raises(ValueError, match=r"groups must be None or an array of shape \(N,\) = \(3,\)"):
        SegmentationDataset(im, mk, ids, np.zeros(4))


def test_subset_keeps_rows_and_groups() -> None:
    ds = _tiny(6, groups=np.array([0, 0, 1, 1, 2, 2]))
    sub = ds.subset(np.array([4, 1]))
    assert len(sub) == 2 and sub.name == "tiny"
    np.testing.assert_array_equal(sub.images, ds.images[[4, 1]])
    np.testing.assert_array_equal(sub.masks, ds.masks[[4, 1]])
    np.testing.assert_array_equal(sub.ids, ["img4", "img1"])
    np.testing.assert_array_equal(sub.groups, [2, 0])


# --- synthetic default


def test_synthetic_shapes_and_determinism() -> None:
    a = synthetic_dataset(n_images=24, size=32, seed=3)
    b = synthetic_dataset(n_images=24, size=32, seed=3)
    c = synthetic_dataset(n_images=24, size=32, seed=4)
    assert a.images.shape == (24, 1, 32, 32) and a.images.dtype == np.float32
    assert a.masks.shape == (24, 32, 32) and a.masks.dtype == np.uint8
    assert a.groups is None and a.name == "synthetic" and a.ids[0] == "synthetic_00000"
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.masks, c.masks)
    assert not np.array_equal(a.images, c.images)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), size=st.integers(16, 40), seed=st.integers(0, 2**32 - 1))
def test_synthetic_any_arguments_give_valid_lesions(n: int, size: int, seed: int) -> None:
    ds = synthetic_dataset(n_images=n, size=size, seed=seed)
    assert ds.images.shape == (n, 1, size, size) and ds.masks.shape == (n, size, size)
    assert np.isfinite(ds.images).all() and ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    frac = ds.masks.mean(axis=(1, 2))
    assert (frac > 0).all() and (frac < 0.5).all()  # one lesion per image, never the whole image
    assert (ds.images[:, 0].std(axis=(1, 2)) > 0.01).all()  # not blank
    again = synthetic_dataset(n_images=n, size=size, seed=seed)
    np.testing.assert_array_equal(ds.images, again.images)


def test_synthetic_masks_are_sane_and_varied() -> None:
    ds = synthetic_dataset(n_images=64, size=48, seed=0)
    frac = ds.masks.mean(axis=(1, 2))
    assert frac.min() > 0.005 and frac.max() < 0.4  # every image has a lesion, none fills the image
    assert 0.03 < frac.mean() < 0.25
    assert frac.std() > 0.01  # sizes vary
    rows, cols = np.nonzero(ds.masks.any(axis=0))
    assert np.ptp(rows) > 24 and np.ptp(cols) > 24  # lesions are spread over the image
    assert len({m.tobytes() for m in ds.masks}) == 64  # no repeated masks
    # the images carry the lesion: mean intensity differs inside and outside the mask in most images
    inside = (ds.images[:, 0] * ds.masks).sum(axis=(1, 2)) / ds.masks.sum(axis=(1, 2))
    outside = (ds.images[:, 0] * (1 - ds.masks)).sum(axis=(1, 2)) / (1 - ds.masks).sum(axis=(1, 2))
    assert np.mean(np.abs(inside - outside) > 0.03) > 0.8
    # both polarities occur: lesions brighter and darker than their surroundings
    assert 0.2 < np.mean(inside > outside) < 0.8


def test_synthetic_polarity_is_usual_per_style_with_rare_flips() -> None:
    images, masks, modality = _synthetic(240, 32, 2)
    m = masks.astype(bool)
    inside = np.array([im[0][k].mean() for im, k in zip(images, m, strict=True)])
    ring = _grow_ring(m)
    around = np.array([im[0][r].mean() for im, r in zip(images, ring, strict=True)])
    usual = np.sign(inside - around) == np.asarray(_POLARITY)[modality]
    assert 0.6 < usual.mean() < 0.9  # about three quarters have the style's usual polarity
    assert (~usual).sum() >= 20  # flips exist


def test_synthetic_styles_all_occur_and_look_different() -> None:
    images, masks, modality = _synthetic(120, 48, 0)
    counts = np.bincount(modality, minlength=len(_MODALITIES))
    assert counts.shape == (6,) and (counts >= 8).all()
    # the styles differ in texture: fine-scale roughness (mean absolute horizontal difference) of the
    # background ranks ultrasound speckle roughest and dermoscopy / mammography / X-ray smoother
    bg = np.where(masks.astype(bool), np.nan, images[:, 0])
    rough = np.nanmean(np.abs(np.diff(bg, axis=2)), axis=(1, 2))
    per_style = np.array([rough[modality == m].mean() for m in range(6)])
    assert per_style.argmax() == _MODALITIES.index("ultrasound")
    assert per_style.max() > 2 * np.median(per_style)


def test_synthetic_lesion_kinds_conflict_across_styles() -> None:
    # every object kind is the lesion in exactly one style and a distractor in at least one other, so the
    # style decides what is foreground (the source of the label-budget gap)
    assert sorted(_TARGET_KIND) == list(range(len(_OBJECT_KINDS)))
    for style, (target, distractors) in enumerate(zip(_TARGET_KIND, _DISTRACTOR_KINDS, strict=True)):
        assert target not in distractors and len(set(distractors)) == 2, style
    distractor_kinds = {k for pair in _DISTRACTOR_KINDS for k in pair}
    assert distractor_kinds == set(range(len(_OBJECT_KINDS)))


def test_synthetic_objects_render_their_kind() -> None:
    rng = np.random.default_rng(0)
    n, size = 16, 48
    kinds = {name: _object(rng, k, n, size, (0.15, 0.2), 0.25) for k, name in enumerate(_OBJECT_KINDS)}
    for name, (mask, profile) in kinds.items():
        assert mask.dtype == bool and mask.shape == profile.shape == (n, size, size), name
        assert mask.any(axis=(1, 2)).all(), name
    # ring: the rim is brighter than the core; encapsulated: a darker halo just outside the mask
    mask, profile = kinds["ring"]
    core = ndimage.binary_erosion(mask, iterations=4, structure=np.ones((1, 3, 3), bool))
    assert (profile[core].mean() < 0.3) and profile[mask & ~core].mean() > 0.5
    mask, profile = kinds["encapsulated"]
    assert profile[~mask].min() < -0.5 and (profile[mask] == 1.0).all()
    # mottled has internal texture, solid is flat; clusters have several components
    assert profile_std(kinds["mottled"]) > 0.3 and profile_std(kinds["solid"]) == 0.0
    n_parts = [ndimage.label(m)[1] for m in kinds["cluster"][0]]
    assert np.mean(np.array(n_parts) >= 2) > 0.5
    # spiculated outlines are less convex than solid ones (short, wide spicules: a modest gap)
    assert solidity(kinds["spiculated"][0]) < solidity(kinds["solid"][0]) - 0.015


def _grow_ring(masks: np.ndarray) -> np.ndarray:
    grown = ndimage.binary_dilation(masks, iterations=3, structure=np.ones((1, 3, 3), bool))
    return grown & ~ndimage.binary_dilation(masks, iterations=1, structure=np.ones((1, 3, 3), bool))


def profile_std(obj: tuple[np.ndarray, np.ndarray]) -> float:
    mask, profile = obj
    return float(np.mean([profile[i][mask[i]].std() for i in range(len(mask))]))


def solidity(masks: np.ndarray) -> float:
    from skimage.measure import regionprops

    return float(
        np.mean([max(regionprops(m.astype(np.uint8)), key=lambda r: r.area).solidity for m in masks])
    )


def test_synthetic_is_not_solved_by_a_global_threshold() -> None:
    # distractors, bias field and noise: the best per-image threshold (either polarity, chosen with the
    # ground truth itself) is still far from the mask on average
    ds = synthetic_dataset(n_images=40, size=48, seed=1)
    best = []
    for image, mask in zip(ds.images[:, 0], ds.masks.astype(bool), strict=True):
        scores = []
        for q in np.linspace(0.5, 0.98, 13):
            for pred in (image > np.quantile(image, q), image < np.quantile(image, 1 - q)):
                scores.append(2 * (pred & mask).sum() / (pred.sum() + mask.sum()))
        best.append(max(scores))
    assert np.mean(best) < 0.7


def test_synthetic_default_size_has_the_documented_shape() -> None:
    # its speed (about 1 s on 2 cores) is a benchmark's business, not a timed assert
    ds = synthetic_dataset()
    assert ds.images.shape == (400, 1, 64, 64) and ds.images.dtype == np.float32
    assert ds.masks.shape == (400, 64, 64) and 0 < ds.masks.mean() < 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_images": 0}, "n_images must be an int >= 1, got 0"),
        ({"size": 8}, "size must be an int >= 16, got 8"),
        ({"size": 32.0}, "size must be an int >= 16, got 32.0"),
    ],
)
def test_synthetic_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synthetic_dataset(**kwargs)


def test_synthetic_bad_seed_type() -> None:
    with pytest.raises(TypeError, match="seed must be an int, got str"):
        synthetic_dataset(seed="0")  # type: ignore[arg-type]


# --- splits


def _rows(split: SegmentationDataset) -> set[str]:
    return set(split.ids.tolist())


def _check_partition(ds: SegmentationDataset, sp: DatasetSplits) -> None:
    parts = [_rows(sp.labeled), _rows(sp.unlabeled), _rows(sp.val), _rows(sp.test)]
    assert sum(len(p) for p in parts) == len(ds)
    assert set().union(*parts) == set(ds.ids.tolist())


def test_split_sizes_determinism_and_disjointness() -> None:
    ds = _tiny(100)
    sp = split_dataset(ds, label_budget=0.1, val_fraction=0.1, test_fraction=0.2, seed=5)
    assert (len(sp.labeled), len(sp.unlabeled), len(sp.val), len(sp.test)) == (7, 63, 10, 20)
    _check_partition(ds, sp)
    again = split_dataset(ds, label_budget=0.1, val_fraction=0.1, test_fraction=0.2, seed=5)
    for a, b in zip(
        (sp.labeled, sp.unlabeled, sp.val, sp.test),
        (again.labeled, again.unlabeled, again.val, again.test),
        strict=True,
    ):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.images, b.images)
    other = split_dataset(ds, label_budget=0.1, seed=6)
    assert _rows(other.test) != _rows(sp.test)
    # rows keep the dataset order and carry their own image and mask
    idx = [int(i[3:]) for i in sp.labeled.ids]
    assert idx == sorted(idx)
    np.testing.assert_array_equal(sp.labeled.masks, ds.masks[idx])


def test_split_count_budget_and_nesting() -> None:
    ds = _tiny(60)
    small = split_dataset(ds, label_budget=5, seed=1)
    large = split_dataset(ds, label_budget=0.5, seed=1)
    assert len(small.labeled) == 5
    assert len(large.labeled) == round(0.5 * 42)
    assert _rows(small.labeled) <= _rows(large.labeled)  # a smaller budget is a subset of a larger one
    assert _rows(small.test) == _rows(large.test) and _rows(small.val) == _rows(large.val)
    full = split_dataset(ds, label_budget=1.0, seed=1)
    assert len(full.unlabeled) == 0 and len(full.labeled) == 42


@settings(max_examples=30, deadline=None)
@given(
    n_groups=st.integers(4, 30),
    max_size=st.integers(1, 5),
    seed=st.integers(0, 1000),
    budget=st.one_of(st.floats(0.05, 1.0), st.integers(1, 3)),
)
def test_split_is_group_aware(n_groups: int, max_size: int, seed: int, budget: float | int) -> None:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), rng.integers(1, max_size + 1, n_groups))
    rng.shuffle(groups)
    ds = _tiny(groups.size, size=4, groups=groups.astype(str))
    try:
        sp = split_dataset(ds, label_budget=budget, val_fraction=0.1, test_fraction=0.2, seed=seed)
    except ValueError as err:  # only a count budget larger than the pool may be refused
        assert "exceeds the train pool" in str(err)
        return
    _check_partition(ds, sp)
    seen: dict[str, str] = {}
    for name in ("labeled", "unlabeled", "val", "test"):
        for g in getattr(sp, name).groups.tolist():
            assert seen.setdefault(g, name) == name, f"group {g} in {seen[g]} and {name}"
    assert len(sp.labeled) >= 1 and len(sp.test) >= 1 and len(sp.val) >= 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"label_budget": 0.0}, ValueError, r"label_budget as a fraction must be in \(0, 1\], got 0.0"),
        ({"label_budget": 1.5}, ValueError, r"label_budget as a fraction must be in \(0, 1\], got 1.5"),
        ({"label_budget": 0}, ValueError, "label_budget as a count must be >= 1, got 0"),
        ({"label_budget": 8}, ValueError, "label_budget=8 exceeds the train pool of 7 images"),
        ({"label_budget": True}, TypeError, "label_budget must be a float in"),
        ({"test_fraction": 1.0}, ValueError, r"test_fraction must be a number in \[0, 1\), got 1.0"),
        ({"val_fraction": -0.1}, ValueError, r"val_fraction must be a number in \[0, 1\), got -0.1"),
        (
            {"val_fraction": 0.5, "test_fraction": 0.5},
            ValueError,
            "val_fraction \\+ test_fraction must be < 1",
        ),
    ],
)
def test_split_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        split_dataset(_tiny(10), **kwargs)


def test_split_refuses_when_groups_leave_no_pool() -> None:
    ds = _tiny(6, groups=np.array([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="leave no train pool for 6 images in 2 groups"):
        split_dataset(ds, val_fraction=0.3, test_fraction=0.3)


# --- npz


def _write_npz(path: Path, images: np.ndarray, masks: np.ndarray, ids: np.ndarray | None = None) -> Path:
    arrays = {"images": images, "masks": masks}
    if ids is not None:
        arrays["ids"] = ids
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("rgb", [False, True])
def test_load_npz_gray_and_rgb(tmp_path: Path, rgb: bool) -> None:
    rng = np.random.default_rng(0)
    shape = (5, 12, 10, 3) if rgb else (5, 12, 10)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    masks = (rng.random((5, 12, 10)) > 0.5).astype(np.uint8)
    ids = np.array(["001_a", "001_b", "002_a", "003_a", "003_b"])
    path = _write_npz(tmp_path / "data.npz", images, masks, ids)
    ds = load_npz(path, group_by="id_prefix")
    c = 3 if rgb else 1
    assert ds.images.shape == (5, c, 12, 10) and ds.images.dtype == np.float32
    expected = np.moveaxis(images, -1, 1) if rgb else images[:, None]
    np.testing.assert_allclose(ds.images, expected / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.masks, masks)
    np.testing.assert_array_equal(ds.groups, ["001", "001", "002", "003", "003"])
    assert ds.name == tmp_path.name  # a file called data.npz is named after its folder
    resized = load_npz(path, image_size=6, name="x")
    assert resized.images.shape == (5, c, 6, 6) and resized.masks.shape == (5, 6, 6)
    assert resized.groups is None and resized.name == "x"
    assert set(np.unique(resized.masks)) <= {0, 1}


def test_load_npz_defaults_and_255_masks(tmp_path: Path) -> None:
    images = np.zeros((2, 4, 4), dtype=np.uint8)
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[:, 1:3, 1:3] = 255
    ds = load_npz(_write_npz(tmp_path / "scans.npz", images, masks))
    np.testing.assert_array_equal(ds.ids, ["scans_00000", "scans_00001"])
    assert ds.name == "scans" and ds.masks.max() == 1 and ds.masks.sum() == 8


def test_load_npz_errors_name_the_file(tmp_path: Path) -> None:
    images = np.zeros((2, 4, 4), dtype=np.uint8)
    bad = _write_npz(
        tmp_path / "labels.npz", images, np.full((2, 4, 4), 2, dtype=np.uint8) * np.eye(4, dtype=np.uint8)
    )
    with pytest.raises(ValueError, match=r"labels\.npz: mask must be binary .* got values \{0, 2\}"):
        load_npz(bad)
    nomask = tmp_path / "nomask.npz"
    np.savez(nomask, images=images)
    with pytest.raises(ValueError, match=r"nomask\.npz lacks the arrays \['masks'\]"):
        load_npz(nomask)
    mismatch = _write_npz(tmp_path / "mismatch.npz", images, np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(
        ValueError, match=r"mismatch\.npz: masks must have shape \(N, H, W\) = \(2, 4, 4\), got \(2, 4, 5\)"
    ):
        load_npz(mismatch)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        load_npz(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="group_by must be one of"):
        load_npz(mismatch, group_by="patient")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "shape", "channels"), [("kvasir_seg", 300, 3), ("hc18", 999, 1)])
def test_real_npz_files_load(name: str, shape: int, channels: int) -> None:
    path = SHARED_DATA / name / "data.npz"
    if not path.is_file():
        pytest.skip(f"real data not present at {path}")
    ds = load_npz(path, group_by="id_prefix" if name == "hc18" else "none")
    assert ds.images.shape == (shape, channels, 128, 128) and ds.masks.shape == (shape, 128, 128)
    assert ds.name == name
    assert ds.masks.any(axis=(1, 2)).all()
    if name == "hc18":
        assert (
            ds.groups is not None and 0 < len(np.unique(ds.groups)) < 999
        )  # e.g. 010_HC and 010_2HC share group 010
        sp = split_dataset(ds, label_budget=0.1, seed=0)
        owner: dict[str, str] = {}
        for part in ("labeled", "unlabeled", "val", "test"):
            for g in getattr(sp, part).groups.tolist():
                assert owner.setdefault(g, part) == part
        _check_partition(ds, sp)


# --- folders


def _save(path: Path, array: np.ndarray) -> None:
    imsave(path, array, check_contrast=False)


def _square_mask(h: int, w: int, k: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[k : k + 4, k : k + 5] = 255
    return m


def test_load_folder_png_gray(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 12, 14), dtype=np.uint8)
    for i in range(3):
        _save(tmp_path / "images" / f"case{i}.png", images[i])
        _save(tmp_path / "masks" / f"case{i}.png", _square_mask(12, 14, i))
    ds = load_folder(tmp_path / "images", tmp_path / "masks")
    assert ds.images.shape == (3, 1, 12, 14)
    np.testing.assert_array_equal(ds.ids, ["case0", "case1", "case2"])
    np.testing.assert_allclose(ds.images[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.masks, np.stack([_square_mask(12, 14, i) for i in range(3)]) // 255)
    assert ds.name == tmp_path.name


def test_load_folder_jpeg_rgb_with_suffix_and_resize(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "seg").mkdir()
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(16, 16), (20, 24)]):  # sizes differ: image_size resizes them to one
        _save(tmp_path / "img" / f"ISIC_{i}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _save(tmp_path / "seg" / f"ISIC_{i}_segmentation.png", _square_mask(h, w, 2 + i))
    # a JPEG mask with compression noise is thresholded, and RGB beats gray: gray images get 3 channels
    _save(tmp_path / "img" / "gray.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    _save(
        tmp_path / "seg" / "gray_segmentation.jpg",
        np.repeat(_square_mask(16, 16, 5)[..., None], 3, -1),
    )
    ds = load_folder(
        tmp_path / "img", tmp_path / "seg", image_size=16, mask_suffix="_segmentation", name="isic"
    )
    assert ds.images.shape == (3, 3, 16, 16) and ds.masks.shape == (3, 16, 16) and ds.name == "isic"
    np.testing.assert_array_equal(ds.ids, ["ISIC_0", "ISIC_1", "gray"])
    np.testing.assert_array_equal(ds.masks[2], _square_mask(16, 16, 5) // 255)
    np.testing.assert_array_equal(ds.images[2, 0], ds.images[2, 2])  # gray repeated
    gray = load_folder(
        tmp_path / "img", tmp_path / "seg", image_size=16, mask_suffix="_segmentation", grayscale=True
    )
    assert gray.images.shape == (3, 1, 16, 16)
    np.testing.assert_allclose(gray.images[2, 0], ds.images[2, 0], atol=1e-6)


def _folder_pair(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    return images, masks


def test_load_folder_errors_name_the_file(tmp_path: Path) -> None:
    images, masks = _folder_pair(tmp_path)
    with pytest.raises(ValueError, match=r"image_dir: folder .*images contains no image files"):
        load_folder(images, masks)
    _save(images / "a.png", np.zeros((8, 8), np.uint8))
    _save(images / "b.png", np.zeros((8, 8), np.uint8))
    _save(masks / "a.png", _square_mask(8, 8, 1))
    with pytest.raises(ValueError, match=r"no mask for image .*b\.png"):
        load_folder(images, masks)
    labels = np.zeros((8, 8), np.uint8)
    labels[1:3] = 1
    labels[4:6] = 2
    _save(masks / "b.png", labels)
    with pytest.raises(ValueError, match=r"mask .*b\.png: mask must be binary .* got values \{0, 1, 2\}"):
        load_folder(images, masks)
    _save(masks / "b.png", _square_mask(8, 9, 1))
    with pytest.raises(
        ValueError, match=r"mask .*b\.png has size \(8, 9\) but image .*b\.png has size \(8, 8\)"
    ):
        load_folder(images, masks)
    _save(masks / "b.png", _square_mask(8, 8, 1))
    _save(images / "c.png", np.zeros((9, 9), np.uint8))
    _save(masks / "c.png", _square_mask(9, 9, 1))
    with pytest.raises(
        ValueError, match=r"c\.png has size \(9, 9\) but .*a\.png has \(8, 8\); pass image_size"
    ):
        load_folder(images, masks)
    assert load_folder(images, masks, image_size=8).images.shape == (3, 1, 8, 8)
    with pytest.raises(FileNotFoundError, match="mask_dir: folder not found"):
        load_folder(images, tmp_path / "nowhere")


def test_load_folder_rejects_color_label_masks(tmp_path: Path) -> None:
    images, masks = _folder_pair(tmp_path)
    _save(images / "a.png", np.zeros((8, 8, 3), np.uint8))
    color = np.zeros((8, 8, 3), np.uint8)
    color[2:4, 2:4, 0] = 255
    _save(masks / "a.png", color)
    with pytest.raises(ValueError, match=r"mask .*a\.png: color channels differ"):
        load_folder(images, masks)


# --- NIfTI


def _write_nifti(path: Path, array: np.ndarray) -> Path:
    import nibabel as nib

    nib.Nifti1Image(array, np.eye(4)).to_filename(path)
    return path


def test_load_nifti_slices_groups_and_skip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vols, segs = [], []
    for v in range(2):
        vol = (rng.random((10, 12, 5)) * 1000 - 200).astype(np.float32)
        seg = np.zeros((10, 12, 5), np.uint8)
        seg[2:6, 3:8, 1 + v : 4] = 1  # volume 0: slices 1-3 have foreground, volume 1: slices 2-3
        vols.append(_write_nifti(tmp_path / f"vol{v}.nii.gz", vol))
        segs.append(_write_nifti(tmp_path / f"seg{v}.nii.gz", seg))
    # every slice is kept by default, empty ones too: validation and test need them
    every = load_nifti(vols, segs, axis=2)
    assert isinstance(every, VolumeSlices) and every.images.shape == (10, 1, 10, 12)
    np.testing.assert_array_equal(every.volumes, [0] * 5 + [1] * 5)
    np.testing.assert_array_equal(every.masks.any(axis=(1, 2)), [0, 1, 1, 1, 0, 0, 0, 1, 1, 0])
    assert every.ids[0] == "vol0_0000" and every.ids[-1] == "vol1_0004"
    ds = load_nifti(vols, segs, axis=2, skip_empty=True)
    assert ds.images.shape == (5, 1, 10, 12) and ds.masks.shape == (5, 10, 12)
    np.testing.assert_array_equal(ds.groups, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ds.ids, ["vol0_0001", "vol0_0002", "vol0_0003", "vol1_0002", "vol1_0003"])
    assert ds.masks.any(axis=(1, 2)).all()
    np.testing.assert_array_equal(ds.images, every.images[every.masks.any(axis=(1, 2))])
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert load_nifti(vols, segs, axis=0, image_size=8).images.shape == (20, 1, 8, 8)
    windowed = load_nifti(vols[:1], segs[:1], window=(0.0, 500.0))
    import nibabel as nib

    raw = np.asarray(nib.load(vols[0]).get_fdata())[:, :, 1]  # type: ignore[attr-defined]
    np.testing.assert_allclose(windowed.images[1, 0], np.clip(raw, 0, 500) / 500, atol=1e-6)
    sp = split_dataset(every, label_budget=1, val_fraction=0.0, test_fraction=0.4, seed=0)
    assert isinstance(sp.test, VolumeSlices) and isinstance(sp.labeled, VolumeSlices)
    assert len(set(sp.test.volumes.tolist()) & set(sp.labeled.volumes.tolist())) == 0
    assert len(sp.test) == 5  # a whole volume, empty slices too


def test_load_nifti_says_once_that_slices_are_stretched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seg = np.zeros((10, 12, 3), np.uint8)
    seg[2:5, 2:5, 1] = 1
    vol, mask = (
        _write_nifti(tmp_path / "v.nii.gz", seg.astype(np.float32)),
        _write_nifti(tmp_path / "m.nii.gz", seg),
    )
    with caplog.at_level(logging.INFO, logger="rndpo"):
        load_nifti([vol, vol], [mask, mask], image_size=8)
    lines = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert lines == [
        "load_nifti: 6 slices of 10x12 pixels resized to 8x8 (a non-square slice is stretched; the aspect"
        " ratio is not kept)"
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rndpo"):
        load_nifti([vol], [mask])  # no resizing: nothing to say
    assert not caplog.records


def test_volume_slices_need_volume_keys_and_stay_slices_when_subset() -> None:
    ds = _tiny(4)
    with pytest.raises(ValueError, match=r"groups must hold the volume key of each slice.*got None"):
        VolumeSlices(ds.images, ds.masks, ds.ids)
    with pytest.raises(ValueError, match=r"images must be 2D slices \(N, C, H, W\)"):
        VolumeSlices(ds.images[:, :, None], ds.masks[:, None], ds.ids, np.zeros(4, np.int64))
    slices = VolumeSlices(ds.images, ds.masks, ds.ids, np.array([3, 3, 5, 5]))
    sub = slices.subset(np.array([2, 0]))
    assert isinstance(sub, VolumeSlices)
    np.testing.assert_array_equal(sub.volumes, [5, 3])


def test_load_nifti_errors_name_the_file(tmp_path: Path) -> None:
    vol = _write_nifti(tmp_path / "ct.nii.gz", np.zeros((6, 6, 3), np.float32))
    labels = np.zeros((6, 6, 3), np.uint8)
    labels[1:3, 1:3, 1] = 1
    labels[3:5, 3:5, 1] = 2
    seg = _write_nifti(tmp_path / "labels.nii.gz", labels)
    with pytest.raises(
        ValueError, match=r"mask .*labels\.nii\.gz: mask must be binary .* got values \{0, 1, 2\}"
    ):
        load_nifti([vol], [seg])
    ds = load_nifti([vol], [seg], labels=[2])
    assert ds.masks.sum() == 4
    small = _write_nifti(tmp_path / "small.nii.gz", np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(
        ValueError, match=r"mask .*small\.nii\.gz has shape \(6, 5, 3\) but image .*ct\.nii\.gz"
    ):
        load_nifti([vol], [small])
    empty = _write_nifti(tmp_path / "empty.nii.gz", np.zeros((6, 6, 3), np.uint8))
    assert len(load_nifti([vol], [empty])) == 3  # empty slices are kept
    with pytest.raises(ValueError, match=r"no slice along axis 2 has foreground in .*empty\.nii\.gz"):
        load_nifti([vol], [empty], skip_empty=True)
    with pytest.raises(FileNotFoundError, match=r"gone\.nii\.gz"):
        load_nifti([tmp_path / "gone.nii.gz"], [seg])
    with pytest.raises(ValueError, match="mask_paths must have one entry per image, expected 1, got 2"):
        load_nifti([vol], [seg, seg])
    with pytest.raises(ValueError, match="axis must be one of 0, 1, 2"):
        load_nifti([vol], [seg], axis=3)
