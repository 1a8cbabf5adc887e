"""Segmentation datasets: the (image, mask) container, a built-in synthetic default, loaders and splits.

Shapes: images are float32 (N, C, H, W); masks are uint8 (N, H, W) with values {0, 1}; ids are str (N,);
groups, when set, are (N,) keys that must never be split across labeled/val/test.

The one image rule, the same at every entry point (datasets, proposals, fine-tuning, prediction): images
are float32 (N, C, H, W) with any finite values; normalisation is the caller's. The loaders below
normalise what they read to [0, 1] (integer images divided by their dtype's maximum, NIfTI volumes by
their percentiles), and a saved model records that, so ``rndpo predict`` repeats it on new files.

Sources, all returning a :class:`SegmentationDataset`:

- :func:`synthetic_dataset`: the built-in default, no files needed (grayscale, C = 1).
- :func:`load_npz`: an ``.npz`` with ``images`` (N, H, W) or (N, H, W, 3) uint8 and ``masks`` (N, H, W).
- :func:`load_folder`: image and mask files matched by file stem (Kvasir-SEG / ISIC layout).
- :func:`load_nifti`: 3D volumes sliced to 2D along an axis (needs ``nibabel``).

Images without masks (an unlabeled pool, or new images to segment): :func:`read_images` reads an
``.npz`` holding ``images`` or a folder of image files, each image at its own size, and
:func:`load_unlabeled` resizes and stacks them.

:func:`split_dataset` makes seeded labeled / unlabeled / val / test splits, group-aware when groups are set.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetSplits",
    "SegmentationDataset",
    "load_folder",
    "load_nifti",
    "load_npz",
    "load_unlabeled",
    "match_channels",
    "read_images",
    "split_dataset",
    "synthetic_dataset",
]

#: File extensions :func:`load_folder` reads (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LOSSY_EXTENSIONS = (".jpg", ".jpeg")


@dataclass(frozen=True)
class SegmentationDataset:
    """A set of 2D images with binary masks.

    images: float32 (N, C, H, W), any finite values; masks: uint8 (N, H, W) in {0, 1}; ids: str (N,);
    groups: optional (N,) keys that must not be split across labeled/val/test (e.g. patient ids).
    """

    images: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None = None
    name: str = "dataset"

    def __post_init__(self) -> None:
        im, mk = self.images, self.masks
        if not isinstance(im, np.ndarray) or im.ndim != 4:
            raise ValueError(f"images must be a 4-D array (N, C, H, W), got {_describe(im)}")
        if im.dtype != np.float32:
            raise TypeError(f"images must have dtype float32, got {im.dtype}")
        if not isinstance(mk, np.ndarray) or mk.ndim != 3:
            raise ValueError(f"masks must be a 3-D array (N, H, W), got {_describe(mk)}")
        if mk.dtype != np.uint8:
            raise TypeError(f"masks must have dtype uint8, got {mk.dtype}")
        n, _, h, w = im.shape
        if mk.shape != (n, h, w):
            raise ValueError(f"masks must have shape (N, H, W) = {(n, h, w)} to match images, got {mk.shape}")
        if im.size:
            lo, hi = float(np.min(im)), float(np.max(im))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"images must be finite values, got range [{lo}, {hi}]")
        if mk.size and int(np.max(mk)) > 1:
            raise ValueError(f"masks must be binary with values {{0, 1}}, got values {_some_values(mk)}")
        ids = self.ids
        if not isinstance(ids, np.ndarray) or ids.shape != (n,):
            raise ValueError(f"ids must be an array of shape (N,) = ({n},), got {_describe(ids)}")
        if ids.dtype.kind not in "UO":
            raise TypeError(f"ids must be strings (dtype str or object), got dtype {ids.dtype}")
        if self.groups is not None and (not isinstance(self.groups, np.ndarray) or self.groups.shape != (n,)):
            raise ValueError(
                f"groups must be None or an array of shape (N,) = ({n},), got {_describe(self.groups)}"
            )
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> SegmentationDataset:
        """Rows `index` (int array (M,)) as a new dataset."""
        index = np.asarray(index, dtype=np.int64)
        groups = None if self.groups is None else self.groups[index]
        return SegmentationDataset(self.images[index], self.masks[index], self.ids[index], groups, self.name)


@dataclass(frozen=True)
class DatasetSplits:
    """Disjoint splits of one dataset: labeled (the label budget), unlabeled, val and test."""

    labeled: SegmentationDataset
    unlabeled: SegmentationDataset
    val: SegmentationDataset
    test: SegmentationDataset


# ---
# helpers for messages


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def _some_values(x: np.ndarray, limit: int = 6) -> str:
    values = np.unique(x)
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    return "{" + shown + (", ..." if values.size > limit else "") + "}"


# ---
# synthetic default


def _gaussian_blur(x: np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """Periodic Gaussian blur of float (n, H, W) over (H, W) via the FFT; sigma scalar or (n,) per image."""
    h, w = x.shape[1:]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    sig = np.asarray(sigma, dtype=np.float64).reshape(-1, 1, 1)
    transfer = np.exp(-2.0 * np.pi**2 * sig**2 * (fy**2 + fx**2)[None]).astype(np.float32)
    spectrum = sp_fft.rfft2(x.astype(np.float32, copy=False)) * transfer
    return sp_fft.irfft2(spectrum, s=(h, w)).astype(np.float64)


def _smooth_field(rng: np.random.Generator, n: int, size: int, sigma: float) -> np.ndarray:
    """Smoothed Gaussian noise, float64 (n, size, size), zero mean and unit std per image."""
    field = _gaussian_blur(rng.standard_normal((n, size, size)), sigma)
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    return field


def _blob_level(
    rng: np.random.Generator,
    n: int,
    size: int,
    radius: np.ndarray,
    irregularity: float,
    margin: float,
    *,
    spikes: int = 0,
    spike_length: tuple[float, float] = (0.0, 0.0),
    spike_width: float = 0.15,
) -> np.ndarray:
    """Star-shaped blobs as a level function float64 (n, size, size): the blob is where it is below 1.

    The level is the distance to a random centre over a polar radius r(theta): an ellipse (random aspect and
    rotation) whose radius is perturbed by random harmonics of orders 2..6, plus ``spikes`` narrow angular
    bumps (spicules) of relative length drawn from ``spike_length`` and angular width ``spike_width``.
    """
    coords = np.arange(size, dtype=np.float32) + np.float32(0.5)
    cy = (rng.uniform(margin, 1.0 - margin, n) * size).astype(np.float32)[:, None, None]
    cx = (rng.uniform(margin, 1.0 - margin, n) * size).astype(np.float32)[:, None, None]
    rot = np.exp(-1j * rng.uniform(0.0, np.pi, n)).astype(np.complex64)[:, None, None]
    aspect = np.sqrt(rng.uniform(1.0, 1.6, n)).astype(np.float32)[:, None, None]
    z = ((coords[None, None, :] - cx) + np.complex64(1j) * (coords[None, :, None] - cy)) * rot  # (n, H, W)
    z = z.real / aspect + np.complex64(1j) * (z.imag * aspect)
    rho = np.abs(z)
    unit = z / np.maximum(rho, np.float32(1e-6))  # exp(i theta)
    shape = np.ones(z.shape, dtype=np.float32)
    power = unit
    for k in range(2, 7):
        power = power * unit  # exp(i k theta)
        amp = rng.uniform(0.0, irregularity / np.sqrt(k - 1), n).astype(np.float32)[:, None, None]
        phase = np.exp(1j * rng.uniform(0.0, 2 * np.pi, n)).astype(np.complex64)[:, None, None]
        shape += amp * (power * phase).real
    shape = np.maximum(shape, np.float32(0.35))
    for _ in range(spikes):
        direction = np.exp(1j * rng.uniform(0.0, 2 * np.pi, n)).astype(np.complex64)[:, None, None]
        length = rng.uniform(*spike_length, n).astype(np.float32)[:, None, None]
        cos = (unit * np.conj(direction)).real  # cos(theta - spike angle)
        shape += length * np.exp((cos - 1.0) / np.float32(spike_width**2))
    r = radius.astype(np.float32)[:, None, None] * shape
    return (rho / r).astype(np.float64)


def _uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """n uniform draws as float64 (n, 1, 1), ready to broadcast over images."""
    return rng.uniform(low, high, n)[:, None, None]


def _tubes(rng: np.random.Generator, n: int, size: int, sigma: float, width: np.ndarray) -> np.ndarray:
    """Thin curvilinear bands (vessels, hairs) along the zero set of a smooth field: bool (n, size, size)."""
    return np.abs(_smooth_field(rng, n, size, sigma)) < width


def _grow(mask: np.ndarray, iterations: int) -> np.ndarray:
    """8-connected dilation of bool (n, H, W) within each image."""
    return ndimage.binary_dilation(mask, iterations=iterations, structure=np.ones((1, 3, 3), dtype=bool))


#: Imaging styles of the synthetic default; each image draws one.
_MODALITIES: tuple[str, ...] = ("ultrasound", "ct", "mri", "dermoscopy", "mammography", "xray")
#: Object kinds drawn by :func:`_object`.
_OBJECT_KINDS: tuple[str, ...] = ("solid", "ring", "mottled", "spiculated", "cluster", "encapsulated")
#: Per modality: the kind that is the lesion (foreground), and the two kinds its distractors take.
_TARGET_KIND: tuple[int, ...] = (5, 0, 1, 2, 3, 4)
_DISTRACTOR_KINDS: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (0, 5), (0, 4), (0, 2), (3, 1))
#: Per modality: the usual sign of object contrast (-1 dark, +1 bright); a quarter of images flip it.
_POLARITY: tuple[float, ...] = (-1.0, 1.0, 1.0, -1.0, 1.0, 1.0)


def _object(
    rng: np.random.Generator, kind: int, n: int, size: int, radius: tuple[float, float], margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """n objects of one kind (index into ``_OBJECT_KINDS``): mask bool (n, size, size) and an intensity
    profile float64 (n, size, size), about 1 where the object is bright (before amplitude and polarity)."""
    r = rng.uniform(*radius, n) * size
    if kind == 0:  # solid: homogeneous, lobulated
        mask = _blob_level(rng, n, size, r, 0.25, margin) < 1.0
        return mask, mask.astype(np.float64)
    if kind == 1:  # ring-enhancing: bright rim, dark or faint core; the mask is the whole lesion
        level = _blob_level(rng, n, size, r * 1.1, 0.12, margin)
        mask = level < 1.0
        rim = mask & (level > _uniform(rng, 0.55, 0.7, n))
        return mask, rim + _uniform(rng, -0.3, 0.05, n) * (mask & ~rim)
    if kind == 2:  # mottled: irregular, rough outline, strong internal texture
        level = _blob_level(rng, n, size, r, 0.35, margin)
        mask = level < 1.0 + 0.12 * _smooth_field(rng, n, size, size / 20)
        empty = ~mask.any(axis=(1, 2))
        mask[empty] = level[empty] < 1.0  # roughening removed a whole blob: keep its plain outline
        return mask, mask * (1.0 + 0.75 * _smooth_field(rng, n, size, 1.0))
    if kind == 3:  # spiculated: a compact core with five spicules
        level = _blob_level(
            rng, n, size, r * 0.75, 0.08, margin, spikes=5, spike_length=(0.4, 0.8), spike_width=0.25
        )
        mask = level < 1.0
        return mask, mask.astype(np.float64)
    if kind == 4:  # cluster: two or three small round nodules
        count = rng.integers(2, 4, n)
        mask = np.zeros((n, size, size), dtype=bool)
        for j in range(3):
            nodule = _blob_level(rng, n, size, r * rng.uniform(0.5, 0.65, n), 0.08, margin) < 1.0
            mask |= nodule & (j < count)[:, None, None]
        return mask, mask.astype(np.float64)
    # 5, encapsulated: homogeneous, with a thin halo (capsule) of the opposite contrast outside the mask
    mask = _blob_level(rng, n, size, r, 0.15, margin) < 1.0
    halo = _grow(mask, 2) & ~mask
    return mask, mask - _uniform(rng, 0.6, 0.9, n) * halo


def _background(rng: np.random.Generator, modality: int, n: int, size: int) -> np.ndarray:
    """Tissue background float64 (n, size, size) of one modality (index into ``_MODALITIES``)."""
    if modality == 0:  # ultrasound: depth attenuation
        depth = (np.arange(size) / size)[None, :, None]
        field = 0.5 + 0.05 * _smooth_field(rng, n, size, size / 8)
        return field * (1.0 - _uniform(rng, 0.1, 0.35, n) * depth)
    if modality == 1:  # CT: soft-tissue texture and bright vessels
        bg = 0.47 + 0.05 * _smooth_field(rng, n, size, size / 6) + 0.015 * _smooth_field(rng, n, size, 1.5)
        vessels = _tubes(rng, n, size, size / 8, rng.uniform(0.03, 0.07, n)[:, None, None])
        return bg + _uniform(rng, 0.12, 0.2, n) * _gaussian_blur(vessels.astype(np.float64), 0.6)
    if modality == 2:  # MRI: smooth (the bias field comes with acquisition)
        return 0.45 + 0.04 * _smooth_field(rng, n, size, size / 6)
    if modality == 3:  # dermoscopy: bright skin, vignetting, dark hairs
        c = (np.arange(size) + 0.5) / size - 0.5
        vignette = 1.0 - _uniform(rng, 0.2, 0.6, n) * (c[None, :, None] ** 2 + c[None, None, :] ** 2)
        skin = 0.6 + 0.03 * _smooth_field(rng, n, size, size / 6) + 0.02 * _smooth_field(rng, n, size, 1.0)
        hairs = _tubes(rng, n, size, size / 5, rng.uniform(0.015, 0.05, n)[:, None, None])
        return skin * vignette - _uniform(rng, 0.25, 0.4, n) * _gaussian_blur(hairs.astype(np.float64), 0.5)
    if modality == 4:  # mammography: fibroglandular texture
        return 0.45 + 0.06 * _smooth_field(rng, n, size, size / 5) + 0.06 * _smooth_field(rng, n, size, 1.8)
    # xray: ribs as bright, slightly wavy, tilted bands
    ys, xs = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")
    angle = rng.uniform(-0.5, 0.5, n)[:, None, None]
    phase = (ys[None] * np.cos(angle) + xs[None] * np.sin(angle)) / _uniform(rng, 0.22, 0.32, n)
    phase = phase + 0.12 * _smooth_field(rng, n, size, size / 3) + _uniform(rng, 0.0, 1.0, n)
    ribs = np.cos(2 * np.pi * phase) > _uniform(rng, 0.3, 0.6, n)
    bg = 0.4 + 0.04 * _smooth_field(rng, n, size, size / 6)
    return bg + _uniform(rng, 0.1, 0.16, n) * _gaussian_blur(ribs.astype(np.float64), 1.2)


def _acquire(rng: np.random.Generator, modality: int, image: np.ndarray) -> np.ndarray:
    """The noise model of one modality applied to float64 (n, H, W): ultrasound speckle (multiplicative,
    Rayleigh), CT correlated Gaussian noise, MRI bias field and Rician noise, else white Gaussian noise."""
    n, h, w = image.shape
    if modality == 0:
        g = _gaussian_blur(rng.standard_normal((2 * n, h, w)), 0.7)
        rayleigh = np.hypot(g[:n], g[n:])
        rayleigh /= rayleigh.mean(axis=(1, 2), keepdims=True)
        return image * (1.0 + _uniform(rng, 0.35, 0.55, n) * (rayleigh - 1.0))
    if modality == 1:
        return image + 1.5 * _gaussian_blur(
            _uniform(rng, 0.02, 0.05, n) * rng.standard_normal((n, h, w)), 0.5
        )
    if modality == 2:
        image = image * np.exp(_uniform(rng, 0.15, 0.35, n) * _smooth_field(rng, n, h, h / 3))
        sigma = _uniform(rng, 0.02, 0.05, n)
        return np.hypot(
            image + sigma * rng.standard_normal((n, h, w)), sigma * rng.standard_normal((n, h, w))
        )
    return image + _uniform(rng, 0.01, 0.035, n) * rng.standard_normal((n, h, w))


def _synthetic(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images float32 (n, 1, size, size), masks uint8 (n, size, size) and modality indices int64 (n,)."""
    rng = np.random.default_rng(seed)
    modality = rng.integers(0, len(_MODALITIES), n)
    flip = np.where(rng.random(n) < 0.25, -1.0, 1.0)  # a quarter of images have the atypical polarity
    polarity = np.asarray(_POLARITY)[modality] * flip
    n_distract = rng.integers(1, 3, n)
    target_kind = np.asarray(_TARGET_KIND)[modality]
    distract_kind = np.asarray(_DISTRACTOR_KINDS)[modality]
    swap = rng.random(n) < 0.5
    distract_kind[swap] = distract_kind[swap][:, ::-1]
    rng_objects, rng_images = rng.spawn(2)

    lesion = np.zeros((n, size, size), dtype=bool)
    layer = np.zeros((n, size, size))
    for kind in range(len(_OBJECT_KINDS)):
        idx = np.flatnonzero(target_kind == kind)
        if idx.size:
            mask, profile = _object(rng_objects, kind, idx.size, size, (0.12, 0.24), 0.25)
            lesion[idx] = mask
            layer[idx] = profile * _uniform(rng_objects, 0.28, 0.42, idx.size)
    occupied = _grow(lesion, 3)
    for slot in range(2):  # distractors, kept off the lesion and off each other's rim
        for kind in range(len(_OBJECT_KINDS)):
            idx = np.flatnonzero((distract_kind[:, slot] == kind) & (slot < n_distract))
            if idx.size:
                mask, profile = _object(rng_objects, kind, idx.size, size, (0.1, 0.2), 0.15)
                free = ~occupied[idx]
                layer[idx] += profile * free * _uniform(rng_objects, 0.28, 0.42, idx.size)
                occupied[idx] |= _grow(mask & free, 2)
    layer = _gaussian_blur(layer, rng_objects.uniform(0.3, 0.7, n)) * polarity[:, None, None]

    image = np.zeros((n, size, size))
    for m in range(len(_MODALITIES)):
        idx = np.flatnonzero(modality == m)
        if idx.size:
            background = _background(rng_images, m, idx.size, size)
            image[idx] = _acquire(rng_images, m, background + layer[idx])
    images = np.clip(image, 0.0, 1.0).astype(np.float32)[:, None]
    return images, lesion.astype(np.uint8), modality


def synthetic_dataset(n_images: int = 400, size: int = 64, seed: int = 0) -> SegmentationDataset:
    """The built-in default: seeded, procedurally generated grayscale lesion images with masks.

    A mixed-modality lesion task. Each image takes one of six imaging styles, each with its own background
    and noise model: ultrasound (depth attenuation, Rayleigh speckle), CT (soft-tissue texture, bright
    vessels, correlated Gaussian noise), MRI (smooth multiplicative bias field, Rician noise), dermoscopy
    (vignetting, dark hairs), mammography (fibroglandular texture) and X-ray (rib bands). Every image holds
    one lesion (the foreground) and one or two distractor objects (not foreground), drawn from six object
    kinds: solid lobulated, ring-enhancing (bright rim, the mask is the whole lesion), mottled with a rough
    outline, spiculated, a cluster of two or three nodules, and encapsulated (a halo of opposite contrast).
    Which kind is the lesion depends on the style (ultrasound: encapsulated, CT: solid, MRI: ring,
    dermoscopy: mottled, mammography: spiculated, X-ray: cluster), and a lesion kind of one style is a
    distractor kind in others; per style the distractors take two fixed other kinds. Each style has a
    usual polarity (dark objects in ultrasound and dermoscopy, bright elsewhere), flipped in a quarter of
    the images; object contrasts vary per image and boundaries are softly blurred. Each style is learnable,
    but few labels cover the style-dependent rules and the rarer flipped cases poorly. With the package
    defaults (400 images, 64 x 64, ``split_dataset(seed=0)``, ``ModelConfig()``, ``BaseTrainConfig()``,
    3 training seeds) a base U-Net scores test Dice 0.685 +- 0.041 with 10% labels (28 images) and
    0.765 +- 0.035 with all 280; with 1000 steps, 0.742 +- 0.022 and 0.870 +- 0.006
    (``python benches/bench_label_budget.py [--steps 1000]``).

    Returns images float32 (N, 1, size, size) in [0, 1] and masks uint8 (N, size, size) in {0, 1};
    ids are ``synthetic_00000`` ...; no groups. The same (n_images, size, seed) always gives the same arrays.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"n_images must be an int >= 1, got {n_images!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    images, masks, _ = _synthetic(int(n_images), int(size), int(seed))
    ids = np.array([f"synthetic_{i:05d}" for i in range(int(n_images))])
    return SegmentationDataset(images, masks, ids, None, "synthetic")


# ---
# resizing and conversion


def _check_image_size(image_size: int | None) -> None:
    if image_size is None:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be None or an int >= 1, got {image_size!r}")


def _resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """One image float32 (C, H, W) to (C, size, size): bilinear, anti-aliased when shrinking, clipped to
    [min(0, image min), max(1, image max)] (that is, to [0, 1] for an image in [0, 1])."""
    from skimage.transform import resize

    c, h, w = image.shape
    if (h, w) == (size, size):
        return image
    out = resize(
        image, (c, size, size), order=1, mode="edge", anti_aliasing=size < max(h, w), preserve_range=True
    )
    lo, hi = min(0.0, float(image.min())), max(1.0, float(image.max()))
    return np.clip(out, lo, hi).astype(np.float32)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """One mask uint8 (H, W) to (size, size) by nearest neighbour."""
    from skimage.transform import resize

    if mask.shape == (size, size):
        return mask
    out = resize(mask, (size, size), order=0, mode="edge", anti_aliasing=False, preserve_range=True)
    return out.astype(np.uint8)


def _to_unit_float(image: np.ndarray, what: str) -> np.ndarray:
    """An image of any integer, bool or float dtype as float32 in [0, 1]."""
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        if info.min < 0:
            if image.size and int(image.min()) < 0:
                raise ValueError(f"{what}: signed integer image with negative values is not supported")
        return (image.astype(np.float64) / float(info.max)).astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        if image.size:
            lo, hi = float(np.min(image)), float(np.max(image))
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
                raise ValueError(f"{what}: float image values must be finite and in [0, 1], got [{lo}, {hi}]")
        return image.astype(np.float32)
    raise TypeError(f"{what}: unsupported image dtype {image.dtype}")


def _binary_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """A stored mask uint8 (H, W) in {0, 1}; accepts {0, 1}, {0, 255}, bool, or float {0.0, 1.0}."""
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    values = np.unique(mask)
    if np.isin(values, (0, 1)).all():
        return (mask != 0).astype(np.uint8)
    if np.issubdtype(mask.dtype, np.integer) and np.isin(values, (0, 255)).all():
        return (mask != 0).astype(np.uint8)
    raise ValueError(
        f"{what}: mask must be binary with values {{0, 1}} or {{0, 255}}, got values {_some_values(mask)}"
        " (a label map? binarise it first)"
    )


def _as_channels_first(image: np.ndarray, what: str) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, 1|3|4) -> (1|3, H, W), dropping an alpha channel."""
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        return np.moveaxis(image[..., :3] if image.shape[-1] == 4 else image, -1, 0)
    raise ValueError(f"{what}: image must be (H, W) or (H, W, 1|3|4), got shape {image.shape}")


def _gray(image: np.ndarray) -> np.ndarray:
    """float32 (3, H, W) RGB -> (1, H, W) luminance (ITU-R BT.709, as skimage.color.rgb2gray)."""
    weights = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
    return np.tensordot(weights, image, axes=1)[None].astype(np.float32)


def _stack(
    images: list[np.ndarray], masks: list[np.ndarray], sources: list[str], image_size: int | None, arg: str
) -> tuple[np.ndarray, np.ndarray]:
    """Resize to image_size (or check sizes agree) and stack into (N, C, H, W) float32, (N, H, W) uint8."""
    if image_size is not None:
        images = [_resize_image(im, image_size) for im in images]
        masks = [_resize_mask(mk, image_size) for mk in masks]
    else:
        first = images[0].shape[1:]
        for im, src in zip(images, sources, strict=True):
            if im.shape[1:] != first:
                raise ValueError(
                    f"{arg}: {src} has size {im.shape[1:]} but {sources[0]} has {first};"
                    " pass image_size to resize them to one size"
                )
    return np.stack(images).astype(np.float32, copy=False), np.stack(masks).astype(np.uint8, copy=False)


# ---
# loaders


def _npz_archive(loaded: object, path: Path) -> np.lib.npyio.NpzFile:
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"path: {path} holds one array, not an .npz archive of named arrays")
    return loaded


def _read_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The ``required`` (and present ``optional``) arrays of an .npz; a missing array or a broken
    archive is a ValueError naming the file."""
    try:  # our own file object: np.load leaks its handle when the zip is broken
        with open(path, "rb") as fh, _npz_archive(np.load(fh, allow_pickle=False), path) as archive:
            missing = [k for k in required if k not in archive.files]
            if missing:
                raise ValueError(f"path: {path} lacks the arrays {missing}; it has {sorted(archive.files)}")
            return {k: archive[k] for k in (*required, *optional) if k in archive.files}
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"path: {path} is not a readable .npz archive ({_first_line(err)})") from None
    except ValueError as err:
        if str(err).startswith("path: "):
            raise
        raise ValueError(f"path: {path} is not a readable .npz archive ({_first_line(err)})") from None


def load_npz(
    path: str | Path,
    *,
    image_size: int | None = None,
    group_by: Literal["none", "id_prefix"] = "none",
    name: str | None = None,
) -> SegmentationDataset:
    """Load an ``.npz``: ``images`` uint8 (N, H, W) gray or (N, H, W, 3) RGB, ``masks`` (N, H, W), ``ids``.

    Images may also be float in [0, 1]. Masks must hold {0, 1} or {0, 255}. ``ids`` is optional (defaults
    to ``<stem>_00000`` ...). ``group_by="id_prefix"`` groups images by the id text before the first ``_``
    (hc18: ``010_HC`` and ``010_2HC`` share group ``010``). ``image_size`` resizes to (size, size): images
    bilinearly, masks by nearest neighbour. The default name is the file stem, or the folder name for a
    file called ``data.npz``.
    """
    path = Path(path)
    _check_image_size(image_size)
    if group_by not in ("none", "id_prefix"):
        raise ValueError(f"group_by must be one of ['none', 'id_prefix'], got {group_by!r}")
    if not path.is_file():
        raise FileNotFoundError(f"path: npz file not found: {path}")
    arrays = _read_npz(path, ("images", "masks"), ("ids",))
    raw_images, raw_masks, raw_ids = arrays["images"], arrays["masks"], arrays.get("ids")
    images = _npz_images(raw_images, str(path))
    n, _, h, w = images.shape
    if raw_masks.shape != (n, h, w):
        raise ValueError(f"{path}: masks must have shape (N, H, W) = {(n, h, w)}, got {raw_masks.shape}")
    images = _to_unit_float(images, str(path))
    masks = _binary_mask(raw_masks, str(path))
    if raw_ids is None:
        ids = np.array([f"{path.stem}_{i:05d}" for i in range(n)])
    else:
        if raw_ids.shape != (n,):
            raise ValueError(f"{path}: ids must have shape (N,) = ({n},), got {raw_ids.shape}")
        ids = raw_ids.astype(str)
    groups = np.array([str(i).split("_", 1)[0] for i in ids]) if group_by == "id_prefix" else None
    if image_size is not None:
        images = np.stack([_resize_image(im, image_size) for im in images])
        masks = np.stack([_resize_mask(mk, image_size) for mk in masks])
    if name is None:
        name = path.parent.name if path.stem == "data" and path.parent.name else path.stem
    return SegmentationDataset(np.ascontiguousarray(images), np.ascontiguousarray(masks), ids, groups, name)


def _list_images(folder: Path, arg: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{arg}: folder not found: {folder}")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in files:
                raise ValueError(
                    f"{arg}: two files share the stem {p.stem!r}: {files[p.stem].name} and {p.name}"
                )
            files[p.stem] = p
    if not files:
        raise ValueError(f"{arg}: folder {folder} contains no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_image_file(path: Path, what: str) -> np.ndarray:
    """The pixels of an image file; a corrupt, truncated or empty file is a ValueError naming it.

    Pillow identifies and checks the file first (imageio's plugin search leaks file handles on files
    that are no image at all), then scikit-image reads it.
    """
    from PIL import Image
    from skimage.io import imread

    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty")
        with Image.open(path) as probe:
            probe.verify()
        return np.asarray(imread(path))
    except Exception as err:
        raise ValueError(f"{what} {path}: cannot read it as an image ({_first_line(err)})") from None


def _read_mask_file(path: Path) -> np.ndarray:
    """A mask file -> uint8 (H, W) in {0, 1}. JPEG (lossy) is thresholded; lossless files must be binary."""
    raw = _read_image_file(path, "mask")
    if raw.ndim == 3 and raw.shape[-1] in (1, 3, 4):
        channels = raw[..., :3] if raw.shape[-1] == 4 else raw
        if path.suffix.lower() not in _LOSSY_EXTENSIONS and not (channels == channels[..., :1]).all():
            raise ValueError(
                f"mask {path}: color channels differ (a color label map?); expected a binary mask"
            )
        raw = channels.mean(axis=-1) if path.suffix.lower() in _LOSSY_EXTENSIONS else channels[..., 0]
    if raw.ndim != 2:
        raise ValueError(f"mask {path}: expected a 2-D mask (H, W), got shape {raw.shape}")
    if path.suffix.lower() in _LOSSY_EXTENSIONS:  # compression noise: threshold at half range
        if np.issubdtype(raw.dtype, np.floating) and raw.max(initial=0) <= 1.0:
            return (raw > 0.5).astype(np.uint8)
        return (raw > 127).astype(np.uint8)
    return _binary_mask(raw, f"mask {path}")


def load_folder(
    image_dir: str | Path,
    mask_dir: str | Path,
    *,
    image_size: int | None = None,
    grayscale: bool | None = None,
    mask_suffix: str = "",
    name: str | None = None,
) -> SegmentationDataset:
    """Load image and mask files (PNG, JPEG, TIFF, BMP) matched by file stem, read with scikit-image.

    The mask of ``images/abc.jpg`` is ``masks/abc<mask_suffix>.<any extension>``. Lossless masks must hold
    {0, 1} or {0, 255} (or be bool); JPEG masks are thresholded at half range (> 127 for uint8) because of
    compression noise. ``grayscale``: None keeps RGB if any image is RGB (gray images are then repeated to 3
    channels) and gray otherwise; True converts RGB to luminance; False always gives 3 channels.
    Images (N, C, H, W) float32 in [0, 1]; all must have one size unless ``image_size`` resizes them.
    Errors name the file: an empty folder, an image without a mask, a non-binary mask, mismatched sizes,
    a corrupt, truncated or empty image file.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    _check_image_size(image_size)
    image_files = _list_images(image_dir, "image_dir")
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"mask_dir: folder not found: {mask_dir}")
    mask_files = {
        p.stem: p for p in sorted(mask_dir.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    }
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    sources: list[str] = []
    for stem, ipath in image_files.items():
        mpath = mask_files.get(stem + mask_suffix)
        if mpath is None:
            raise ValueError(
                f"image_dir: no mask for image {ipath}: expected {mask_dir / (stem + mask_suffix)}.<ext>"
                f" with ext in {IMAGE_EXTENSIONS}"
            )
        image = _as_channels_first(_read_image_file(ipath, "image"), f"image {ipath}")
        image = _to_unit_float(image, f"image {ipath}")
        mask = _read_mask_file(mpath)
        if mask.shape != image.shape[1:]:
            raise ValueError(
                f"mask {mpath} has size {mask.shape} but image {ipath} has size {image.shape[1:]}"
            )
        images.append(image)
        masks.append(mask)
        sources.append(str(ipath))
    rgb = any(im.shape[0] == 3 for im in images)
    if grayscale is True:
        images = [_gray(im) if im.shape[0] == 3 else im for im in images]
    elif grayscale is False or rgb:
        images = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    stacked_images, stacked_masks = _stack(images, masks, sources, image_size, "image_dir")
    ids = np.array(list(image_files))
    return SegmentationDataset(
        stacked_images, stacked_masks, ids, None, name or image_dir.parent.name or "folder"
    )


def _npz_images(raw: np.ndarray, what: str) -> np.ndarray:
    """Stored npz images (N, H, W) or (N, H, W, 1|3) -> (N, C, H, W), dtype unchanged."""
    if raw.ndim == 4 and raw.shape[-1] in (1, 3):
        return np.moveaxis(raw, -1, 1)
    if raw.ndim == 3:
        return raw[:, None]
    raise ValueError(f"{what}: images must be (N, H, W) or (N, H, W, 3), got shape {raw.shape}")


def match_channels(image: np.ndarray, channels: int, what: str = "image") -> np.ndarray:
    """float32 (C, H, W) -> (channels, H, W) the way the loaders do it: gray is repeated to RGB, RGB is
    turned into luminance (ITU-R BT.709) for a one-channel model; anything else is a ValueError."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=0)
    if c == 3 and channels == 1:
        return _gray(image)
    raise ValueError(f"{what}: has {c} channels, expected {channels} (or gray/RGB, converted)")


def read_images(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """Images without masks, each at its own size: float32 (C, H, W) in [0, 1] (integers divided by
    their dtype's maximum, as the loaders do) and their ids.

    ``path`` is an ``.npz`` with ``images`` (N, H, W) or (N, H, W, 1|3) and optional ``ids`` (other
    arrays, e.g. ``masks``, are not read), or a folder of image files (ids are the file stems, in sorted
    order; a folder with an ``images/`` subfolder is read from there).
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        arrays = _read_npz(path, ("images",), ("ids",))
        stack, raw_ids = _npz_images(arrays["images"], str(path)), arrays.get("ids")
        stack = _to_unit_float(stack, str(path))
        if raw_ids is not None and raw_ids.shape != (len(stack),):
            raise ValueError(f"{path}: ids must have shape (N,) = ({len(stack)},), got {raw_ids.shape}")
        ids = (
            [str(i) for i in raw_ids]
            if raw_ids is not None
            else [f"{path.stem}_{i:05d}" for i in range(len(stack))]
        )
        return list(stack), ids
    if path.is_dir():
        folder = path / "images" if (path / "images").is_dir() else path
        files = _list_images(folder, "path")
        images = [
            _to_unit_float(_as_channels_first(_read_image_file(p, "image"), f"image {p}"), f"image {p}")
            for p in files.values()
        ]
        return images, list(files)
    raise FileNotFoundError(f"path: expected an .npz file or a folder of images, got {path} (not found)")


def load_unlabeled(
    path: str | Path, *, image_size: int, channels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """An unlabeled pool (see :func:`read_images`): images float32 (N, C, size, size) in [0, 1] and ids
    str (N,). ``channels`` converts gray/RGB to match a labeled set (see :func:`match_channels`);
    None keeps RGB if any image is RGB, as :func:`load_folder` does."""
    _check_image_size(image_size)
    images, ids = read_images(path)
    if not images:
        raise ValueError(f"path: {path} holds no images")
    if channels is None:
        channels = 3 if any(im.shape[0] == 3 for im in images) else 1
    images = [match_channels(im, channels, f"image {i}") for i, im in zip(ids, images, strict=True)]
    stacked = np.stack([_resize_image(im, image_size) for im in images]).astype(np.float32, copy=False)
    return np.ascontiguousarray(stacked), np.array(ids)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _normalise_volume(vol: np.ndarray, window: tuple[float, float] | None, path: Path) -> np.ndarray:
    """float volume -> float32 in [0, 1]: clip to window, or to the 0.5-99.5 percentiles, then rescale."""
    if not np.isfinite(vol).all():
        raise ValueError(f"image {path}: volume holds NaN or inf values")
    if window is None:
        lo, hi = (float(v) for v in np.percentile(vol, (0.5, 99.5)))
    else:
        lo, hi = float(window[0]), float(window[1])
    if hi <= lo:
        return np.zeros(vol.shape, dtype=np.float32)
    scaled = (np.clip(vol.astype(np.float64), lo, hi) - lo) / (hi - lo)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def load_nifti(
    image_paths: Sequence[str | Path],
    mask_paths: Sequence[str | Path],
    *,
    axis: int = 2,
    skip_empty: bool = True,
    image_size: int | None = None,
    window: tuple[float, float] | None = None,
    labels: Sequence[int] | None = None,
    name: str | None = None,
) -> SegmentationDataset:
    """Slice 3D NIfTI volumes (nibabel) to 2D along ``axis`` into a grayscale dataset (C = 1).

    Each image volume is normalised on its own to [0, 1]: clipped to ``window`` (lo, hi) if given, else to
    its 0.5 and 99.5 percentiles. Masks must be binary unless ``labels`` names the label values that count as
    foreground. ``skip_empty`` drops slices without foreground. ``groups`` is the volume index, so slices of
    one volume never cross splits; ids are ``<file stem>_<slice:04d>``. Errors name the file.
    """
    import nibabel as nib

    images_in = [Path(p) for p in image_paths]
    masks_in = [Path(p) for p in mask_paths]
    _check_image_size(image_size)
    if not images_in:
        raise ValueError("image_paths must name at least one volume, got none")
    if len(images_in) != len(masks_in):
        raise ValueError(
            f"mask_paths must have one entry per image, expected {len(images_in)}, got {len(masks_in)}"
        )
    if isinstance(axis, bool) or axis not in (0, 1, 2, -1, -2, -3):
        raise ValueError(f"axis must be one of 0, 1, 2 (or -3..-1), got {axis!r}")
    if window is not None and (len(window) != 2 or not float(window[0]) < float(window[1])):
        raise ValueError(f"window must be (lo, hi) with lo < hi, got {window!r}")
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    sources: list[str] = []
    ids: list[str] = []
    groups: list[int] = []
    for v, (ipath, mpath) in enumerate(zip(images_in, masks_in, strict=True)):
        for p in (ipath, mpath):
            if not p.is_file():
                raise FileNotFoundError(f"NIfTI file not found: {p}")
        try:
            vol = np.asarray(nib.load(ipath).get_fdata(dtype=np.float32))  # type: ignore[attr-defined]
        except Exception as err:
            raise ValueError(f"image {ipath}: cannot read it as NIfTI ({_first_line(err)})") from None
        try:
            seg = np.asarray(nib.load(mpath).dataobj)  # type: ignore[attr-defined]
        except Exception as err:
            raise ValueError(f"mask {mpath}: cannot read it as NIfTI ({_first_line(err)})") from None
        vol = vol.reshape(vol.shape[:3]) if vol.ndim > 3 and all(d == 1 for d in vol.shape[3:]) else vol
        seg = seg.reshape(seg.shape[:3]) if seg.ndim > 3 and all(d == 1 for d in seg.shape[3:]) else seg
        if vol.ndim != 3:
            raise ValueError(f"image {ipath}: expected a 3-D volume, got shape {vol.shape}")
        if seg.shape != vol.shape:
            raise ValueError(f"mask {mpath} has shape {seg.shape} but image {ipath} has shape {vol.shape}")
        if labels is None:
            seg = _binary_mask(np.asarray(seg), f"mask {mpath}")
        else:
            seg = np.isin(seg, np.asarray(list(labels))).astype(np.uint8)
        vol = np.moveaxis(_normalise_volume(vol, window, ipath), axis, 0)
        seg = np.moveaxis(seg, axis, 0)
        stem = _nifti_stem(ipath)
        for k in range(vol.shape[0]):
            if skip_empty and not seg[k].any():
                continue
            images.append(np.ascontiguousarray(vol[k][None]))
            masks.append(np.ascontiguousarray(seg[k]))
            sources.append(f"{ipath} slice {k}")
            ids.append(f"{stem}_{k:04d}")
            groups.append(v)
    if not images:
        raise ValueError(
            f"mask_paths: no slice along axis {axis} has foreground in {[str(p) for p in masks_in]}"
        )
    stacked_images, stacked_masks = _stack(images, masks, sources, image_size, "image_paths")
    return SegmentationDataset(
        stacked_images, stacked_masks, np.array(ids), np.array(groups, dtype=np.int64), name or "nifti"
    )


# ---
# splits


def _take_groups(order: np.ndarray, sizes: np.ndarray, target: int) -> int:
    """How many groups (a prefix of `order`) bring the image count closest to `target`, at least one."""
    if order.size == 0:
        return 0
    cum = np.cumsum(sizes[order])
    return int(np.argmin(np.abs(cum - target))) + 1


def split_dataset(
    ds: SegmentationDataset,
    *,
    label_budget: float | int = 0.1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetSplits:
    """Seeded labeled / unlabeled / val / test splits of ``ds``.

    Test and val are carved out first (shares of all images), then the labeled set is taken from the
    remaining train pool: ``label_budget`` is a share of that pool (float in (0, 1]) or a count (int >= 1);
    the rest is unlabeled. With ``ds.groups`` set, whole groups go to one split, so counts are as close to
    the targets as group sizes allow. The same seed gives the same splits; test and val do not depend on
    the label budget, and a smaller budget gives a subset of a larger one's labeled set.
    Each split keeps the dataset's row order.
    """
    if not isinstance(ds, SegmentationDataset):
        raise TypeError(f"ds must be a SegmentationDataset, got {type(ds).__name__}")
    for arg, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
            raise ValueError(f"{arg} must be a number in [0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            "val_fraction + test_fraction must be < 1 to leave a train pool,"
            f" got {val_fraction} + {test_fraction}"
        )
    if isinstance(label_budget, bool) or not isinstance(label_budget, (int, float, np.integer, np.floating)):
        raise TypeError(f"label_budget must be a float in (0, 1] or an int >= 1, got {label_budget!r}")
    if isinstance(label_budget, (float, np.floating)) and not 0.0 < label_budget <= 1.0:
        raise ValueError(f"label_budget as a fraction must be in (0, 1], got {label_budget}")
    if isinstance(label_budget, (int, np.integer)) and label_budget < 1:
        raise ValueError(f"label_budget as a count must be >= 1, got {label_budget}")
    n = len(ds)
    if n < 1:
        raise ValueError("ds must hold at least one image, got an empty dataset")

    keys = np.arange(n) if ds.groups is None else ds.groups
    unique, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(unique.size)
    start = 0
    parts: dict[str, np.ndarray] = {}
    for part, frac in (("test", test_fraction), ("val", val_fraction)):
        if frac == 0.0:
            parts[part] = order[:0]
            continue
        k = _take_groups(order[start:], sizes, round(frac * n))
        parts[part] = order[start : start + k]
        start += k
    pool = order[start:]
    pool_size = int(sizes[pool].sum())
    if pool_size == 0:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no train pool"
            f" for {n} images in {unique.size} groups"
        )
    if isinstance(label_budget, (int, np.integer)):
        if label_budget > pool_size:
            raise ValueError(
                f"label_budget={label_budget} exceeds the train pool of {pool_size} images"
                f" ({n} images minus val and test)"
            )
        target = int(label_budget)
    else:
        target = max(1, round(float(label_budget) * pool_size))
    k = pool.size if target >= pool_size else _take_groups(pool, sizes, target)
    parts["labeled"] = pool[:k]
    parts["unlabeled"] = pool[k:]

    def rows(group_ids: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(inverse, group_ids))

    return DatasetSplits(
        labeled=ds.subset(rows(parts["labeled"])),
        unlabeled=ds.subset(rows(parts["unlabeled"])),
        val=ds.subset(rows(parts["val"])),
        test=ds.subset(rows(parts["test"])),
    )
