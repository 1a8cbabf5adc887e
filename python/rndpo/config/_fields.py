"""Field helpers of the config sections: help metadata, ``Literal`` choices, type checks, TOML coercion.

Private to :mod:`rndpo.config`. A field's annotation is its contract: :func:`check_fields` checks every
field of a section against it (sections call it first in ``__post_init__``, so a section built in Python
is checked like one read from TOML), and :func:`coerce` turns a parsed TOML value into the annotated
type (lists become tuples, integers become floats where a float is expected). Errors are
:class:`~rndpo.config.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from rndpo.config.errors import ConfigError

__all__ = ["check_fields", "check_type", "coerce", "field_types", "help_text", "literal_choices"]


def help_text(text: str) -> dict[str, str]:
    """Field metadata holding the one-line help shown in the config reference."""
    return {"help": text}


def literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The choices of a ``Literal[...]`` annotation, or None for any other type."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return None


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config dataclass (cached per class; do not modify)."""
    hints = _FIELD_TYPES.get(cls)
    if hints is None:
        hints = _FIELD_TYPES[cls] = typing.get_type_hints(cls)
    return hints


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _expected(tp: Any) -> str:
    """What a value of annotation ``tp`` must be, in words."""
    if _is_union(tp):
        args = typing.get_args(tp)
        words = " or ".join(_expected(a) for a in args if a is not type(None))
        return f"{words}, or unset" if type(None) in args else words
    choices = literal_choices(tp)
    if choices is not None:
        return f"one of {list(choices)}"
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a table with string keys"
    names = {float: "a finite number", int: "an integer", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    return f"a {getattr(tp, '__name__', tp)}"


def _fail(value: Any, tp: Any, key: str) -> ConfigError:
    got = repr(value) if literal_choices(tp) is not None else f"{type(value).__name__} {value!r}"
    return ConfigError(f"{key} must be {_expected(tp)}, got {got}")


def check_type(value: Any, tp: Any, key: str) -> None:
    """Raise ConfigError naming ``key`` unless ``value`` has annotation ``tp``.

    Floats must be finite (an int counts as a float, a bool as neither), tuples are checked item by item
    (``key[i]``) and dicts key by key (``key.name``).
    """
    if tp is Any:
        return
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return
        for arg in args:
            if arg is type(None):
                continue
            try:
                check_type(value, arg, key)
                return
            except ConfigError:
                pass
        raise _fail(value, tp, key)
    choices = literal_choices(tp)
    if choices is not None:
        if isinstance(value, bool) or value not in choices:
            raise _fail(value, tp, key)
        return
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        if isinstance(value, list):  # a TOML list, passed in Python: frozen sections hold tuples
            raise ConfigError(f"{key} must be a tuple in Python (a list in TOML), got list {value!r}")
        if not isinstance(value, tuple):
            raise _fail(value, tp, key)
        for i, item in enumerate(value):
            check_type(item, args[0] if args else Any, f"{key}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _fail(value, tp, key)
        for name, item in value.items():
            check_type(item, args[1] if args else Any, f"{key}.{name}")
        return
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _fail(value, tp, key)
        return
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(value, tp, key)
        return
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _fail(value, tp, key)


def check_fields(obj: Any, section: str) -> None:
    """Check every field of the dataclass instance ``obj`` against its annotation (keys ``section.name``)."""
    hints = field_types(type(obj))
    for f in dataclasses.fields(obj):
        check_type(getattr(obj, f.name), hints[f.name], f"{section}.{f.name}" if section else f.name)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """A parsed TOML value as the annotated type ``tp``, or ConfigError naming ``key``.

    Lists become tuples, tables dicts and integers floats where a float is expected; everything else must
    already have the type (see :func:`check_type`).
    """
    if _is_union(tp):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError:
                pass
        check_type(value, tp, key)  # None where allowed; otherwise raises naming every alternative
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and isinstance(value, list | tuple):
        item_tp = args[0] if args else Any
        value = tuple(coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    elif origin is dict and isinstance(value, Mapping):
        value = dict(value)
    elif tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    check_type(value, tp, key)
    return value
