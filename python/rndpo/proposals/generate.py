"""Generating a proposal bank: K candidate label maps per image from a segmenter and the configured sources.

The network gives logits (B, 1, *S) (binary: sigmoid, mask = p >= 0.5) or (B, C, *S) with C >= 2
(multi-class: softmax over the classes, label map = argmax, ties to the lower label), S = (H, W) or
(D, H, W). The bank's ``num_classes`` is 2 for 1 or 2 output channels and C otherwise; its ``probs``
are the base model's eval-mode probabilities (see :class:`rndpo.proposals.ProposalBank`), and the
*base* label map is ``probs >= 0.5`` (C = 2) or the argmax of ``probs`` (C > 2).

Allocation rule of :func:`generate_proposals`: proposal j (0-based) comes from source
``sources[j % S]`` (S sources, round-robin in the configured order) and is that source's
``i = j // S``-th variant:

- ``mc_dropout``: dropout on, batch-norm frozen, label map of one sample; variant i draws its dropout
  masks with seed ``(seed, i, batch index)`` (``seed``: the argument of :func:`generate_proposals`).
- ``tta``: transform the input, predict, invert the transform on the logits, take the label map. In 2D
  variant i is ``TTA_VARIANTS[i % 8]``: hflip, vflip, rotate +a, rotate -a, hflip + rotate +a/2,
  vflip + rotate -a/2, rotate +a/2, rotate -a/2 (a = ``tta_degrees``). In 3D it is the flip
  ``TTA_FLIPS_3D[i % 7]`` along W, H, D, then every pair of axes, then all three (no rotation).
- ``threshold``: t spread evenly over [threshold_low, threshold_high] across this source's n variants
  (t = threshold_low when n = 1). Binary: ``probs >= t``. Multi-class: a class-prior shift, the argmax
  of ``p_c w_c`` with ``w_0 = 1`` and ``w_c = (1 - t) / t`` for every structure c >= 1 (all structures'
  logits shifted by -logit(t)): t < 1/2 grows every structure into the background, t > 1/2 shrinks it.
- ``snapshot``: snapshot checkpoint ``i % len(snapshots)`` in eval mode, its label map.
- ``morph``: the base label map dilated, then eroded, with a ball of radius 1, then 2, ... up to
  ``morph_radius`` voxels, cycling: variant i has radius 1 + (i // 2) % morph_radius and is a dilation
  for even i, an erosion for odd i (erosion treats voxels outside the image as the structure). Label
  maps: per structure, grown into the background only (a voxel reached by several structures goes to
  the nearest, ties to the lower label) and eroded into the background.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rndpo.config import PROPOSAL_SOURCES, ProposalConfig
from rndpo.nets import restore_train_flags, save_train_flags
from rndpo.proposals.bank import ProposalBank, _layout, _shape
from rndpo.proposals.sources import (
    TTA_FLIPS_3D,
    TTA_VARIANTS,
    _eval_forward,
    _forward,
    _image_tensor,
    _labels,
    _mc_dropout_labels,
    _morph,
    _morph_labels,
    _prior_shift_labels,
    _probabilities,
    _roi,
    _snapshot_model,
    _tta_pair,
)

__all__ = [
    "PROPOSAL_SOURCES",
    "TTA_FLIPS_3D",
    "TTA_VARIANTS",
    "ProposalConfig",
    "allocate_sources",
    "generate_proposals",
]


def allocate_sources(k: int, sources: Sequence[str]) -> list[tuple[str, int]]:
    """(source, variant index) for proposals 0..k-1: round-robin over ``sources`` in order."""
    s = len(sources)
    return [(sources[j % s], j // s) for j in range(k)]


def _check_ground_truth(ground_truth: object, shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    """uint8 (N, *S) labels 0..num_classes-1 (bool or uint8 in), C-contiguous."""
    layout = _layout(len(shape) - 1, "N")
    if not isinstance(ground_truth, np.ndarray) or ground_truth.shape != shape:
        raise ValueError(f"ground_truth must have shape {layout} = {shape}, got {_shape(ground_truth)}")
    top = int(ground_truth.max(initial=0)) if ground_truth.dtype in (np.uint8, np.bool_) else None
    if top is None or top >= num_classes:
        values = "in {0, 1}" if num_classes == 2 else f"labels 0 to {num_classes - 1}"
        got = f"dtype {ground_truth.dtype}" + ("" if top is None else f" with values up to {top}")
        raise ValueError(f"ground_truth must be uint8 {values} (num_classes = {num_classes}), got {got}")
    return np.ascontiguousarray(ground_truth, dtype=np.uint8)


def _plan(
    config: ProposalConfig, snapshots: Sequence[nn.Module | Mapping[str, torch.Tensor]] | None
) -> ProposalConfig:
    """config, with the snapshot source dropped (and a warning) when no snapshots are given."""
    if "snapshot" in config.sources and not snapshots:
        others = tuple(s for s in config.sources if s != "snapshot")
        if not others:
            raise ValueError(f"sources are only ['snapshot'], but snapshots is {snapshots!r}: pass snapshots")
        warnings.warn(
            f"generate_proposals: no snapshots given, so the 'snapshot' source is skipped; the {config.k}"
            f" proposals come from {list(others)}",
            UserWarning,
            stacklevel=3,
        )
        config = dataclasses.replace(config, sources=others)
    return config


def generate_proposals(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    config: ProposalConfig | None = None,
    snapshots: Sequence[nn.Module | Mapping[str, torch.Tensor]] | None = None,
    ground_truth: np.ndarray | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    roi_size: Sequence[int] | int | None = None,
) -> ProposalBank:
    """A :class:`ProposalBank` of ``config.k`` proposals for each of images float32 (N, Cin, *S).

    S = (H, W) or (D, H, W); the model maps (B, Cin, *S) to logits (B, 1, *S) (binary) or (B, C, *S)
    (C classes; see the module docstring). snapshots: models or state dicts (rebuilt on a copy of
    ``model``) for the "snapshot" source; without them that source is skipped with a warning (the other
    sources share the k proposals); ground_truth: optional uint8 (N, *S) labels 0..C-1 ({0, 1} for a
    binary model), stored for experiments. Images follow the one image rule (any finite range). ``seed``
    (an int >= 0) seeds the MC-dropout samples: deterministic for a given config, seed and batch_size.
    The model's train/eval flags are restored afterwards. ``roi_size`` (None: whole images; an int or
    one int per spatial axis): every forward pass, of every source, predicts in windows of that size
    (clipped to the image), gaussian-blended with overlap 0.5 as
    :func:`rndpo.inference.sliding_window_logits` blends them, ``batch_size`` windows per pass: for
    volumes larger than the network takes at once.
    """
    config = ProposalConfig() if config is None else config
    if not isinstance(config, ProposalConfig):
        raise TypeError(f"config must be a ProposalConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int >= 0, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = _image_tensor(images)
    n, spatial = x.shape[0], tuple(x.shape[2:])
    roi = _roi(roi_size, spatial)
    config = _plan(config, snapshots)
    plan = allocate_sources(config.k, config.sources)
    snaps: list[nn.Module] = []
    if any(src == "snapshot" for src, _ in plan):
        snaps = [_snapshot_model(model, s, i) for i, s in enumerate(snapshots or [])]
    if "mc_dropout" in config.sources and not any(
        isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()
    ):
        raise ValueError("sources include 'mc_dropout' but the model has no dropout module")

    probs = _eval_forward(
        model, x, batch_size=batch_size, device=device, post=_probabilities, roi=roi
    ).numpy()
    num_classes = probs.shape[1] if probs.ndim == x.ndim else 2
    if num_classes > 255:
        raise ValueError(f"the model must have at most 255 output channels (classes), got {num_classes}")
    if ground_truth is not None:
        ground_truth = _check_ground_truth(ground_truth, (n, *spatial), num_classes)
    base = probs >= 0.5 if num_classes == 2 else np.argmax(probs, axis=1).astype(np.uint8)
    n_variants = {s: sum(1 for src, _ in plan if src == s) for s in config.sources}
    masks = np.empty((n, config.k, *spatial), dtype=np.uint8)
    flags = save_train_flags(model)
    bar = tqdm(total=config.k, desc="proposals", disable=None if progress else True, leave=False)
    try:
        for j, (source, i) in enumerate(plan):
            if source == "threshold":
                count = n_variants[source]
                t = (
                    config.threshold_low
                    if count == 1
                    else float(np.linspace(config.threshold_low, config.threshold_high, count)[i])
                )
                masks[:, j] = probs >= t if num_classes == 2 else _prior_shift_labels(probs, t)
            elif source == "morph":
                radius = 1 + (i // 2) % config.morph_radius
                dilate = i % 2 == 0
                if num_classes == 2:
                    masks[:, j] = _morph(base, radius, dilate)
                else:
                    masks[:, j] = _morph_labels(base, radius, dilate, num_classes)
            elif source == "mc_dropout":
                masks[:, j] = _mc_dropout_labels(
                    model, x, config.mc_dropout_p, seed, i, batch_size, device, roi
                )
            elif source == "tta":
                fwd, inv = _tta_pair(i, config.tta_degrees, len(spatial))
                model.eval()
                masks[:, j] = _forward(
                    model,
                    x,
                    batch_size=batch_size,
                    device=device,
                    transform=fwd,
                    inverse=inv,
                    post=_labels,
                    roi=roi,
                ).numpy()
            else:  # snapshot
                snap = snaps[i % len(snaps)]
                masks[:, j] = _eval_forward(
                    snap, x, batch_size=batch_size, device=device, post=_labels, roi=roi
                ).numpy()
            bar.update(1)
    finally:
        bar.close()
        restore_train_flags(flags)
    return ProposalBank(
        images=np.ascontiguousarray(x.numpy(), dtype=np.float32),
        masks=masks,
        probs=np.ascontiguousarray(probs, dtype=np.float32),
        ground_truth=ground_truth,
        sources=tuple(src for src, _ in plan),
        num_classes=num_classes,
    )
