"""Segmenting NIfTI volumes with a saved 3D model: one label map per case, on the input's grid.

Cases are found as nnU-Net names them (``<case>_<4-digit channel>.nii.gz`` grouped by case, otherwise one file
per case, a 4-D file holding the channels). Each case's channels are normalised as in training (each channel
clipped to its 0.5-99.5 percentiles and rescaled to [0, 1]), used in the file's voxel order (no
reorientation), predicted with a sliding window of the model's recorded ``inference_size`` (else its
``patch_size``; whole volumes when it has neither) and written as ``<case>.nii.gz`` with the input's shape,
affine and header codes and the dataset's own label values; ``probs`` adds ``<case>_probs.nii.gz``, the C
class probabilities on the last axis (a binary model's two: background, foreground). A model trained at a
target spacing (``[data] spacing = [z, y, x]``) gets each volume resampled to it (linearly), and its
probabilities are resampled back to the file's grid (linearly) before the labels are taken.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rndpo.data import (
    CaseFiles,
    VolumeInfo,
    check_case_headers,
    find_cases,
    nifti_stem,
    read_case_image,
    resample_to_shape,
    resampled_shape,
    write_label_map,
    write_probabilities,
)
from rndpo.data.input_limits import check_size
from rndpo.inference.batched import labels_from_probs
from rndpo.inference.outputs import OutputFiles
from rndpo.inference.sliding_window import sliding_window_probs
from rndpo.nets import SavedModel

__all__ = ["SPACING_TOLERANCE", "predict_volumes", "segment_volume"]

log = logging.getLogger("rndpo")

#: ``rndpo predict`` warns when a volume's spacing differs from the training spacing by more than this share.
SPACING_TOLERANCE = 0.10


def segment_volume(
    model: SavedModel, image: np.ndarray, *, batch_size: int = 4, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Label map uint8 (z, y, x) with classes 0..C-1 and probabilities float32 (C, z, y, x) of one
    normalised image float32 (C_in, z, y, x); C = 2 (background, foreground) for a binary model."""
    if not isinstance(image, np.ndarray) or image.ndim != 4 or image.shape[0] != model.in_channels:
        got = image.shape if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be ({model.in_channels}, z, y, x), got {got}")
    roi = model.inference_size or tuple(int(s) for s in image.shape[1:])
    probs = sliding_window_probs(model.network, image[None], roi, batch_size=batch_size, device=device)
    labels = labels_from_probs(probs, threshold=model.threshold)[0]
    p = probs[0]
    if p.shape[0] == 1:
        p = np.concatenate([1.0 - p, p])
    return labels, p.astype(np.float32, copy=False)


def _check_spacing(model: SavedModel, spacing: tuple[float, ...], case: str) -> None:
    trained = model.spacing
    if trained is None:
        return
    worst = max(abs(s - t) / t for s, t in zip(spacing, trained, strict=True))
    if worst > SPACING_TOLERANCE:
        log.warning(
            "case %s: spacing %s mm differs from the training spacing %s mm by %.0f%% (more than %.0f%%);"
            " the model sees structures at another scale",
            case,
            [round(s, 4) for s in spacing],
            [round(t, 4) for t in trained],
            100 * worst,
            100 * SPACING_TOLERANCE,
        )


def predict_volumes(
    model: SavedModel,
    images: str | Path,
    out: str | Path,
    *,
    probs: bool = False,
    batch_size: int = 4,
    device: str = "cpu",
    overwrite: bool = False,
) -> list[Path]:
    """Segment every case at ``images`` (a NIfTI file or a folder of them) with a 3D ``model`` and write
    ``<case>.nii.gz`` label maps (and ``<case>_probs.nii.gz``) into the folder ``out``, or to ``out``
    itself when it names one .nii/.nii.gz file for a single case. Returns the files written.

    Every case's headers (channel count, one grid per case) are checked, and every output path against
    existing files (refused unless ``overwrite``), before any volume is predicted; a failure half-way
    removes the outputs already written (:class:`rndpo.inference.outputs.OutputFiles`).
    """
    if model.spatial_dims != 3:
        raise ValueError(f"model must be a 3D model (spatial_dims 3), got spatial_dims {model.spatial_dims}")
    src, dest = Path(images), Path(out)
    cases = find_cases(src, model.in_channels)
    headers = [check_case_headers(case, model.in_channels) for case in cases]
    single = len(cases) == 1 and dest.name.endswith((".nii.gz", ".nii"))
    if not single and dest.exists() and not dest.is_dir():
        raise ValueError(f"--out: {dest} is a file; {len(cases)} cases need a folder")
    targets = [dest if single else dest / f"{case.name}.nii.gz" for case in cases]
    outputs = OutputFiles(overwrite)
    outputs.plan([*targets, *(_probs_path(t) for t in targets if probs)])
    resample = bool(model.info.get("resample")) and model.spacing is not None
    with outputs:
        if not single:
            outputs.folder(dest)
        for case, header, target in zip(cases, headers, targets, strict=True):
            labels, p = _segment_case(model, case, header, batch_size, device, resample)
            outputs.write(target, write_label_map, labels, model.label_values, header)
            if probs:
                outputs.write(_probs_path(target), write_probabilities, p, header)
            log.info("segmented %s -> %s", case.name, target)
    return outputs.written


def _probs_path(target: Path) -> Path:
    return target.with_name(f"{nifti_stem(target)}_probs.nii.gz")


def _segment_case(
    model: SavedModel, case: CaseFiles, header: VolumeInfo, batch_size: int, device: str, resample: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (z, y, x) and probabilities (C, z, y, x) of one case on its file's grid."""
    image = read_case_image(case)
    if not resample:
        _check_spacing(model, header.spacing, case.name)
        return segment_volume(model, image, batch_size=batch_size, device=device)
    assert model.spacing is not None  # to the training spacing, and the probabilities back to the file's grid
    grid = image.shape[1:]
    target = resampled_shape(grid, header.spacing, model.spacing)
    check_size((image.shape[0], *target), f"case {case.name}: resampled to the model's spacing")
    image = resample_to_shape(image, target)
    _, p = segment_volume(model, image, batch_size=batch_size, device=device)
    p = resample_to_shape(p, grid)
    labels = labels_from_probs(p[None] if p.shape[0] > 2 else p[None, 1:], threshold=model.threshold)[0]
    return labels, p
