"""Crash-safe files and stage cache keys.

Every result file is written to a temporary file in the same folder and renamed into place, so a kill
(even ``kill -9``) leaves either the old file or the new one, never half of one. Stage folders use the
same idea: they are built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_dir", "atomic_write", "stage_key", "write_json", "write_npz", "write_text"]


def stage_key(*parts: Any) -> str:
    """A short stable hash (12 hex chars) of JSON-serialisable parts: the cache key of a stage."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the temporary file to ``path`` once it succeeded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    return atomic_write(path, write)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN is refused: results must stay valid JSON)."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Atomically write arrays into an uncompressed ``.npz`` file at exactly ``path``."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file object: np.savez would append ".npz" to a path
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds oddly

    return atomic_write(path, write)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
