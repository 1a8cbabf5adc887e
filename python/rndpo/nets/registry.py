"""The network registry: builds every segmentation network rndpo trains, by name plus keyword arguments.

Every network maps images float32 (B, in_channels, *S) to logits float32 (B, out_channels, *S), S =
(H, W) for ``spatial_dims`` 2 or (D, H, W) for 3, for any sizes S (networks that need multiples of their
downsampling are wrapped in :class:`rndpo.nets.padding.PadToMultiple`). The names are
:data:`rndpo.config.NETWORK_NAMES`:

- ``rndpo.UNet``: :class:`rndpo.nets.unet.UNet` (spatial_dims 2 or 3; ``channels``, ``dropout``, ``norm``);
- ``monai.UNet``, ``monai.BasicUNet``, ``monai.SegResNet``: MONAI's networks of those names (the optional
  ``monai`` dependency, imported only when one is built), with MONAI's keyword arguments.

A network built here remembers its name and keyword arguments (:func:`architecture_of`), so a saved
model file can say how to rebuild it (:func:`network_from_architecture`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import lcm
from types import MappingProxyType
from typing import Any

from torch import nn

from rndpo.config import ConfigError, ModelConfig
from rndpo.nets.padding import PadToMultiple
from rndpo.nets.unet import UNet

__all__ = [
    "NETWORKS",
    "NetworkSpec",
    "architecture_of",
    "build_network",
    "network_from_architecture",
    "network_from_config",
    "supports_mc_dropout",
]

#: the arguments every network takes from the data, never from its keyword arguments
_DATA_ARGS = ("spatial_dims", "in_channels", "out_channels")
#: the attribute build_network leaves on the network it returns: its architecture record
_RECORD = "_rndpo_architecture"


def _rndpo_unet() -> type[nn.Module]:
    return UNet


def _monai(class_name: str, network: str) -> Callable[[], type[nn.Module]]:
    def load() -> type[nn.Module]:
        try:
            from monai.networks import nets
        except ImportError as err:
            raise ImportError(
                f"network {network!r} needs MONAI, an optional dependency: pip install 'rndpo[monai]'"
                f" (or pip install 'monai>=1.3'); import failed: {err}"
            ) from err
        cls: type[nn.Module] = getattr(nets, class_name)
        return cls

    return load


def _stride_multiple(kwargs: Mapping[str, Any]) -> int:
    """monai.UNet: every axis must be a multiple of the product of its strides (a stride may be one per
    axis: the lcm of those then stands for it)."""
    total = 1
    for stride in kwargs.get("strides", ()):
        total *= int(stride) if isinstance(stride, int) else lcm(*(int(s) for s in stride))
    return total


def _level_multiple(kwargs: Mapping[str, Any]) -> int:
    """monai.SegResNet: sizes must be multiples of 2 ** (levels - 1)."""
    return int(2 ** (len(kwargs.get("blocks_down", (1, 2, 2, 4))) - 1))  # MONAI's default: 4 levels


@dataclass(frozen=True)
class NetworkSpec:
    """How the registry builds one network.

    constructor: returns the network's class (imports it; called at build time); spatial_dims: those it
    supports; dropout_key: the keyword argument that sets its dropout (None: it has no dropout layers,
    so it cannot serve MC-dropout proposals); defaults: keyword arguments filled in when not given (the
    class's own defaults apply otherwise); multiple: the size multiple its inputs need, from its keyword
    arguments (None: any size works).
    """

    name: str
    constructor: Callable[[], type[nn.Module]]
    spatial_dims: tuple[int, ...]
    dropout_key: str | None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    multiple: Callable[[Mapping[str, Any]], int] | None = None


NETWORKS: Mapping[str, NetworkSpec] = MappingProxyType(
    {
        "rndpo.UNet": NetworkSpec("rndpo.UNet", _rndpo_unet, (2, 3), "dropout"),
        "monai.UNet": NetworkSpec(
            "monai.UNet",
            _monai("UNet", "monai.UNet"),
            (1, 2, 3),
            "dropout",
            MappingProxyType({"channels": (8, 16, 32, 64), "strides": (2, 2, 2)}),
            _stride_multiple,
        ),
        "monai.BasicUNet": NetworkSpec(
            "monai.BasicUNet", _monai("BasicUNet", "monai.BasicUNet"), (1, 2, 3), "dropout"
        ),
        "monai.SegResNet": NetworkSpec(
            "monai.SegResNet",
            _monai("SegResNet", "monai.SegResNet"),
            (1, 2, 3),
            "dropout_prob",
            multiple=_level_multiple,
        ),
    }
)
"""Every registered network by name (the keys are :data:`rndpo.config.NETWORK_NAMES`)."""


def _spec(name: str) -> NetworkSpec:
    if not isinstance(name, str) or name not in NETWORKS:
        raise ValueError(f"name must be one of {list(NETWORKS)}, got {name!r}")
    return NETWORKS[name]


def supports_mc_dropout(name: str) -> bool:
    """Whether network ``name`` takes a dropout (so it can serve the MC-dropout proposal source)."""
    return _spec(name).dropout_key is not None


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def _accepted(cls: type[nn.Module]) -> list[str]:
    """The keyword arguments ``cls`` takes besides spatial_dims, in_channels and out_channels."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(cls).parameters
    return sorted(k for k, p in params.items() if p.kind in named and k not in _DATA_ARGS)


def build_network(
    name: str, spatial_dims: int, in_channels: int, out_channels: int, **kwargs: Any
) -> nn.Module:
    """A freshly initialised network ``name`` (see :data:`NETWORKS`): images float32 (B, in_channels, *S)
    -> logits float32 (B, out_channels, *S) for any sizes S with ``spatial_dims`` axes.

    kwargs: the network's own keyword arguments (the registry's defaults fill in those not given).
    Raises ValueError for an unknown name, unsupported spatial_dims or unknown keyword arguments, and
    ImportError naming the extra when a MONAI network is asked for without MONAI installed.
    """
    spec = _spec(name)
    if isinstance(spatial_dims, bool) or spatial_dims not in spec.spatial_dims:
        raise ValueError(
            f"{name}: spatial_dims must be one of {list(spec.spatial_dims)}, got {spatial_dims!r}"
        )
    _positive_int(in_channels, "in_channels")
    _positive_int(out_channels, "out_channels")
    cls = spec.constructor()
    accepted = _accepted(cls)
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise ValueError(f"{name}: unknown keyword arguments {unknown}; valid: {accepted}")
    merged = {**spec.defaults, **kwargs}
    try:
        network = cls(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **merged)
    except (TypeError, ValueError, AssertionError) as err:  # MONAI checks some arguments with asserts
        raise ValueError(f"{name}: cannot build with {merged}: {err}") from err
    multiple = spec.multiple(merged) if spec.multiple is not None else 1
    if multiple > 1:
        network = PadToMultiple(network, multiple, spatial_dims)
    record = {
        "name": name,
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "kwargs": merged,
    }
    setattr(network, _RECORD, record)
    return network


def network_from_config(
    model: ModelConfig, in_channels: int, spatial_dims: int = 2, out_channels: int = 1
) -> nn.Module:
    """The network a ``[model]`` section names, for images with ``in_channels`` channels.

    rndpo.UNet takes ``channels`` and ``dropout`` from the section (the same network, bit for bit, as
    ``UNet(in_channels=..., channels=model.channels, dropout=model.dropout)``); every network takes
    ``model.kwargs``, and ``model.dropout`` is set on networks that take a dropout. Raises ConfigError
    naming the key for keyword arguments the network does not take or that the section sets elsewhere.
    """
    spec = _spec(model.name)  # ModelConfig already checked the name against the same vocabulary
    kwargs = dict(model.kwargs)
    if spec.name == "rndpo.UNet":
        for key in ("channels", "dropout"):
            if key in kwargs:
                raise ConfigError(f"model.kwargs.{key}: set model.{key} instead")
        kwargs = {"channels": model.channels, "dropout": model.dropout, **kwargs}
    elif spec.dropout_key is not None:
        if spec.dropout_key in kwargs:
            raise ConfigError(f"model.kwargs.{spec.dropout_key}: set model.dropout instead")
        kwargs[spec.dropout_key] = model.dropout
    try:
        return build_network(spec.name, spatial_dims, in_channels, out_channels, **kwargs)
    except ValueError as err:
        raise ConfigError(f"model.kwargs: {err}") from err


def _json_ready(value: Any, where: str) -> Any:
    """``value`` with tuples as lists; ValueError naming ``where`` for anything JSON cannot hold."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_ready(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _json_ready(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ValueError(
        f"{where} is a {type(value).__name__}, which a model file cannot record; give the network's"
        " description yourself (save_model(architecture=...)) and pass the network to load_model(model=...)"
    )


def architecture_of(network: nn.Module) -> dict[str, Any] | None:
    """How to rebuild ``network``, JSON-ready: ``{"name", "spatial_dims", "in_channels",
    "out_channels", "kwargs"}``, for networks built by :func:`build_network` and every
    :class:`rndpo.nets.unet.UNet`; None for any other network. ValueError if its keyword arguments
    cannot be written as JSON."""
    if isinstance(network, UNet):
        config = network.config()
        record: Mapping[str, Any] = {
            "name": "rndpo.UNet",
            "spatial_dims": config.pop("spatial_dims"),
            "in_channels": config.pop("in_channels"),
            "out_channels": config.pop("out_channels"),
            "kwargs": config,
        }
    else:
        found = getattr(network, _RECORD, None)
        if found is None:
            return None
        record = found
    ready: dict[str, Any] = _json_ready(dict(record), "architecture")
    return ready


def _legacy_args(name: str, config: Mapping[str, Any]) -> tuple[int, int, int, dict[str, Any]]:
    """An old description's ``config`` (all constructor arguments, missing ones at the class default)."""
    params = inspect.signature(NETWORKS[name].constructor()).parameters
    kwargs = dict(config)
    data = [kwargs.pop(k) if k in kwargs else params[k].default for k in _DATA_ARGS]
    return data[0], data[1], data[2], kwargs


def network_from_architecture(architecture: Mapping[str, Any], where: str = "architecture") -> nn.Module:
    """A freshly initialised network from a saved description: what :func:`architecture_of` returned,
    or an older file's ``{"name": "rndpo.UNet" | "monai.BasicUNet", "config": {...}}``.

    where: names the description in error messages (e.g. the file it came from).
    """
    if not isinstance(architecture, Mapping):
        raise ValueError(
            f"{where}: expected a mapping with 'name' and 'kwargs', got {type(architecture).__name__}"
        )
    name = architecture.get("name")
    if name not in NETWORKS:
        raise ValueError(
            f"{where}: network {name!r} is not one the registry builds ({list(NETWORKS)}); pass the"
            " network to load_model(path, model=...) and its weights are loaded into it"
        )
    kwargs, config = architecture.get("kwargs"), architecture.get("config")
    if isinstance(kwargs, Mapping):
        dims = [architecture.get(k) for k in _DATA_ARGS]
        spatial_dims, in_channels, out_channels = dims[0], dims[1], dims[2]
        args = dict(kwargs)
    elif name in ("rndpo.UNet", "monai.BasicUNet") and (config is None or isinstance(config, Mapping)):
        spatial_dims, in_channels, out_channels, args = _legacy_args(name, config or {})
    else:
        raise ValueError(f"{where}: {name} needs its keyword arguments ('kwargs': {{...}}), got none")
    try:
        return build_network(name, spatial_dims, in_channels, out_channels, **args)  # type: ignore[arg-type]
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
