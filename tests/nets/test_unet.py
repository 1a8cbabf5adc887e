"""rndpo.nets.unet (UNet in 2D and 3D, enable_mc_dropout), rndpo.nets.padding and rndpo.inference
(batched prediction)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rndpo.inference import predict_logits
from rndpo.nets import PadToMultiple
from rndpo.nets.unet import UNet, enable_mc_dropout, restore_train_flags, save_train_flags

SMALL = (4, 8, 16)


def _model(**kwargs: object) -> UNet:
    torch.manual_seed(0)
    return UNet(**{"channels": SMALL, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((2, 1, 37, 45), {}),
        ((1, 3, 32, 32), {"in_channels": 3}),
        ((3, 1, 1, 1), {}),
        ((2, 2, 17, 8), {"in_channels": 2, "out_channels": 2, "norm": "instance"}),
        ((2, 1, 33, 31), {"norm": "none", "dropout": 0.0}),
        ((1, 1, 50, 29), {"channels": (4, 8, 16, 32)}),
    ],
)
def test_output_shape_any_size(shape: tuple[int, ...], kwargs: dict[str, object]) -> None:
    model = _model(**kwargs).eval()
    out = model(torch.rand(shape))
    assert out.shape == (shape[0], model.out_channels, shape[2], shape[3])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@settings(max_examples=10, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40))
def test_output_shape_property(h: int, w: int) -> None:
    model = _model().eval()
    assert model(torch.rand(1, 1, h, w)).shape == (1, 1, h, w)


def test_padding_is_a_crop_of_the_padded_input() -> None:
    """Logits at odd size = the logits of the replicate-padded image, cropped (pad-and-crop contract)."""
    model = _model().eval()
    x = torch.rand(2, 1, 13, 10)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 3), mode="replicate")  # up to multiples of 4: 16 x 12
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[..., :13, :10], atol=1e-6)


def test_same_seed_same_weights_and_outputs() -> None:
    a, b = _model(), _model()
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb
        assert torch.equal(pa, pb)
    torch.manual_seed(1)
    c = UNet(channels=SMALL)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_eval_mode_is_deterministic_and_train_mode_dropout_is_not() -> None:
    model = _model(dropout=0.3).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_enable_mc_dropout_turns_on_only_dropout() -> None:
    model = _model(dropout=0.3)
    model.train()
    enable_mc_dropout(model)
    for module in model.modules():
        if isinstance(module, nn.Dropout2d):
            assert module.training
        elif isinstance(module, nn.BatchNorm2d):
            assert not module.training
    assert not model.training
    # samples differ, batch-norm running stats are untouched
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
    for k, v in model.state_dict().items():
        if "running" in k:
            assert torch.equal(v, stats[k])


def test_enable_mc_dropout_without_dropout_is_an_error() -> None:
    with pytest.raises(ValueError, match="dropout"):
        enable_mc_dropout(_model(dropout=0.0))


def test_config_round_trip() -> None:
    model = _model(in_channels=3, dropout=0.2, norm="instance")
    config = model.config()
    assert config == {
        "in_channels": 3,
        "out_channels": 1,
        "channels": list(SMALL),
        "dropout": 0.2,
        "norm": "instance",
        "spatial_dims": 2,
    }
    clone = UNet.from_config(config)
    clone.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), clone.eval()(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 0}, "in_channels must be a positive int, got 0"),
        ({"out_channels": 1.5}, "out_channels must be a positive int"),
        ({"channels": (8,)}, "channels must list at least 2 positive ints"),
        ({"channels": (8, -1)}, "channels must list"),
        ({"dropout": 1.0}, r"dropout must be a float in \[0, 1\), got 1.0"),
        ({"norm": "layer"}, r"norm must be one of \['batch', 'instance', 'none'\], got 'layer'"),
        ({"spatial_dims": 1}, "spatial_dims must be 2 or 3, got 1"),
        ({"spatial_dims": True}, "spatial_dims must be 2 or 3, got True"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)  # type: ignore[arg-type]


def test_bad_input_and_config() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"x must have shape \(B, in_channels=1, H, W\), got \(1, 3, 8, 8\)"):
        model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown keys"):
        UNet.from_config({"channels": [4, 8], "width": 3})
    with pytest.raises(TypeError, match="config must be a mapping"):
        UNet.from_config([1, 2])  # type: ignore[arg-type]


def test_train_flags_are_restored_module_by_module() -> None:
    model = UNet(channels=(4, 8), dropout=0.2)
    model.train()
    drop = next(m for m in model.modules() if isinstance(m, nn.Dropout2d | nn.Dropout))
    drop.eval()  # mixed flags: model.train(was_training) would not restore this
    before = [m.training for m in model.modules()]
    flags = save_train_flags(model)
    enable_mc_dropout(model)
    model.eval()
    restore_train_flags(flags)
    assert [m.training for m in model.modules()] == before
    predict_logits(model, np.zeros((1, 1, 16, 16), dtype=np.float32))
    assert [m.training for m in model.modules()] == before


def test_2d_parameter_names_are_those_of_saved_models() -> None:
    """Saved state dicts name these parameters: 2D keeps them (and their order) exactly."""
    conv, norm = ["weight"], ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    block = [f"{i}.{k}" for i, keys in ((0, conv), (1, norm), (3, conv), (4, norm)) for k in keys]
    names = [f"encoders.{level}.{b}" for level in (0, 1) for b in block]
    names += ["ups.0.weight", "ups.0.bias", *[f"decoders.0.{b}" for b in block], "head.weight", "head.bias"]
    assert list(UNet(channels=(4, 8)).state_dict()) == names


@pytest.mark.parametrize("size", [(9, 13, 6), (8, 8, 8), (1, 2, 3)])
def test_3d_output_shape_any_size(size: tuple[int, int, int]) -> None:
    model = _model(spatial_dims=3, in_channels=2, out_channels=3).eval()
    out = model(torch.rand(2, 2, *size))
    assert out.shape == (2, 3, *size) and out.dtype == torch.float32
    assert isinstance(model.head, nn.Conv3d) and model.config()["spatial_dims"] == 3


def test_3d_padding_is_a_crop_and_mc_dropout_samples_differ() -> None:
    model = _model(spatial_dims=3, dropout=0.3).eval()
    x = torch.rand(1, 1, 5, 7, 6)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 1, 0, 3), mode="replicate")  # up to multiples of 4
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[..., :5, :7, :6], atol=1e-6)
        enable_mc_dropout(model)
        assert not torch.equal(model(x), model(x))
    assert any(isinstance(m, nn.Dropout3d) for m in model.modules())
    with pytest.raises(
        ValueError, match=r"x must have shape \(B, in_channels=1, D, H, W\), got \(1, 1, 8, 8\)"
    ):
        model(torch.rand(1, 1, 8, 8))


def test_pad_to_multiple_wraps_any_network() -> None:
    inner = nn.Conv2d(1, 2, 3, padding=1)
    wrapped = PadToMultiple(inner, 8, 2)
    x = torch.rand(2, 1, 13, 10)
    padded = torch.nn.functional.pad(x, (0, 6, 0, 3), mode="replicate")
    with torch.no_grad():
        assert torch.equal(wrapped(x), inner(padded)[..., :13, :10])
        assert torch.equal(wrapped(padded), inner(padded))  # nothing to pad: the network's own output
    assert list(wrapped.state_dict()) == ["network.weight", "network.bias"]
    with pytest.raises(
        ValueError, match=r"x must have 4 dimensions \(B, C and 2 spatial\), got shape \(1, 8, 8\)"
    ):
        wrapped(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="multiple must be a positive int, got 0"):
        PadToMultiple(inner, 0, 2)
