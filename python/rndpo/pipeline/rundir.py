"""The output folder of an experiment: checked before use, locked while used, cleaned on start.

- :func:`check_out` refuses an ``--out`` that is a file, lies under a file or cannot be written, and
  an occupied folder that holds no rndpo run (before anything is created or removed).
- :func:`lock_out` holds ``OUT/.rndpo.lock`` (an exclusive ``flock``; the file names the owner's pid)
  for the whole run, so a second run on the same folder is refused. The kernel drops the lock when its
  owner dies, so a lock left by a killed run is stale and is taken over (logged with its old pid).
- :func:`clear_out` (``--overwrite``) empties a folder that holds an rndpo run and logs what it removed.
- :func:`remove_leftovers` removes the temporary files and folders of writes killed half-way.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rndpo.storage import TEMP_PATTERN

__all__ = [
    "LOCK_NAME",
    "RUN_MARKER",
    "check_device",
    "check_out",
    "clear_out",
    "lock_out",
    "remove_leftovers",
]

log = logging.getLogger("rndpo")

RUN_MARKER = "config.json"
"""The file that marks a folder as an rndpo run."""

LOCK_NAME = ".rndpo.lock"
"""The lock file inside a run folder."""


def check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Raise a one-line error if ``out`` cannot hold this run; creates and removes nothing.

    Errors: ``out`` is a file or lies under one, its nearest existing folder is not writable, or it is a
    non-empty folder and neither ``resume`` nor ``overwrite`` is set, or it holds no rndpo run (no
    ``config.json``) while one of them is.
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise NotADirectoryError(f"--out {out} lies under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: {existing} is not writable")
    if not out.is_dir() or not any(p.name != LOCK_NAME for p in out.iterdir()):
        return
    if not resume and not overwrite:
        raise FileExistsError(
            f"output folder {out} is not empty: pass --resume to continue it or --overwrite to replace it"
        )
    if not (out / RUN_MARKER).is_file():
        flag = "--overwrite" if overwrite else "--resume"
        raise FileExistsError(
            f"{flag}: {out} holds no rndpo run (no {RUN_MARKER}); refusing to "
            + ("delete it" if overwrite else "use it")
        )


def check_device(device: str) -> None:
    """ValueError unless ``device`` is a torch device that exists here (``cuda`` needs CUDA)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be a torch device such as 'cpu' or 'cuda', got {device!r} ({err})"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")


def _read_pid(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:  # pragma: no cover
        return "unknown"


@contextmanager
def lock_out(out: Path) -> Iterator[Path]:
    """Hold the run lock on ``out`` (created if missing) for the duration of the block.

    Raises FileExistsError naming the owner's pid if another process holds it.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(
                f"output folder {out} is in use by another rndpo run (pid {_read_pid(path)}); "
                "wait for it to finish or stop it"
            ) from None
        except OSError as err:  # a file system without flock (some network mounts)
            log.warning("cannot lock %s (%s): a second run on it would not be refused", out, err)
        old = os.read(fd, 64).decode(errors="replace").strip()
        if old and old != str(os.getpid()):
            log.warning("taking over a stale lock on %s (pid %s is no longer running it)", out, old)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # the file stays: removing it would race with a waiting run
    finally:
        os.close(fd)  # releases the flock


def clear_out(out: Path) -> None:
    """Remove everything in run folder ``out`` but its lock, logging what was removed."""
    if not (out / RUN_MARKER).is_file():
        raise FileExistsError(
            f"--overwrite: {out} holds no rndpo run (no {RUN_MARKER}); refusing to delete it"
        )
    removed = []
    for entry in sorted(out.iterdir()):
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    log.info("--overwrite: removed the previous run in %s: %s", out, ", ".join(removed))


def remove_leftovers(out: Path) -> list[Path]:
    """Remove temporary files/folders of killed atomic writes under ``out``; returns what was removed."""
    found = [p for p in out.rglob(".*.tmp") if TEMP_PATTERN.fullmatch(p.name)]
    removed = []
    for path in sorted(found, key=lambda p: len(p.parts)):
        if not path.exists() and not path.is_symlink():
            continue  # inside a folder removed just before
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
        log.info("removed %s, left by an interrupted write", path)
    return removed
