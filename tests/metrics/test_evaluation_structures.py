"""evaluate() on label maps and volumes: per-structure Dice and HD95 in mm, empty structures counted."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rndpo.data import SegmentationDataset
from rndpo.metrics import dice_per_class, evaluate, hd95_per_class


class _LabelsInTheImage(nn.Module):
    """Logits that make the argmax equal the label written in channel 0 of the image (rounded)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, 0].round().long().clamp(0, self.classes - 1)
        return torch.movedim(nn.functional.one_hot(labels, self.classes).float() * 10, -1, 1)


def _data(pred: np.ndarray, truth: np.ndarray, classes: int, spacing: np.ndarray) -> SegmentationDataset:
    return SegmentationDataset(
        pred[:, None].astype(np.float32),
        truth.astype(np.uint8),
        np.array([f"v{i}" for i in range(len(pred))]),
        num_classes=classes,
        class_names=("background", "anterior", "posterior", "tail")[:classes],
        spacing=spacing,
    )


def test_per_structure_scores_equal_the_metric_functions_on_the_label_maps() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((5, 6, 8, 8), np.uint8)
    truth[:, 1:4, 2:6, 1:4] = 1
    truth[:, 2:5, 1:5, 4:7] = 2
    pred = truth.copy()
    noise = rng.random(pred.shape) < 0.1
    pred[noise] = rng.integers(0, 3, int(noise.sum()))
    pred[:, 0, 0, 0] = 3  # a structure absent from the truth of every volume
    truth[4] = 0
    pred[4] = 0  # volume 4: empty in both -> excluded, counted
    spacing = np.tile([2.0, 1.0, 0.5], (5, 1))
    ev = evaluate(_LabelsInTheImage(4), _data(pred, truth, 4, spacing))
    d = dice_per_class(pred, truth, 4)
    h = hd95_per_class(pred, truth, 4, spacing)
    assert ev.n_excluded == 1 and list(ev.volumes) == ["v0", "v1", "v2", "v3"]
    np.testing.assert_allclose(ev.dice, np.nanmean(d[:4], axis=1))
    per_class = ev.dice_per_class()
    assert per_class["anterior"] == np.nanmean(d[:, 0]) and per_class["tail"] == 0.0
    assert ev.structures is not None and ev.structures.empty_both.tolist() == [1, 1, 1]
    means = ev.means()
    np.testing.assert_allclose(means["dice"], np.mean([np.nanmean(d[:, k]) for k in range(3)]))
    finite = [h[:, k][np.isfinite(h[:, k])] for k in range(3)]
    np.testing.assert_allclose(means["hd95"], np.mean([f.mean() for f in finite if f.size]))
    assert (
        ev.structures.hd95_one_empty is not None and ev.structures.hd95_one_empty[2] == 4
    )  # tail only in pred


def test_a_binary_head_on_volumes_is_scored_like_a_two_class_map() -> None:
    truth = np.zeros((2, 4, 6, 6), np.uint8)
    truth[:, 1:3, 1:4, 1:4] = 1
    pred = np.roll(truth, 1, axis=-1)

    class Binary(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, :1] - 0.5) * 20

    ev = evaluate(Binary(), _data(pred, truth, 2, np.ones((2, 3))), distances=False)
    np.testing.assert_allclose(ev.dice, dice_per_class(pred, truth, 2)[:, 0])
    assert "hd95" not in ev.means() and ev.hd95_per_class() == {}
