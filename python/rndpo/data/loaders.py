"""Reading datasets from files (npz, image folders, NIfTI) and images without masks; resizing and
conversion to the one image rule (see :mod:`rndpo.data`)."""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from rndpo.data.dataset import SegmentationDataset, _some_values
from rndpo.data.slices import VolumeSlices

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


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
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
        images = np.stack([resize_image(im, image_size) for im in images])
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
    stacked = np.stack([resize_image(im, image_size) for im in images]).astype(np.float32, copy=False)
    return np.ascontiguousarray(stacked), np.array(ids)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def scale_volume(vol: np.ndarray, window: tuple[float, float] | None, path: Path) -> np.ndarray:
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
