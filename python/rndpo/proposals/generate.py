"""Generating a proposal bank: K candidate masks per image from a segmenter and the configured sources.

Allocation rule of :func:`generate_proposals`: proposal j (0-based) comes from source
``sources[j % S]`` (S sources, round-robin in the configured order) and is that source's
``i = j // S``-th variant:

- ``mc_dropout``: dropout on, batch-norm frozen, threshold 0.5; variant i draws its dropout masks with
  seed ``(seed, i, batch index)`` (``seed``: the argument of :func:`generate_proposals`).
- ``tta``: transform the input, predict, invert the transform on the logits, threshold 0.5; variant i
  is ``TTA_VARIANTS[i % 8]``: hflip, vflip, rotate +a, rotate -a, hflip + rotate +a/2,
  vflip + rotate -a/2, rotate +a/2, rotate -a/2 (a = ``tta_degrees``).
- ``threshold``: base probabilities >= t, with t spread evenly over [threshold_low, threshold_high]
  across this source's n variants (t = threshold_low when n = 1).
- ``snapshot``: snapshot checkpoint ``i % len(snapshots)`` in eval mode, threshold 0.5.
- ``morph``: the base mask (probabilities >= 0.5) dilated, then eroded, with a disk of radius 1, then
  2, ... up to ``morph_radius``, cycling: variant i has radius 1 + (i // 2) % morph_radius and is a
  dilation for even i, an erosion for odd i (erosion treats pixels outside the image as foreground).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from tqdm.auto import tqdm

from rndpo.config import PROPOSAL_SOURCES, ProposalConfig
from rndpo.inference import as_image_tensor, forward_batched, predict_logits, rotate
from rndpo.nets import enable_mc_dropout, restore_train_flags, save_train_flags
from rndpo.proposals.bank import ProposalBank, _shape

__all__ = [
    "PROPOSAL_SOURCES",
    "TTA_VARIANTS",
    "ProposalConfig",
    "allocate_sources",
    "generate_proposals",
]

TTA_VARIANTS: tuple[tuple[bool, bool, float], ...] = (
    # (hflip, vflip, rotation as a fraction of tta_degrees)
    (True, False, 0.0),
    (False, True, 0.0),
    (False, False, 1.0),
    (False, False, -1.0),
    (True, False, 0.5),
    (False, True, -0.5),
    (False, False, 0.5),
    (False, False, -0.5),
)


def allocate_sources(k: int, sources: Sequence[str]) -> list[tuple[str, int]]:
    """(source, variant index) for proposals 0..k-1: round-robin over ``sources`` in order."""
    s = len(sources)
    return [(sources[j % s], j // s) for j in range(k)]


def _radians(degrees: float) -> torch.Tensor:
    """A fixed angle as a float64 scalar tensor (exact cos and sin before the cast to the images' dtype)."""
    return torch.tensor(math.radians(degrees), dtype=torch.float64)


def _tta_pair(variant: int, degrees: float) -> tuple[Any, Any]:
    hflip, vflip, frac = TTA_VARIANTS[variant % len(TTA_VARIANTS)]
    angle = frac * degrees

    def forward(x: torch.Tensor) -> torch.Tensor:
        if hflip:
            x = x.flip(-1)
        if vflip:
            x = x.flip(-2)
        return rotate(x, _radians(angle)) if angle else x

    def inverse(y: torch.Tensor) -> torch.Tensor:
        if angle:
            y = rotate(y, _radians(-angle))
        if vflip:
            y = y.flip(-2)
        if hflip:
            y = y.flip(-1)
        return y

    return forward, inverse


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy**2 + xx**2) <= radius**2


def _morph(mask: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    """Dilate or erode each (H, W) slice of a bool (N, H, W) stack with a disk; uint8 (N, H, W)."""
    footprint = _disk(radius)
    out = np.empty(mask.shape, dtype=np.uint8)
    for i in range(mask.shape[0]):
        if dilate:
            out[i] = ndimage.binary_dilation(mask[i], structure=footprint)
        else:  # outside the image counts as foreground: objects cut by the border are not eaten from it
            out[i] = ndimage.binary_erosion(mask[i], structure=footprint, border_value=1)
    return out


def _mc_dropout_logits(
    model: nn.Module, x: torch.Tensor, p: float | None, seed: int, variant: int, batch_size: int, device: Any
) -> torch.Tensor:
    flags = save_train_flags(model)
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    old_p = [m.p for m in dropouts]
    dev = torch.device(device)
    fork = [dev.index or 0] if dev.type == "cuda" else []
    try:
        if p is not None:
            for m in dropouts:
                m.p = p
        enable_mc_dropout(model)
        outs = []
        with torch.random.fork_rng(devices=fork):
            for b, start in enumerate(range(0, x.shape[0], batch_size)):
                torch.manual_seed(
                    int(np.random.SeedSequence([seed, variant, b]).generate_state(1, np.uint64)[0] >> 1)
                )
                outs.append(
                    forward_batched(
                        model, x[start : start + batch_size], batch_size=batch_size, device=device
                    )
                )
        return torch.cat(outs)
    finally:
        for drop, value in zip(dropouts, old_p, strict=True):
            drop.p = value
        restore_train_flags(flags)


def _snapshot_model(
    model: nn.Module, snapshot: nn.Module | Mapping[str, torch.Tensor], index: int
) -> nn.Module:
    if isinstance(snapshot, nn.Module):
        return snapshot
    if isinstance(snapshot, Mapping):
        clone = copy.deepcopy(model)
        try:
            clone.load_state_dict(snapshot)
        except RuntimeError as err:
            raise ValueError(f"snapshots[{index}] does not match the model's state_dict: {err}") from None
        return clone
    raise TypeError(f"snapshots[{index}] must be an nn.Module or a state_dict, got {type(snapshot).__name__}")


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
) -> ProposalBank:
    """A :class:`ProposalBank` of ``config.k`` proposals for each of images float32 (N, C, H, W).

    snapshots: models or state dicts (rebuilt on a copy of ``model``) for the "snapshot" source; without
    them that source is skipped with a warning (the other sources share the k proposals);
    ground_truth: optional uint8 (N, H, W) in {0, 1}, stored for experiments. Images follow the one
    image rule (any finite range). ``seed`` (an int >= 0) seeds the MC-dropout samples: deterministic for
    a given config, seed and batch_size. The model's train/eval flags are restored afterwards.
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
    x = as_image_tensor(images)
    n, _, h, w = x.shape
    if ground_truth is not None:
        if not isinstance(ground_truth, np.ndarray) or ground_truth.shape != (n, h, w):
            raise ValueError(
                f"ground_truth must have shape (N, H, W) = {(n, h, w)}, got {_shape(ground_truth)}"
            )
        if ground_truth.dtype not in (np.uint8, np.bool_) or int(ground_truth.max(initial=0)) > 1:
            raise ValueError(f"ground_truth must be uint8 in {{0, 1}}, got dtype {ground_truth.dtype}")
        ground_truth = np.ascontiguousarray(ground_truth, dtype=np.uint8)
    if "snapshot" in config.sources and not snapshots:
        others = tuple(s for s in config.sources if s != "snapshot")
        if not others:
            raise ValueError(f"sources are only ['snapshot'], but snapshots is {snapshots!r}: pass snapshots")
        warnings.warn(
            f"generate_proposals: no snapshots given, so the 'snapshot' source is skipped; the {config.k}"
            f" proposals come from {list(others)}",
            UserWarning,
            stacklevel=2,
        )
        config = dataclasses.replace(config, sources=others)
    plan = allocate_sources(config.k, config.sources)
    snaps: list[nn.Module] = []
    if any(src == "snapshot" for src, _ in plan):
        snaps = [_snapshot_model(model, s, i) for i, s in enumerate(snapshots or [])]
    if "mc_dropout" in config.sources and not any(
        isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()
    ):
        raise ValueError("sources include 'mc_dropout' but the model has no dropout module")

    n_variants = {s: sum(1 for src, _ in plan if src == s) for s in config.sources}
    probs_t = torch.sigmoid(predict_logits(model, x, batch_size=batch_size, device=device)[:, 0])
    probs = probs_t.numpy()
    base = probs >= 0.5
    masks = np.empty((n, config.k, h, w), dtype=np.uint8)
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
                masks[:, j] = probs >= t
            elif source == "morph":
                radius = 1 + (i // 2) % config.morph_radius
                masks[:, j] = _morph(base, radius, dilate=(i % 2 == 0))
            elif source == "mc_dropout":
                logits = _mc_dropout_logits(model, x, config.mc_dropout_p, seed, i, batch_size, device)
                masks[:, j] = (logits[:, 0] >= 0).numpy()
            elif source == "tta":
                fwd, inv = _tta_pair(i, config.tta_degrees)
                model.eval()
                logits = forward_batched(
                    model, x, batch_size=batch_size, device=device, transform=fwd, inverse=inv
                )
                masks[:, j] = (logits[:, 0] >= 0).numpy()
            else:  # snapshot
                snap = snaps[i % len(snaps)]
                masks[:, j] = (
                    predict_logits(snap, x, batch_size=batch_size, device=device)[:, 0] >= 0
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
    )
