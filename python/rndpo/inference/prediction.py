"""Segmenting new images with a saved model: :func:`predict` on arrays, :func:`predict_path` on files.

Each image is brought to the model's input size exactly as in training (bilinear, anti-aliased when
shrinking: :func:`rndpo.data.loaders.resize_image`), scored in eval mode, and its foreground
probabilities are resized back (bilinear) to the image's own size and thresholded (probability >
threshold). Files are read with the saved model's scaling: npz and image folders as the loaders
read them (integers divided by their dtype's maximum), NIfTI volumes clipped to their percentiles (or
the recorded window) and sliced along the recorded axis. Outputs come in the input's format: an npz
(``masks`` uint8 (N, H, W), ``ids``, with ``probs`` float32 (N, H, W) on request), a folder of PNG masks
(0/255, named after the input stems; ``<stem>_probs.npy`` float32 on request), or NIfTI masks (uint8,
with the input's affine and header; ``<stem>_probs.nii.gz`` float32 on request).

Outputs are planned before anything is predicted: an existing output file is refused unless
``overwrite`` (so an input is never replaced by its mask by default), each file is written atomically and
a failure half-way removes what this call wrote (:class:`rndpo.inference.outputs.OutputFiles`). A 2D image
more than :data:`MAX_SCALE` times the model's image size along a side is refused (resize or tile it
first) rather than resized for minutes."""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from rndpo.data import match_channels, read_images, read_nifti_image, resize_image, scale_volume
from rndpo.inference.batched import predict_probs
from rndpo.inference.outputs import OutputFiles
from rndpo.inference.volume_prediction import predict_volumes
from rndpo.nets import SavedModel
from rndpo.storage import atomic_write, write_npz

__all__ = ["MAX_SCALE", "Prediction", "check_scale", "predict", "predict_path"]

log = logging.getLogger("rndpo")

_NIFTI = (".nii", ".nii.gz")

#: a 2D image larger than this many times the model's ``image_size`` along a side is refused by
#: :func:`predict` and :func:`predict_path` (NIfTI slices are resized as in training, whatever their size).
MAX_SCALE = 4


@dataclass(frozen=True)
class Prediction:
    """masks uint8 {0, 1} and probs float32 [0, 1]: arrays (N, H, W) for an (N, C, H, W) input, lists of
    (H_i, W_i) arrays for a list of (C, H_i, W_i) images."""

    masks: np.ndarray | list[np.ndarray]
    probs: np.ndarray | list[np.ndarray]


def _resize_probs(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float32 (S, S) probabilities -> (H, W): bilinear, anti-aliased when shrinking, clipped to [0, 1]."""
    if probs.shape == shape:
        return probs
    from skimage.transform import resize

    shrink = shape[0] < probs.shape[0] or shape[1] < probs.shape[1]
    out = resize(probs, shape, order=1, mode="edge", anti_aliasing=shrink, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _check_image(image: Any, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or not np.issubdtype(image.dtype, np.floating):
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(f"images[{index}] must be a float array (C, H, W), got {got}")
    if not np.isfinite(image).all():
        raise ValueError(f"images[{index}] must be finite, got NaN or inf values")
    return image.astype(np.float32, copy=False)


def check_scale(
    shape: tuple[int, ...], image_size: int | None, what: str, max_scale: float = MAX_SCALE
) -> None:
    """ValueError naming ``what`` if a 2D image of ``shape`` (..., H, W) is more than ``max_scale`` times
    ``image_size`` along a side (None: no limit)."""
    h, w = (int(d) for d in shape[-2:])
    if image_size is not None and max(h, w) > max_scale * image_size:
        raise ValueError(
            f"{what}: {h} x {w} pixels is more than {max_scale:g} times the model's image size {image_size}"
            f" along a side; resize it (to about {image_size} x {image_size}) or tile it first"
        )


def predict(
    model: SavedModel | nn.Module,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    threshold: float | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    max_scale: float | None = MAX_SCALE,
) -> Prediction:
    """Segment ``images``: float32 (N, C, H, W), or a list of (C, H_i, W_i) images of any sizes.

    Images follow the one image rule (any finite range; scaling is the caller's). With a
    :class:`SavedModel` they are converted to its channels (gray <-> RGB) and resized to its image size,
    and the masks come back at each image's own size; a bare ``nn.Module`` sees them as given.
    threshold: default the saved model's (0.5 for a bare module). max_scale: with a SavedModel, an
    image more than this many times its image size along a side is a ValueError (None: any size).
    """
    network = model.network if isinstance(model, SavedModel) else model
    if not isinstance(network, nn.Module):
        raise TypeError(f"model must be a SavedModel or a torch.nn.Module, got {type(model).__name__}")
    if threshold is None:
        threshold = model.threshold if isinstance(model, SavedModel) else 0.5
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    stacked = isinstance(images, np.ndarray)
    if stacked and (images.ndim != 4):  # type: ignore[union-attr]
        raise ValueError(f"images must be (N, C, H, W) or a list of (C, H, W), got shape {images.shape}")  # type: ignore[union-attr]
    items = [_check_image(im, i) for i, im in enumerate(images)]
    if not items:
        raise ValueError("images must hold at least one image, got none")
    size = model.image_size if isinstance(model, SavedModel) else None
    if max_scale is not None:
        for i, im in enumerate(items):
            check_scale(im.shape, size, f"images[{i}]", max_scale)
    if isinstance(model, SavedModel):
        items = [match_channels(im, model.in_channels, f"images[{i}]") for i, im in enumerate(items)]
    inputs = [resize_image(im, size) if size is not None else im for im in items]
    probs: list[np.ndarray] = [np.empty(0, np.float32)] * len(inputs)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        by_shape.setdefault(x.shape, []).append(i)
    for index in by_shape.values():  # one batch stream per input size (a single one after resizing)
        out = predict_probs(
            network, np.stack([inputs[i] for i in index]), batch_size=batch_size, device=device
        )
        for i, p in zip(index, out, strict=True):
            probs[i] = _resize_probs(p, items[i].shape[1:])
    masks = [(p > threshold).astype(np.uint8) for p in probs]
    if stacked:
        return Prediction(np.stack(masks), np.stack(probs))
    return Prediction(masks, probs)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI)


def _nifti_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _predict_npz_or_folder(
    model: SavedModel, src: Path, outputs: OutputFiles, out: Path, probs: bool, batch_size: int, device: str
) -> None:
    if src.is_file():  # npz in, npz out
        outputs.plan([out])
    elif out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {out} is a file; a folder of images writes a folder of masks")
    images, ids = read_images(src)
    if src.is_dir():
        names = [f"{stem}{ext}" for stem in ids for ext in (".png", "_probs.npy")[: 1 + probs]]
        outputs.plan(out / name for name in names)
    for image, name in zip(images, ids, strict=True):
        check_scale(image.shape, model.image_size, f"--images: image {name} ({src})")
    if model.scaling.get("kind") == "volume_percentile":
        log.warning("%s: the model was trained on NIfTI volumes; reading these images as 0-1 images", src)
    pred = predict(model, images, batch_size=batch_size, device=device)
    if src.is_file():
        arrays = {"masks": np.stack(list(pred.masks)), "ids": np.array(ids)}
        if probs:
            arrays["probs"] = np.stack(list(pred.probs))
        outputs.write(out, write_npz, **arrays)
        return
    import imageio.v3 as iio

    outputs.folder(out)
    for stem, mask, prob in zip(ids, pred.masks, pred.probs, strict=True):
        png = iio.imwrite("<bytes>", mask * np.uint8(255), extension=".png")
        outputs.write(out / f"{stem}.png", _write_bytes, png)
        if probs:
            buf = io.BytesIO()
            np.save(buf, prob)
            outputs.write(out / f"{stem}_probs.npy", _write_bytes, buf.getvalue())


def _write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write(path, write)


def _predict_nifti(
    model: SavedModel,
    files: list[Path],
    outputs: OutputFiles,
    out: Path,
    probs: bool,
    batch_size: int,
    device: str,
) -> None:
    import nibabel as nib

    scaling = model.scaling
    axis = int(scaling.get("axis", 2))
    window: Any = tuple(scaling["window"]) if scaling.get("window") else None
    single = len(files) == 1 and _is_nifti(out)
    targets = [out if single else out / f"{_nifti_stem(path)}.nii.gz" for path in files]
    outputs.plan([*targets, *(_probs_path(t) for t in targets if probs)])
    if not single:
        outputs.folder(out)
    for path, target in zip(files, targets, strict=True):
        img, vol = read_nifti_image(path)
        if vol.ndim != 3:
            raise ValueError(f"image {path}: expected a 3-D volume, got shape {vol.shape}")
        slices = np.moveaxis(scale_volume(vol, window, path), axis, 0)
        pred = predict(model, slices[:, None], batch_size=batch_size, device=device, max_scale=None)
        volumes: list[tuple[Path, np.ndarray, Any]] = [
            (target, np.moveaxis(np.asarray(pred.masks), 0, axis), np.uint8)
        ]
        if probs:
            volumes.append((_probs_path(target), np.moveaxis(np.asarray(pred.probs), 0, axis), np.float32))
        for dest, data, dtype in volumes:
            header = img.header.copy()
            header.set_data_dtype(dtype)
            raw = nib.Nifti1Image(data.astype(dtype), img.affine, header).to_bytes()
            outputs.write(dest, _write_bytes, gzip.compress(raw) if dest.name.endswith(".gz") else raw)


def _probs_path(target: Path) -> Path:
    return target.with_name(f"{_nifti_stem(target)}_probs.nii.gz")


def predict_path(
    model: SavedModel,
    images: str | Path,
    out: str | Path,
    *,
    probs: bool = False,
    batch_size: int = 64,
    device: str = "cpu",
    overwrite: bool = False,
) -> list[Path]:
    """Segment the images at ``images`` (an .npz, a folder of images, a NIfTI file or a folder of NIfTI
    files) and write masks in the same format to ``out``; returns the files written. A 3D model takes
    NIfTI volumes and writes one label map per case (:func:`rndpo.inference.predict_volumes`); a 2D
    model slices volumes along its training axis.

    Every output path is checked before anything is predicted: an existing file is refused
    (FileExistsError) unless ``overwrite``. A failure half-way removes what was written."""
    if not isinstance(model, SavedModel):
        raise TypeError(f"model must be a SavedModel (rndpo.load_model), got {type(model).__name__}")
    src, dest = Path(images), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"--images: {src} not found")
    if model.spatial_dims == 3:
        if not (src.is_dir() or _is_nifti(src)):
            raise ValueError(f"--images: a 3D model segments NIfTI volumes (a file or a folder), got {src}")
        return predict_volumes(
            model, src, dest, probs=probs, batch_size=min(batch_size, 4), device=device, overwrite=overwrite
        )
    niftis = [src] if src.is_file() and _is_nifti(src) else []
    if src.is_dir():
        niftis = sorted(p for p in src.iterdir() if p.is_file() and _is_nifti(p))
    elif not niftis and src.suffix.lower() != ".npz":
        raise ValueError(f"--images: expected an .npz, a folder of images or NIfTI files, got {src}")
    if src.is_file() and not niftis and dest.suffix.lower() != ".npz":
        raise ValueError(f"--out: an .npz input writes an .npz; name the output *.npz, got {dest}")
    with OutputFiles(overwrite) as outputs:
        if niftis:
            _predict_nifti(model, niftis, outputs, dest, probs, batch_size, device)
        else:
            _predict_npz_or_folder(model, src, outputs, dest, probs, batch_size, device)
    return outputs.written
