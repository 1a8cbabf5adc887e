"""A run config written out as commented TOML: ``rndpo config --defaults`` and the README's reference.

Every key of every table comes with its value and a one-line comment taken from the dataclass field's
``help`` metadata (plus the valid choices of ``Literal`` fields and the documented range of bounded ones,
see :mod:`rndpo.config.bounds`). A key whose default is None (no TOML
value) is written commented out. Parsing the output with :func:`rndpo.config.run.config_from_dict` gives the
config back.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from rndpo.config._fields import field_types, literal_choices
from rndpo.config.bounds import bound_text
from rndpo.config.methods import METHOD_PRESETS, MethodConfig
from rndpo.config.run import SECTIONS, RunConfig

__all__ = ["config_toml"]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {type(v).__name__} {v!r}")


def _comment(cls: type, f: dataclasses.Field[Any]) -> str:
    text = str(f.metadata.get("help", "")).strip()
    choices = literal_choices(field_types(cls)[f.name])
    if choices is not None:
        text += f" (one of {', '.join(map(str, choices))})"
    bound = bound_text(cls, f.name)
    return f"{text} ({bound})" if bound else text


def _table(cls: type, obj: Any, prefix: str = "") -> list[str]:
    lines = []
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        comment = _comment(cls, f)
        if value is None:
            lines.append(f"{prefix}# {f.name} =  # {comment} (default: unset)")
        else:
            lines.append(f"{prefix}{f.name} = {_value(value)}  # {comment}")
    return lines


def config_toml(config: RunConfig | None = None) -> str:
    """``config`` (default: every default) as commented TOML that :func:`load_config` reads back."""
    config = RunConfig() if config is None else config
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    lines = [
        "# rndpo run config: every key with its value (`rndpo config --defaults` prints the defaults)",
        "",
        f"seeds = {_value(config.seeds)}  # {_comment(RunConfig, fields['seeds'])}",
        f"device = {_value(config.device)}  # {_comment(RunConfig, fields['device'])}",
    ]
    presets = {name: m for name, m in config.methods.items() if METHOD_PRESETS.get(name) == m}
    if len(presets) == len(config.methods):
        lines.append(f"methods = {_value(list(config.methods))}  # {_comment(RunConfig, fields['methods'])}")
    lines += [f"#   presets: {', '.join(METHOD_PRESETS)}", "#   keys of a method table:"]
    lines += _table(MethodConfig, MethodConfig(), prefix="#   ")
    for name, cls in SECTIONS.items():
        doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", (cls.__doc__ or "").strip().splitlines()[0])
        lines += ["", f"[{name}]", f"# {doc}"]
        lines += _table(cls, getattr(config, name))
    if len(presets) != len(config.methods):
        lines += ["", "[methods]"]
        for name, method in config.methods.items():
            cells = ", ".join(
                f"{f.name} = {_value(getattr(method, f.name))}" for f in dataclasses.fields(method)
            )
            lines.append(f"{_key(name)} = {{{cells}}}")
    return "\n".join(lines) + "\n"
