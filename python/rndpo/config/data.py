"""The ``[data]`` section of a run config: :class:`DataConfig`, where images and masks come from and
how they are split (checked like every section, see :mod:`rndpo.config.sections`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from rndpo.config._fields import check_fields, help_text
from rndpo.config.bounds import check_bounds
from rndpo.config.errors import ConfigError

__all__ = ["DataConfig"]


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Where images and masks come from and how they are split."""

    kind: Literal["synthetic", "npz", "folder", "nifti"] = field(
        default="synthetic", metadata=help_text("dataset source")
    )
    path: str = field(
        default="",
        metadata=help_text(
            "npz file, or folder (folder: images/ and masks/ inside); nifti: a dataset folder with a"
            " dataset.json (nnU-Net v2 or Medical Segmentation Decathlon layout): whole volumes, 3D"
        ),
    )
    spatial_dims: int | None = field(
        default=None,
        metadata=help_text(
            "2 or 3: npz with 3 reads (N, D, H, W[, C]) volumes and (N, D, H, W) label maps (unset: 2D;"
            " nifti: 3 for a dataset folder, 2 for nifti_images slices)"
        ),
    )
    spacing: Literal["native"] | tuple[float, ...] = field(
        default="native",
        metadata=help_text(
            'nifti dataset folder: "native" (each volume on its own grid) or a target [z, y, x] in mm:'
            " volumes resampled to it for training (labels nearest), and rndpo predict resamples there and"
            " back"
        ),
    )
    labels: dict[str, int] = field(
        default_factory=dict,
        metadata=help_text(
            "structure name = label value, e.g. {anterior = 1, posterior = 2} (npz volumes; dataset"
            " folders name theirs in dataset.json); unset: the values found, named label_<v>"
        ),
    )
    mask_path: str = field(default="", metadata=help_text("folder: mask folder (default: <path>/masks)"))
    mask_suffix: str = field(default="", metadata=help_text("folder: suffix of mask file stems, e.g. _mask"))
    nifti_images: tuple[str, ...] = field(default=(), metadata=help_text("nifti: image volume paths"))
    nifti_masks: tuple[str, ...] = field(default=(), metadata=help_text("nifti: mask volume paths"))
    nifti_axis: int = field(default=2, metadata=help_text("nifti: slicing axis"))
    skip_empty: bool = field(
        default=False,
        metadata=help_text(
            "nifti slicing: drop slices without foreground from the labeled training split only"
        ),
    )
    image_size: int = field(
        default=64, metadata=help_text("square size images are resized to (synthetic: generated at)")
    )
    n_images: int = field(default=400, metadata=help_text("synthetic: number of images"))
    group_by: Literal["none", "id_prefix"] = field(
        default="none", metadata=help_text("npz: group ids so that a group never crosses splits")
    )
    label_budget: float = field(
        default=0.1, metadata=help_text("labeled share of the train pool (<=1) or count (>1)")
    )
    val_fraction: float = field(default=0.1, metadata=help_text("validation share"))
    test_fraction: float = field(default=0.2, metadata=help_text("test share"))
    max_unlabeled: int | None = field(
        default=None, metadata=help_text("cap on unlabeled images used for proposals (unset: all)")
    )
    unlabeled_path: str = field(
        default="",
        metadata=help_text(
            "truly unlabeled pool: npz with images only, or a folder of images; the labeled set then"
            " gives only train/val/test (label_budget unused)"
        ),
    )
    seed: int = field(default=0, metadata=help_text("data generation and split seed"))

    def __post_init__(self) -> None:
        check_fields(self, "data")
        if self.kind != "synthetic" and self.kind != "nifti" and not self.path:
            raise ConfigError(f"data.path is required for data.kind = {self.kind!r}")
        if self.kind == "nifti" and self.path and self.nifti_images:
            raise ConfigError(
                "data.path (a dataset folder: volumes) and data.nifti_images (volumes sliced to 2D) are two"
                " routes; set one of them"
            )
        if (
            self.kind == "nifti"
            and not self.path
            and (not self.nifti_images or len(self.nifti_images) != len(self.nifti_masks))
        ):
            raise ConfigError(
                "data.kind = 'nifti' needs data.path (a dataset folder with a dataset.json), or"
                " data.nifti_images and data.nifti_masks as non-empty lists of equal length"
            )
        if self.spatial_dims not in (None, 2, 3):
            raise ConfigError(f"data.spatial_dims must be 2 or 3 (or left out), got {self.spatial_dims}")
        if self.spatial_dims is not None and self.spatial_dims != self.volume_dims:
            raise ConfigError(
                f"data.spatial_dims = {self.spatial_dims} does not fit data.kind = {self.kind!r}"
                f"{' with a dataset folder' if self.kind == 'nifti' and self.path else ''}"
                f" (which gives {self.volume_dims}D images)"
            )
        if self.spacing != "native" and (
            not (self.kind == "nifti" and self.path)
            or len(self.spacing) != 3
            or not all(0 < s < 1000 for s in self.spacing)
        ):
            raise ConfigError(
                'data.spacing must be "native" or a target [z, y, x] of three sizes in mm (0 to 1000), for a'
                f" NIfTI dataset folder (data.kind = 'nifti' with data.path), got {self.spacing!r}"
            )
        if self.labels and not (self.kind == "npz" and self.volume_dims == 3):
            raise ConfigError(
                "data.labels names the structures of npz volumes (data.spatial_dims = 3); dataset"
                " folders take theirs from dataset.json"
            )
        if self.skip_empty and self.kind != "nifti":
            raise ConfigError(f"data.skip_empty applies to data.kind = 'nifti' only, got kind {self.kind!r}")
        if self.nifti_axis not in (0, 1, 2, -1, -2, -3):
            raise ConfigError(f"data.nifti_axis must be one of 0, 1, 2 (or -3..-1), got {self.nifti_axis}")
        if self.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8, got {self.image_size}")
        if self.n_images < 1:
            raise ConfigError(f"data.n_images must be >= 1, got {self.n_images}")
        budget = self.label_budget
        if not (0 < budget < 1 or (budget > 1 and math.isfinite(budget) and budget == int(budget))):
            raise ConfigError(
                "data.label_budget must be a share in (0, 1) or a whole count of labeled images > 1, "
                f"got {budget}"
            )
        for key in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"data.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                "data.val_fraction + data.test_fraction must be < 1 to leave a train pool, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        object.__setattr__(self, "labels", dict(self.labels))  # a copy: the caller's dict may change
        if self.max_unlabeled is not None and self.max_unlabeled < 1:
            raise ConfigError(
                f"data.max_unlabeled must be >= 1, or left out for no cap, got {self.max_unlabeled}"
            )
        check_bounds(self, "data")

    @property
    def volume_dims(self) -> int:
        """The spatial dims of the images this config reads: 3 for a NIfTI dataset folder and for npz with
        ``spatial_dims = 3``, else 2."""
        if self.kind == "nifti":
            return 3 if self.path else 2
        if self.kind == "npz" and self.spatial_dims == 3:
            return 3
        return 2
