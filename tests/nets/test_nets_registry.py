"""rndpo.nets.registry: every registered network builds, gives logits at the input's size, records how to
rebuild it, serves MC dropout, and the [model] section builds it (rndpo.UNet bit for bit as before)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from torch import nn

from rndpo.config import NETWORK_NAMES, ConfigError, ModelConfig
from rndpo.nets import (
    NETWORKS,
    UNet,
    architecture_of,
    build_network,
    enable_mc_dropout,
    network_from_architecture,
    network_from_config,
    supports_mc_dropout,
)

pytest.importorskip("monai")

#: small keyword arguments per network for the 3D checks (2 CPU cores)
SMALL_3D: dict[str, dict[str, Any]] = {
    "rndpo.UNet": {"channels": (4, 8, 16)},
    "monai.UNet": {"channels": (4, 8, 16), "strides": (2, 2)},
    "monai.BasicUNet": {"features": (4, 4, 8, 8, 16, 4)},
    "monai.SegResNet": {"init_filters": 4, "num_groups": 2, "norm": ("group", {"num_groups": 2})},
}


def test_the_registry_builds_exactly_the_configs_network_names() -> None:
    assert tuple(NETWORKS) == NETWORK_NAMES
    assert set(SMALL_3D) == set(NETWORK_NAMES)


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_every_network_builds_with_its_defaults_and_keeps_any_2d_size(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(name, 2, 2, 3).eval()
    with torch.no_grad():
        for size in ((37, 45), (33, 40), (32, 32)):  # BasicUNet's four poolings need about 32 or more
            out = net(torch.rand(2, 2, *size))
            assert out.shape == (2, 3, *size) and out.dtype == torch.float32
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_every_network_builds_in_3d(name: str) -> None:
    net = build_network(name, 3, 1, 2, **SMALL_3D[name]).eval()
    size = (33, 34, 35) if name == "monai.BasicUNet" else (9, 13, 6)
    with torch.no_grad():
        assert net(torch.rand(1, 1, *size)).shape == (1, 2, *size)


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_architecture_round_trip_rebuilds_the_same_network(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(name, 2, 1, 1, **SMALL_3D[name]).eval()
    arch = architecture_of(net)
    assert arch is not None and arch["name"] == name
    assert (arch["spatial_dims"], arch["in_channels"], arch["out_channels"]) == (2, 1, 1)
    assert all(not isinstance(v, tuple) for v in arch["kwargs"].values())  # JSON-ready: lists
    clone = network_from_architecture(arch).eval()
    assert type(clone) is type(net) and architecture_of(clone) == arch
    clone.load_state_dict(net.state_dict())
    x = torch.rand(2, 1, 36, 44)
    with torch.no_grad():
        assert torch.equal(clone(x), net(x))


def test_unets_built_without_the_registry_describe_themselves_too() -> None:
    net = UNet(in_channels=3, channels=(4, 8), dropout=0.2, norm="instance")
    assert architecture_of(net) == {
        "name": "rndpo.UNet",
        "spatial_dims": 2,
        "in_channels": 3,
        "out_channels": 1,
        "kwargs": {"channels": [4, 8], "dropout": 0.2, "norm": "instance"},
    }
    assert architecture_of(nn.Conv2d(1, 1, 3)) is None


def test_the_registrys_defaults_are_recorded_and_explicit_arguments_win() -> None:
    net = build_network("monai.UNet", 2, 1, 1, strides=(2, 2), channels=(4, 8, 16), num_res_units=1)
    arch = architecture_of(net)
    assert arch is not None
    assert arch["kwargs"] == {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}
    defaults = architecture_of(build_network("monai.UNet", 2, 1, 1))
    assert defaults is not None and defaults["kwargs"] == {"channels": [8, 16, 32, 64], "strides": [2, 2, 2]}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_network("monai.UNETR", 2, 1, 1), r"name must be one of \['rndpo.UNet', 'monai.UNet'"),
        (
            lambda: build_network("rndpo.UNet", 1, 1, 1),
            r"rndpo.UNet: spatial_dims must be one of \[2, 3\], got 1",
        ),
        (lambda: build_network("monai.UNet", 2, 0, 1), "in_channels must be a positive int, got 0"),
        (
            lambda: build_network("monai.SegResNet", 2, 1, 1, width=3),
            r"unknown keyword arguments \['width'\]",
        ),
        (lambda: build_network("monai.UNet", 2, 1, 1, channels=(4,)), "monai.UNet: cannot build with"),
        (lambda: network_from_architecture({"name": "mine.Net", "kwargs": {}}), "load_model"),
        (lambda: network_from_architecture({"name": "monai.UNet"}), "needs its keyword arguments"),
        (lambda: network_from_architecture([1]), "expected a mapping"),  # type: ignore[arg-type]
    ],
)
def test_bad_names_and_arguments_are_clear_errors(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_a_missing_monai_is_an_import_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "monai.networks", None)
    with pytest.raises(ImportError, match=r"'monai.SegResNet' needs MONAI.*rndpo\[monai\]"):
        build_network("monai.SegResNet", 2, 1, 1)
    assert isinstance(build_network("rndpo.UNet", 2, 1, 1), UNet)  # rndpo's own needs nothing


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_every_network_serves_mc_dropout_with_the_configs_dropout(name: str) -> None:
    assert supports_mc_dropout(name)
    kwargs = {k: v for k, v in SMALL_3D[name].items() if name != "rndpo.UNet"}
    torch.manual_seed(0)
    net = network_from_config(ModelConfig(name=name, channels=(4, 8), dropout=0.3, kwargs=kwargs), 1)  # type: ignore[arg-type]
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout | nn.Dropout2d | nn.Dropout3d)]
    assert drops and all(m.p == 0.3 for m in drops)
    enable_mc_dropout(net)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


def test_supports_mc_dropout_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        supports_mc_dropout("monai.UNETR")


def test_the_model_section_builds_the_same_unet_as_before_bit_for_bit() -> None:
    cfg = ModelConfig(channels=(4, 8, 16), dropout=0.2)
    torch.manual_seed(3)
    built = network_from_config(cfg, in_channels=3)
    torch.manual_seed(3)
    before = UNet(in_channels=3, channels=cfg.channels, dropout=cfg.dropout)
    assert type(built) is UNet and built.config() == before.config()
    a, b = built.state_dict(), before.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    norm = network_from_config(ModelConfig(kwargs={"norm": "instance"}), 1, spatial_dims=3)
    assert isinstance(norm, UNet) and (norm.norm, norm.spatial_dims) == ("instance", 3)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (ModelConfig(kwargs={"channels": [4, 8]}), "model.kwargs.channels: set model.channels instead"),
        (ModelConfig(kwargs={"dropout": 0.2}), "model.kwargs.dropout: set model.dropout instead"),
        (
            ModelConfig(name="monai.SegResNet", kwargs={"dropout_prob": 0.2}),
            "model.kwargs.dropout_prob: set model.dropout",
        ),
        (
            ModelConfig(name="monai.UNet", kwargs={"depth": 3}),
            r"model.kwargs: monai.UNet: unknown keyword arguments \['depth'\]",
        ),
    ],
)
def test_the_model_sections_bad_kwargs_are_config_errors(cfg: ModelConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        network_from_config(cfg, 1)
