"""Volumes from npz (load_npz_volumes) and the label-value scheme (LabelScheme)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rndpo.data.label_scheme import LabelScheme
from rndpo.data.npz_volumes import load_npz_volumes

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "msd_hippocampus" / "data.npz"


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(1, 600), min_size=1, max_size=5, unique=True),
    seed=st.integers(0, 2**31 - 1),
)
def test_label_values_map_to_classes_and_back(values: list[int], seed: int) -> None:
    scheme = LabelScheme.from_names({f"s{v}": v for v in values})
    assert scheme.label_values == (0, *sorted(values)) and scheme.class_names[0] == "background"
    raw = np.random.default_rng(seed).choice(np.array([0, *values]), size=(3, 4, 5))
    classes = scheme.to_classes(raw, "f")
    assert classes.dtype == np.uint8 and int(classes.max()) < scheme.num_classes
    for c, v in enumerate(scheme.label_values):  # the slow way: class c exactly where the file says v
        np.testing.assert_array_equal(classes == c, raw == v)
    np.testing.assert_array_equal(scheme.to_values(classes), raw)


def test_label_scheme_errors_name_the_file_and_value() -> None:
    scheme = LabelScheme.from_names({"anterior": 1, "posterior": 2})
    with pytest.raises(ValueError, match=r"file case_7\.nii\.gz: holds the value 4, which data\.labels"):
        scheme.to_classes(np.array([[0, 1], [4, 2]]), "case_7.nii.gz")
    with pytest.raises(ValueError, match="overlapping region labels are not supported"):
        LabelScheme.from_names({"whole": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="distinct value"):
        LabelScheme(("background", "a", "b"), (0, 1, 1))


def _write(path: Path, n: int = 4, channels: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (n, 5, 6, 7) + ((channels,) if channels else ())
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    masks = rng.choice(np.array([0, 1, 4], dtype=np.uint8), size=(n, 5, 6, 7))
    np.savez(
        path, images=images, masks=masks, spacing=np.tile([3.0, 1.0, 0.5], (n, 1)), groups=np.arange(n) // 2
    )
    return images, masks


def test_npz_volumes_load_as_3d_label_maps(tmp_path: Path) -> None:
    images, masks = _write(tmp_path / "vols.npz")
    ds = load_npz_volumes(tmp_path / "vols.npz", labels={"a": 1, "b": 4})
    assert ds.images.shape == (4, 1, 5, 6, 7) and ds.spatial_dims == 3 and ds.num_classes == 3
    np.testing.assert_allclose(ds.images[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.masks, np.select([masks == 1, masks == 4], [1, 2], 0))
    assert ds.class_names == ("background", "a", "b") and ds.label_values == (0, 1, 4)
    np.testing.assert_array_equal(ds.spacing, np.tile([3.0, 1.0, 0.5], (4, 1)))
    np.testing.assert_array_equal(ds.groups, [0, 0, 1, 1])
    _write(tmp_path / "rgb.npz", channels=2)
    assert load_npz_volumes(tmp_path / "rgb.npz").images.shape == (4, 2, 5, 6, 7)


def test_npz_volume_errors(tmp_path: Path) -> None:
    _write(tmp_path / "v.npz")
    with pytest.raises(ValueError, match=r"v\.npz: holds the value 4, which data\.labels does not"):
        load_npz_volumes(tmp_path / "v.npz", labels={"a": 1})
    np.savez(tmp_path / "flat.npz", images=np.zeros((2, 3, 3), np.uint8), masks=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"images must be \(N, D, H, W\) or \(N, D, H, W, C\) volumes"):
        load_npz_volumes(tmp_path / "flat.npz")
    with pytest.raises(FileNotFoundError, match="npz file not found"):
        load_npz_volumes(tmp_path / "none.npz")


@pytest.mark.skipif(not SHARED.is_file(), reason=f"real data not present at {SHARED}")
def test_the_shared_hippocampus_volumes_load_with_their_structures() -> None:
    ds = load_npz_volumes(SHARED, labels={"anterior": 1, "posterior": 2})
    assert ds.images.shape == (240, 1, 48, 64, 48) and ds.num_classes == 3
    assert ds.structures == ("anterior", "posterior") and ds.groups is not None
    assert set(np.unique(ds.masks[:5]).tolist()) == {0, 1, 2}
