"""Fine-tuning patches of volumes: windows centred in each pair's disagreement region."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rndpo.config import FinetuneConfig, MethodConfig
from rndpo.data import SegmentationDataset
from rndpo.nets.unet import UNet
from rndpo.training import TrainingPairs, finetune, reference_logits
from rndpo.training.pair_patches import crop_windows, pair_windows


@settings(max_examples=80, deadline=None)
@given(
    shape=st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(2, 9)),
    patch=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    seed=st.integers(0, 2**31 - 1),
    agree=st.booleans(),
)
def test_each_window_holds_disagreement_when_the_pair_has_some(
    shape: tuple[int, int, int], patch: tuple[int, int, int], seed: int, agree: bool
) -> None:
    rng = np.random.default_rng(seed)
    chosen = torch.from_numpy(rng.integers(0, 3, (4, *shape), dtype=np.uint8))
    rejected = chosen.clone()
    if not agree:
        flips = torch.from_numpy(rng.random((4, *shape)) < 0.05)
        rejected[flips] = (rejected[flips] + 1) % 3
    windows = pair_windows(chosen, rejected, patch, torch.Generator().manual_seed(seed))
    cut_a, cut_b = crop_windows(chosen, windows), crop_windows(rejected, windows)
    assert cut_a.shape == (4, *(min(p, s) for p, s in zip(patch, shape, strict=True)))
    for b, w in enumerate(windows):
        np.testing.assert_array_equal(cut_a[b].numpy(), chosen[b][w].numpy())  # the crop is the slice
        if bool((chosen[b] != rejected[b]).any()):
            assert bool((cut_a[b] != cut_b[b]).any()), "the window missed the pair's disagreement"
        elif bool((chosen[b] != 0).any()):
            assert bool((cut_a[b] != 0).any()), "the window missed the chosen foreground"


def test_crop_keeps_leading_axes() -> None:
    x = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 3, 4, 5, 6)
    windows = [(slice(0, 2), slice(1, 4), slice(2, 5)), (slice(2, 4), slice(0, 3), slice(3, 6))]
    out = crop_windows(x, windows)
    assert out.shape == (2, 3, 2, 3, 3)
    torch.testing.assert_close(out[1], x[1][:, 2:4, 0:3, 3:6])


def test_rndpo_fine_tunes_a_volume_model_on_disagreement_patches() -> None:
    rng = np.random.default_rng(0)
    n, k, shape = 4, 3, (8, 12, 12)
    truth = np.zeros((n, *shape), np.uint8)
    truth[:, 2:6, 3:8, 3:7] = 1
    truth[:, 3:7, 6:10, 6:10] = 2
    masks = np.repeat(truth[:, None], k, axis=1)
    masks[:, 1, 2:6, 3:8, 3:5] = 0  # proposal 1 loses part of structure 1
    masks[:, 2] = np.roll(masks[:, 2], 2, axis=-1)
    images = (truth[:, None] * 0.4 + rng.normal(0, 0.05, (n, 1, *shape))).astype(np.float32)
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=3, channels=(4, 8), spatial_dims=3, norm="instance")
    ref = reference_logits(model, images)
    pairs = TrainingPairs(images, masks, np.arange(n), np.zeros(n, np.int64), np.ones(n, np.int64))
    method = MethodConfig(anchor_weight=0.0)
    test = SegmentationDataset(images, truth, np.array([f"v{i}" for i in range(n)]), num_classes=3)
    config = FinetuneConfig(steps=3, eval_every=3, batch_size=2, augment=False)
    result = finetune(
        model, pairs, method, config, test, ref_logits=ref, progress=False, patch_size=(4, 6, 6)
    )
    assert len(result.train_log) == 3
    sizes = [row["region_size"] for row in result.train_log if "region_size" in row]
    assert sizes and max(sizes) <= 4 * 6 * 6  # |D| is counted inside the patch the loss sees
    assert all(np.isfinite(row["loss"]) for row in result.train_log)
    # the reference is the frozen base on the same patch: policy == reference at step 0, loss ln 2
    assert result.train_log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_augmenting_pairs_of_label_maps_keeps_every_class_and_the_allowed_flips() -> None:
    from rndpo.training.finetuning import _augmented

    labels = torch.zeros((16, 6, 12, 10), dtype=torch.uint8)  # H != W: no 90-degree turns
    labels[:, 1:5, 1:5, 2:8] = 1  # structure 1 at small y (H), structure 2 at large y
    labels[:, 1:5, 7:11, 2:8] = 2
    images = labels[:, None].float()
    for axes, h_flips in (((0, 2), False), (None, True)):
        gen = torch.Generator().manual_seed(0)
        _, (moved,) = _augmented(images, [labels], gen, slice(None), flip_axes=axes)
        assert set(torch.unique(moved).tolist()) == {0, 1, 2}  # class 2 is not merged into 1
        order = []
        for b in range(16):
            y1 = torch.nonzero(moved[b] == 1)[:, 1].float().mean()
            y2 = torch.nonzero(moved[b] == 2)[:, 1].float().mean()
            order.append(bool(y1 < y2))
        assert all(order) != h_flips  # flipped along H only when H is among the allowed axes
