"""The experiment's inputs from its ``[data]`` config: the dataset, its seeded splits, the unlabeled
pool, how files were scaled into model inputs, and the configured network."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from rndpo.config import (
    ConfigError,
    DataConfig,
)
from rndpo.data import (
    DatasetSplits,
    SegmentationDataset,
    load_dataset_folder,
    load_folder,
    load_nifti,
    load_npz,
    load_npz_volumes,
    load_unlabeled,
    read_unlabeled_folder,
    split_dataset,
    synthetic_dataset,
)

__all__ = [
    "image_scaling",
    "load_data",
    "load_pool",
    "split_data",
]

log = logging.getLogger("rndpo")


def load_data(cfg: DataConfig) -> SegmentationDataset:
    """The dataset a config names; relative paths are taken from the current directory."""
    size = cfg.image_size
    if cfg.kind == "synthetic":
        return synthetic_dataset(n_images=cfg.n_images, size=size, seed=cfg.seed)
    if cfg.kind == "nifti" and cfg.path:
        folder = Path(cfg.path)
        if not folder.is_dir():
            raise ConfigError(f"data.path: dataset folder not found: {folder} (relative to {Path.cwd()})")
        volumes = load_dataset_folder(folder)
        if cfg.spacing != "native":
            volumes = volumes.resampled(cfg.spacing)
        data, _ = volumes.to_dataset(folder.name)
        log.info(
            "data: %d volumes of %s, structures %s, padded to %s (voxel order of the files, %s spacing)",
            len(data),
            folder,
            list(data.structures),
            list(data.images.shape[2:]),
            "native" if cfg.spacing == "native" else f"resampled to {list(cfg.spacing)} mm",
        )
        return data
    if cfg.kind == "nifti":
        for p in (*cfg.nifti_images, *cfg.nifti_masks):
            if not Path(p).is_file():
                raise ConfigError(f"data.nifti_images/nifti_masks: file not found: {p}")
        return load_nifti(list(cfg.nifti_images), list(cfg.nifti_masks), axis=cfg.nifti_axis, image_size=size)
    path = Path(cfg.path)
    if not path.exists():
        raise ConfigError(f"data.path: {cfg.kind} dataset not found: {path} (relative to {Path.cwd()})")
    if cfg.kind == "npz" and cfg.volume_dims == 3:
        return load_npz_volumes(path, labels=cfg.labels or None)
    if cfg.kind == "npz":
        return load_npz(path, image_size=size, group_by=cfg.group_by)
    mask_dir = Path(cfg.mask_path) if cfg.mask_path else path / "masks"
    image_dir = path / "images" if (path / "images").is_dir() else path
    return load_folder(image_dir, mask_dir, image_size=size, mask_suffix=cfg.mask_suffix)


def split_data(cfg: DataConfig, data: SegmentationDataset) -> DatasetSplits:
    """The seeded splits a config names; ``label_budget`` > 1 is a count of labeled images.

    With ``unlabeled_path`` every labeled image not in val or test trains the base model (the
    ``unlabeled`` split is then empty: the pool comes from ``unlabeled_path``). ``skip_empty`` (NIfTI
    slices) then drops the slices without foreground from the labeled split only: validation, test and
    the pool keep every slice, so their figures see false positives on empty slices.
    """
    budget = int(cfg.label_budget) if cfg.label_budget > 1 else cfg.label_budget
    if cfg.unlabeled_path:
        budget = 1.0
    splits = split_dataset(
        data,
        label_budget=budget,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
    )
    if not cfg.skip_empty:
        return splits
    labeled = splits.labeled
    keep = np.flatnonzero(labeled.masks.reshape(len(labeled), -1).any(axis=1))
    log.info("skip_empty: dropped %d of %d labeled training slices", len(labeled) - keep.size, len(labeled))
    if keep.size == 0:
        raise ConfigError(
            f"data.skip_empty drops every one of the {len(labeled)} labeled training slices (none has"
            " foreground); set it to false"
        )
    return dataclasses.replace(splits, labeled=labeled.subset(keep))


def image_scaling(cfg: DataConfig) -> dict[str, Any]:
    """How the loaders turned this config's files into model inputs (recorded with saved models)."""
    if cfg.kind == "nifti" and cfg.path:
        return {"kind": "volume_percentile", "per_channel": True, "window": None}
    if cfg.kind == "nifti":
        return {"kind": "volume_percentile", "axis": cfg.nifti_axis, "window": None}
    return {"kind": "unit"}


def load_pool(cfg: DataConfig, splits: DatasetSplits) -> tuple[np.ndarray, np.ndarray | None]:
    """The unlabeled pool: images float32 (N, C, *S) and their ground truth uint8 (N, *S), or None
    for a truly unlabeled pool (``unlabeled_path``: for volumes a folder of NIfTI volumes, nnU-Net
    channel naming or one file per case, zero-padded to one shape); at most ``max_unlabeled`` images
    (None: all)."""
    truth: np.ndarray | None
    if cfg.unlabeled_path:
        path = Path(cfg.unlabeled_path)
        if not path.exists():
            raise ConfigError(f"data.unlabeled_path: not found: {path} (relative to {Path.cwd()})")
        channels = splits.labeled.images.shape[1]
        if cfg.volume_dims == 3:
            pool_set = read_unlabeled_folder(path, channels)
            if cfg.spacing != "native":
                pool_set = pool_set.resampled(cfg.spacing)
            pool, _ = pool_set.to_dataset("pool")
            images = pool.images
        else:
            images, _ = load_unlabeled(path, image_size=cfg.image_size, channels=channels)
        truth = None
    else:
        images, truth = splits.unlabeled.images, splits.unlabeled.masks
    if cfg.max_unlabeled is not None and len(images) > cfg.max_unlabeled:
        images = images[: cfg.max_unlabeled]
        truth = None if truth is None else truth[: cfg.max_unlabeled]
    return images, truth
