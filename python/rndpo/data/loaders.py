"""Reading datasets from files (npz, image folders, NIfTI) and images without masks; resizing and
conversion to the one image rule (see :mod:`rndpo.data`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rndpo.data.dataset import SegmentationDataset
from rndpo.data.image_resize import _resize_mask, resize_image
from rndpo.data.input_limits import (
    HeaderCheck,
    SizeLimitError,
    binary_mask,
    check_image_file,
    check_nifti,
    check_size,
    pillow_limit,
    read_npz,
    row_chunks,
    to_unit_float,
    unit_divisor,
)
from rndpo.data.slices import VolumeSlices
from rndpo.storage import first_line

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_folder",
    "load_nifti",
    "load_npz",
    "load_unlabeled",
    "match_channels",
    "read_images",
    "resize_image",
    "scale_volume",
]

log = logging.getLogger("rndpo")

#: File extensions :func:`load_folder` reads (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LOSSY_EXTENSIONS = (".jpg", ".jpeg")


# ---
# resizing and conversion


def _check_image_size(image_size: int | None) -> None:
    if image_size is None:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be None or an int >= 1, got {image_size!r}")


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
        images = [resize_image(im, image_size) for im in images]
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


def _check_npz_images(path: Path) -> HeaderCheck:
    """A header check for :func:`read_npz`: each 2D image of ``images`` within the pixel cap."""

    def check(key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if key == "images" and len(shape) in (3, 4):
            check_size(shape[1:3], f"path: {path}: each image of 'images' (N, H, W)", "pixels")

    return check


def load_npz(
    path: str | Path,
    *,
    image_size: int | None = None,
    group_by: Literal["none", "id_prefix"] = "none",
    name: str | None = None,
) -> SegmentationDataset:
    """Load an ``.npz``: ``images`` uint8 (N, H, W) gray or (N, H, W, 3) RGB, ``masks`` (N, H, W), ``ids``.

    Images may also be float in [0, 1] or of another integer dtype (see
    :func:`rndpo.data.input_limits.unit_divisor`). Masks must hold {0, 1} or {0, 255}. ``ids`` is optional
    (defaults to ``<stem>_00000`` ...). ``group_by="id_prefix"`` groups images by the id text before the
    first ``_`` (hc18: ``010_HC`` and ``010_2HC`` share group ``010``). ``image_size`` resizes to (size,
    size): images bilinearly, masks by nearest neighbour. The default name is the file stem, or the
    folder name for a file called ``data.npz``. Headers are checked against the caps of
    :mod:`rndpo.data.input_limits` before any array is read.
    """
    path = Path(path)
    _check_image_size(image_size)
    if group_by not in ("none", "id_prefix"):
        raise ValueError(f"group_by must be one of ['none', 'id_prefix'], got {group_by!r}")
    if not path.is_file():
        raise FileNotFoundError(f"path: npz file not found: {path}")
    arrays = read_npz(path, ("images", "masks"), ("ids",), _check_npz_images(path))
    raw_images, raw_masks, raw_ids = arrays.pop("images"), arrays.pop("masks"), arrays.pop("ids", None)
    stored = _npz_images(raw_images, str(path))
    n, c, h, w = stored.shape
    if raw_masks.shape != (n, h, w):
        raise ValueError(f"{path}: masks must have shape (N, H, W) = {(n, h, w)}, got {raw_masks.shape}")
    divisor = unit_divisor(stored, str(path))
    masks = binary_mask(raw_masks, str(path))
    del raw_masks  # freed now if it was converted: peak memory is the decoded data plus the float32 images
    if raw_ids is None:
        ids = np.array([f"{path.stem}_{i:05d}" for i in range(n)])
    else:
        if raw_ids.shape != (n,):
            raise ValueError(f"{path}: ids must have shape (N,) = ({n},), got {raw_ids.shape}")
        ids = raw_ids.astype(str)
    groups = np.array([str(i).split("_", 1)[0] for i in ids]) if group_by == "id_prefix" else None
    if image_size is None:
        images = to_unit_float(stored, str(path), divisor)
    else:  # one image at a time: never the whole set at full size in float32
        images = np.empty((n, c, image_size, image_size), dtype=np.float32)
        for i in range(n):
            images[i] = resize_image(to_unit_float(stored[i], str(path), divisor), image_size)
        small = np.empty((n, image_size, image_size), dtype=np.uint8)
        for i in range(n):
            small[i] = _resize_mask(masks[i], image_size)
        masks = small
    if name is None:
        name = path.parent.name if path.stem == "data" and path.parent.name else path.stem
    return SegmentationDataset(images, np.ascontiguousarray(masks), ids, groups, name)


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


def _read_image_file(path: Path, what: str) -> np.ndarray:
    """The pixels of an image file; a corrupt, truncated or empty file is a ValueError naming it, and so
    is one whose header declares more pixels than the cap (:func:`rndpo.data.input_limits.max_pixels`).

    Pillow identifies and checks the file first, reading only its header (imageio's plugin search leaks
    file handles on files that are no image at all), then scikit-image decodes it.
    """
    from PIL import Image
    from skimage.io import imread

    with pillow_limit():
        size_error: SizeLimitError | None = None
        try:
            if path.stat().st_size == 0:
                raise ValueError("the file is empty")
            with Image.open(path) as probe:
                try:
                    check_image_file(probe, path, what)
                except SizeLimitError as err:
                    size_error = err
                if size_error is None:
                    probe.verify()
        except Exception as err:
            raise ValueError(f"{what} {path}: cannot read it as an image ({first_line(err)})") from None
        if size_error is not None:
            raise size_error
        try:
            return np.asarray(imread(path))
        except Exception as err:
            raise ValueError(f"{what} {path}: cannot read it as an image ({first_line(err)})") from None


def _read_image(path: Path) -> np.ndarray:
    """An image file as float32 (C, H, W) in [0, 1], C = 1 or 3 (alpha dropped)."""
    what = f"image {path}"
    return to_unit_float(_as_channels_first(_read_image_file(path, "image"), what), what)


def _read_mask_file(path: Path) -> np.ndarray:
    """A mask file -> uint8 (H, W) in {0, 1}. JPEG (lossy) is thresholded; lossless files must be binary."""
    raw = _read_image_file(path, "mask")
    if raw.ndim == 3 and raw.shape[-1] in (1, 3, 4):
        channels = raw[..., :3] if raw.shape[-1] == 4 else raw
        if path.suffix.lower() not in _LOSSY_EXTENSIONS and not (channels == channels[..., :1]).all():
            raise ValueError(
                f"mask {path}: color channels differ (a color label map?); expected a binary mask"
            )
        lossy = path.suffix.lower() in _LOSSY_EXTENSIONS
        raw = channels.mean(axis=-1, dtype=np.float32) if lossy else channels[..., 0]  # no float64 copy
    if raw.ndim != 2:
        raise ValueError(f"mask {path}: expected a 2-D mask (H, W), got shape {raw.shape}")
    if path.suffix.lower() in _LOSSY_EXTENSIONS:  # compression noise: threshold at half range
        if np.issubdtype(raw.dtype, np.floating) and raw.max(initial=0) <= 1.0:
            return (raw > 0.5).astype(np.uint8)
        return (raw > 127).astype(np.uint8)
    return binary_mask(raw, f"mask {path}")


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
        image = _read_image(ipath)
        mask = _read_mask_file(mpath)
        if mask.shape != image.shape[1:]:
            raise ValueError(
                f"mask {mpath} has size {mask.shape} but image {ipath} has size {image.shape[1:]}"
            )
        if grayscale is True and image.shape[0] == 3:
            image = _gray(image)
        if image_size is not None:  # now, so full-size images are never all held at once
            image, mask = resize_image(image, image_size), _resize_mask(mask, image_size)
        images.append(image)
        masks.append(mask)
        sources.append(str(ipath))
    if grayscale is False or (grayscale is None and any(im.shape[0] == 3 for im in images)):
        images = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    stacked_images, stacked_masks = _stack(images, masks, sources, None, "image_dir")
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


def _image_source(path: Path) -> tuple[list[str], Iterator[np.ndarray]]:
    """The ids of the images at ``path`` (see :func:`read_images`) and an iterator that reads them one
    at a time as float32 (C, H, W) in [0, 1]."""
    if path.is_file() and path.suffix.lower() == ".npz":
        arrays = read_npz(path, ("images",), ("ids",), _check_npz_images(path))
        stack, raw_ids = _npz_images(arrays["images"], str(path)), arrays.get("ids")
        divisor = unit_divisor(stack, str(path))  # one rule for the whole array
        if raw_ids is not None and raw_ids.shape != (len(stack),):
            raise ValueError(f"{path}: ids must have shape (N,) = ({len(stack)},), got {raw_ids.shape}")
        ids = (
            [str(i) for i in raw_ids]
            if raw_ids is not None
            else [f"{path.stem}_{i:05d}" for i in range(len(stack))]
        )
        return ids, (to_unit_float(im, str(path), divisor) for im in stack)
    if path.is_dir():
        folder = path / "images" if (path / "images").is_dir() else path
        files = _list_images(folder, "path")
        return list(files), (_read_image(p) for p in files.values())
    raise FileNotFoundError(f"path: expected an .npz file or a folder of images, got {path} (not found)")


def read_images(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """Images without masks, each at its own size: float32 (C, H, W) in [0, 1] (integers scaled by the
    one rule of :func:`rndpo.data.input_limits.unit_divisor`, as the loaders do) and their ids.

    ``path`` is an ``.npz`` with ``images`` (N, H, W) or (N, H, W, 1|3) and optional ``ids`` (other
    arrays, e.g. ``masks``, are not read), or a folder of image files (ids are the file stems, in sorted
    order; a folder with an ``images/`` subfolder is read from there).
    """
    ids, images = _image_source(Path(path))
    return list(images), ids


def load_unlabeled(
    path: str | Path, *, image_size: int, channels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """An unlabeled pool (see :func:`read_images`): images float32 (N, C, size, size) in [0, 1] and ids
    str (N,). ``channels`` converts gray/RGB to match a labeled set (see :func:`match_channels`);
    None keeps RGB if any image is RGB, as :func:`load_folder` does. Each image is resized as it is read."""
    _check_image_size(image_size)
    ids, source = _image_source(Path(path))
    if not ids:
        raise ValueError(f"path: {path} holds no images")
    images = []
    for i, im in zip(ids, source, strict=True):
        if channels is not None:
            im = match_channels(im, channels, f"image {i}")
        images.append(resize_image(im, image_size))
    if channels is None:  # gray repeated to RGB commutes with resizing, bit for bit
        channels = 3 if any(im.shape[0] == 3 for im in images) else 1
        images = [match_channels(im, channels, f"image {i}") for i, im in zip(ids, images, strict=True)]
    return np.ascontiguousarray(np.stack(images), dtype=np.float32), np.array(ids)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def scale_volume(vol: np.ndarray, window: tuple[float, float] | None, path: Path) -> np.ndarray:
    """Volume of any real dtype -> float32 in [0, 1]: clip to window, or to the 0.5-99.5 percentiles, then
    rescale. Computed in float64 a block of rows at a time: no float64 copy of the volume."""
    if vol.size and vol.dtype.kind == "f" and not np.isfinite(np.min(vol) + np.max(vol)):
        raise ValueError(f"image {path}: volume holds NaN or inf values")
    if window is None:
        lo, hi = (float(v) for v in np.percentile(vol, (0.5, 99.5)))
    else:
        lo, hi = float(window[0]), float(window[1])
    out = np.zeros(vol.shape, dtype=np.float32)
    if hi <= lo:
        return out
    for rows in row_chunks(vol.shape):
        scaled = (np.clip(vol[rows].astype(np.float64), lo, hi) - lo) / (hi - lo)
        out[rows] = np.clip(scaled, 0.0, 1.0)
    return out


def _nifti(path: Path, what: str) -> Any:
    """The nibabel image of ``path``, its header checked against the voxel cap; no voxel read yet."""
    import nibabel as nib

    try:
        image = nib.load(path)
    except Exception as err:
        raise ValueError(f"{what} {path}: cannot read it as NIfTI ({first_line(err)})") from None
    check_nifti(image, path, what)
    return image


def _voxels(image: Any, path: Path, what: str) -> np.ndarray:
    """The voxels float32 of nibabel ``image`` (read from ``path``); errors name the file."""
    try:
        return np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as err:
        raise ValueError(f"{what} {path}: cannot read it as NIfTI ({first_line(err)})") from None


def read_nifti_image(path: str | Path) -> tuple[Any, np.ndarray]:
    """The nibabel image of the NIfTI file ``path`` (its header checked against the voxel cap before any
    voxel is read) and its voxels float32 (i, j, k, ...); a corrupt or truncated file is a one-line
    ValueError naming it."""
    path = Path(path)
    image = _nifti(path, "image")
    return image, _voxels(image, path, "image")


def load_nifti(
    image_paths: Sequence[str | Path],
    mask_paths: Sequence[str | Path],
    *,
    axis: int = 2,
    skip_empty: bool = False,
    image_size: int | None = None,
    window: tuple[float, float] | None = None,
    labels: Sequence[int] | None = None,
    name: str | None = None,
) -> VolumeSlices:
    """Slice 3D NIfTI volumes (nibabel) to 2D along ``axis`` into a grayscale dataset (C = 1).

    Each image volume is normalised on its own to [0, 1]: clipped to ``window`` (lo, hi) if given, else to
    its 0.5 and 99.5 percentiles. Masks must be binary unless ``labels`` names the label values of the
    structures to keep: the value ``labels[i]`` becomes class i + 1 (each structure its own class, a
    label map with ``num_classes = len(labels) + 1``; one value gives a binary mask) and any other value
    background. Every slice is kept, empty ones too; ``skip_empty`` drops slices without foreground (for
    training data only: validation and test need the empty slices, see :class:`VolumeSlices`).
    ``image_size`` resizes each slice to image_size x image_size, stretching a non-square slice (the
    aspect ratio is not kept; logged once). ``groups`` is the volume index, so slices of one volume never
    cross splits and evaluation is per volume; ids are ``<file stem>_<slice:04d>``. Errors name the file.
    """
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
        image, label = _nifti(ipath, "image"), _nifti(mpath, "mask")
        vol = _voxels(image, ipath, "image")
        try:
            seg = np.asarray(label.dataobj)
        except Exception as err:
            raise ValueError(f"mask {mpath}: cannot read it as NIfTI ({first_line(err)})") from None
        vol = vol.reshape(vol.shape[:3]) if vol.ndim > 3 and all(d == 1 for d in vol.shape[3:]) else vol
        seg = seg.reshape(seg.shape[:3]) if seg.ndim > 3 and all(d == 1 for d in seg.shape[3:]) else seg
        if vol.ndim != 3:
            raise ValueError(f"image {ipath}: expected a 3-D volume, got shape {vol.shape}")
        if seg.shape != vol.shape:
            raise ValueError(f"mask {mpath} has shape {seg.shape} but image {ipath} has shape {vol.shape}")
        if labels is None:
            seg = binary_mask(np.asarray(seg), f"mask {mpath}")
        else:
            seg = _structure_classes(np.asarray(seg), labels)
        vol = np.moveaxis(scale_volume(vol, window, ipath), axis, 0)
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
            " (skip_empty drops every slice)"
        )
    shapes = sorted({im.shape[1:] for im in images})
    if image_size is not None and shapes != [(image_size, image_size)]:
        log.info(
            "load_nifti: %d slices of %s pixels resized to %dx%d (a non-square slice is stretched;"
            " the aspect ratio is not kept)",
            len(images),
            ", ".join("x".join(map(str, hw)) for hw in shapes),
            image_size,
            image_size,
        )
    stacked_images, stacked_masks = _stack(images, masks, sources, image_size, "image_paths")
    kept = [int(v) for v in labels] if labels is not None else [1]
    return VolumeSlices(
        stacked_images,
        stacked_masks,
        np.array(ids),
        np.array(groups, dtype=np.int64),
        name or "nifti",
        num_classes=len(kept) + 1,
        class_names=("background", "foreground")
        if len(kept) == 1
        else ("background", *(f"label_{v}" for v in kept)),
        label_values=(0, *kept) if labels is not None else (0, 1),
    )


def _structure_classes(seg: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """uint8 classes of a label volume: ``labels[i]`` -> i + 1, every other value -> 0."""
    values = [int(v) for v in labels]
    if not values or len(set(values)) != len(values) or min(values) <= 0 or len(values) > 254:
        raise ValueError(f"labels must be 1 to 254 distinct positive label values, got {list(labels)}")
    out = np.zeros(seg.shape, dtype=np.uint8)
    for i, v in enumerate(values):
        out[seg == v] = i + 1
    return out
