"""The output folder of an experiment: checked before use, locked while used, cleaned on start.

A folder handed over by someone else is untrusted: rndpo follows no symbolic link inside it, prints no
byte of a file it did not write, and deletes only a folder that is recognisably an rndpo run.

- :func:`check_out` refuses an ``--out`` that is a file, a symbolic link, lies under a file or cannot be
  written, a link at any name rndpo writes in it, ``--resume`` with ``--overwrite``, and an occupied
  folder that holds no rndpo run (:func:`not_a_run`), before anything is created or removed.
- :func:`lock_out` holds ``OUT/.rndpo.lock`` (an exclusive ``flock``; the file names the owner's pid)
  for the whole run, so a second run on the same folder is refused. The kernel drops the lock when its
  owner dies, so a lock left by a killed run is stale and is taken over (logged with its old pid, shown
  only when the file holds a pid).
- :func:`clear_out` (``--overwrite``) empties a folder that holds an rndpo run and logs what it removed.
- :func:`open_log` opens ``OUT/rndpo.log`` for appending, never through a link.
- :func:`remove_leftovers` removes the temporary files and folders of writes killed half-way.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rndpo.pipeline.timings import TIMINGS_FILE
from rndpo.storage import TEMP_PATTERN, nearest_existing, refuse_link

__all__ = [
    "LOCK_NAME",
    "LOG_NAME",
    "RUN_FILES",
    "RUN_FOLDERS",
    "RUN_MARKER",
    "check_device",
    "check_out",
    "clear_out",
    "lock_out",
    "not_a_run",
    "open_log",
    "remove_leftovers",
]

log = logging.getLogger("rndpo")

RUN_MARKER = "config.json"
"""The file that marks a folder as an rndpo run."""

LOCK_NAME = ".rndpo.lock"
"""The lock file inside a run folder."""

LOG_NAME = "rndpo.log"
"""The log file inside a run folder."""

RUN_FILES = frozenset(
    {
        RUN_MARKER,
        RUN_MARKER + ".sha256",
        LOCK_NAME,
        LOG_NAME,
        TIMINGS_FILE,
        "results.json",
        "results.csv",
        "results.md",
        "curves.png",
        "examples.png",
    }
)
"""The files rndpo writes at the top of a run folder."""

RUN_FOLDERS = frozenset({"stages", "runs", "models"})
"""The folders rndpo writes at the top of a run folder."""

_IN_RUN = "inside a run folder"
_MAX_MARKER = 4 << 20  # bytes: a config.json is a few kB; a bigger one was not written by rndpo
_PID = re.compile(r"[0-9]{1,10}")


def not_a_run(out: Path, *, strict: bool = True) -> str | None:
    """None if folder ``out`` holds an rndpo run, else why not (one phrase that quotes no file content).

    A run's ``config.json`` is a regular file holding JSON ``{"version": str, "config": dict, ...}``, as
    :func:`rndpo.pipeline.run_experiment` writes it. ``strict`` (what ``--overwrite`` needs before it
    deletes anything) also needs that config to load with :func:`rndpo.config.config_from_dict` and every
    other entry of ``out`` to be a name rndpo writes (:data:`RUN_FILES`, :data:`RUN_FOLDERS`, temporary
    files of :data:`rndpo.storage.TEMP_PATTERN`).
    """
    from rndpo.config import config_from_dict

    marker = out / RUN_MARKER
    if marker.is_symlink() or not marker.is_file():
        return f"no {RUN_MARKER}"
    try:
        if marker.stat().st_size > _MAX_MARKER:
            return f"its {RUN_MARKER} is too big to be rndpo's"
        doc = json.loads(marker.read_bytes())
    except (OSError, ValueError, RecursionError):  # ValueError: not UTF-8 or not JSON
        return f"its {RUN_MARKER} is not JSON"
    if not (
        isinstance(doc, dict) and isinstance(doc.get("version"), str) and isinstance(doc.get("config"), dict)
    ):
        return f'its {RUN_MARKER} is not one rndpo wrote: no "version" and "config" keys'
    if not strict:
        return None
    try:
        config_from_dict(doc["config"])
    except Exception:  # any failure on untrusted content means "not a run this rndpo can recognise"
        return f"the config in its {RUN_MARKER} does not load with this rndpo (an older version's run?)"
    unknown = sorted(
        p.name
        for p in out.iterdir()
        if p.name not in RUN_FILES | RUN_FOLDERS and not TEMP_PATTERN.fullmatch(p.name)
    )
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        return f"it also holds entries rndpo does not write: {shown}"
    return None


def _refuse_out_link(out: Path) -> None:
    """ValueError if the run folder ``out`` itself is a symbolic link."""
    refuse_link(out, "for a run folder: pass the folder it points to")


def _refuse_links(out: Path) -> None:
    """ValueError if any name rndpo writes at the top of ``out`` is a symbolic link (``out`` itself is
    checked first by the callers, :func:`_refuse_out_link`)."""
    for name in sorted(RUN_FILES | RUN_FOLDERS):
        refuse_link(out / name, _IN_RUN)


def check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Raise a one-line error if ``out`` cannot hold this run; creates and removes nothing.

    Errors: ``resume`` and ``overwrite`` are both set; ``out`` is a symbolic link, a file or lies under
    one, its nearest existing folder is not writable, a name rndpo writes in it is a symbolic link, or it
    is a non-empty folder and neither ``resume`` nor ``overwrite`` is set, or it holds no rndpo run while
    one of them is (:func:`not_a_run`; strict for ``overwrite``).
    """
    if resume and overwrite:
        raise ValueError(
            "--resume and --overwrite: pass one, not both (--resume continues the run in --out, "
            "--overwrite deletes it first)"
        )
    _refuse_out_link(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder")
    existing = nearest_existing(out)
    if existing.exists() and not existing.is_dir():
        raise NotADirectoryError(f"--out {out} lies under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: {existing} is not writable")
    if not out.is_dir():
        return
    _refuse_links(out)
    if not any(p.name != LOCK_NAME for p in out.iterdir()):
        return
    if not resume and not overwrite:
        raise FileExistsError(
            f"output folder {out} is not empty: pass --resume to continue it or --overwrite to replace it"
        )
    reason = not_a_run(out, strict=overwrite)
    if reason is not None:
        flag = "--overwrite" if overwrite else "--resume"
        raise FileExistsError(
            f"{flag}: {out} holds no rndpo run ({reason}); refusing to "
            + ("delete anything in it" if overwrite else "use it")
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


def _read_pid(fd: int) -> str | None:
    """The pid written in lock file ``fd``; None if it holds nothing; "" if it holds something else."""
    try:
        text = os.pread(fd, 64, 0).strip()
    except OSError:  # pragma: no cover
        return ""
    if not text:
        return None
    return text.decode() if _PID.fullmatch(text.decode("ascii", errors="replace")) else ""


def _open_no_link(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` (created 0666 less the umask), refusing a link or a non-regular file."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            refuse_link(path, _IN_RUN)  # a link there: one line naming it
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a regular file; rndpo writes only its own files {_IN_RUN}")
    return fd


def open_log(path: Path) -> TextIO:
    """``path`` opened for appending UTF-8 text (created if missing), never through a symbolic link."""
    return os.fdopen(_open_no_link(path, os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8")


@contextmanager
def lock_out(out: Path) -> Iterator[Path]:
    """Hold the run lock on ``out`` (created if missing) for the duration of the block.

    Raises FileExistsError naming the owner's pid if another process holds it, ValueError if ``out``
    or a name rndpo writes in it is a symbolic link.
    """
    _refuse_out_link(out)
    out.mkdir(parents=True, exist_ok=True)
    _refuse_links(out)
    path = out / LOCK_NAME
    fd = _open_no_link(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(
                f"output folder {out} is in use by another rndpo run (pid {_read_pid(fd) or 'unknown'}); "
                "wait for it to finish or stop it"
            ) from None
        except OSError as err:  # a file system without flock (some network mounts)
            log.warning("cannot lock %s (%s): a second run on it would not be refused", out, err)
        old = _read_pid(fd)
        if old == "":
            log.warning(
                "taking over a stale lock on %s (its lock file held something that is not a pid)", out
            )
        elif old is not None and old != str(os.getpid()):
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
    """Remove everything in run folder ``out`` but its lock, logging what was removed.

    FileExistsError, removing nothing, unless ``out`` holds an rndpo run (:func:`not_a_run`, strict).
    """
    reason = not_a_run(out)
    if reason is not None:
        raise FileExistsError(
            f"--overwrite: {out} holds no rndpo run ({reason}); refusing to delete anything in it"
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
