"""rndpo.inference.sliding_window: one window = a plain forward pass; stitched windows = the full forward
pass wherever no window edge reaches (closed-form window positions); shapes, activations, flags, CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rndpo.inference import labels_from_probs, sliding_window_logits, sliding_window_probs
from rndpo.nets.unet import UNet

pytest.importorskip("monai")


def _conv(dims: int, out: int, kernel: int, seed: int = 0) -> nn.Module:
    """A translation-equivariant toy model: one convolution with zero padding (kernel // 2)."""
    torch.manual_seed(seed)
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, out, kernel, padding=kernel // 2)
    return conv


def _unet(dims: int, out: int) -> UNet:
    torch.manual_seed(0)
    model = UNet(out_channels=out, channels=(4, 8), dropout=0.2, spatial_dims=dims)
    model.train()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model(torch.rand(2, 1, *(8,) * dims))
    return model


@pytest.mark.parametrize(
    ("spatial", "out", "roi"),
    [((13, 10), 1, (13, 10)), ((13, 10), 3, (64, 64)), ((6, 9, 7), 2, (6, 9, 7)), ((6, 9, 7), 1, 100)],
)
def test_one_window_is_a_plain_forward(spatial: tuple[int, ...], out: int, roi: object) -> None:
    model = _unet(len(spatial), out)
    images = np.random.default_rng(0).random((3, 1, *spatial), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(images))
    model.train()
    got = sliding_window_logits(model, images, roi, batch_size=2)  # type: ignore[arg-type]
    assert got.shape == (3, out, *spatial) and got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, logits, atol=1e-5, rtol=1e-5)
    probs = sliding_window_probs(model, images, roi)  # type: ignore[arg-type]
    expected = torch.sigmoid(logits) if out == 1 else torch.softmax(logits, dim=1)
    assert probs.dtype == np.float32 and probs.shape == (3, out, *spatial)
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)
    assert model.training and all(m.training for m in model.modules())  # flags restored


def test_windows_are_stitched_where_they_belong() -> None:
    """A 3x3x3 zero-padded convolution, roi 8 along an axis of 16 with overlap 0.5: the windows start
    at 0, 4 and 8 (interval 8 * 0.5). A window's logits are exact except on its faces inside the image
    (there the padding replaces true neighbours): slices 7 (end of [0, 8)), 4 and 11 ([4, 12)) and 8
    ([8, 16)). Every other slice must equal the full forward pass; these four must not (so the test
    sees where windows go). The other axes fit one window each."""
    model = _conv(3, 2, 3)
    images = np.random.default_rng(1).normal(size=(2, 1, 16, 6, 7)).astype(np.float32)
    with torch.no_grad():
        full = model(torch.from_numpy(images))
    got = sliding_window_logits(model, images, (8, 32, 32), overlap=0.5, batch_size=3)
    error = (got - full).abs().amax(dim=(0, 1, 3, 4))
    edges = [4, 7, 8, 11]
    inner = [i for i in range(16) if i not in edges]
    assert float(error[inner].max()) < 1e-5
    assert float(error[edges].min()) > 1e-3


@pytest.mark.parametrize("dims", [2, 3])
def test_a_pointwise_model_is_exact_everywhere(dims: int) -> None:
    """With a 1x1 convolution every window is exact, so any blend of windows (here every axis split, at
    two overlaps) is the full forward pass; a misplaced window would change the values."""
    model = _conv(dims, 3, 1, seed=2)
    spatial = (11, 14) if dims == 2 else (9, 11, 10)
    images = np.random.default_rng(2).random((2, 1, *spatial), dtype=np.float32)
    with torch.no_grad():
        full = model(torch.from_numpy(images))
    for overlap in (0.0, 0.6):
        got = sliding_window_logits(model, images, (4,) * dims, overlap=overlap, batch_size=5)
        torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)


def test_labels_from_probs() -> None:
    binary = np.array([[[[0.2, 0.5, 0.7]]]], np.float32)  # (1, 1, 1, 3)
    np.testing.assert_array_equal(labels_from_probs(binary), [[[0, 0, 1]]])
    multi = np.zeros((1, 3, 2, 2), np.float32)
    multi[0, :, 0, 0] = [0.2, 0.5, 0.3]
    multi[0, :, 0, 1] = [0.6, 0.2, 0.2]
    multi[0, :, 1, 0] = [0.1, 0.1, 0.8]
    multi[0, :, 1, 1] = [0.4, 0.4, 0.2]  # ties: the first
    got = labels_from_probs(multi)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [[[1, 0], [2, 0]]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"roi_size": (4,)}, ValueError, r"roi_size must be 2 positive ints"),
        ({"roi_size": "4"}, TypeError, r"roi_size must be an int or 2 positive ints"),
        ({"overlap": 1.0}, ValueError, r"overlap must be a number in \[0, 1\), got 1.0"),
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive int, got 0"),
        ({"amp": "yes"}, TypeError, r"amp must be a bool or None, got str"),
        ({"images": np.zeros((2, 8, 8), np.float32)}, ValueError, r"\(N, C, H, W\) or \(N, C, D, H, W\)"),
    ],
)
def test_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    args: dict[str, object] = {
        "images": np.zeros((1, 1, 8, 8), np.float32),
        "roi_size": (4, 4),
    }
    args = {**args, **kwargs}
    images, roi = args.pop("images"), args.pop("roi_size")
    with pytest.raises(error, match=match):
        sliding_window_probs(_conv(2, 1, 3), images, roi, **args)  # type: ignore[arg-type]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_is_close_to_float32() -> None:
    model = _unet(3, 3)
    images = np.random.default_rng(3).random((2, 1, 20, 18, 16), dtype=np.float32)
    exact = sliding_window_probs(model, images, (12, 12, 12), device="cuda", amp=False)
    mixed = sliding_window_probs(model, images, (12, 12, 12), device="cuda")  # amp on by default on CUDA
    cpu = sliding_window_probs(model, images, (12, 12, 12), device="cpu")
    np.testing.assert_allclose(exact, cpu, atol=1e-3)
    assert 0 < np.abs(mixed - exact).max() < 0.05  # reduced precision: close, not identical
    assert (labels_from_probs(mixed) == labels_from_probs(exact)).mean() > 0.99
