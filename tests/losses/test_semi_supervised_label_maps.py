"""Mean teacher and pseudo-labelling on multi-class logits (B, C, *S) and on volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rndpo.losses import (
    confident_pseudo_label_loss,
    consistency_loss,
    dihedral,
    probabilities,
    pseudo_label_targets,
)


def test_volume_flips_are_exact_and_undo_themselves() -> None:
    x = torch.randn(4, 2, 3, 5, 5)
    flip = torch.tensor(
        [[True, False, True], [False, False, False], [True, True, True], [False, True, False]]
    )
    k = torch.zeros(4, dtype=torch.int64)
    y = dihedral(x, k, flip)
    for i in range(4):
        dims = [2 + a for a in range(3) if flip[i, a]]
        expected = x[i : i + 1].flip(dims) if dims else x[i : i + 1]
        torch.testing.assert_close(y[i : i + 1], expected, rtol=0, atol=0)
    torch.testing.assert_close(dihedral(y, k, flip), x, rtol=0, atol=0)
    rot = dihedral(x, torch.full((4,), 1), torch.zeros(4, 3, dtype=torch.bool))
    torch.testing.assert_close(rot, torch.rot90(x, 1, dims=(-2, -1)), rtol=0, atol=0)


def test_pseudo_labels_take_the_argmax_where_the_top_class_is_confident() -> None:
    logits = torch.randn(2, 4, 3, 4, 5) * 3
    target, keep = pseudo_label_targets(logits, 0.7)
    p = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_array_equal(target.numpy(), p.argmax(1))
    np.testing.assert_array_equal(keep.numpy(), (p.max(1) >= 0.7).astype(np.uint8))
    binary = torch.randn(2, 1, 6, 6)
    t, kp = pseudo_label_targets(binary, 0.8)
    np.testing.assert_array_equal(t.numpy(), (binary[:, 0] > 0).numpy())
    np.testing.assert_array_equal(kp.numpy(), (torch.sigmoid(binary[:, 0].abs()) >= 0.8).numpy())


def test_multiclass_pseudo_label_loss_is_the_mean_cross_entropy_over_kept_voxels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4, 4))
    keep = (torch.rand(2, 4, 4, 4) > 0.5).to(torch.uint8)
    got = confident_pseudo_label_loss(logits, target, keep)
    ce = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(got, ce[keep.bool()].mean())
    none = confident_pseudo_label_loss(logits, target, torch.zeros_like(keep))
    none.backward()
    assert float(none.detach()) == 0.0 and logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("channels", [1, 3])
def test_consistency_of_a_flip_equivariant_volume_model_is_the_noise_effect_only(channels: int) -> None:
    """A 1x1x1 convolution commutes with every flip and rotation, so the student's view differs from the
    teacher's moved target only by the photometric noise; without the model's weight (zero conv) both
    are the same constant and the loss is exactly 0."""
    net = nn.Conv3d(1, channels, 1)
    nn.init.zeros_(net.weight)
    images = torch.rand(3, 1, 4, 6, 6)
    loss = consistency_loss(net, net, images, torch.Generator().manual_seed(0))
    assert float(loss.detach()) == 0.0
    probs = probabilities(net(images))
    assert probs.shape == (3, channels, 4, 6, 6)
    if channels > 1:
        torch.testing.assert_close(probs.sum(1), torch.ones(3, 4, 6, 6))
