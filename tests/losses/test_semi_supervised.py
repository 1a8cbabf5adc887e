"""Building blocks of the mean-teacher and pseudo-label baselines against plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rndpo.losses.semi_supervised import confident_pseudo_label_loss, consistency_loss, dihedral, ema_update
from rndpo.nets.unet import UNet


def test_dihedral_matches_numpy() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    k = torch.tensor([1, 3])
    flip = torch.tensor([True, False])
    out = dihedral(x, k, flip).numpy()
    np.testing.assert_array_equal(out[0, 0], np.rot90(x[0, 0].numpy()[:, ::-1], 1))
    np.testing.assert_array_equal(out[1, 0], np.rot90(x[1, 0].numpy(), 3))


def test_confident_pseudo_label_loss_is_bce_over_kept_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(2, 5, 5) < 0.5).to(torch.uint8)
    keep = (torch.rand(2, 5, 5) < 0.6).to(torch.uint8)
    got = confident_pseudo_label_loss(logits, target, keep)
    sel = keep.bool()
    ref = F.binary_cross_entropy_with_logits(logits[:, 0][sel], target[sel].double())
    torch.testing.assert_close(got, ref)
    zero = confident_pseudo_label_loss(logits, target, torch.zeros_like(keep))
    assert float(zero.detach()) == 0.0
    zero.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_ema_update_closed_form() -> None:
    torch.manual_seed(1)
    teacher, student = UNet(in_channels=1, channels=(4, 8)), UNet(in_channels=1, channels=(4, 8))
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    for k, v in teacher.state_dict().items():
        s = student.state_dict()[k]
        expected = 0.9 * t0[k] + 0.1 * s if v.dtype.is_floating_point else s
        torch.testing.assert_close(v, expected)


def test_consistency_is_zero_for_identical_models_without_noise_and_positive_with_it() -> None:
    torch.manual_seed(2)
    model = UNet(in_channels=1, channels=(4, 8)).eval()
    x = torch.rand(3, 1, 16, 16)
    loss = consistency_loss(model, model, x, torch.Generator().manual_seed(0))
    assert float(loss.detach()) > 0  # the student's view carries photometric noise
    assert float(loss.detach()) < 0.05
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_ema_decay_out_of_range_is_a_config_error(bad: float) -> None:
    from rndpo.config import ConfigError, MethodConfig

    with pytest.raises(ConfigError, match="ema_decay"):
        MethodConfig(objective="mean_teacher", ema_decay=bad)
