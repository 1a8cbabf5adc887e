"""A whole run config: :class:`RunConfig`, and reading it from TOML with errors that name the key.

A run config is a TOML file with the tables ``[data]``, ``[model]``, ``[base]``, ``[proposals]``,
``[judges]``, ``[mining]``, ``[finetune]`` and ``[methods]``, plus top-level ``seeds`` and ``device``.
Every field has a default, so an empty file is the built-in synthetic demo. Unknown keys, removed keys
and invalid values raise :class:`~rndpo.config.errors.ConfigError` naming the key (``section.key``), the
valid choices and the value received.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rndpo.config._fields import check_fields, coerce, field_types, help_text
from rndpo.config.bounds import check_run
from rndpo.config.errors import ConfigError, check_path_name
from rndpo.config.methods import JUDGE_FREE, METHOD_PRESETS, MethodConfig
from rndpo.config.sections import (
    TOP_PICK,
    BaseTrainConfig,
    DataConfig,
    FinetuneConfig,
    JudgeConfig,
    MiningConfig,
    ModelConfig,
    ProposalConfig,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SECTIONS",
    "RunConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "read_toml",
]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A whole experiment: every (method, judge, miner, seed) combination is one fine-tuning run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    base: BaseTrainConfig = field(default_factory=BaseTrainConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    judges: JudgeConfig = field(default_factory=JudgeConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    methods: dict[str, MethodConfig] = field(
        default_factory=lambda: {k: METHOD_PRESETS[k] for k in ("sft_top", "dpo", "rndpo")},
        metadata=help_text("presets, or tables name = {preset = ..., <method key> = value}"),
    )
    seeds: tuple[int, ...] = field(
        default=(0,),
        metadata=help_text(
            "one run per seed; a seed reseeds base training, proposals, judges and fine-tuning"
        ),
    )
    device: str = field(
        default="cpu",
        metadata=help_text("torch device of every stage (rndpo run: cuda when available)"),
    )

    def __post_init__(self) -> None:
        check_fields(self, "")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        needs_truth = sorted({"oracle", "noisy_oracle"} & set(self.judges.names))
        if self.data.unlabeled_path and needs_truth:
            raise ConfigError(
                f"judges.names: {needs_truth} need ground truth on the unlabeled pool, but"
                f" data.unlabeled_path = {self.data.unlabeled_path!r} has none; use label-free judges"
                " (agreement, consensus, uncertainty, learned_qc)"
            )
        if not self.methods:
            raise ConfigError("methods must name at least one method")
        for name in self.methods:
            check_path_name(name, "methods: a method name")
        negative = [s for s in self.seeds if s < 0]
        if negative:
            raise ConfigError(f"seeds must be integers >= 0, got {negative[0]}")
        comparing = [j for j in self.judges.names if j in ("agreement", "consensus", "ensemble")]
        preference = [n for n, m in self.methods.items() if m.objective == "preference"]
        if self.proposals.k < 2 and (comparing or preference):
            needs = f"judge {comparing[0]!r}" if comparing else f"preference method {preference[0]!r}"
            raise ConfigError(
                f"proposals.k must be >= 2 for {needs} (it compares proposals), got {self.proposals.k}"
            )
        check_run(self, JUDGE_FREE, TOP_PICK)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "base": BaseTrainConfig,
    "proposals": ProposalConfig,
    "judges": JudgeConfig,
    "mining": MiningConfig,
    "finetune": FinetuneConfig,
}
"""The TOML table of each section, in the order of the config reference."""

_REMOVED_KEYS: dict[str, str] = {
    "base.seed": "every run seeds base training with its seed from the top-level `seeds`",
    "base.device": "base training runs on the top-level `device` (or `rndpo run --device`)",
    "proposals.seed": "every run seeds the MC-dropout proposals with its seed from the top-level `seeds`",
}


def _section_from_dict(cls: type, raw: Any, prefix: str, base: Any = None) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{prefix}] must be a table, got {type(raw).__name__}")
    hints = field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if f"{prefix}.{key}" in _REMOVED_KEYS:
            raise ConfigError(
                f"{prefix}.{key} was removed: {_REMOVED_KEYS[f'{prefix}.{key}']}; delete it from [{prefix}]"
            )
        if key not in names:
            raise ConfigError(f"unknown key {prefix}.{key}; valid keys: {names}")
        kwargs[key] = coerce(value, hints[key], f"{prefix}.{key}")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(str(err).replace("methods.<name>", prefix)) from None


def _methods_from_dict(raw: Any) -> dict[str, MethodConfig]:
    """``methods`` is a list of preset names, or a table of name -> {preset = ..., overrides}."""
    if isinstance(raw, list):
        out = {}
        for name in raw:
            if name not in METHOD_PRESETS:
                raise ConfigError(f"methods: unknown preset {name!r}; valid choices: {list(METHOD_PRESETS)}")
            out[name] = METHOD_PRESETS[name]
        return out
    if not isinstance(raw, Mapping):
        raise ConfigError(f"methods must be a list of presets or a table, got {type(raw).__name__}")
    methods = {}
    for name, table in raw.items():
        check_path_name(name, "methods: a method name")
        if not isinstance(table, Mapping):
            raise ConfigError(f"methods.{name} must be a table, got {type(table).__name__}")
        table = dict(table)
        preset = table.pop("preset", name if name in METHOD_PRESETS else None)
        if preset is not None and preset not in METHOD_PRESETS:
            raise ConfigError(
                f"methods.{name}.preset: unknown preset {preset!r}; valid: {list(METHOD_PRESETS)}"
            )
        base = METHOD_PRESETS[preset] if preset is not None else None
        methods[name] = _section_from_dict(MethodConfig, table, f"methods.{name}", base)
    return methods


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a parsed TOML mapping."""
    top = {"seeds", "device", "methods", *SECTIONS}
    for key in raw:
        if key not in top:
            raise ConfigError(f"unknown top-level key {key!r}; valid keys: {sorted(top)}")
    kwargs: dict[str, Any] = {
        name: _section_from_dict(cls, raw[name], name) for name, cls in SECTIONS.items() if name in raw
    }
    if "methods" in raw:
        kwargs["methods"] = _methods_from_dict(raw["methods"])
    if "seeds" in raw:
        kwargs["seeds"] = coerce(raw["seeds"], tuple[int, ...], "seeds")
    if "device" in raw:
        kwargs["device"] = coerce(raw["device"], str, "device")
    return RunConfig(**kwargs)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML mapping of a config file (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config."""
    return config_from_dict(read_toml(path))


def config_to_dict(config: Any) -> Any:
    """A JSON/TOML-ready dict of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [config_to_dict(v) for v in config]
    return config
