"""The learned QC judge on label maps (num_classes C > 2) and volumes: corruptions of 2D / 3D label maps
against slow per-structure loops and scipy / scikit-image morphology, exact flips, the one-hot network,
a 3D multi-class judge that ranks held-out proposals, save / load, and the argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.morphology import ball as sk_ball
from skimage.morphology import disk as sk_disk

from factories import disc_bank
from oracles import slow_structure_dice
from rndpo.judges import LearnedQCJudge, OracleJudge
from rndpo.judges.corruptions import (
    CORRUPTION_KINDS,
    LABEL_CORRUPTION_KINDS,
    corrupt_mask,
    corruption_set,
)
from rndpo.judges.qc_model import (
    QCNet,
    augment_batch,
    fit_qc_model,
    load_qc_model,
    predict_qc,
    synthetic_training_set,
)
from rndpo.metrics import spearman
from rndpo.proposals import ProposalBank

# --------------------------------------------------------------------------------------------------------
# slow references and synthetic label maps


def balls_label_map(shape: tuple[int, ...], centres: np.ndarray, radii: np.ndarray, labels) -> np.ndarray:
    """uint8 ``shape``: ball j of ``radii[j]`` around ``centres[j]`` has ``labels[j]`` (later ones on top)."""
    grid = np.indices(shape)
    out = np.zeros(shape, dtype=np.uint8)
    for centre, r, label in zip(centres, radii, labels, strict=True):
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        out[d2 <= r * r] = label
    return out


def truth_map(ndim: int, num_classes: int, seed: int, size: int = 20) -> np.ndarray:
    """A label map of side ``size`` with every structure 1..C-1 present as a ball."""
    rng = np.random.default_rng(seed)
    s = num_classes - 1
    centres = rng.uniform(0.3 * size, 0.7 * size, (s, ndim))
    radii = rng.uniform(0.15 * size, 0.25 * size, s)
    out = balls_label_map((size,) * ndim, centres, radii, range(1, num_classes))
    for c in range(1, num_classes):  # a structure fully covered by later ones gets a voxel of its own
        if not np.any(out == c):
            out[(c,) * ndim] = c
    return out


def blob_bank(n: int, k: int, size: int, num_classes: int, seed: int) -> ProposalBank:
    """3D bank: C - 1 balls per image as ground truth; proposals move and rescale each ball and sometimes
    miss one (varied mean per-structure Dice); the image's intensity rises with the label, plus noise."""
    rng = np.random.default_rng(seed)
    s, shape = num_classes - 1, (size,) * 3
    gt = np.zeros((n, *shape), dtype=np.uint8)
    masks = np.zeros((n, k, *shape), dtype=np.uint8)
    labels = np.arange(1, num_classes)
    for i in range(n):
        centres = rng.uniform(0.3 * size, 0.7 * size, (s, 3))
        radii = rng.uniform(0.12 * size, 0.22 * size, s)
        gt[i] = balls_label_map(shape, centres, radii, labels)
        for j in range(k):
            keep = rng.random(s) > 0.15
            moved = centres + rng.normal(0.0, 0.08 * size, (s, 3))
            scaled = radii * rng.uniform(0.6, 1.4, s)
            masks[i, j] = balls_label_map(shape, moved[keep], scaled[keep], labels[keep])
    levels = np.linspace(0.2, 0.8, num_classes)
    images = (levels[gt] + rng.normal(0.0, 0.05, gt.shape))[:, None].astype(np.float32)
    return ProposalBank(images=images, masks=masks, ground_truth=gt, num_classes=num_classes)


# --------------------------------------------------------------------------------------------------------
# corruptions of label maps


@settings(max_examples=40, deadline=None)
@given(
    ndim=st.sampled_from([2, 3]),
    num_classes=st.integers(3, 5),
    kind=st.sampled_from(LABEL_CORRUPTION_KINDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_label_corruptions_keep_shape_and_labels_and_report_the_oracle_dice(
    ndim: int, num_classes: int, kind: str, seed: int
) -> None:
    truth = truth_map(ndim, num_classes, seed % 1000, size=16)
    before = truth.copy()
    out, d = corrupt_mask(truth, kind, np.random.default_rng(seed), num_classes=num_classes)
    assert out.shape == truth.shape and out.dtype == np.uint8
    assert int(out.max()) < num_classes
    assert d == pytest.approx(slow_structure_dice(out, truth, num_classes), abs=1e-12)
    assert np.array_equal(truth, before)  # the input is not modified
    again, d2 = corrupt_mask(truth, kind, np.random.default_rng(seed), num_classes=num_classes)
    assert np.array_equal(out, again) and d == d2


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_binary_corruptions_work_in_2d_and_3d(ndim: int, kind: str) -> None:
    truth = (truth_map(ndim, 2, 4, size=16) > 0).astype(np.uint8)
    results = [corrupt_mask(truth, kind, np.random.default_rng(s)) for s in range(4)]
    for out, d in results:
        assert out.shape == truth.shape and out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
        assert d == pytest.approx(slow_structure_dice(out, truth, 2), abs=1e-12)
    assert any(d < 1.0 for _, d in results)


@pytest.mark.parametrize("ndim", [2, 3])
def test_binary_erosion_and_dilation_use_a_ball(ndim: int) -> None:
    """The footprint is scikit-image's disk (2D) / ball (3D) of some radius r >= 1."""
    truth = (truth_map(ndim, 2, 1, size=20) > 0).astype(bool)
    footprint = sk_disk if ndim == 2 else sk_ball
    for kind, op in (("erode", ndimage.binary_erosion), ("dilate", ndimage.binary_dilation)):
        for seed in range(3):
            out, _ = corrupt_mask(truth.astype(np.uint8), kind, np.random.default_rng(seed))
            assert any(np.array_equal(out, op(truth, footprint(r))) for r in range(1, 6)), (kind, seed)


@pytest.mark.parametrize("ndim", [2, 3])
def test_label_erosion_erodes_each_structure_by_a_ball(ndim: int) -> None:
    """Every structure of an eroded map is the truth's structure eroded by a ball of radius r >= 0
    (r = 0: untouched), and eroded voxels become background."""
    truth = truth_map(ndim, 4, 3)
    footprint = sk_disk if ndim == 2 else sk_ball
    for seed in range(6):
        out, _ = corrupt_mask(truth, "erode", np.random.default_rng(seed), num_classes=4)
        assert np.all((out == truth) | (out == 0))
        for c in range(1, 4):
            m = truth == c
            candidates = [m] + [ndimage.binary_erosion(m, footprint(r)) for r in range(1, 8)]
            assert any(np.array_equal(out == c, e) for e in candidates), (seed, c)


def test_label_kinds_move_the_map_the_right_way() -> None:
    truth = truth_map(3, 5, 2)
    rng = np.random.default_rng(0)
    for kind, num_classes in (("drop", 5), ("swap", 5), ("holes", 5), ("blobs", 5), ("speckle", 5)):
        out, d = corrupt_mask(truth, kind, rng, num_classes=num_classes)
        changed = out != truth
        assert changed.any() and d < 1.0, kind
        if kind == "drop":  # one structure is gone, the rest untouched
            (gone,) = {int(v) for v in truth[changed]}
            assert not np.any(out == gone) and np.all(out[changed] == 0)
        if kind == "swap":  # a permutation of the labels exchanging two structures
            pairs = {(int(a), int(b)) for a, b in zip(truth[changed], out[changed], strict=True)}
            assert len(pairs) == 2 and {(b, a) for a, b in pairs} == pairs
        if kind == "holes":
            assert np.all(out[changed] == 0) and len(set(truth[changed].tolist())) == 1
        if kind == "blobs":
            assert len(set(out[changed].tolist())) == 1 and int(out[changed][0]) > 0
        if kind == "speckle":  # only voxels next to a label boundary change, to a neighbour's label
            fp = sk_ball(2).astype(bool)
            band = ndimage.maximum_filter(truth, footprint=fp) != ndimage.minimum_filter(truth, footprint=fp)
            assert np.all(band[changed])
            present_nearby = [
                set(truth[tuple(slice(max(0, v - 2), v + 3) for v in idx)].ravel().tolist())
                for idx in np.argwhere(changed)
            ]
            assert all(
                int(out[tuple(idx)]) in near
                for idx, near in zip(np.argwhere(changed), present_nearby, strict=True)
            )


def test_whole_map_shift_moves_every_structure_together() -> None:
    """A shift of every structure is a translation of the whole map along every axis, zero-filled."""
    truth = truth_map(3, 4, 5)
    found = False
    for seed in range(10):
        out, _ = corrupt_mask(truth, "shift", np.random.default_rng(seed), num_classes=4)
        for offset in np.ndindex(*(11,) * 3):
            off = [o - 5 for o in offset]
            rolled = np.zeros_like(truth)
            src = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(off, truth.shape, strict=True))
            dst = tuple(slice(max(0, o), s - max(0, -o)) for o, s in zip(off, truth.shape, strict=True))
            rolled[dst] = truth[src]
            if any(off) and np.array_equal(out, rolled):
                found = True
    assert found


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("num_classes", [3, 4, 5])
def test_corruption_set_spreads_label_map_dice(ndim: int, num_classes: int) -> None:
    truth = truth_map(ndim, num_classes, 7, size=20)
    ms, d = corruption_set(truth, 20, np.random.default_rng(1), num_classes=num_classes)
    assert ms.shape == (20, *truth.shape) and ms.dtype == np.uint8 and d.shape == (20,)
    assert int(ms.max()) < num_classes
    np.testing.assert_allclose(d, [slow_structure_dice(m, truth, num_classes) for m in ms], atol=1e-12)
    assert d.min() < 0.4 and d.max() > 0.8  # not all near 1
    assert np.count_nonzero(np.histogram(d, bins=5, range=(0, 1))[0]) >= 4


def test_synthetic_training_set_for_volumes() -> None:
    gt = np.stack([truth_map(3, 4, s, size=12) for s in range(3)])
    masks, dice = synthetic_training_set(gt, 5, seed=2, num_classes=4)
    assert masks.shape == (3, 5, 12, 12, 12) and masks.dtype == np.uint8 and dice.shape == (3, 5)
    expected = [[slow_structure_dice(masks[i, j], gt[i], 4) for j in range(5)] for i in range(3)]
    np.testing.assert_allclose(dice, expected, atol=1e-12)
    again, _ = synthetic_training_set(gt, 5, seed=2, num_classes=4)
    assert np.array_equal(masks, again)


def test_corruption_arguments_are_checked() -> None:
    rng = np.random.default_rng(0)
    truth = truth_map(3, 4, 0, size=12)
    with pytest.raises(
        ValueError, match=r"mask must be a uint8 label map with labels 0 to 2 \(num_classes = 3\)"
    ):
        corrupt_mask(truth, "erode", rng, num_classes=3)
    with pytest.raises(ValueError, match=r"mask must be a uint8 label map .* got dtype int64"):
        corrupt_mask(truth.astype(np.int64), "erode", rng, num_classes=4)
    with pytest.raises(ValueError, match="mask must be bool or uint8 in"):
        corrupt_mask(truth, "erode", rng)  # labels up to 3 are not a binary mask
    with pytest.raises(ValueError, match="num_classes must be None or an int from 2 to 255, got 1"):
        corrupt_mask(truth, "erode", rng, num_classes=1)
    with pytest.raises(ValueError, match=r"kind must be one of \['erode'.*'speckle', 'combo'\], got 'melt'"):
        corrupt_mask(truth, "melt", rng, num_classes=4)
    with pytest.raises(ValueError, match=r"kind must be one of \[.*'combo'\], got 'swap'"):
        corrupt_mask(truth > 0, "swap", rng)  # swap is a label-map kind
    with pytest.raises(ValueError, match="at least 4 voxels along every axis, got shape"):
        corrupt_mask(truth[:3], "erode", rng, num_classes=4)
    with pytest.raises(ValueError, match=r"mask must be a 2-D \(H, W\) or 3-D \(D, H, W\)"):
        corrupt_mask(truth[None], "erode", rng, num_classes=4)
    with pytest.raises(ValueError, match="kinds must be a non-empty tuple from"):
        corruption_set(truth > 0, 2, rng, kinds=("drop",))


# --------------------------------------------------------------------------------------------------------
# the network: one-hot input, exact flips, downsampling of large volumes


def test_mask_input_is_the_one_hot_encoding() -> None:
    labels = torch.as_tensor(truth_map(3, 4, 1, size=8)[None])
    onehot = QCNet(1, 2, num_classes=4, spatial_dims=3).mask_input(labels)
    assert onehot.shape == (1, 4, 8, 8, 8) and onehot.dtype == torch.float32
    for c in range(4):
        assert torch.equal(onehot[0, c], (labels[0] == c).float())
    binary = QCNet(1, 2).mask_input(torch.as_tensor(np.array([[[0, 1], [1, 0]]], dtype=np.uint8)))
    assert binary.shape == (1, 1, 2, 2) and binary.sum() == 2


def test_3d_augmentation_flips_exactly_along_every_axis() -> None:
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.random((2, 1, 5, 6, 7), dtype=np.float32))
    masks = torch.as_tensor(rng.integers(0, 2, (2, 3, 5, 6, 7)).astype(np.float32))
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(48):
        x, m = augment_batch(images, masks, gen)
        matches = [
            axes
            for axes in ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))
            if np.array_equal(x.numpy(), np.flip(images.numpy(), axes))
            and np.array_equal(m.numpy(), np.flip(masks.numpy(), axes))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 8  # every flip occurs


def test_3d_tta_is_the_mean_over_the_eight_flips() -> None:
    bank = blob_bank(4, 3, 10, 3, seed=0)
    truth = OracleJudge().score(bank)
    model, _ = fit_qc_model(
        bank.images, bank.masks, truth, num_classes=3, steps=3, width=2, val_fraction=0.0, progress=False
    )
    views = []
    for axes in ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)):
        x = np.ascontiguousarray(np.flip(bank.images, axes))
        m = np.ascontiguousarray(np.flip(bank.masks, axes))
        views.append(predict_qc(model, x, m))
    np.testing.assert_allclose(
        predict_qc(model, bank.images, bank.masks, tta=True), np.mean(views, 0), atol=1e-6
    )
    assert np.abs(views[0] - views[7]).max() > 1e-7  # the views differ: the mean is not one of them


def test_large_volumes_are_area_downsampled_to_max_side() -> None:
    """With max_side 8, a 16^3 input is block-averaged by 2 before the first convolution: the same
    network without downsampling, fed the numpy 2x2x2 block means, gives the same output."""
    rng = np.random.default_rng(0)
    small = QCNet(1, 4, num_classes=3, spatial_dims=3, max_side=8).eval()
    big = QCNet(1, 4, num_classes=3, spatial_dims=3, max_side=16).eval()
    big.load_state_dict(small.state_dict())
    images = rng.random((2, 1, 16, 16, 16), dtype=np.float32)
    labels = rng.integers(0, 3, (2, 16, 16, 16)).astype(np.uint8)
    channels = small.mask_input(torch.as_tensor(labels)).numpy()

    def block_mean(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a.reshape(*a.shape[:2], 8, 2, 8, 2, 8, 2).mean(axis=(3, 5, 7)))

    with torch.no_grad():
        got = small(torch.as_tensor(images), torch.as_tensor(channels))
        expected = big(block_mean(images), block_mean(channels))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------
# the judge


def test_3d_multiclass_judge_ranks_held_out_proposals(tmp_path: Path) -> None:
    """Trained 300 steps on 24 volumes' proposals plus corruptions of their label maps (16^3, C = 4), the
    judge ranks 32 other volumes' proposals far better than chance against the oracle; save / load
    keeps num_classes and spatial_dims and reproduces the scores exactly."""
    train, held_out = blob_bank(24, 4, 16, 4, seed=1), blob_bank(32, 4, 16, 4, seed=2)
    judge = LearnedQCJudge(width=8, batch_size=32, n_synthetic=4, rank_weight=1.0, jitter=0.1)
    fit = judge.fit(train, steps=300, val_fraction=0.0, seed=0, progress=False)
    assert fit.n_train_proposals == 24 * (4 + 4)
    scores = judge.score(held_out)
    assert scores.shape == (32, 4) and np.all((scores >= 0) & (scores <= 1))
    rho = spearman(scores, OracleJudge().score(held_out))
    assert rho is not None and rho > 0.3, rho
    path = judge.save(tmp_path / "qc")
    config = json.loads((path / "config.json").read_text())
    assert (config["num_classes"], config["spatial_dims"], config["max_side"]) == (4, 3, 16)
    loaded = LearnedQCJudge.load(path)
    assert (loaded.model.num_classes, loaded.model.spatial_dims) == (4, 3)  # type: ignore[union-attr]
    assert loaded.fit_result == fit
    np.testing.assert_array_equal(loaded.score(held_out), scores)
    loaded.tta = True
    assert spearman(loaded.score(held_out), OracleJudge().score(held_out)) is not None


@pytest.mark.parametrize(("ndim", "num_classes"), [(2, 4), (3, 2)])
def test_2d_label_maps_and_binary_volumes_fit_and_score(ndim: int, num_classes: int, tmp_path: Path) -> None:
    n, k = 6, 3
    gt = np.stack([truth_map(ndim, num_classes, s, size=12) for s in range(n)])
    rng = np.random.default_rng(0)
    masks = np.stack(
        [np.stack([corrupt_mask(g, "combo", rng, num_classes=num_classes)[0] for _ in range(k)]) for g in gt]
    )
    images = (gt[:, None] / num_classes + 0.1).astype(np.float32)
    bank = ProposalBank(images=images, masks=masks, ground_truth=gt, num_classes=num_classes)
    judge = LearnedQCJudge(width=2, n_synthetic=2, tta=True)
    fit = judge.fit(bank, steps=3, seed=1, progress=False)
    assert fit.n_val_images == 1
    scores = judge.score(bank)
    assert scores.shape == (n, k) and np.all(np.isfinite(scores))
    loaded = LearnedQCJudge.load(judge.save(tmp_path / "qc"))
    assert (loaded.model.num_classes, loaded.model.spatial_dims) == (num_classes, ndim)  # type: ignore[union-attr]
    np.testing.assert_array_equal(loaded.score(bank), scores)


def test_a_2d_binary_judge_saved_without_the_new_keys_loads(tmp_path: Path) -> None:
    """config.json of a judge written before label maps (no num_classes / spatial_dims / max_side) loads
    as a 2D binary judge with the same scores."""
    bank = disc_bank(8, 3, 16, seed=3)
    judge = LearnedQCJudge(width=4)
    judge.fit(bank, steps=3, progress=False)
    path = judge.save(tmp_path / "qc")
    config = json.loads((path / "config.json").read_text())
    for key in ("num_classes", "spatial_dims", "max_side"):
        del config[key]
    (path / "config.json").write_text(json.dumps(config))
    loaded = LearnedQCJudge.load(path)
    assert (loaded.model.num_classes, loaded.model.spatial_dims) == (2, 2)  # type: ignore[union-attr]
    np.testing.assert_array_equal(loaded.score(bank), judge.score(bank))


def test_label_map_judge_errors_name_the_argument(tmp_path: Path) -> None:
    bank = blob_bank(4, 2, 8, 4, seed=3)
    judge = LearnedQCJudge(width=2)
    judge.fit(bank, steps=1, val_fraction=0.0, progress=False)
    loaded = LearnedQCJudge.load(judge.save(tmp_path / "qc"))
    three = ProposalBank(bank.images, np.minimum(bank.masks, 2), num_classes=3)
    with pytest.raises(ValueError, match=r"bank\.num_classes must be 4 \(as in training\), got 3"):
        loaded.score(three)
    flat = ProposalBank(bank.images[:, :, 0], bank.masks[:, :, 0], num_classes=4)
    with pytest.raises(
        ValueError, match=r"bank must hold 3-D volumes \(as in training\), got spatial shape \(8, 8\)"
    ):
        loaded.score(flat)
    truth = OracleJudge().score(bank)
    with pytest.raises(
        ValueError, match=r"masks must hold labels 0 to 2 \(num_classes = 3\), got values up to 3"
    ):
        fit_qc_model(bank.images, bank.masks, truth, num_classes=3, progress=False)
    gt = bank.ground_truth.copy()  # type: ignore[union-attr]
    gt[0, 0, 0, 0] = 7
    with pytest.raises(
        ValueError, match=r"ground_truth must hold labels 0 to 3 \(num_classes = 4\), got values up to 7"
    ):
        fit_qc_model(bank.images, bank.masks, truth, num_classes=4, ground_truth=gt, progress=False)
    with pytest.raises(ValueError, match=r"ground_truth must have shape \(N, D, H, W\) = \(4, 8, 8, 8\)"):
        fit_qc_model(bank.images, bank.masks, truth, num_classes=4, ground_truth=gt[:2], progress=False)
    with pytest.raises(ValueError, match="num_classes must be an int from 2 to 255, got 1"):
        fit_qc_model(bank.images, bank.masks, truth, num_classes=1, progress=False)
    with pytest.raises(ValueError, match=r"images must be at least 8x8x8 for the QC network, got 4x8x8"):
        fit_qc_model(bank.images[:, :, :4], bank.masks[:, :, :4], truth, num_classes=4, progress=False)
    with pytest.raises(ValueError, match=r"images must be 3-D \(N, C, D, H, W\) as the model's spatial_dims"):
        predict_qc(loaded.model, bank.images[:, :, 0], bank.masks[:, :, 0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 4"):
        QCNet(1, spatial_dims=4)
    with pytest.raises(ValueError, match="max_side must be an int >= 4, got 2"):
        LearnedQCJudge(max_side=2)
    cfg = tmp_path / "qc" / "config.json"
    cfg.write_text(cfg.read_text().replace('"num_classes": 4', '"num_classes": 5'))
    with pytest.raises(ValueError, match=r"model\.pt: does not match the network described in config\.json"):
        load_qc_model(tmp_path / "qc")
    cfg.write_text(cfg.read_text().replace('"num_classes": 5', '"num_classes": 0'))
    with pytest.raises(ValueError, match=r"config\.json: not a valid QC model config: num_classes must be"):
        load_qc_model(tmp_path / "qc")


def test_the_downsampling_factor_brings_the_largest_side_to_max_side() -> None:
    """The first convolution sees each side divided (rounding up) by the smallest integer factor that
    brings the largest side to at most max_side; volumes within max_side are not resized."""
    net = QCNet(1, 2, num_classes=3, spatial_dims=3, max_side=16).eval()
    captured: list[tuple[int, ...]] = []
    hook = net.features[0].register_forward_hook(lambda _m, inp, _o: captured.append(tuple(inp[0].shape[2:])))
    cases = (((16, 16, 16), (16, 16, 16)), ((48, 64, 48), (12, 16, 12)), ((17, 9, 33), (6, 3, 11)))
    with torch.no_grad():
        for shape, _ in cases:
            net.logits(torch.zeros(1, 1, *shape), torch.zeros(1, 3, *shape))
    hook.remove()
    assert captured == [expected for _, expected in cases]
