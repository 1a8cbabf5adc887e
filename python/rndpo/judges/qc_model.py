"""The learned quality-control network: predicts a proposal's Dice from (image, mask), and its training.

Shapes, with S = (H, W) or (D, H, W): images float32 (N, Cin, *S) in [0, 1], masks bool or uint8
(N, K, *S), true Dice float64 (N, K) in [0, 1]. Binary masks (``num_classes`` = 2) are in {0, 1} and
enter the network as one channel, label maps (``num_classes`` C > 2, labels 0..C-1) as their one-hot
encoding (C channels); the target is then the mean per-structure Dice (the oracle judge's score). The
network sees the Cin image channels and the mask channels as one input and is size-agnostic (global
pooling), so any side >= 8 works; volumes are area-downsampled to at most ``max_side`` voxels a side
before the first convolution, which keeps CPU training cheap.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rndpo.inference import as_image_tensor
from rndpo.judges.corruptions import corruption_set
from rndpo.metrics import spearman
from rndpo.nets import restore_train_flags, save_train_flags
from rndpo.proposals import TTA_FLIPS_3D
from rndpo.storage import atomic_dir

__all__ = [
    "QCFitResult",
    "QCNet",
    "augment_batch",
    "fit_qc_model",
    "load_qc_model",
    "predict_qc",
    "save_qc_model",
    "synthetic_training_set",
]

_FORMAT = 1


@dataclass(frozen=True)
class QCFitResult:
    """What training the QC network achieved.

    train_loss: mean binary cross-entropy (soft targets) over the last tenth of the steps;
    val_mae / val_spearman: mean absolute error and Spearman correlation of the predicted vs true Dice
    on the held-out images' proposals; val_constant_mae: the MAE of always predicting the mean training
    Dice (the baseline to beat). The val fields are None without a validation split (val_spearman also
    when either side is constant on it).
    """

    steps: int
    n_train_images: int
    n_val_images: int
    n_train_proposals: int
    n_val_proposals: int
    train_loss: float
    val_mae: float | None
    val_spearman: float | None
    val_constant_mae: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class QCNet(nn.Module):
    """Small CNN: (image (B, Cin, *S), mask channels (B, M, *S)) float32 -> predicted Dice (B,) in [0, 1].

    S = (H, W) (``spatial_dims`` 2) or (D, H, W) (3). M = 1 for binary masks (``num_classes`` 2: the
    mask itself), M = C for label maps (``num_classes`` C > 2: the one-hot encoding, see
    :meth:`mask_input`). Four 3x3 (3x3x3) conv + BatchNorm + ReLU stages (widths w, 2w, 2w, 4w) with 2x
    max-pooling between them (the first conv has stride ``stem_stride``, 2 by default, which makes
    training about 4x (8x) cheaper), global average and max pooling, and a two-layer head ending in a
    sigmoid. Volumes whose largest side exceeds ``max_side`` are first area-downsampled by the smallest
    integer factor that brings it to at most ``max_side`` (3D only; 2D inputs are never resized).
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 16,
        stem_stride: int = 2,
        *,
        num_classes: int = 2,
        spatial_dims: int = 2,
        max_side: int = 16,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 4:
            raise ValueError(f"max_side must be an int >= 4, got {max_side!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 255:
            raise ValueError(f"num_classes must be an int from 2 to 255, got {num_classes!r}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.in_channels = in_channels
        self.width = width
        self.stem_stride = stem_stride
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.max_side = max_side
        self.mask_channels = 1 if num_classes == 2 else num_classes
        conv_t, norm_t, pool_t = (
            (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
            if spatial_dims == 2
            else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
        )
        widths = [width, 2 * width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        prev = in_channels + self.mask_channels
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(pool_t(2, ceil_mode=True))
            stride = stem_stride if i == 0 else 1
            conv = conv_t(prev, w, 3, stride=stride, padding=1, bias=False)
            layers += [conv, norm_t(w), nn.ReLU(inplace=True)]
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * prev, width), nn.ReLU(inplace=True), nn.Linear(width, 1))

    def mask_input(self, labels: torch.Tensor) -> torch.Tensor:
        """The network's mask channels float32 (B, M, *S) for integer or bool label maps (B, *S)."""
        if self.num_classes == 2:
            return labels.unsqueeze(1).float()
        if labels.dtype == torch.bool:
            labels = labels.to(torch.uint8)
        shape = (1, -1, *([1] * (labels.ndim - 1)))
        classes = torch.arange(self.num_classes, dtype=labels.dtype, device=labels.device).view(shape)
        return (labels.unsqueeze(1) == classes).float()

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """Volumes (B, M, D, H, W) float32 area-downsampled (adaptive average pooling) by the smallest
        integer factor f that brings the largest side to at most ``max_side``: (B, M, ceil(D / f), ...).
        The identity in 2D and for volumes within ``max_side``; linear, so it may be applied to the image
        and mask channels apart, before :meth:`logits` (which then leaves them as they are)."""
        spatial = x.shape[2:]
        factor = math.ceil(max(spatial) / self.max_side)
        if self.spatial_dims == 2 or factor <= 1:
            return x
        d, h, w = (math.ceil(s / factor) for s in spatial)
        return nn.functional.adaptive_avg_pool3d(x, (d, h, w))

    def logits(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs (B,) for images (B, Cin, *S) and mask channels (B, M, *S) float32."""
        x = self.downsample(torch.cat([images, 2.0 * masks - 1.0], dim=1))
        f = self.features(x)
        dims = tuple(range(2, f.ndim))
        pooled = torch.cat([f.mean(dim=dims), f.amax(dim=dims)], dim=1)
        return self.head(pooled).squeeze(1)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Predicted Dice (B,) in [0, 1]."""
        return torch.sigmoid(self.logits(images, masks))


_LAYOUT = {2: "H, W", 3: "D, H, W"}


def _check_inputs(images: Any, masks: Any, num_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """images (N, Cin, *S) and masks (N, K, *S) with labels 0..num_classes-1, S 2-D or 3-D, sides >= 8."""
    if not isinstance(images, np.ndarray) or images.ndim not in (4, 5):
        got = images.shape if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"images must be a float array (N, C, H, W) or (N, C, D, H, W), got {got}")
    nd = images.ndim - 2
    if not isinstance(masks, np.ndarray) or masks.ndim != images.ndim:
        got = masks.shape if isinstance(masks, np.ndarray) else type(masks).__name__
        raise ValueError(f"masks must be a bool or uint8 array (N, K, {_LAYOUT[nd]}), got {got}")
    n, spatial = images.shape[0], tuple(images.shape[2:])
    if masks.shape[0] != n or masks.shape[2:] != spatial:
        raise ValueError(
            f"masks must have shape (N, K, {_LAYOUT[nd]}) = ({n}, K, {', '.join(map(str, spatial))}), "
            f"got {masks.shape}"
        )
    if min(spatial) < 8:
        size = "x".join(map(str, spatial))
        raise ValueError(f"images must be at least {'x'.join(['8'] * nd)} for the QC network, got {size}")
    if masks.dtype != np.bool_ and not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(f"masks must be bool or uint8 label maps, got dtype {masks.dtype}")
    top = int(masks.max()) if masks.size else 0
    if masks.dtype != np.bool_ and (top >= num_classes or (masks.size and int(masks.min()) < 0)):
        raise ValueError(
            f"masks must hold labels 0 to {num_classes - 1} (num_classes = {num_classes}), "
            f"got values up to {top}"
        )
    return images, masks


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, jitter: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random view of a batch: images (B, Cin, *S), mask channels (B, M, *S) float32, S 2-D or 3-D.

    The same view for the whole batch (Dice is invariant to it): in 2D a random 90-degree rotation and
    left-right flip (8 views), in 3D a flip along each spatial axis with probability 1/2 (8 views); the
    label maps move exactly, with no interpolation. With ``jitter`` > 0, a per-sample intensity jitter
    x -> clamp(x * (1 + a) + b, 0, 1) with a, b uniform in [-jitter, jitter] and [-jitter / 2, jitter / 2].
    Deterministic per the state of ``gen``.
    """
    nd = images.ndim - 2
    if nd == 2:
        k = int(torch.randint(0, 4, (1,), generator=gen))
        if k:
            images, masks = torch.rot90(images, k, dims=(2, 3)), torch.rot90(masks, k, dims=(2, 3))
        if int(torch.randint(0, 2, (1,), generator=gen)):
            images, masks = torch.flip(images, dims=(3,)), torch.flip(masks, dims=(3,))
    else:
        bits = torch.randint(0, 2, (nd,), generator=gen).tolist()
        axes = tuple(2 + i for i, b in enumerate(bits) if b)
        if axes:
            images, masks = torch.flip(images, dims=axes), torch.flip(masks, dims=axes)
    if jitter > 0:
        ab = (torch.rand(images.shape[0], 2, *([1] * nd), generator=gen) * 2 - 1).to(images.device) * jitter
        images = (images * (1 + ab[:, :1]) + 0.5 * ab[:, 1:]).clamp(0.0, 1.0)
    return images, masks


def _tta_views(nd: int) -> list[tuple[int, tuple[int, ...]]]:
    """(quarter turns in the last two axes, axes to flip) of the 8 test-time views of (B, C, *S) tensors:
    in 2D the rotations and left-right flips, in 3D the identity and :data:`rndpo.proposals.TTA_FLIPS_3D`."""
    if nd == 2:
        return [(r, (3,) if f else ()) for r in range(4) for f in (False, True)]
    return [(0, ())] + [(0, tuple(axes)) for axes in TTA_FLIPS_3D]


def synthetic_training_set(
    ground_truth: np.ndarray, n_synthetic: int, seed: int, *, num_classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """``n_synthetic`` corruptions per true mask (:func:`rndpo.judges.corruptions.corruption_set`, Dice spread
    evenly over [0, 1]) of ``ground_truth`` (N, *S), S = (H, W) or (D, H, W), in {0, 1} (``num_classes``
    2) or with labels 0..C-1 (``num_classes`` C > 2, mean per-structure Dice): (masks uint8
    (N, n_synthetic, *S), their true Dice float64 (N, n_synthetic)). Seeded by ``seed``."""
    rng = np.random.default_rng([seed, 20])
    sets = [
        corruption_set(np.asarray(g, dtype=np.uint8), n_synthetic, rng, num_classes=num_classes)
        for g in ground_truth
    ]
    return np.stack([m for m, _ in sets]), np.stack([d for _, d in sets])


def _pairwise_rank_loss(
    logits: torch.Tensor, target: torch.Tensor, group: int, margin: float = 0.02
) -> torch.Tensor:
    """Mean logistic loss softplus(-(s_i - s_j)) over the pairs (i, j) inside each consecutive group of
    ``group`` samples (one image's masks) whose true Dice differ by more than ``margin``, i better."""
    s = logits.view(-1, group)
    t = target.view(-1, group)
    ds = s.unsqueeze(2) - s.unsqueeze(1)
    better = (t.unsqueeze(2) - t.unsqueeze(1)) > margin
    if not bool(better.any()):
        return logits.sum() * 0.0
    return nn.functional.softplus(-ds[better]).mean()


def fit_qc_model(
    images: np.ndarray,
    masks: np.ndarray,
    true_dice: np.ndarray,
    *,
    ground_truth: np.ndarray | None = None,
    n_synthetic: int = 0,
    rank_weight: float = 0.0,
    group: int = 8,
    jitter: float = 0.0,
    val_fraction: float = 0.2,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    width: int = 16,
    stem_stride: int = 2,
    num_classes: int = 2,
    max_side: int = 16,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[QCNet, QCFitResult]:
    """Train a :class:`QCNet` to predict ``true_dice`` float64 (N, K) from (images (N, Cin, *S), masks
    (N, K, *S)), S = (H, W) or (D, H, W) (the network's ``spatial_dims`` follows the images).

    ``num_classes`` 2: binary masks in {0, 1}; C > 2: label maps 0..C-1 (one-hot input), and
    ``true_dice`` should be the mean per-structure Dice (:class:`rndpo.judges.OracleJudge`'s score).
    Images are split (seeded, by image, never by proposal) into training and a held-out
    ``val_fraction`` (at least one image when > 0). With ``ground_truth`` (N, *S) (labels
    0..num_classes-1) and ``n_synthetic`` > 0, each training image also gets ``n_synthetic`` synthetic
    corruptions of its true mask (:func:`synthetic_training_set`) as extra training masks; validation
    uses the real proposals only. Each step draws ``batch_size // group`` training images and ``group``
    of their masks each (real or synthetic, with replacement), applies one random view
    (:func:`augment_batch`: flips / 90-degree rotations in 2D, flips along every axis in 3D) and a
    per-sample intensity ``jitter``, and takes an Adam step on the binary cross-entropy with the true
    Dice as soft target plus ``rank_weight`` times a pairwise logistic ranking loss among each image's
    masks (cosine learning-rate decay). ``width``, ``stem_stride``, ``max_side``: see :class:`QCNet`.
    Deterministic per ``seed`` on CPU; the global torch RNG is left untouched.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 255:
        raise ValueError(f"num_classes must be an int from 2 to 255, got {num_classes!r}")
    images, masks = _check_inputs(images, masks, num_classes)
    n, k = masks.shape[:2]
    true_dice = np.asarray(true_dice, dtype=np.float64)
    if true_dice.shape != (n, k):
        raise ValueError(f"true_dice must have shape (N, K) = {(n, k)}, got {true_dice.shape}")
    if not np.all(np.isfinite(true_dice)) or true_dice.min() < 0.0 or true_dice.max() > 1.0:
        raise ValueError("true_dice must be finite and lie in [0, 1]")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("group", group)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(n_synthetic, bool) or not isinstance(n_synthetic, int) or n_synthetic < 0:
        raise ValueError(f"n_synthetic must be a non-negative int, got {n_synthetic!r}")
    layout = _LAYOUT[images.ndim - 2]
    if n_synthetic and ground_truth is None:
        raise ValueError(f"ground_truth (N, {layout}) is needed when n_synthetic > 0, got None")
    if ground_truth is not None:
        if np.shape(ground_truth) != (n, *masks.shape[2:]):
            raise ValueError(
                f"ground_truth must have shape (N, {layout}) = {(n, *masks.shape[2:])}, "
                f"got {np.shape(ground_truth)}"
            )
        top = int(np.max(ground_truth)) if np.size(ground_truth) else 0
        if top >= num_classes or (np.size(ground_truth) and int(np.min(ground_truth)) < 0):
            raise ValueError(
                f"ground_truth must hold labels 0 to {num_classes - 1} (num_classes = {num_classes}), "
                f"got values up to {top}"
            )
    if not (math.isfinite(rank_weight) and rank_weight >= 0):
        raise ValueError(f"rank_weight must be a finite float >= 0, got {rank_weight!r}")
    if not (math.isfinite(jitter) and 0 <= jitter < 1):
        raise ValueError(f"jitter must lie in [0, 1), got {jitter!r}")
    n_val = 0 if val_fraction == 0.0 else max(1, round(val_fraction * n))
    if n - n_val < 1:
        raise ValueError(
            f"fit needs at least one training image besides {n_val} validation image(s), got N = {n}"
        )

    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = QCNet(
            int(images.shape[1]),
            width,
            stem_stride,
            num_classes=num_classes,
            spatial_dims=images.ndim - 2,
            max_side=max_side,
        ).to(device)
    gen = torch.Generator().manual_seed(seed)
    train_masks = np.asarray(masks[train_idx], dtype=np.uint8)
    train_dice = true_dice[train_idx]
    if n_synthetic:
        assert ground_truth is not None
        syn_masks, syn_dice = synthetic_training_set(
            np.asarray(ground_truth)[train_idx], n_synthetic, seed, num_classes=num_classes
        )
        train_masks = np.concatenate([train_masks, syn_masks], axis=1)
        train_dice = np.concatenate([train_dice, syn_dice], axis=1)
    kt = train_masks.shape[1]
    img_t = torch.as_tensor(np.ascontiguousarray(images[train_idx], dtype=np.float32), device=device)
    img_t = model.downsample(img_t)  # volumes: once, and each step's masks below, before the flips
    msk_t = torch.as_tensor(np.ascontiguousarray(train_masks), device=device)
    tgt_t = torch.as_tensor(train_dice, dtype=torch.float32, device=device)
    n_images_per_batch = max(1, batch_size // group)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
    loss_fn = nn.BCEWithLogitsLoss()
    tail = max(1, steps // 10)
    tail_losses: list[float] = []
    model.train()
    iterator: Any = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="learned QC", leave=False, disable=None)  # off without a terminal
    for step in iterator:
        ii = torch.randint(0, len(train_idx), (n_images_per_batch,), generator=gen).repeat_interleave(group)
        kk = torch.randint(0, kt, (n_images_per_batch * group,), generator=gen)
        ii, kk = ii.to(device), kk.to(device)
        x, m = augment_batch(img_t[ii], model.downsample(model.mask_input(msk_t[ii, kk])), gen, jitter)
        logits, target = model.logits(x, m), tgt_t[ii, kk]
        loss = loss_fn(logits, target)
        if rank_weight > 0 and group > 1:
            loss = loss + rank_weight * _pairwise_rank_loss(logits, target, group)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - tail:
            tail_losses.append(float(loss.detach()))
    model.eval()

    val_mae = val_spearman = val_const = None
    if n_val:
        pred = predict_qc(model, images[val_idx], masks[val_idx], device=device).ravel()
        truth = true_dice[val_idx].ravel()
        val_mae = float(np.mean(np.abs(pred - truth)))
        val_spearman = spearman(pred, truth)
        val_const = float(np.mean(np.abs(true_dice[train_idx].mean() - truth)))
    result = QCFitResult(
        steps=steps,
        n_train_images=len(train_idx),
        n_val_images=n_val,
        n_train_proposals=len(train_idx) * kt,
        n_val_proposals=n_val * k,
        train_loss=float(np.mean(tail_losses)),
        val_mae=val_mae,
        val_spearman=val_spearman,
        val_constant_mae=val_const,
        seconds=time.perf_counter() - start,
    )
    return model, result


@torch.no_grad()
def predict_qc(
    model: QCNet,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    tta: bool = False,
) -> np.ndarray:
    """Predicted Dice float64 (N, K) in [0, 1] for images (N, Cin, *S) and masks (N, K, *S) (labels
    0..model.num_classes-1), S = (H, W) or (D, H, W) as the model's ``spatial_dims``; with ``tta`` the
    mean prediction over 8 views of each (image, mask): in 2D the flips / 90-degree rotations, in 3D the
    identity and the 7 flips along sets of axes (:data:`rndpo.proposals.TTA_FLIPS_3D`)."""
    images, masks = _check_inputs(images, masks, model.num_classes)
    n, k = masks.shape[:2]
    if images.ndim - 2 != model.spatial_dims:
        raise ValueError(
            f"images must be {model.spatial_dims}-D (N, C, {_LAYOUT[model.spatial_dims]}) as the model's "
            f"spatial_dims, got shape {images.shape}"
        )
    if images.shape[1] != model.in_channels:
        raise ValueError(f"images must have {model.in_channels} channels, got {images.shape[1]}")
    flags = save_train_flags(model)
    model.eval()
    out = np.empty(n * k, dtype=np.float64)
    # as_image_tensor copies a read-only (memory-mapped) bank's images
    img_t = model.downsample(as_image_tensor(images, spatial_dims=(2, 3)).to(device))
    flat_masks = masks.reshape(n * k, *masks.shape[2:])
    views = _tta_views(model.spatial_dims) if tta else [(0, ())]
    for start in range(0, n * k, batch_size):
        stop = min(n * k, start + batch_size)
        idx = torch.arange(start, stop, device=device) // k
        labels = torch.as_tensor(np.array(flat_masks[start:stop], dtype=np.uint8), device=device)  # a copy
        m = model.downsample(model.mask_input(labels))
        x = img_t[idx]
        total = torch.zeros(stop - start, dtype=torch.float64, device=device)
        for r, axes in views:
            xv, mv = x, m
            if r:
                xv, mv = torch.rot90(xv, r, dims=(2, 3)), torch.rot90(mv, r, dims=(2, 3))
            if axes:
                xv, mv = torch.flip(xv, dims=axes), torch.flip(mv, dims=axes)
            total += model(xv, mv).double()
        out[start:stop] = (total / len(views)).cpu().numpy()
    restore_train_flags(flags)
    return out.reshape(n, k)


def save_qc_model(
    path: str | Path,
    model: QCNet,
    fit_result: QCFitResult | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically write folder ``path``: model.pt (state dict) and config.json (architecture, fit result)."""
    path = Path(path)
    config = {
        "format": _FORMAT,
        "in_channels": model.in_channels,
        "width": model.width,
        "stem_stride": model.stem_stride,
        "num_classes": model.num_classes,
        "spatial_dims": model.spatial_dims,
        "max_side": model.max_side,
        "fit_result": None if fit_result is None else fit_result.to_dict(),
        "extra": extra or {},
    }
    state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        torch.save(state, tmp / "model.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, allow_nan=False) + "\n")
    return path


def load_qc_model(
    path: str | Path, *, device: str = "cpu"
) -> tuple[QCNet, QCFitResult | None, dict[str, Any]]:
    """(model in eval mode, fit result or None, extra settings) from a :func:`save_qc_model` folder.

    A folder written before label maps and volumes (no num_classes / spatial_dims / max_side in
    config.json) holds a 2D binary model and loads as one."""
    path = Path(path)
    cfg_path, weights = path / "config.json", path / "model.pt"
    if not cfg_path.is_file() or not weights.is_file():
        raise ValueError(
            f"path must be a folder with config.json and model.pt written by save_qc_model, got {path}"
        )
    config = json.loads(cfg_path.read_text())
    if config.get("format") != _FORMAT:
        raise ValueError(f"{cfg_path}: format must be {_FORMAT}, got {config.get('format')!r}")
    try:
        model = QCNet(
            int(config["in_channels"]),
            int(config["width"]),
            int(config["stem_stride"]),
            num_classes=int(config.get("num_classes", 2)),
            spatial_dims=int(config.get("spatial_dims", 2)),
            max_side=int(config.get("max_side", 16)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{cfg_path}: not a valid QC model config: {err}") from None
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except RuntimeError as err:
        raise ValueError(
            f"{weights}: does not match the network described in {cfg_path.name}: {err}"
        ) from None
    model.to(device).eval()
    fr = config.get("fit_result")
    return model, (None if fr is None else QCFitResult(**fr)), dict(config.get("extra", {}))
