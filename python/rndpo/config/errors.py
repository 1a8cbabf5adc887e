"""The one config error: :class:`ConfigError`, and the check of names that become path components.

Every bad config value, whether read from TOML or set in Python, raises :class:`ConfigError` (a
``ValueError``) with a message that names the key as ``section.key``; the CLI prints it as one line and
exits with status 2.
"""

from __future__ import annotations

import re

__all__ = ["ConfigError", "check_path_name"]


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key (``section.key``)."""


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_path_name(name: object, key: str) -> str:
    """``name`` if it is safe as one path component (``[A-Za-z0-9_.-]+``, not ``.`` or ``..``).

    Raises :class:`ConfigError` (a ValueError) naming ``key`` otherwise.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"{key} must be a plain name of letters, digits, '_', '.' and '-' (no path separators, "
            f"not '.' or '..'), got {name!r}"
        )
    return name
