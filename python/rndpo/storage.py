"""Crash-safe, checksummed files, safe loading of weights, and stage cache keys.

Every result file is written to a temporary file in the same folder and renamed into place, so a kill
(even ``kill -9``) leaves either the old file or the new one, never half of one. Stage folders use the
same idea: they are built under a temporary name and renamed when complete. Temporary names are
``.<name>.<8 hex>.tmp`` (see :data:`TEMP_PATTERN`), so leftovers of a killed write can be found and
removed; they are created with mode 0666/0777 less the umask, like an ordinary write, and never
through a symbolic link (``O_EXCL | O_NOFOLLOW``).

Symbolic links: a link found where a file or stage folder is to be written (or a stage to be verified)
is an error naming it (:func:`refuse_link`), never followed nor replaced, so that a folder someone hands
over cannot make a write land outside it.

Checksums: a stage folder written by :func:`atomic_dir` holds ``SHA256SUMS`` (the format of
``sha256sum``) for every file in it, and a file written with ``checksum=True`` gets a ``<file>.sha256``
beside it, written after the file itself. Each file is hashed once, when written; :func:`stage_ready`
verifies a stage with one read pass and removes a stage that fails, naming the file and the reason, so
that a corrupted stage is recomputed and never used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHECKSUMS",
    "TEMP_PATTERN",
    "WRITE_ERRORS",
    "atomic_dir",
    "atomic_write",
    "first_line",
    "load_weights",
    "nearest_existing",
    "refuse_link",
    "sha256_file",
    "stage_key",
    "stage_ready",
    "verify_stage",
    "write_json",
    "write_npz",
    "write_text",
]

log = logging.getLogger("rndpo")

CHECKSUMS = "SHA256SUMS"
"""Name of the checksum file inside a stage folder."""

TEMP_PATTERN = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp")
"""Names of the temporary files and folders of unfinished atomic writes (group 1: the name written)."""

#: errno values of a write the disk refused, and how a one-line error says it (full, over quota,
#: read-only, no permission).
WRITE_ERRORS: dict[int, str] = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk full (quota exceeded)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}

_CHUNK = 1 << 20


def stage_key(*parts: Any) -> str:
    """A short stable hash (12 hex chars) of JSON-serialisable parts: the cache key of a stage."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name when it has none): how a one-line error
    quotes the library error behind it."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest ancestor that does (the root at worst)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def refuse_link(path: Path, where: str = "where it writes") -> None:
    """ValueError naming ``path`` if it is a symbolic link (dangling or not)."""
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; rndpo does not follow links {where}")


def _temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


def _new_temp_file(path: Path) -> Path:
    """Create an empty temporary file beside ``path`` (mode 0666 less the umask)."""
    while True:
        tmp = _temp_name(path)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 2**32 names
            continue


def _new_temp_dir(path: Path) -> Path:
    """Create an empty temporary folder beside ``path`` (mode 0777 less the umask)."""
    while True:
        tmp = _temp_name(path)
        try:
            tmp.mkdir(mode=0o777)
            return tmp
        except FileExistsError:  # pragma: no cover - 2**32 names
            continue


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def atomic_write(path: str | Path, write: Callable[[Path], None], *, checksum: bool = False) -> Path:
    """Call ``write(tmp_path)`` and rename the temporary file to ``path`` once it succeeded.

    With ``checksum`` the file's SHA-256 is then written to ``<path>.sha256`` (removed first, so a kill
    between the two renames leaves a file without a checksum, which :func:`stage_ready` rejects).
    A symbolic link at ``path`` or ``<path>.sha256`` is refused (ValueError) before anything is written.
    """
    path = Path(path)
    refuse_link(path)
    if checksum:
        refuse_link(_sidecar(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temp_file(path)
    try:
        write(tmp_path)
        _fsync(tmp_path)
        digest = sha256_file(tmp_path) if checksum else ""
        if checksum:
            _sidecar(path).unlink(missing_ok=True)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    if checksum:
        write_text(_sidecar(path), f"{digest}  {path.name}\n")
    return path


def write_text(path: str | Path, text: str, *, checksum: bool = False) -> Path:
    """Atomically write a text file."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    return atomic_write(path, write, checksum=checksum)


def write_json(path: str | Path, obj: Any, *, checksum: bool = False) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN is refused: results must stay valid JSON)."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n", checksum=checksum)


def write_npz(path: str | Path, *, checksum: bool = False, **arrays: np.ndarray) -> Path:
    """Atomically write arrays into an uncompressed ``.npz`` file at exactly ``path``."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file object: np.savez would append ".npz" to a path
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds oddly

    return atomic_write(path, write, checksum=checksum)


def _write_checksums(folder: Path) -> None:
    lines = [
        f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n"
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != CHECKSUMS
    ]
    (folder / CHECKSUMS).write_text("".join(lines))
    _fsync(folder / CHECKSUMS)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on error it is removed.

    On success every file in it is hashed into ``SHA256SUMS`` before the rename. A symbolic link at
    ``path`` is refused (ValueError) before anything is written.
    """
    path = Path(path)
    refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_dir(path)
    try:
        yield tmp
        _write_checksums(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _parse_sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
            raise ValueError(f"malformed checksum line {line!r}")
        sums[name] = digest
    return sums


def _check_files(base: Path, sums: dict[str, str]) -> str | None:
    for name, digest in sums.items():
        file = base / name
        if not file.resolve().is_relative_to(base.resolve()):
            return f"{name}: a checksum names a file outside the stage"
        if not file.is_file():
            return f"{file}: missing"
        if sha256_file(file) != digest:
            return f"{file}: SHA-256 does not match the one recorded when it was written"
    return None


def _read_sums(sums_file: Path, what: str) -> dict[str, str] | str:
    """The {name: digest} of a checksum file, or the reason it cannot be used."""
    if not sums_file.is_file():
        return f"{sums_file}: missing (no {what} recorded)"
    try:
        return _parse_sums(sums_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        return f"{sums_file}: {err}"


def verify_stage(path: str | Path) -> str | None:
    """None if the stage at ``path`` (a folder or a file) matches its checksums, else the reason."""
    path = Path(path)
    if path.is_dir():
        sums = _read_sums(path / CHECKSUMS, "checksums were")
        if isinstance(sums, str):
            return sums
        listed = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        extra = sorted(listed - set(sums) - {CHECKSUMS})
        if extra:
            return f"{path / extra[0]}: not listed in {CHECKSUMS}"
        return _check_files(path, sums)
    sums = _read_sums(_sidecar(path), "checksum was")
    if isinstance(sums, str):
        return sums
    if list(sums) != [path.name]:
        return f"{_sidecar(path)}: must name {path.name}, got {list(sums)}"
    return _check_files(path.parent, sums)


def stage_ready(path: str | Path) -> bool:
    """True if the stage at ``path`` exists and matches its checksums.

    A stage that exists but fails is logged (file and reason) and removed, so it is recomputed. A symbolic
    link at ``path`` (or its ``.sha256``) is refused (ValueError): a stage is a file or folder rndpo wrote.
    """
    path = Path(path)
    refuse_link(path)
    refuse_link(_sidecar(path))
    if not path.exists():
        _sidecar(path).unlink(missing_ok=True)
        return False
    reason = verify_stage(path)
    if reason is None:
        return True
    log.warning("stage %s failed verification (%s); recomputing it", path.name, reason)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
        _sidecar(path).unlink(missing_ok=True)
    return False


def load_weights(path: str | Path, *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, dicts, lists, tuples, numbers and strings only.

    A file that needs anything else unpickled (code, arbitrary classes) is refused before any of it
    runs: ValueError naming the file. Unreadable files raise ValueError too.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln for ln in str(err).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        what = lines[0].strip() if lines else type(err).__name__
        raise ValueError(
            f"{path}: refusing to load: it holds objects other than tensors, dicts, lists and numbers, "
            f"which could run code ({what}); it was not written by rndpo"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable weights file: {err}") from None
