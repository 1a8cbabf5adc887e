"""The learned quality-control network: predicts a proposal's Dice from (image, mask), and its training.

Shapes: images float32 (N, C, H, W) in [0, 1], masks bool or uint8 (N, K, H, W) in {0, 1}, true Dice
float64 (N, K) in [0, 1]. The network sees the C image channels and the mask as one (C + 1)-channel
input and is size-agnostic (global pooling), so any H, W >= 8 works.
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
from rndpo.storage import atomic_dir

__all__ = [
    "QCFitResult",
    "QCNet",
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
    """Small CNN: (image (B, C, H, W), mask (B, 1, H, W)) float32 -> predicted Dice (B,) in [0, 1].

    Four 3x3 conv + BatchNorm + ReLU stages (widths w, 2w, 2w, 4w) with 2x2 max-pooling between them
    (the first conv has stride ``stem_stride``, 2 by default, which makes training about 4x cheaper),
    global average and max pooling, and a two-layer head ending in a sigmoid.
    """

    def __init__(self, in_channels: int, width: int = 16, stem_stride: int = 2) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        self.in_channels = in_channels
        self.width = width
        self.stem_stride = stem_stride
        widths = [width, 2 * width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        prev = in_channels + 1
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            stride = stem_stride if i == 0 else 1
            conv = nn.Conv2d(prev, w, 3, stride=stride, padding=1, bias=False)
            layers += [conv, nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * prev, width), nn.ReLU(inplace=True), nn.Linear(width, 1))

    def logits(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs (B,) for images (B, C, H, W) and masks (B, 1, H, W) float32."""
        x = torch.cat([images, 2.0 * masks - 1.0], dim=1)
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled).squeeze(1)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Predicted Dice (B,) in [0, 1]."""
        return torch.sigmoid(self.logits(images, masks))


def _check_inputs(images: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        got = images.shape if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"images must be a float array (N, C, H, W), got {got}")
    if not isinstance(masks, np.ndarray) or masks.ndim != 4:
        got = masks.shape if isinstance(masks, np.ndarray) else type(masks).__name__
        raise ValueError(f"masks must be a bool or uint8 array (N, K, H, W), got {got}")
    n, _, h, w = images.shape
    if masks.shape[0] != n or masks.shape[2:] != (h, w):
        raise ValueError(f"masks must have shape (N, K, H, W) = ({n}, K, {h}, {w}), got {masks.shape}")
    if min(h, w) < 8:
        raise ValueError(f"images must be at least 8x8 for the QC network, got {h}x{w}")
    return images, masks


def _augment(
    images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, jitter: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip / 90-degree rotation for the whole batch (Dice is invariant to them), and
    with ``jitter`` > 0 a per-sample intensity jitter x -> clamp(x * (1 + a) + b, 0, 1) with a, b
    uniform in [-jitter, jitter] and [-jitter / 2, jitter / 2]."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    if k:
        images, masks = torch.rot90(images, k, dims=(2, 3)), torch.rot90(masks, k, dims=(2, 3))
    if int(torch.randint(0, 2, (1,), generator=gen)):
        images, masks = torch.flip(images, dims=(3,)), torch.flip(masks, dims=(3,))
    if jitter > 0:
        ab = (torch.rand(images.shape[0], 2, 1, 1, generator=gen) * 2 - 1).to(images.device) * jitter
        images = (images * (1 + ab[:, :1]) + 0.5 * ab[:, 1:]).clamp(0.0, 1.0)
    return images, masks


def synthetic_training_set(
    ground_truth: np.ndarray, n_synthetic: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_synthetic`` corruptions per true mask (:func:`rndpo.judges.corruptions.corruption_set`, Dice spread
    evenly over [0, 1]) of ``ground_truth`` (N, H, W) in {0, 1}: (masks uint8 (N, n_synthetic, H, W),
    their true Dice float64 (N, n_synthetic)). Seeded by ``seed``."""
    rng = np.random.default_rng([seed, 20])
    sets = [corruption_set(np.asarray(g, dtype=np.uint8), n_synthetic, rng) for g in ground_truth]
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
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[QCNet, QCFitResult]:
    """Train a :class:`QCNet` to predict ``true_dice`` float64 (N, K) from (images, masks).

    Images are split (seeded, by image, never by proposal) into training and a held-out
    ``val_fraction`` (at least one image when > 0). With ``ground_truth`` (N, H, W) in {0, 1} and
    ``n_synthetic`` > 0, each training image also gets ``n_synthetic`` synthetic corruptions of its true
    mask (:func:`synthetic_training_set`) as extra training masks; validation uses the real proposals
    only. Each step draws ``batch_size // group`` training images and ``group`` of their masks each
    (real or synthetic, with replacement), applies one random flip/rotation and a per-sample intensity
    ``jitter``, and takes an Adam step on the binary cross-entropy with the true Dice as soft target plus
    ``rank_weight`` times a pairwise logistic ranking loss among each image's masks (cosine
    learning-rate decay). Deterministic per ``seed`` on CPU; the global torch RNG is left untouched.
    """
    images, masks = _check_inputs(images, masks)
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
    if n_synthetic and ground_truth is None:
        raise ValueError("ground_truth (N, H, W) is needed when n_synthetic > 0, got None")
    if ground_truth is not None and np.shape(ground_truth) != (n, *masks.shape[2:]):
        raise ValueError(
            f"ground_truth must have shape (N, H, W) = {(n, *masks.shape[2:])}, got {np.shape(ground_truth)}"
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
        model = QCNet(int(images.shape[1]), width, stem_stride).to(device)
    gen = torch.Generator().manual_seed(seed)
    train_masks = np.asarray(masks[train_idx], dtype=np.uint8)
    train_dice = true_dice[train_idx]
    if n_synthetic:
        assert ground_truth is not None
        syn_masks, syn_dice = synthetic_training_set(np.asarray(ground_truth)[train_idx], n_synthetic, seed)
        train_masks = np.concatenate([train_masks, syn_masks], axis=1)
        train_dice = np.concatenate([train_dice, syn_dice], axis=1)
    kt = train_masks.shape[1]
    img_t = torch.as_tensor(np.ascontiguousarray(images[train_idx], dtype=np.float32), device=device)
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
        x, m = _augment(img_t[ii], msk_t[ii, kk].unsqueeze(1).float(), gen, jitter)
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
    """Predicted Dice float64 (N, K) in [0, 1] for images (N, C, H, W) and masks (N, K, H, W); with
    ``tta`` the mean prediction over the 8 flips / 90-degree rotations of each (image, mask)."""
    images, masks = _check_inputs(images, masks)
    n, k = masks.shape[:2]
    if images.shape[1] != model.in_channels:
        raise ValueError(f"images must have {model.in_channels} channels, got {images.shape[1]}")
    flags = save_train_flags(model)
    model.eval()
    out = np.empty(n * k, dtype=np.float64)
    img_t = as_image_tensor(images).to(device)  # copies a read-only (memory-mapped) bank's images
    flat_masks = masks.reshape(n * k, 1, *masks.shape[2:])
    for start in range(0, n * k, batch_size):
        stop = min(n * k, start + batch_size)
        idx = torch.arange(start, stop, device=device) // k
        m = torch.as_tensor(np.ascontiguousarray(flat_masks[start:stop], dtype=np.float32), device=device)
        x = img_t[idx]
        views = [(r, f) for r in range(4) for f in (False, True)] if tta else [(0, False)]
        total = torch.zeros(stop - start, dtype=torch.float64, device=device)
        for r, f in views:
            xv, mv = torch.rot90(x, r, dims=(2, 3)), torch.rot90(m, r, dims=(2, 3))
            if f:
                xv, mv = torch.flip(xv, dims=(3,)), torch.flip(mv, dims=(3,))
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
    """(model in eval mode, fit result or None, extra settings) from a :func:`save_qc_model` folder."""
    path = Path(path)
    cfg_path, weights = path / "config.json", path / "model.pt"
    if not cfg_path.is_file() or not weights.is_file():
        raise ValueError(
            f"path must be a folder with config.json and model.pt written by save_qc_model, got {path}"
        )
    config = json.loads(cfg_path.read_text())
    if config.get("format") != _FORMAT:
        raise ValueError(f"{cfg_path}: format must be {_FORMAT}, got {config.get('format')!r}")
    model = QCNet(int(config["in_channels"]), int(config["width"]), int(config["stem_stride"]))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.to(device).eval()
    fr = config.get("fit_result")
    return model, (None if fr is None else QCFitResult(**fr)), dict(config.get("extra", {}))
