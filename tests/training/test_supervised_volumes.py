"""rndpo.training.supervised on 3D volumes and multi-class label maps: the multi-class loss against MONAI,
N-D augmentation that keeps label maps, the per-structure validation Dice, head / data mismatches, and
seeded training runs on synthetic blobs and (when present) the shared hippocampus volumes."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import disks
from rndpo.config import BaseTrainConfig
from rndpo.data import SegmentationDataset
from rndpo.nets import build_network
from rndpo.nets.unet import UNet
from rndpo.training import augment_batch, mean_structure_dice, segmentation_loss, train_base

HIPPOCAMPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "msd_hippocampus" / "data.npz"

FAST = BaseTrainConfig(
    steps=60,
    batch_size=4,
    lr=1e-2,
    eval_every=20,
    n_snapshots=0,
    patience=0,
    cooldown=0.0,
    warmup_steps=0,
    schedule="constant",
    augment=False,
)


def blobs(n: int, size: int = 16, seed: int = 0, classes: int = 3, dims: int = 3) -> SegmentationDataset:
    """n noisy volumes (n, 1, size, size, size) (images (n, 1, size, size) for dims 2): a bright ball
    (class 1) and, for 3 classes, a dimmer box (class 2, drawn over the ball) at random places."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[(slice(0, size),) * dims]
    masks = np.zeros((n, *(size,) * dims), np.uint8)
    for i in range(n):
        c = rng.uniform(size * 0.3, size * 0.7, dims)
        r = rng.uniform(size * 0.15, size * 0.25)
        masks[i][sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True)) < r * r] = 1
        if classes > 2:
            lo = rng.integers(0, size - 6, dims)
            side = rng.integers(4, 7, dims)
            masks[i][tuple(slice(a, a + w) for a, w in zip(lo, side, strict=True))] = 2
    level = np.array([0.2, 0.8, 0.5], np.float32)[masks]
    images = (level + rng.normal(0, 0.1, masks.shape)).astype(np.float32)[:, None]
    return SegmentationDataset(images, masks, np.array([f"blob{i}" for i in range(n)]), num_classes=classes)


def _unet3d(out: int, channels: tuple[int, ...] = (4, 8, 16)) -> UNet:
    torch.manual_seed(0)
    return UNet(out_channels=out, channels=channels, dropout=0.0, spatial_dims=3, norm="instance")


# ---- the multi-class loss ----


@pytest.mark.parametrize(
    ("shape", "smooth"), [((2, 3, 5, 6), 1.0), ((2, 4, 3, 5, 4), 1e-5), ((1, 2, 4, 4, 4), 1.0)]
)
def test_multi_class_loss_is_monai_dice_ce(shape: tuple[int, ...], smooth: float) -> None:
    monai_losses = pytest.importorskip("monai.losses")
    reference = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=smooth, smooth_dr=smooth)
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        logits = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
        target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
        got = segmentation_loss(logits, target, smooth=smooth)
        expected = reference(logits, target.unsqueeze(1))
        assert math.isclose(float(got), float(expected), rel_tol=1e-9), (seed, float(got), float(expected))
        got32 = segmentation_loss(logits.to(torch.bfloat16), target.to(torch.uint8), smooth=smooth)
        assert got32.dtype == torch.float32 and math.isclose(float(got32), float(expected), rel_tol=0.05)


def test_multi_class_loss_closed_form_and_gradcheck() -> None:
    # zero logits over C = 4 classes: CE = log 4; softmax 1/4 everywhere; 2 voxels labelled 0 and 3:
    # classes 0 and 3: Dice (2 * 1/4 + s) / (2/4 + 1 + s); classes 1 and 2: s / (2/4 + s)
    s = 1.0
    logits = torch.zeros(1, 4, 1, 2, dtype=torch.float64)
    target = torch.tensor([[[0, 3]]])
    present, absent = (0.5 + s) / (1.5 + s), s / (0.5 + s)
    expected = math.log(4) + 1 - (2 * present + 2 * absent) / 4
    assert math.isclose(float(segmentation_loss(logits, target)), expected, rel_tol=1e-12)
    z = torch.randn(2, 3, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 3, 2, 2))
    assert torch.autograd.gradcheck(lambda z: segmentation_loss(z, labels), (z,))


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.long),
            ValueError,
            r"target must be a label map \(B, \*S\) = \(2, 4, 4\)",
        ),
        (torch.zeros(2, 4, 4), TypeError, "target must be an integer label map"),
        (torch.full((2, 4, 4), 3), ValueError, r"target must hold labels 0..2 .* got values in \[3, 3\]"),
    ],
)
def test_multi_class_loss_bad_target(target: torch.Tensor, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        segmentation_loss(torch.zeros(2, 3, 4, 4), target)


# ---- augmentation in N-D ----


def _candidates(volume: np.ndarray, square: bool) -> list[np.ndarray]:
    """Every flip of (D, H, W) along any axes, then any in-plane 90-degree rotation (square planes)."""
    out = []
    for flips in itertools.product((False, True), repeat=3):
        v = volume
        for axis, flip in enumerate(flips):
            v = np.flip(v, axis) if flip else v
        for k in range(4 if square else 1):
            out.append(np.rot90(v, k, axes=(1, 2)))
    return out


@pytest.mark.parametrize("square", [True, False])
def test_volume_augmentation_moves_image_and_labels_together(square: bool) -> None:
    """Without the small rotation, each augmented label map is one flip / in-plane rot90 of the input,
    every axis gets flipped in some draw, and the image follows the same move (its intensity order by
    label is kept: image = label / 2 and the intensity maps are monotone)."""
    rng = np.random.default_rng(0)
    shape = (6, 7, 7) if square else (6, 7, 5)
    labels = rng.integers(0, 3, (12, 1, *shape)).astype(np.uint8)
    x, y = augment_batch(
        torch.from_numpy(labels / 2).float(),
        torch.from_numpy(labels),
        torch.Generator().manual_seed(1),
        max_rotation=0,
    )
    assert y.dtype == torch.uint8 and y.shape == labels.shape and x.shape == labels.shape
    flipped_depth = 0
    for b in range(12):
        got = y[b, 0].numpy()
        matches = [i for i, c in enumerate(_candidates(labels[b, 0], square)) if np.array_equal(c, got)]
        assert matches, b
        flipped_depth += any(i // (4 if square else 1) >= 4 for i in matches)
        xi = x[b, 0].numpy()
        for lo, hi in ((0, 1), (1, 2)):
            assert xi[got == lo].max() <= xi[got == hi].min()
    assert 0 < flipped_depth < 12


@pytest.mark.parametrize(("axes", "moves"), [((), {0}), ((0,), {0, 4}), ((1, 2), {0, 1, 2, 3})])
def test_flip_axes_limits_the_flips(axes: tuple[int, ...], moves: set[int]) -> None:
    """Only the allowed axes are flipped (candidate i of _candidates: flips of D, H, W as bits 4, 2, 1)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (16, 1, 4, 5, 6)).astype(np.uint8)
    gen = torch.Generator().manual_seed(2)
    _, y = augment_batch(
        torch.rand(16, 1, 4, 5, 6), torch.from_numpy(labels), gen, max_rotation=0, flip_axes=axes
    )
    seen = set()
    for b in range(16):
        found = [
            i for i, c in enumerate(_candidates(labels[b, 0], False)) if np.array_equal(c, y[b, 0].numpy())
        ]
        assert found and set(found) <= moves, (b, found)
        seen.update(found)
    assert seen == moves
    with pytest.raises(ValueError, match=r"flip_axes must be spatial axes in \[0, 3\), got \(3,\)"):
        augment_batch(torch.rand(1, 1, 4, 5, 6), torch.from_numpy(labels[:1]), gen, flip_axes=(3,))


@pytest.mark.parametrize("spatial", [(12, 12), (5, 12, 12)])
def test_rotated_label_maps_stay_label_maps(spatial: tuple[int, ...]) -> None:
    masks = np.zeros((4, 1, *spatial), np.uint8)
    masks[..., 3:7, 2:9] = 2
    masks[..., 5:10, 5:7] = 1
    images = torch.rand(4, 2, *spatial)
    gen = torch.Generator().manual_seed(0)
    x, y = augment_batch(images, torch.from_numpy(masks), gen, max_rotation=30.0)
    assert x.shape == images.shape and y.dtype == torch.uint8
    assert set(torch.unique(y).tolist()) <= {0, 1, 2}
    for c in (1, 2):  # nearest-neighbour rotation keeps each structure's size roughly
        before, after = (masks == c).sum(), int((y == c).sum())
        assert abs(after - before) <= 0.2 * before


# ---- the validation Dice ----


def _oracle_structure_dice(pred: np.ndarray, target: np.ndarray, classes: int) -> float:
    per_class = []
    for c in range(1, classes):
        values = []
        for p, t in zip(pred, target, strict=True):
            a, b = int(np.sum(p == c)), int(np.sum(t == c))
            if a + b:
                values.append(2 * int(np.sum((p == c) & (t == c))) / (a + b))
        if values:
            per_class.append(sum(values) / len(values))
    return sum(per_class) / len(per_class) if per_class else 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5), st.integers(1, 4), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_mean_structure_dice_matches_the_oracle(classes: int, n: int, seed: int, sparsity: float) -> None:
    rng = np.random.default_rng(seed)
    shape = (n, 3, 4, 2)
    pred = np.where(rng.random(shape) < sparsity, rng.integers(0, classes, shape), 0).astype(np.uint8)
    target = np.where(rng.random(shape) < sparsity, rng.integers(0, classes, shape), 0).astype(np.uint8)
    got = mean_structure_dice(pred, target, classes)
    assert math.isclose(got, _oracle_structure_dice(pred, target, classes), rel_tol=1e-12)


# ---- training: mismatches ----


@pytest.mark.parametrize(
    ("model", "labeled", "val", "kwargs", "error", "match"),
    [
        (
            lambda: UNet(channels=(4, 8)),
            blobs(2, 8, classes=2),
            blobs(1, 8, classes=2),
            {},
            ValueError,
            r"model has spatial_dims = 2, but labeled holds 3D volumes \(N, C, D, H, W\): the network needs"
            r" spatial_dims = 3",
        ),
        (
            lambda: _unet3d(1),
            blobs(2, 8),
            blobs(1, 8),
            {},
            ValueError,
            r"model has out_channels = 1, but labeled has num_classes = 3: the network needs"
            r" out_channels = 3",
        ),
        (
            lambda: _unet3d(3),
            blobs(2, 8, classes=2),
            blobs(1, 8, classes=2),
            {},
            ValueError,
            r"out_channels = 3, but labeled has num_classes = 2: .* = 2 \(softmax over the classes\) or 1",
        ),
        (
            lambda: _unet3d(3),
            blobs(2, 8),
            disks(2),
            {},
            ValueError,
            r"val must hold 3D volumes \(N, C, D, H, W\) like labeled, got 2D images",
        ),
        (
            lambda: _unet3d(3),
            blobs(2, 8),
            blobs(1, 8, classes=2),
            {},
            ValueError,
            "val.num_classes must be labeled.num_classes = 3, got 2",
        ),
        (
            lambda: _unet3d(3),
            blobs(2, 8),
            blobs(1, 8),
            {"patch_size": (4, 4)},
            ValueError,
            "patch_size must be 3",
        ),
        (
            lambda: _unet3d(3),
            blobs(2, 8),
            blobs(1, 8),
            {"foreground_fraction": -0.1},
            ValueError,
            r"foreground_fraction must be a number in \[0, 1\]",
        ),
        (lambda: _unet3d(3), blobs(2, 8), blobs(1, 8), {"amp": 1}, TypeError, "amp must be a bool or None"),
        (
            lambda: _unet3d(3),
            blobs(2, 8),
            blobs(1, 8),
            {"flip_axes": (0, 3)},
            ValueError,
            r"flip_axes must be None or spatial axes in \[0, 3\), got \(0, 3\)",
        ),
    ],
)
def test_mismatches_are_named(
    model: object, labeled: object, val: object, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        train_base(model(), labeled, val, FAST, progress=False, **kwargs)  # type: ignore[arg-type, operator]


def test_an_undeclared_head_is_found_by_a_forward_pass() -> None:
    """A plain module (no out_channels attribute, no registry record) is checked by its logits."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1))
    with pytest.raises(ValueError, match="model has out_channels = 2, but labeled has num_classes = 3"):
        train_base(model, blobs(2, 8), blobs(1, 8), FAST, progress=False)


# ---- training runs ----


def test_volumes_of_several_structures_are_learned() -> None:
    """Synthetic 3D blobs of two structures, random patches of 12^3 from 16^3 volumes (with
    augmentation): validation mean per-structure Dice rises well above chance (about 0.9 at any seed),
    the loss falls by more than half, every parameter moves, and the same seed gives the same weights."""
    cfg = dataclasses.replace(FAST, steps=120, eval_every=40, augment=True, max_rotation=10.0)
    model = _unet3d(3)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    labeled, val = blobs(12), blobs(6, seed=1)
    result = train_base(model, labeled, val, cfg, progress=False, patch_size=(12, 12, 12))
    assert [h[0] for h in result.history] == [40, 80, 120]
    assert result.best_val_dice > 0.7, result.history
    assert result.history[-1][1] < 0.5 * result.history[0][1]
    for name, param in model.named_parameters():
        assert not torch.equal(param.detach(), initial[name]), name
    again = train_base(_unet3d(3), labeled, val, cfg, progress=False, patch_size=(12, 12, 12))
    assert again.history == result.history
    assert all(torch.equal(again.state_dict[k], v) for k, v in result.state_dict.items())


def test_2d_images_of_several_structures_are_learned() -> None:
    """2D blobs of 2 structures, whole images, with augmentation (label maps rotated by nearest
    neighbour): the loss falls by half and the per-structure Dice passes 0.5."""
    labeled, val = blobs(24, 24, dims=2), blobs(8, 24, seed=1, dims=2)
    torch.manual_seed(0)
    model = UNet(out_channels=3, channels=(8, 16, 32), dropout=0.0)
    cfg = dataclasses.replace(FAST, steps=90, eval_every=30, batch_size=8, augment=True)
    result = train_base(model, labeled, val, cfg, progress=False)
    assert result.history[-1][1] < 0.5 * result.history[0][1], result.history
    assert result.best_val_dice > 0.5, result.history


@pytest.mark.parametrize("heads", [1, 2])
def test_binary_volumes_train_with_either_head(heads: int) -> None:
    """A binary dataset trains a 1-logit (sigmoid) head or a 2-channel (softmax) head, whole volumes."""
    result = train_base(
        _unet3d(heads), blobs(6, 12, classes=2), blobs(3, 12, seed=1, classes=2), FAST, progress=False
    )
    assert result.best_val_dice > 0.5, result.history


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [
        ("monai.UNet", {"channels": (4, 8, 16), "strides": (2, 2)}, 16),
        ("monai.BasicUNet", {"features": (4, 4, 8, 8, 16, 4)}, 32),  # four poolings: 32 leaves 2^3
        ("monai.SegResNet", {"init_filters": 4, "norm": ("group", {"num_groups": 2})}, 16),
    ],
)
def test_monai_networks_train_on_volumes_of_several_structures(
    name: str, kwargs: dict[str, object], size: int
) -> None:
    pytest.importorskip("monai")
    torch.manual_seed(0)
    model = build_network(name, 3, 1, 3, **kwargs)
    cfg = dataclasses.replace(FAST, steps=4, eval_every=2, batch_size=2)
    patch = (size, size, size)
    result = train_base(model, blobs(3, size), blobs(1, size, seed=1), cfg, progress=False, patch_size=patch)
    assert [h[0] for h in result.history] == [2, 4]
    assert all(math.isfinite(loss) and 0 <= d <= 1 for _, loss, d in result.history)


def _hippocampus(rows: np.ndarray, data: np.lib.npyio.NpzFile) -> SegmentationDataset:
    crop = (slice(None), slice(6, 38), slice(8, 56), slice(8, 40))  # (32, 48, 32) around the labels
    images = data["images"][rows][crop].astype(np.float32)
    images = (images - images.mean(axis=(1, 2, 3), keepdims=True)) / images.std(axis=(1, 2, 3), keepdims=True)
    return SegmentationDataset(
        np.ascontiguousarray(images[:, None]),
        np.ascontiguousarray(data["masks"][rows][crop]),
        data["ids"][rows],
        num_classes=3,
    )


@pytest.mark.skipif(not HIPPOCAMPUS.exists(), reason="the shared hippocampus volumes are absent")
def test_hippocampus_structures_are_learned() -> None:
    """8 training volumes from distinct scan groups (cropped to 32 x 48 x 32), random 24 x 32 x 24 patches
    with foreground oversampling, 4 validation volumes by sliding windows: the mean per-structure Dice of
    anterior and posterior hippocampus climbs well above chance (about 0.05 for structures of ~2% of
    the voxels) within 100 steps (about 0.8 at 120 steps)."""
    with np.load(HIPPOCAMPUS) as data:
        _, first = np.unique(data["groups"], return_index=True)
        rows = np.sort(first)[:12]
        labeled, val = _hippocampus(rows[:8], data), _hippocampus(rows[8:], data)
    torch.manual_seed(0)
    model = UNet(out_channels=3, channels=(8, 16, 32), dropout=0.0, spatial_dims=3)
    cfg = dataclasses.replace(FAST, steps=100, batch_size=2, eval_every=50)
    result = train_base(model, labeled, val, cfg, progress=False, patch_size=(24, 32, 24))
    assert result.best_val_dice > 0.6, result.history
    assert result.history[-1][1] < 0.5 * result.history[0][1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_training_on_cuda() -> None:
    cfg = dataclasses.replace(FAST, steps=80)
    model = _unet3d(3)
    result = train_base(
        model, blobs(8), blobs(4, seed=1), cfg, progress=False, patch_size=(12, 12, 12), device="cuda"
    )
    assert result.best_val_dice > 0.6, result.history
    assert next(model.parameters()).device.type == "cuda"
