"""rndpo.proposals on label maps: 3D multi-class banks (validation, memory-mapped storage) and
generate_proposals with tiny 3D / 2D multi-class conv models, against slow references."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from rndpo.proposals import TTA_FLIPS_3D, ProposalBank, ProposalConfig, ball, generate_proposals
from rndpo.proposals.sources import _morph, _morph_labels

C = 4
SHAPE = (5, 6, 7)  # (D, H, W)


class TinyNet(nn.Module):
    """conv - relu - dropout - conv, 2D or 3D, ``classes`` output channels."""

    def __init__(self, classes: int, dims: int = 3, kernel: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.first = conv(1, 8, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(0.3)
        self.last = conv(8, classes, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.drop(torch.relu(self.first(x))))


def _images(n: int = 3, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 1, *shape)).astype(np.float32)


def _eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _run(model: nn.Module, images: np.ndarray, **kwargs: object) -> ProposalBank:
    options: dict[str, object] = {"progress": False, "batch_size": 2}
    options.update(kwargs)
    return generate_proposals(model, images, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# slow references


def slow_prior_shift(probs: np.ndarray, t: float) -> np.ndarray:
    """argmax_c p_c w_c per voxel, w_0 = 1, w_c = (1 - t) / t, ties to the lower label."""
    out = np.zeros((probs.shape[0], *probs.shape[2:]), np.uint8)
    for i in range(probs.shape[0]):
        for v in itertools.product(*(range(s) for s in probs.shape[2:])):
            weighted = [
                float(probs[(i, c, *v)]) * (1.0 if c == 0 else (1 - t) / t) for c in range(probs.shape[1])
            ]
            out[(i, *v)] = weighted.index(max(weighted))
    return out


def slow_morph_labels(lab: np.ndarray, radius: int, dilate: bool, classes: int) -> np.ndarray:
    """Per-structure dilation into the background (nearest structure, ties to the lower label) or
    erosion (every voxel within the ball, inside the image, has the same label), one voxel at a time."""
    voxels = list(itertools.product(*(range(s) for s in lab.shape)))
    out = lab.copy()
    for v in voxels:
        if dilate and lab[v] == 0:
            best = None
            for u in voxels:
                d2 = sum((a - b) ** 2 for a, b in zip(u, v, strict=True))
                if lab[u] != 0 and d2 <= radius**2 and (best is None or (d2, lab[u]) < best):
                    best = (d2, int(lab[u]))
            if best is not None:
                out[v] = best[1]
        elif not dilate and lab[v] != 0:
            for u in voxels:
                if sum((a - b) ** 2 for a, b in zip(u, v, strict=True)) <= radius**2 and lab[u] != lab[v]:
                    out[v] = 0
                    break
    assert classes > int(lab.max(initial=0))
    return out


# --------------------------------------------------------------------------------------------------------
# generation


def test_shapes_labels_and_probabilities() -> None:
    model, images = TinyNet(C), _images()
    gt = np.random.default_rng(1).integers(0, C, (3, *SHAPE)).astype(np.uint8)
    with pytest.warns(UserWarning, match="'snapshot' source is skipped"):
        bank = _run(model, images, config=ProposalConfig(k=9), ground_truth=gt)
    assert bank.num_classes == C and bank.masks.shape == (3, 9, *SHAPE) and bank.masks.dtype == np.uint8
    assert int(bank.masks.max()) < C and len(np.unique(bank.masks)) == C
    assert bank.probs is not None and bank.probs.shape == (3, C, *SHAPE) and bank.probs.dtype == np.float32
    expected = torch.softmax(_eval_logits(model, torch.from_numpy(images)), dim=1).numpy()
    np.testing.assert_allclose(bank.probs, expected, atol=1e-6)
    np.testing.assert_array_equal(bank.ground_truth, gt)
    assert bank.sources == ("mc_dropout", "tta", "threshold", "morph") * 2 + ("mc_dropout",)
    assert not model.training


def test_every_source_produces_proposals() -> None:
    model, images = TinyNet(C), _images()
    x = torch.from_numpy(images)
    argmax = _eval_logits(model, x).argmax(1).numpy()
    snaps = [TinyNet(C, seed=5).state_dict(), TinyNet(C, seed=6)]
    for source in ("mc_dropout", "tta", "threshold", "snapshot", "morph"):
        bank = _run(model, images, config=ProposalConfig(k=4, sources=(source,)), snapshots=snaps)
        assert bank.sources == (source,) * 4 and int(bank.masks.max()) < C, source
        probs = bank.probs
        assert probs is not None
        if source == "threshold":  # t = 0.3, 0.4333, 0.5667, 0.7: nested foregrounds, same structures
            for j, t in enumerate(np.linspace(0.3, 0.7, 4)):
                np.testing.assert_array_equal(bank.masks[:, j], slow_prior_shift(probs, float(t)))
            for j in range(3):
                wide, narrow = bank.masks[:, j], bank.masks[:, j + 1]
                assert np.all(wide[narrow > 0] == narrow[narrow > 0])
                assert (wide > 0).sum() > (narrow > 0).sum()
        elif source == "snapshot":
            for j, snap in enumerate((TinyNet(C, seed=5), TinyNet(C, seed=6))):
                np.testing.assert_array_equal(bank.masks[:, j], _eval_logits(snap, x).argmax(1).numpy())
                np.testing.assert_array_equal(bank.masks[:, j + 2], bank.masks[:, j])
        elif source == "mc_dropout":
            assert len({bank.masks[:, j].tobytes() for j in range(4)}) == 4
            assert not np.array_equal(bank.masks[:, 0], argmax)
        elif source == "tta":  # flip, predict, flip the logits back
            for j in range(4):
                axes = TTA_FLIPS_3D[j]
                expected = _eval_logits(model, x.flip(axes)).flip(axes).argmax(1).numpy()
                np.testing.assert_array_equal(bank.masks[:, j], expected)
        else:
            base = np.argmax(probs, axis=1)
            for j, (radius, dilate) in enumerate(((1, True), (1, False), (2, True), (2, False))):
                for i in range(3):
                    np.testing.assert_array_equal(
                        bank.masks[i, j], slow_morph_labels(base[i], radius, dilate, C)
                    )


def test_flip_equivariant_model_gives_identical_tta_proposals() -> None:
    model = TinyNet(C, kernel=1)  # 1x1x1 convolutions commute with every flip
    images = _images()
    bank = _run(model, images, config=ProposalConfig(k=7, sources=("tta",)))
    base = _eval_logits(model, torch.from_numpy(images)).argmax(1).numpy()
    for j in range(7):
        np.testing.assert_array_equal(bank.masks[:, j], base)
    # a model that is not equivariant gives other proposals for some flips
    other = _run(TinyNet(C), images, config=ProposalConfig(k=7, sources=("tta",)))
    assert len({other.masks[:, j].tobytes() for j in range(7)}) > 1


def test_determinism_under_seed() -> None:
    model, images = TinyNet(C), _images()
    cfg = ProposalConfig(k=8, sources=("mc_dropout", "tta", "threshold", "morph"))
    a, b = _run(model, images, config=cfg, seed=3), _run(model, images, config=cfg, seed=3)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.probs, b.probs)
    before = torch.random.get_rng_state()
    c = _run(model, images, config=cfg, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    mc = [j for j, s in enumerate(a.sources) if s == "mc_dropout"]
    others = [j for j in range(8) if j not in mc]
    assert not np.array_equal(a.masks[:, mc], c.masks[:, mc])
    np.testing.assert_array_equal(a.masks[:, others], c.masks[:, others])


def test_two_dimensional_multi_class_and_two_channel_softmax() -> None:
    images = _images(shape=(9, 10))
    bank = _run(TinyNet(3, dims=2), images, config=ProposalConfig(k=8, sources=("tta",)))
    assert bank.num_classes == 3 and bank.masks.shape == (3, 8, 9, 10) and int(bank.masks.max()) < 3
    # two output channels: softmax, a binary bank whose probs are the class-1 probabilities
    model = TinyNet(2)
    two = _run(model, _images(), config=ProposalConfig(k=4, sources=("threshold", "tta")))
    assert two.num_classes == 2 and two.probs is not None and two.probs.shape == (3, *SHAPE)
    expected = torch.softmax(_eval_logits(model, torch.from_numpy(_images())), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(two.probs, expected, atol=1e-6)
    np.testing.assert_array_equal(two.masks[:, 0], two.probs >= 0.3)
    assert set(np.unique(two.masks).tolist()) <= {0, 1}


def test_generation_errors() -> None:
    model, images = TinyNet(C), _images()
    cfg = ProposalConfig(k=1, sources=("threshold",))
    with pytest.raises(ValueError, match=r"ground_truth must be uint8 labels 0 to 3 \(num_classes = 4\)"):
        _run(model, images, config=cfg, ground_truth=np.full((3, *SHAPE), 4, np.uint8))
    with pytest.raises(ValueError, match=r"ground_truth must have shape \(N, D, H, W\) = \(3, 5, 6, 7\)"):
        _run(model, images, config=cfg, ground_truth=np.zeros((3, 5, 6), np.uint8))
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\) or \(N, C, D, H, W\)"):
        _run(model, images[..., None], config=cfg)


# --------------------------------------------------------------------------------------------------------
# morphology


@st.composite
def label_maps(draw: st.DrawFn, classes: int | None = None) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dims = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.integers(1, 7 if dims == 2 else 4)) for _ in range(dims))
    c = classes if classes is not None else draw(st.integers(2, 5))
    background = draw(st.floats(0.0, 0.9))
    lab = np.where(rng.random(shape) < background, 0, rng.integers(1, c, shape)).astype(np.uint8)
    return lab, c


@given(label_maps(), st.integers(1, 2), st.booleans())
def test_label_morphology_matches_loop(case: tuple[np.ndarray, int], radius: int, dilate: bool) -> None:
    lab, classes = case
    got = _morph_labels(lab[None], radius, dilate, classes)[0]
    np.testing.assert_array_equal(got, slow_morph_labels(lab, radius, dilate, classes))


@given(label_maps(classes=2), st.integers(1, 3), st.booleans())
def test_one_structure_morphology_is_binary_morphology(
    case: tuple[np.ndarray, int], radius: int, dilate: bool
) -> None:
    lab = case[0][None]
    np.testing.assert_array_equal(_morph_labels(lab, radius, dilate, 2), _morph(lab > 0, radius, dilate))


def test_ball_radii_in_voxels() -> None:
    assert ball(1, 3).sum() == 7 and ball(2, 3).sum() == 33 and ball(2, 2).sum() == 13
    assert ball(2, 3).shape == (5, 5, 5)
    point = np.zeros((1, 9, 9, 9), bool)
    point[0, 4, 4, 4] = True
    grown = _morph_labels(point.astype(np.uint8) * 2, 3, True, 3)[0]
    expected = np.zeros((9, 9, 9), bool)
    expected[1:8, 1:8, 1:8] = ball(3, 3)
    np.testing.assert_array_equal(grown > 0, expected)
    assert set(np.unique(grown).tolist()) == {0, 2}


# --------------------------------------------------------------------------------------------------------
# the bank


def _bank3d(**kwargs: object) -> ProposalBank:
    n, k, rng = 3, 4, np.random.default_rng(0)
    raw = rng.random((n, C, *SHAPE))
    fields: dict[str, object] = {
        "images": rng.random((n, 2, *SHAPE), dtype=np.float32),
        "masks": rng.integers(0, C, (n, k, *SHAPE)).astype(np.uint8),
        "probs": (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32),
        "ground_truth": rng.integers(0, C, (n, *SHAPE)).astype(np.uint8),
        "sources": tuple(f"s{j}" for j in range(k)),
        "num_classes": C,
    }
    fields.update(kwargs)
    return ProposalBank(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip_3d_label_maps(tmp_path: Path, mmap: bool) -> None:
    bank = _bank3d()
    bank.save(tmp_path / "bank")
    meta = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert meta["format"] == "rndpo-proposal-bank/2" and meta["num_classes"] == C
    loaded = ProposalBank.load(tmp_path / "bank", mmap=mmap)
    assert loaded.num_classes == C and loaded.spatial_shape == SHAPE and loaded.sources == bank.sources
    for name in ("images", "masks", "probs", "ground_truth"):
        got = getattr(loaded, name)
        assert isinstance(got, np.memmap) is mmap, name
        np.testing.assert_array_equal(got, getattr(bank, name))
        assert got.dtype == getattr(bank, name).dtype
    sub = loaded.subset([2, 0])
    assert sub.num_classes == C
    np.testing.assert_array_equal(sub.masks, bank.masks[[2, 0]])
    # a binary bank keeps the format of earlier versions
    binary = _bank3d(masks=(bank.masks > 1).astype(np.uint8), probs=None, ground_truth=None, num_classes=2)
    binary.save(tmp_path / "binary")
    assert json.loads((tmp_path / "binary" / "bank.json").read_text())["format"] == "rndpo-proposal-bank/1"
    assert ProposalBank.load(tmp_path / "binary").num_classes == 2
    meta.pop("num_classes")
    (tmp_path / "bank" / "bank.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"missing \['num_classes'\]"):
        ProposalBank.load(tmp_path / "bank")


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        (
            {"masks": np.full((3, 4, *SHAPE), C, np.uint8)},
            ValueError,
            r"masks must hold labels 0 to 3 \(num_classes = 4\), got values up to 4",
        ),
        (
            {"ground_truth": np.full((3, *SHAPE), 9, np.uint8)},
            ValueError,
            "ground_truth must hold labels 0 to 3",
        ),
        (
            {"masks": np.zeros((3, 4, 5, 6), np.uint8)},
            ValueError,
            r"masks must be uint8 \(N, K, D, H, W\) with \(N, D, H, W\) = \(3, 5, 6, 7\)",
        ),
        (
            {"probs": np.full((3, *SHAPE), 0.5, np.float32)},
            ValueError,
            r"probs must be float32 \(N, C, D, H, W\) = \(3, 4, 5, 6, 7\)",
        ),
        (
            {"probs": np.full((3, C, *SHAPE), 0.5, np.float32)},
            ValueError,
            "probs must sum to 1 over the class axis",
        ),
        (
            {"probs": np.full((3, C, *SHAPE), -0.25, np.float32)},
            ValueError,
            r"probs must be finite probabilities in \[0, 1\]",
        ),
        ({"num_classes": 1}, ValueError, "num_classes must be an int from 2 to 255, got 1"),
        ({"num_classes": 4.0}, TypeError, "num_classes must be an int from 2 to 255, got float"),
        (
            {"images": np.zeros((3, 1, 2, *SHAPE), np.float32)},
            ValueError,
            r"images must be float32 \(N, C, H, W\) or \(N, C, D, H, W\)",
        ),
    ],
)
def test_label_bank_validation(changes: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _bank3d(**changes)


def test_replace_keeps_validation() -> None:
    bank = _bank3d()
    with pytest.raises(ValueError, match="masks must be binary"):
        dataclasses.replace(bank, num_classes=2, probs=None)


# --------------------------------------------------------------------------------------------------------
# sliding windows


def test_sliding_windows() -> None:
    images = _images(n=2, shape=(6, 8, 8))
    cfg = ProposalConfig(k=5, sources=("mc_dropout", "tta", "threshold", "snapshot", "morph"))
    model = TinyNet(C, kernel=1)  # no context beyond a voxel: windows change nothing but rounding
    snaps = [TinyNet(C, kernel=1, seed=3)]
    whole = _run(model, images, config=cfg, snapshots=snaps)
    windowed = _run(model, images, config=cfg, snapshots=snaps, roi_size=(4, 4, 4))
    assert whole.probs is not None and windowed.probs is not None
    np.testing.assert_allclose(windowed.probs, whole.probs, atol=1e-5)
    deterministic = [j for j, s in enumerate(cfg.sources) if s != "mc_dropout"]
    agree = (windowed.masks[:, deterministic] == whole.masks[:, deterministic]).mean()
    assert agree > 0.999
    # windows as large as the volume are the whole-volume pass; MC-dropout stays seeded per window
    np.testing.assert_array_equal(
        _run(model, images, config=cfg, snapshots=snaps, roi_size=16).masks, whole.masks
    )
    again = _run(model, images, config=cfg, snapshots=snaps, roi_size=(4, 4, 4))
    np.testing.assert_array_equal(again.masks, windowed.masks)
    with pytest.raises(ValueError, match=r"roi_size must be None, a positive int or 3 positive ints"):
        _run(model, images, config=cfg, snapshots=snaps, roi_size=(4, 4))
