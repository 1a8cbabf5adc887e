"""The files one ``rndpo predict`` call writes: all planned before any is written, none replaced unless asked,
each written atomically, and all removed again if the call fails half-way.

:class:`OutputFiles` is used as a context manager around a prediction: :meth:`OutputFiles.plan` refuses
targets that exist (without ``overwrite``) before anything is computed, :meth:`OutputFiles.folder` creates
the output folder, :meth:`OutputFiles.write` writes one file atomically (a temporary file renamed into
place, :func:`rndpo.storage.atomic_write`), and an exception inside the block removes every file written
and every folder created by this call, so a disk that fills up on the tenth mask leaves no nine masks.
A write error of the disk (``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EACCES``, ``EPERM``) raised without a file
name gets the output's path as its ``filename``, so the CLI can name it (one raised on the temporary file
keeps that name, ``.<name>.<8 hex>.tmp``, from which the output's name is read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from rndpo.storage import WRITE_ERRORS

__all__ = ["OutputFiles"]


class OutputFiles:
    """Track the outputs of one call (see the module docstring). ``overwrite``: replace existing files."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self.written: list[Path] = []
        self._created: list[Path] = []

    def plan(self, targets: Iterable[Path]) -> None:
        """Refuse (FileExistsError naming it) a target that exists, unless ``overwrite``; writes nothing."""
        for target in targets:
            if target.is_dir():
                raise IsADirectoryError(f"--out: {target} is a folder; cannot write a file there")
            if target.exists() and not self.overwrite:
                raise FileExistsError(f"--out: {target} exists; pass --overwrite to replace it")

    def folder(self, path: Path) -> Path:
        """Create the folder ``path`` and its missing parents, remembering which were new."""
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"--out: {path} is a file, not a folder")
        missing = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        self._created.extend(missing)
        return path

    def write(self, path: Path, writer: Callable[..., Path], *args: Any, **kwargs: Any) -> Path:
        """Call ``writer(path, *args, **kwargs)``, an atomic writer that returns the path written (such as
        :func:`rndpo.storage.write_npz`); disk errors name ``path``."""
        self.folder(path.parent)
        try:
            written = writer(path, *args, **kwargs)
        except OSError as err:
            if err.errno in WRITE_ERRORS and err.filename is None:
                err.filename = str(path)
            raise
        self.written.append(written)
        return written

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            return
        for path in self.written:  # a failed call leaves nothing of its own behind
            path.unlink(missing_ok=True)
        for folder in sorted(set(self._created), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:  # not empty: something else was put there meanwhile
                continue
