"""Proposal banks: K candidate label maps per unlabeled image, saved as memory-mappable .npy files.

Shapes, with S the spatial shape (H, W) or (D, H, W) and C = ``num_classes``:

- images float32 (N, Cin, *S);
- masks uint8 (N, K, *S), label maps with values 0..C-1 (0 the background, 1..C-1 the structures);
  a binary bank (C = 2, the default) holds {0, 1} masks as before;
- probs, the base model's probabilities for judges, or None: for C = 2 float32 (N, *S), the foreground
  probability; for C > 2 float32 (N, C, *S), the softmax over the classes (summing to 1 per voxel).
  float32 rather than float16: the judges take logs of small probabilities (entropy), and the bank's
  masks, not its probabilities, dominate the disk for K >= C;
- ground_truth uint8 (N, *S) with labels 0..C-1, where it is known (experiments only).

:func:`rndpo.proposals.generate_proposals` makes one. On disk a bank is one ``.npy`` per array and a
``bank.json`` manifest, format ``rndpo-proposal-bank/1`` for binary banks (unchanged, so older readers
still load them) and ``rndpo-proposal-bank/2`` for label-map banks (which also records ``num_classes``);
both formats load.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rndpo.storage import atomic_dir

__all__ = ["ProposalBank"]

_ARRAYS = ("images", "masks", "probs", "ground_truth")
_FORMAT = "rndpo-proposal-bank/1"
"""Format of binary banks (num_classes = 2), the only format of earlier versions."""
_FORMAT_LABELS = "rndpo-proposal-bank/2"
"""Format of label-map banks (num_classes > 2); bank.json also holds ``num_classes``."""
_CHUNK_BYTES = 1 << 25
"""Validation reads the arrays in chunks of about this many bytes (memory maps stay cheap)."""


def _shape(a: Any) -> Any:
    return tuple(a.shape) if hasattr(a, "shape") else type(a).__name__


def _layout(spatial: int, lead: str) -> str:
    """'(N, H, W)'-style layout of ``lead`` axes followed by ``spatial`` spatial axes."""
    axes = ("H", "W") if spatial == 2 else ("D", "H", "W")
    return "(" + ", ".join([*lead.split(), *axes]) + ")"


def _chunked_max(a: np.ndarray) -> int:
    """max over a non-empty array, read in chunks along axis 0 (no full-size temporary)."""
    step = max(1, _CHUNK_BYTES // max(1, a[:1].nbytes))
    return max(int(a[i : i + step].max()) for i in range(0, a.shape[0], step))


def _check_probabilities(probs: np.ndarray, num_classes: int) -> None:
    """Finite values in [0, 1]; with a class axis (C > 2) they must also sum to 1 per voxel (1e-3)."""
    step = max(1, _CHUNK_BYTES // max(1, 4 * probs[:1].nbytes))
    for i in range(0, probs.shape[0], step):
        p = np.asarray(probs[i : i + step])
        if not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
            raise ValueError("probs must be finite probabilities in [0, 1]")
        if num_classes > 2:
            total = p.sum(axis=1, dtype=np.float64)
            worst = float(np.abs(total - 1.0).max())
            if worst > 1e-3:
                raise ValueError(
                    f"probs must sum to 1 over the class axis (N, C, *S), got sums off by up to {worst:.3g}"
                )


def _check_num_classes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"num_classes must be an int from 2 to 255, got {type(value).__name__} {value!r}")
    if not 2 <= int(value) <= 255:
        raise ValueError(f"num_classes must be an int from 2 to 255, got {int(value)}")
    return int(value)


@dataclass(frozen=True)
class ProposalBank:
    """K proposal label maps for each of N images (2D or 3D).

    images float32 (N, Cin, *S) with S = (H, W) or (D, H, W); masks uint8 (N, K, *S) with labels
    0..num_classes-1 ({0, 1} for a binary bank); probs or None: float32 (N, *S) foreground probabilities
    when num_classes = 2, float32 (N, C, *S) class probabilities (softmax, summing to 1) when
    num_classes = C > 2; ground_truth uint8 (N, *S) with labels 0..num_classes-1, or None; sources: K
    names (one per proposal) or () when unknown; num_classes: C, 2 to 255 (2: binary). Arrays may be
    read-only memory maps. Bool masks / ground_truth are accepted and stored as uint8 views.
    """

    images: np.ndarray
    masks: np.ndarray
    probs: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    sources: tuple[str, ...] = ()
    num_classes: int = 2

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
        object.__setattr__(self, "num_classes", _check_num_classes(self.num_classes))
        for name in ("masks", "ground_truth"):  # bool -> uint8 is a free view
            value = getattr(self, name)
            if value is not None and value.dtype == np.bool_:
                object.__setattr__(self, name, value.view(np.uint8))
        images, masks = self.images, self.masks
        if images.ndim not in (4, 5) or images.dtype != np.float32:
            raise ValueError(
                "images must be float32 (N, C, H, W) or (N, C, D, H, W), "
                f"got {images.dtype} with shape {images.shape}"
            )
        n, spatial = images.shape[0], tuple(images.shape[2:])
        nd = len(spatial)
        if (
            masks.dtype != np.uint8
            or masks.ndim != 2 + nd
            or masks.shape[0] != n
            or masks.shape[2:] != spatial
        ):
            raise ValueError(
                f"masks must be uint8 {_layout(nd, 'N K')} with {_layout(nd, 'N')} = {(n, *spatial)}, "
                f"got {masks.dtype} with shape {masks.shape}"
            )
        if masks.shape[1] < 1:
            raise ValueError(f"masks must hold K >= 1 proposals per image, got shape {masks.shape}")
        self._check_labels("masks", masks)
        if self.probs is not None:
            self._check_probs(self.probs, n, spatial)
        if self.ground_truth is not None:
            gt = self.ground_truth
            if gt.dtype != np.uint8 or gt.shape != (n, *spatial):
                raise ValueError(
                    f"ground_truth must be uint8 {_layout(nd, 'N')} = {(n, *spatial)}, "
                    f"got {gt.dtype} with shape {gt.shape}"
                )
            self._check_labels("ground_truth", gt)
        if not isinstance(self.sources, tuple) or not all(isinstance(s, str) for s in self.sources):
            raise TypeError(f"sources must be a tuple of str, got {self.sources!r}")
        if self.sources and len(self.sources) != masks.shape[1]:
            raise ValueError(f"sources must name K = {masks.shape[1]} proposals, got {len(self.sources)}")

    def _check_labels(self, name: str, labels: np.ndarray) -> None:
        top = _chunked_max(labels) if labels.size else 0
        if top < self.num_classes:
            return
        if self.num_classes == 2:
            raise ValueError(f"{name} must be binary {{0, 1}}, got values up to {top}")
        raise ValueError(
            f"{name} must hold labels 0 to {self.num_classes - 1} (num_classes = {self.num_classes}), "
            f"got values up to {top}"
        )

    def _check_probs(self, probs: np.ndarray, n: int, spatial: tuple[int, ...]) -> None:
        nd = len(spatial)
        if self.num_classes == 2:
            expected, layout = (n, *spatial), _layout(nd, "N")
        else:
            expected, layout = (n, self.num_classes, *spatial), _layout(nd, "N C")
        if probs.dtype != np.float32 or probs.shape != expected:
            raise ValueError(
                f"probs must be float32 {layout} = {expected}, got {probs.dtype} with shape {probs.shape}"
            )
        if probs.size:
            _check_probabilities(probs, self.num_classes)

    @property
    def n_images(self) -> int:
        return int(self.masks.shape[0])

    @property
    def k(self) -> int:
        return int(self.masks.shape[1])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """S: (H, W) or (D, H, W)."""
        return tuple(int(s) for s in self.masks.shape[2:])

    def subset(self, index: np.ndarray | Sequence[int]) -> ProposalBank:
        """Images ``index`` (int array (M,) or boolean mask (N,)) as a new in-memory bank."""
        index = np.asarray(index)
        if index.dtype == np.bool_:
            if index.shape != (self.n_images,):
                raise ValueError(
                    f"index as a boolean mask must have shape ({self.n_images},), got {index.shape}"
                )
            index = np.flatnonzero(index)
        if index.ndim != 1 or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
            raise ValueError(f"index must be a 1-D int array, got {index.dtype} with shape {index.shape}")
        if index.size and (index.min() < -self.n_images or index.max() >= self.n_images):
            raise ValueError(
                f"index must lie in [0, {self.n_images}), got values {index.min()}..{index.max()}"
            )
        index = index.astype(np.int64)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.ascontiguousarray(a[index])

        return ProposalBank(
            np.ascontiguousarray(self.images[index]),
            np.ascontiguousarray(self.masks[index]),
            take(self.probs),
            take(self.ground_truth),
            self.sources,
            self.num_classes,
        )

    def save(self, directory: str | Path) -> Path:
        """Write one ``.npy`` per array and ``bank.json`` into ``directory``, atomically.

        The files are written into a temporary folder beside ``directory`` that is renamed into place
        only when every file is complete; on error it is removed. An existing ``directory`` is replaced.
        """
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            present = []
            for name in _ARRAYS:
                value = getattr(self, name)
                if value is not None:
                    np.save(tmp / f"{name}.npy", np.ascontiguousarray(value), allow_pickle=False)
                    present.append(name)
            meta: dict[str, Any] = {
                "format": _FORMAT if self.num_classes == 2 else _FORMAT_LABELS,
                "n_images": self.n_images,
                "k": self.k,
                "arrays": present,
                "sources": list(self.sources),
            }
            if self.num_classes != 2:
                meta["num_classes"] = self.num_classes
            (tmp / "bank.json").write_text(json.dumps(meta, indent=2) + "\n")
            for path in tmp.iterdir():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> ProposalBank:
        """Read a bank written by :meth:`save`; with ``mmap`` the arrays are read-only memory maps."""
        directory = Path(directory)
        meta_path = directory / "bank.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: not a proposal bank (bank.json is missing)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path}: invalid JSON: {err}") from None
        found = meta.get("format") if isinstance(meta, dict) else meta
        if found not in (_FORMAT, _FORMAT_LABELS):
            raise ValueError(
                f"{meta_path}: format must be {_FORMAT!r}, got {found!r} "
                f"(or {_FORMAT_LABELS!r} for a label-map bank)"
            )
        missing = [k for k in ("arrays", "n_images", "k") if k not in meta]
        if found == _FORMAT_LABELS and "num_classes" not in meta:
            missing.append("num_classes")
        if missing or not isinstance(meta["arrays"], list):
            raise ValueError(
                f"{meta_path}: a bank manifest needs the keys arrays (a list), n_images and k "
                f"(and num_classes for {_FORMAT_LABELS!r}); missing {missing or ['arrays (not a list)']}"
            )
        arrays: dict[str, np.ndarray | None] = {}
        for name in _ARRAYS:
            path = directory / f"{name}.npy"
            if name in meta["arrays"]:
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: listed in bank.json but missing")
                try:
                    arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
                except (ValueError, EOFError, OSError) as err:
                    raise ValueError(f"{path}: cannot read: {err or type(err).__name__}") from None
            else:
                arrays[name] = None
        for name in ("images", "masks"):
            if arrays[name] is None:
                raise ValueError(f"{meta_path}: arrays must include {name!r}, got {meta['arrays']}")
        try:
            return cls(
                images=arrays["images"],  # type: ignore[arg-type]
                masks=arrays["masks"],  # type: ignore[arg-type]
                probs=arrays["probs"],
                ground_truth=arrays["ground_truth"],
                sources=tuple(meta.get("sources", ())),
                num_classes=meta.get("num_classes", 2) if found == _FORMAT_LABELS else 2,
            )
        except (ValueError, TypeError) as err:
            raise type(err)(f"{directory}: {err}") from None
