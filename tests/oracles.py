"""Slow, obvious reference implementations used only as test oracles (one section per module)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# --- losses oracles ---
# Naive composition of the preference losses (rndpo.losses): full per-pixel log-likelihoods through
# autograd (F.logsigmoid / F.log_softmax over every pixel), summed over the whole image, exactly as a
# generic DPO implementation would; the region D only appears in |D| and in the D-restricted rewards.


def naive_pixel_logp(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel log-likelihood (B, *S) of labels (B, *S) under logits (B, 1, *S) or (B, C, *S)."""
    if logits.shape[1] == 1:
        sign = 2.0 * labels.to(logits.dtype) - 1.0
        return F.logsigmoid(sign * logits[:, 0])
    logp = F.log_softmax(logits, dim=1)
    return logp.gather(1, labels.long().unsqueeze(1))[:, 0]


def naive_preference_loss(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    region_power: float = 1.0,
    label_smoothing: float = 0.0,
    normalization: str = "margin",
) -> dict[str, torch.Tensor]:
    """Same outputs as rndpo.losses.preference_loss (as a dict), by the obvious full-image route."""
    acc = torch.float64 if torch.float64 in (policy_logits.dtype, ref_logits.dtype) else None
    acc = acc or torch.float32
    pol = policy_logits.to(acc)
    ref = ref_logits.detach().to(acc)
    batch = pol.shape[0]
    pol_w = naive_pixel_logp(pol, chosen)
    pol_l = naive_pixel_logp(pol, rejected)
    ref_w = naive_pixel_logp(ref, chosen)
    ref_l = naive_pixel_logp(ref, rejected)
    policy_chosen_logps = pol_w.reshape(batch, -1).sum(1)
    policy_rejected_logps = pol_l.reshape(batch, -1).sum(1)
    ref_chosen_logps = ref_w.reshape(batch, -1).sum(1)
    ref_rejected_logps = ref_l.reshape(batch, -1).sum(1)
    m = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    region = (chosen != rejected).reshape(batch, -1)
    size = region.sum(1)
    d = size.clamp(min=1).to(acc) ** region_power
    chosen_lr_d = ((pol_w - ref_w).reshape(batch, -1) * region).sum(1)
    rejected_lr_d = ((pol_l - ref_l).reshape(batch, -1) * region).sum(1)
    if normalization == "margin":
        r, w, scale = m / d, torch.ones_like(d), beta / d
    else:
        r, w, scale = m, 1.0 / d, torch.full_like(d, beta)
    h = beta * r
    eps = label_smoothing
    formulas = {
        "sigmoid": lambda: -F.logsigmoid(h),
        "ipo": lambda: (r - 1.0 / (2.0 * beta)) ** 2,
        "hinge": lambda: torch.relu(1.0 - h),
        "robust": lambda: (-(1 - eps) * F.logsigmoid(h) + eps * F.logsigmoid(-h)) / (1 - 2 * eps),
        "cdpo": lambda: -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h),
    }
    valid = size > 0
    losses = formulas[loss_type]() * w * valid.to(acc)
    n = int(valid.sum())
    loss = losses.sum() / n if n > 0 else losses.sum() * 0.0
    chosen_rewards = (scale * chosen_lr_d).detach()
    rejected_rewards = (scale * rejected_lr_d).detach()
    margins = (h * valid.to(acc)).detach()
    return {
        "loss": loss,
        "losses": losses,
        "chosen_rewards": chosen_rewards,
        "rejected_rewards": rejected_rewards,
        "margins": margins,
        "accuracies": (margins > 0).to(acc),
        "region_size": size,
    }


# --- judge oracles ---
# Pixel-by-pixel loops for the judges (rndpo.judges) and the reliability report (rndpo.judges.reliability).
# NumPy/SciPy are imported inside the functions so this section does not touch the file's header.


def oracle_dice(a, b) -> float:
    """Dice of two binary masks by counting pixels one at a time (two empty masks -> 1)."""
    size_a = size_b = inter = 0
    for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
        size_a += bool(x)
        size_b += bool(y)
        inter += bool(x) and bool(y)
    return 1.0 if size_a + size_b == 0 else 2.0 * inter / (size_a + size_b)


def oracle_proposal_dice(masks, reference):
    """(N, K) Dice of masks (N, K, H, W) with reference (N, H, W), one pair at a time."""
    import numpy as np

    n, k = masks.shape[:2]
    return np.array([[oracle_dice(masks[i, j], reference[i]) for j in range(k)] for i in range(n)])


def oracle_agreement(masks):
    """(N, K) mean Dice of each proposal with the other K - 1 of its image, one pair at a time."""
    import numpy as np

    n, k = masks.shape[:2]
    out = np.zeros((n, k))
    for i in range(n):
        for a in range(k):
            out[i, a] = sum(oracle_dice(masks[i, a], masks[i, b]) for b in range(k) if b != a) / (k - 1)
    return out


def oracle_consensus_mask(masks):
    """(N, H, W) bool: a pixel is in iff strictly more than K / 2 of the K proposals contain it."""
    import numpy as np

    n, k, h, w = masks.shape
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                votes = sum(int(masks[i, j, y, x]) for j in range(k))
                out[i, y, x] = votes * 2 > k
    return out


def _oracle_neighbours(h: int, w: int, y: int, x: int):
    """4-neighbours of (y, x), an out-of-image neighbour replaced by the pixel itself (edge copy)."""
    out = []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        yy, xx = y + dy, x + dx
        out.append((yy, xx) if 0 <= yy < h and 0 <= xx < w else (y, x))
    return out


def oracle_uncertainty(masks, probs, mode: str):
    """(N, K) UncertaintyJudge scores by explicit per-pixel loops (see rndpo.judges.UncertaintyJudge)."""
    import math

    import numpy as np

    n, k, h, w = masks.shape
    out = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            m = masks[i, j].astype(bool)
            inside, outside = [], []
            for y in range(h):
                for x in range(w):
                    p = float(probs[i, y, x])
                    nb = [bool(m[a, b]) for a, b in _oracle_neighbours(h, w, y, x)]
                    if mode == "boundary":
                        if m[y, x] and not all(nb):
                            inside.append(p)
                        elif not m[y, x] and any(nb):
                            outside.append(p)
                    elif m[y, x]:
                        inside.append(p)
                    else:
                        outside.append(p)
            if mode == "entropy":
                clip = [min(max(p, 1e-6), 1 - 1e-6) for p in inside + outside]
                cin, cout = clip[: len(inside)], clip[len(inside) :]
                a = sum(-math.log2(p) for p in cin) / len(cin) if cin else 1.0
                b = sum(-math.log2(1 - p) for p in cout) / len(cout) if cout else 1.0
                out[i, j] = -(a + b) / 2
            else:
                a = sum(inside) / len(inside) if inside else 0.5
                b = sum(1 - p for p in outside) / len(outside) if outside else 0.5
                out[i, j] = (a + b) / 2
    return out


def oracle_top1_accuracy(scores, true_dice) -> float:
    """Share of rows whose first maximum of scores has the row's highest true Dice."""
    hits = 0
    for s_row, d_row in zip(scores.tolist(), true_dice.tolist(), strict=True):
        best_j = 0
        for j, v in enumerate(s_row):
            if v > s_row[best_j]:
                best_j = j
        hits += d_row[best_j] >= max(d_row)
    return hits / len(scores)


def oracle_mean_image_spearman(scores, true_dice):
    """(mean, count) of scipy's per-row Spearman over rows with non-constant truth (constant scores: 0)."""
    from scipy import stats

    vals = []
    for s_row, d_row in zip(scores, true_dice, strict=True):
        if len(set(d_row.tolist())) == 1:
            continue
        vals.append(0.0 if len(set(s_row.tolist())) == 1 else float(stats.spearmanr(s_row, d_row).statistic))
    return (sum(vals) / len(vals) if vals else None), len(vals)


def oracle_pair_quality(image, chosen, rejected, region_size, true_dice):
    """(accuracy, harmful leverage, n_ties) of pairs, one pair at a time (None, None, 0 for no pairs)."""
    if len(image) == 0:
        return None, None, 0
    correct = ties = 0
    wrong_region = total_region = 0
    for i, c, r, s in zip(
        image.tolist(), chosen.tolist(), rejected.tolist(), region_size.tolist(), strict=True
    ):
        total_region += s
        if true_dice[i, c] > true_dice[i, r]:
            correct += 1
        elif true_dice[i, c] < true_dice[i, r]:
            wrong_region += s
        else:
            ties += 1
    leverage = wrong_region / total_region if total_region else 0.0
    return correct / len(image), leverage, ties


# --- model/proposal oracles ---
# Per-image loops for the base-training loss (rndpo.training.supervised.segmentation_loss) and a pixel-loop
# image rotation (nearest source pixel) used to check the augmentation / TTA geometry.


def oracle_segmentation_loss(logits, target, smooth: float = 1.0) -> float:
    """BCE-with-logits (mean over all pixels) + mean over images of 1 - soft Dice, in float64 NumPy."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    t = np.asarray(target, dtype=np.float64).reshape(len(target), -1)
    bce_terms = []
    dice_terms = []
    for zi, ti in zip(z, t, strict=True):
        p = 1.0 / (1.0 + np.exp(-zi))
        # log(1 + exp(-|z|)) form of -[t log p + (1 - t) log(1 - p)]
        bce_terms.extend((np.maximum(zi, 0) - zi * ti + np.log1p(np.exp(-np.abs(zi)))).tolist())
        dice = (2.0 * float((p * ti).sum()) + smooth) / (float(p.sum()) + float(ti.sum()) + smooth)
        dice_terms.append(1.0 - dice)
    return sum(bce_terms) / len(bce_terms) + sum(dice_terms) / len(dice_terms)


def oracle_rotate_nearest(image, degrees: float):
    """Rotate a (H, W) array by ``degrees`` about the pixel-grid centre (cy, cx) = ((H-1)/2, (W-1)/2):
    out[y, x] = image at the nearest pixel (edge-clamped) to (cy + sin a dx + cos a dy,
    cx + cos a dx - sin a dy), with (dy, dx) = (y - cy, x - cx), one pixel at a time."""
    import math

    import numpy as np

    image = np.asarray(image)
    h, w = image.shape
    a = math.radians(degrees)
    out = np.empty_like(image)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    for y in range(h):
        for x in range(w):
            dx, dy = x - cx, y - cy
            sx = math.cos(a) * dx - math.sin(a) * dy + cx
            sy = math.sin(a) * dx + math.cos(a) * dy + cy
            iy = min(max(round(sy), 0), h - 1)
            ix = min(max(round(sx), 0), w - 1)
            out[y, x] = image[iy, ix]
    return out


def oracle_binary_morph(mask, radius: int, dilate: bool):
    """Dilate / erode a (H, W) binary mask with the disk {dy^2 + dx^2 <= radius^2}, one pixel at a time.

    Dilation: any neighbour inside the image is 1. Erosion: every neighbour is 1, where neighbours
    outside the image count as 1. Returns uint8 (H, W).
    """
    import numpy as np

    mask = np.asarray(mask).astype(bool)
    h, w = mask.shape
    offsets = [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if dy * dy + dx * dx <= radius**2
    ]
    out = np.zeros((h, w), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            vals = [
                bool(mask[y + dy, x + dx]) if 0 <= y + dy < h and 0 <= x + dx < w else None
                for dy, dx in offsets
            ]
            if dilate:
                out[y, x] = any(v for v in vals if v is not None)
            else:
                out[y, x] = all(v for v in vals if v is not None)
    return out


# --- data/metrics oracles ---
# Per-pixel loops and brute-force pairwise distances, for rndpo.metrics (dice, iou, hd95, assd).
# Boundary: a foreground pixel with a 4-neighbour that is background or outside the image (as MONAI's
# get_mask_edges: mask XOR its erosion by the cross). Empty-mask conventions as documented in rndpo.metrics.

import math  # noqa: E402

import numpy as np  # noqa: E402


def oracle_metric_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two (H, W) masks by counting pixels one by one; both empty -> 1."""
    inter = size_p = size_t = 0
    for p, t in zip(
        np.asarray(pred, bool).ravel().tolist(), np.asarray(target, bool).ravel().tolist(), strict=True
    ):
        inter += p and t
        size_p += p
        size_t += t
    return 1.0 if size_p + size_t == 0 else 2.0 * inter / (size_p + size_t)


def oracle_metric_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """IoU of two (H, W) masks by counting pixels one by one; both empty -> 1."""
    inter = union = 0
    for p, t in zip(
        np.asarray(pred, bool).ravel().tolist(), np.asarray(target, bool).ravel().tolist(), strict=True
    ):
        inter += p and t
        union += p or t
    return 1.0 if union == 0 else inter / union


def oracle_boundary_points(mask: np.ndarray) -> list[tuple[int, int]]:
    """(row, col) of foreground pixels of an (H, W) mask with a 4-neighbour outside the mask or the image."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    points = []
    for r in range(h):
        for c in range(w):
            if not m[r, c]:
                continue
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                rr, cc = r + dr, c + dc
                if not (0 <= rr < h and 0 <= cc < w) or not m[rr, cc]:
                    points.append((r, c))
                    break
    return points


def oracle_directed_distances(
    src: list[tuple[int, int]], dst: list[tuple[int, int]], spacing: tuple[float, float]
) -> np.ndarray:
    """For each src point the Euclidean distance (scaled by spacing) to the nearest dst point, brute force."""
    out = []
    for r, c in src:
        out.append(min(math.hypot((r - rr) * spacing[0], (c - cc) * spacing[1]) for rr, cc in dst))
    return np.asarray(out, dtype=np.float64)


def _oracle_surface(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray] | float:
    """Both directed distance sets, or the empty-mask value (0 both empty, image diagonal if one empty)."""
    bp, bt = oracle_boundary_points(pred), oracle_boundary_points(target)
    if not bp and not bt:
        return 0.0
    if not bp or not bt:
        h, w = np.shape(pred)
        return math.hypot(h * spacing[0], w * spacing[1])
    return oracle_directed_distances(bp, bt, spacing), oracle_directed_distances(bt, bp, spacing)


def oracle_hd95(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """max of the two directed 95th percentiles (linear interpolation) of boundary distances, brute force."""
    d = _oracle_surface(pred, target, spacing)
    if isinstance(d, float):
        return d
    return float(max(np.percentile(d[0], 95), np.percentile(d[1], 95)))


def oracle_assd(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Mean of both directed boundary distance sets pooled, brute force."""
    d = _oracle_surface(pred, target, spacing)
    if isinstance(d, float):
        return d
    return float(np.concatenate(d).mean())


# --- mining oracles (rndpo.mining) ---
# Per-pair Python loops over (N, K, *S) masks, written straight from the spec, no bit tricks, and
# SplitMix64 (checked against published outputs in tests/test_mining.py).

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    """SplitMix64 output function on a Python int in [0, 2**64)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class SplitMix64:
    """SplitMix64, bit-identical to ``rndpo_core::SplitMix64`` (checked against published outputs)."""

    def __init__(self, state: int) -> None:
        self.state = state & _MASK64

    @classmethod
    def for_image(cls, seed: int, image: int) -> SplitMix64:
        """The stream of image ``image``: initial state ``mix64(mix64(seed) ^ image)``."""
        return cls(_mix64(_mix64(seed) ^ image))

    def next_u64(self) -> int:
        """Next output in [0, 2**64): ``state += GAMMA; mix64(state)``."""
        self.state = (self.state + _GAMMA) & _MASK64
        return _mix64(self.state)

    def below(self, bound: int) -> int:
        """A draw in [0, bound) as ``(next_u64() * bound) >> 64``."""
        return (self.next_u64() * bound) >> 64


def oracle_pairwise_stats(masks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sizes (N, K), intersection (N, K, K), disagreement (N, K, K) int64 by a loop over pairs."""
    m = np.asarray(masks).astype(bool)
    n, k = m.shape[:2]
    sizes = np.zeros((n, k), dtype=np.int64)
    inter = np.zeros((n, k, k), dtype=np.int64)
    dis = np.zeros((n, k, k), dtype=np.int64)
    for i in range(n):
        for a in range(k):
            sizes[i, a] = int(m[i, a].sum())
            for b in range(k):
                inter[i, a, b] = int(np.logical_and(m[i, a], m[i, b]).sum())
                dis[i, a, b] = int(np.logical_xor(m[i, a], m[i, b]).sum())
    return sizes, inter, dis


def oracle_mine_pairs(
    masks,
    scores,
    strategy: str,
    *,
    min_margin: float = 0.0,
    min_region: int = 1,
    max_region: int | None = None,
    max_pairs_per_image: int | None = None,
    seed: int = 0,
    max_region_fraction: float | None = None,
    num_classes: int | None = None,
) -> list[tuple[int, int, int, int, float]]:
    """Rows (image, chosen, rejected, region_size, margin) mined straight from the spec.

    With ``num_classes`` the masks are label maps: the region is the voxels whose labels differ and
    the chosen mask's foreground its non-zero voxels (binary masks: xor and size, the same counts).
    """
    if num_classes is None:
        m = np.asarray(masks).astype(bool)
    else:
        m = np.asarray(masks).astype(np.int64)
        assert oracle_first_bad_label(m, num_classes) is None
    s = np.asarray(scores, dtype=np.float64)
    rows = []
    for i in range(m.shape[0]):
        k = m.shape[1]
        ranked = sorted(range(k), key=lambda j: (-float(s[i, j]), j))
        g = SplitMix64.for_image(seed, i)
        if k < 2:
            rank_pairs = []
        elif strategy == "top_vs_bottom":
            rank_pairs = [(0, k - 1)]
        elif strategy == "top_vs_rest":
            rank_pairs = [(0, r) for r in range(1, k)]
        elif strategy == "adjacent":
            rank_pairs = [(r, r + 1) for r in range(k - 1)]
        elif strategy == "all_pairs":
            rank_pairs = [(a, b) for a in range(k) for b in range(k) if a < b]
        elif strategy == "top_vs_random":
            rank_pairs = [(0, 1 + (g.next_u64() * (k - 1) >> 64))]
        else:
            x = g.next_u64() * k >> 64
            y = g.next_u64() * (k - 1) >> 64
            y = y + 1 if y >= x else y
            rank_pairs = [(min(x, y), max(x, y))]
        kept = []
        for a, b in rank_pairs:
            c, r = ranked[a], ranked[b]
            margin = float(s[i, c]) - float(s[i, r])
            region = int(np.count_nonzero(m[i, c] != m[i, r]))
            ok_region = region >= max(1, min_region) and (max_region is None or region <= max_region)
            if max_region_fraction is not None:
                ok_region = ok_region and region <= max_region_fraction * int(np.count_nonzero(m[i, c]))
            if margin > min_margin and ok_region:
                kept.append((i, c, r, region, margin))
        rows.extend(kept if max_pairs_per_image is None else kept[:max_pairs_per_image])
    return rows


def oracle_label_pairwise_stats(masks, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sizes (N, K, C), intersection (N, K, K, C), disagreement (N, K, K) int64 of label maps, by a loop
    over proposals, pairs and classes (np.count_nonzero of one class or one pair at a time)."""
    m = np.asarray(masks).astype(np.int64)
    n, k = m.shape[:2]
    sizes = np.zeros((n, k, num_classes), dtype=np.int64)
    inter = np.zeros((n, k, k, num_classes), dtype=np.int64)
    dis = np.zeros((n, k, k), dtype=np.int64)
    for i in range(n):
        for a in range(k):
            for c in range(num_classes):
                sizes[i, a, c] = np.count_nonzero(m[i, a] == c)
            for b in range(k):
                dis[i, a, b] = np.count_nonzero(m[i, a] != m[i, b])
                for c in range(num_classes):
                    inter[i, a, b, c] = np.count_nonzero((m[i, a] == c) & (m[i, b] == c))
    return sizes, inter, dis


def oracle_first_bad_label(masks, num_classes: int) -> tuple[int, int, int, int] | None:
    """(value, image, proposal, flat pixel) of the first label outside 0..C-1 in C order, else None."""
    m = np.asarray(masks)
    n, k = m.shape[:2]
    for i in range(n):
        for j in range(k):
            for v, x in enumerate(m[i, j].ravel().tolist()):
                if not 0 <= int(x) < num_classes:
                    return int(x), i, j, v
    return None


def slow_structure_dice(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """Mean over structures 1..C-1 of 2|A_c ∩ B_c| / (|A_c| + |B_c|), 1 for a structure absent from both."""
    total = 0.0
    for c in range(1, num_classes):
        in_a, in_b = a == c, b == c
        size = int(in_a.sum()) + int(in_b.sum())
        total += 1.0 if size == 0 else 2.0 * int((in_a & in_b).sum()) / size
    return total / (num_classes - 1)
