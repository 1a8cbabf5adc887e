"""Tests of rndpo.inference: batched eval-mode prediction, restored train flags, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rndpo.inference import predict_logits, predict_probs
from rndpo.nets.unet import UNet, enable_mc_dropout

SMALL = (4, 8, 16)


def _model(**kwargs: object) -> UNet:
    torch.manual_seed(0)
    return UNet(**{"channels": SMALL, **kwargs})  # type: ignore[arg-type]


def test_predict_logits_matches_eval_forward_for_any_batch_size() -> None:
    model = _model(dropout=0.3)
    # give batch-norm non-trivial running statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, 20, 20))
    images = np.random.default_rng(0).random((7, 1, 20, 20), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(images))
    model.train()
    for bs in (1, 3, 64):
        got = predict_logits(model, images, batch_size=bs)
        assert got.dtype == torch.float32
        assert got.shape == (7, 1, 20, 20)
        assert torch.allclose(got, expected, atol=1e-5)
    assert model.training  # flags restored
    probs = predict_probs(model, torch.from_numpy(images), batch_size=2)
    assert probs.dtype == np.float32
    assert probs.shape == (7, 20, 20)
    np.testing.assert_allclose(probs, torch.sigmoid(expected[:, 0]).numpy(), atol=1e-6)


@pytest.mark.parametrize(("spatial", "out"), [((20, 20), 3), ((6, 10, 9), 1), ((6, 10, 9), 4)])
def test_predict_volumes_and_multi_class_heads(spatial: tuple[int, ...], out: int) -> None:
    """Volumes (N, C, D, H, W) and C >= 2 channel heads: logits (N, out, *S); probabilities (N, *S)
    (sigmoid) for one logit, (N, out, *S) (softmax over the channels) otherwise."""
    model = _model(out_channels=out, spatial_dims=len(spatial)).eval()
    images = np.random.default_rng(1).random((3, 1, *spatial), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images))
    logits = predict_logits(model, images, batch_size=2)
    assert logits.shape == (3, out, *spatial)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    probs = predict_probs(model, images, batch_size=2)
    if out == 1:
        np.testing.assert_allclose(probs, torch.sigmoid(expected[:, 0]).numpy(), atol=1e-6)
    else:
        np.testing.assert_allclose(probs, torch.softmax(expected, dim=1).numpy(), atol=1e-6)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_predict_restores_mc_dropout_flags() -> None:
    model = enable_mc_dropout(_model(dropout=0.3))
    predict_logits(model, np.zeros((1, 1, 8, 8), np.float32))
    assert all(m.training for m in model.modules() if isinstance(m, nn.Dropout2d))
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize(
    ("images", "batch_size", "error", "match"),
    [
        (
            np.zeros((2, 16, 16), np.float32),
            4,
            ValueError,
            r"images must have shape \(N, C, H, W\) or \(N, C, D, H, W\), got \(2, 16, 16\)",
        ),
        (np.zeros((2, 1, 8, 8), np.uint8), 4, TypeError, "images must be a float array"),
        (np.zeros((0, 1, 8, 8), np.float32), 4, ValueError, "at least one image"),
        (np.full((1, 1, 8, 8), np.nan, np.float32), 4, ValueError, "images must be finite"),
        ([[1.0]], 4, TypeError, "images must be a numpy array or torch tensor, got list"),
        (np.zeros((1, 1, 8, 8), np.float32), 0, ValueError, "batch_size must be a positive int, got 0"),
    ],
)
def test_predict_bad_input(images: object, batch_size: int, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        predict_probs(_model(), images, batch_size=batch_size)  # type: ignore[arg-type]
