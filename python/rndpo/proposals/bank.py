"""Proposal banks: K candidate masks per unlabeled image, saved as memory-mappable .npy files.

A bank holds images float32 (N, C, H, W), masks uint8 (N, K, H, W) in {0, 1}, the base model's foreground
probabilities float32 (N, H, W) for judges, and the ground truth uint8 (N, H, W) where it is known
(experiments only). :func:`rndpo.proposals.generate_proposals` makes one.
"""

from __future__ import annotations

import json
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


def _shape(a: Any) -> Any:
    return tuple(a.shape) if hasattr(a, "shape") else type(a).__name__


@dataclass(frozen=True)
class ProposalBank:
    """K proposal masks for each of N images.

    images float32 (N, C, H, W); masks uint8 (N, K, H, W) in {0, 1}; probs float32 (N, H, W) in [0, 1]
    (base model foreground probabilities) or None; ground_truth uint8 (N, H, W) in {0, 1} or None;
    sources: K names (one per proposal) or () when unknown. Arrays may be read-only memory maps.
    Bool masks / ground_truth are accepted and stored as uint8 views.
    """

    images: np.ndarray
    masks: np.ndarray
    probs: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
        for name in ("masks", "ground_truth"):  # bool -> uint8 is a free view
            value = getattr(self, name)
            if value is not None and value.dtype == np.bool_:
                object.__setattr__(self, name, value.view(np.uint8))
        images, masks = self.images, self.masks
        if images.ndim != 4 or images.dtype != np.float32:
            raise ValueError(
                f"images must be float32 (N, C, H, W), got {images.dtype} with shape {images.shape}"
            )
        n, _, h, w = images.shape
        if masks.dtype != np.uint8 or masks.ndim != 4 or masks.shape[0] != n or masks.shape[2:] != (h, w):
            raise ValueError(
                f"masks must be uint8 (N, K, H, W) with (N, H, W) = {(n, h, w)}, "
                f"got {masks.dtype} with shape {masks.shape}"
            )
        if masks.shape[1] < 1:
            raise ValueError(f"masks must hold K >= 1 proposals per image, got shape {masks.shape}")
        if masks.size and int(masks.max()) > 1:
            raise ValueError(f"masks must be binary {{0, 1}}, got values up to {int(masks.max())}")
        if self.probs is not None:
            probs = self.probs
            if probs.dtype != np.float32 or probs.shape != (n, h, w):
                raise ValueError(
                    f"probs must be float32 (N, H, W) = {(n, h, w)}, "
                    f"got {probs.dtype} with shape {probs.shape}"
                )
            if probs.size and not (np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1):
                raise ValueError("probs must be finite probabilities in [0, 1]")
        if self.ground_truth is not None:
            gt = self.ground_truth
            if gt.dtype != np.uint8 or gt.shape != (n, h, w):
                raise ValueError(
                    f"ground_truth must be uint8 (N, H, W) = {(n, h, w)}, "
                    f"got {gt.dtype} with shape {gt.shape}"
                )
            if gt.size and int(gt.max()) > 1:
                raise ValueError(f"ground_truth must be binary {{0, 1}}, got values up to {int(gt.max())}")
        if not isinstance(self.sources, tuple) or not all(isinstance(s, str) for s in self.sources):
            raise TypeError(f"sources must be a tuple of str, got {self.sources!r}")
        if self.sources and len(self.sources) != masks.shape[1]:
            raise ValueError(f"sources must name K = {masks.shape[1]} proposals, got {len(self.sources)}")

    @property
    def n_images(self) -> int:
        return int(self.masks.shape[0])

    @property
    def k(self) -> int:
        return int(self.masks.shape[1])

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
            meta = {
                "format": _FORMAT,
                "n_images": self.n_images,
                "k": self.k,
                "arrays": present,
                "sources": list(self.sources),
            }
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
        if found != _FORMAT:
            raise ValueError(f"{meta_path}: format must be {_FORMAT!r}, got {found!r}")
        missing = [k for k in ("arrays", "n_images", "k") if k not in meta]
        if missing or not isinstance(meta["arrays"], list):
            raise ValueError(
                f"{meta_path}: a bank manifest needs the keys arrays (a list), n_images and k; "
                f"missing {missing or ['arrays (not a list)']}"
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
            )
        except (ValueError, TypeError) as err:
            raise type(err)(f"{directory}: {err}") from None
