"""The headroom ladder: where the signal is lost between the base model and a fine-tuned one.

Per seed, on the test split (no test split: no ladder), the rungs are:

* ``base``: test Dice of the base model;
* ``labeled_only``: fine-tuning on the labeled images alone with the same recipe (the control: what
  the recipe's extra steps and supervised anchor give without any pool);
* ``perfect_label``: fine-tuning on the pool's true masks with the same recipe and budget as the
  methods (the ``sft_top`` preset), i.e. the ceiling of the fine-tuning stage itself;
* ``oracle_best_of_k``: ``sft_top`` on the truly best of the K proposals per image (the ceiling of
  the bank);
* per judge: the mean true Dice of its top-ranked proposal on the pool (``top1_dice``) and its pooled
  Spearman correlation with the true Dice;
* each method's final test Dice.

Without ground truth on the pool (``data.unlabeled_path``) the rungs that need pool labels
(``perfect_label``, ``oracle_best_of_k``, the judges' true-Dice figures on the pool) are left out, and
results.md says so; ``base``, ``labeled_only`` and the methods remain.

Reading it: a small ``perfect_label`` gain means fine-tuning cannot absorb labels (no objective can
show much); ``oracle_best_of_k`` well below ``perfect_label`` means the bank is the limit; a judge's
``top1_dice`` close to the pool's base Dice means the judge is the limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from rndpo.config import METHOD_PRESETS, MethodConfig
from rndpo.judges import proposal_dice
from rndpo.proposals import ProposalBank
from rndpo.training import TrainingPairs, top_choice_pairs

__all__ = ["LADDER_METHOD", "ladder_table", "mask_pairs", "oracle_pairs", "perfect_label_pairs", "pool_dice"]

LADDER_METHOD: MethodConfig = METHOD_PRESETS["sft_top"]
"""The objective of the two label rungs: supervised fine-tuning, same recipe as the ``sft_top`` method."""


def mask_pairs(images: np.ndarray, masks: np.ndarray) -> TrainingPairs:
    """Training data whose only 'proposal' per image is the given mask: images float32 (N, C, H, W),
    masks (N, H, W) in {0, 1} -> TrainingPairs with masks uint8 (N, 1, H, W) and chosen all 0."""
    n = len(masks)
    stacked = np.ascontiguousarray(np.asarray(masks)[:, None].astype(np.uint8))
    idx = np.arange(n, dtype=np.int64)
    return TrainingPairs(images, stacked, idx, np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))


def perfect_label_pairs(bank: ProposalBank) -> TrainingPairs:
    """The pool's true masks as training data (see :func:`mask_pairs`). Raises ValueError if the bank
    has no ground truth."""
    if bank.ground_truth is None:
        raise ValueError("perfect_label_pairs: the bank has no ground truth (the pool is unlabeled)")
    return mask_pairs(bank.images, bank.ground_truth)


def oracle_pairs(bank: ProposalBank, true_dice: np.ndarray) -> TrainingPairs:
    """The truly best proposal per image (true Dice float64 (N, K); ties to the lower index)."""
    return top_choice_pairs(bank.images, bank.masks, true_dice)


def pool_dice(bank: ProposalBank, true_dice: np.ndarray) -> dict[str, float]:
    """Mean true Dice on the pool of the base model's mask (probs >= 0.5; label maps: the argmax of the
    class probabilities, scored as the oracle judge scores, mean per-structure Dice), the median proposal
    and the best of K. true_dice float64 (N, K)."""
    if bank.ground_truth is None or bank.probs is None:
        raise ValueError("pool_dice: the bank needs ground truth and base probabilities")
    truth, probs = np.asarray(bank.ground_truth), np.asarray(bank.probs)
    if bank.num_classes > 2:
        labels = np.argmax(probs, axis=1).astype(np.uint8)
        base = proposal_dice(labels[:, None], truth, num_classes=bank.num_classes)[:, 0]
    else:
        base = proposal_dice((probs >= 0.5)[:, None], truth)[:, 0]
    return {
        "pool_base_dice": float(base.mean()),
        "pool_median_proposal_dice": float(np.median(true_dice, axis=1).mean()),
        "pool_best_of_k_dice": float(true_dice.max(axis=1).mean()),
    }


def _fmt(values: Sequence[float | None], base: Sequence[float] | None = None) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    arr = np.asarray(vals, dtype=np.float64)
    text = f"{arr.mean():.4f}" + (f" ± {arr.std(ddof=1):.4f}" if arr.size > 1 else "")
    if base is not None and len(base) == len(values):
        gain = np.asarray([v - b for v, b in zip(values, base, strict=True) if v is not None])
        text += f" ({gain.mean():+.4f})"
    return text


# a judge's row in the pool table: its top-1 pick's true Dice, then pooled and per-image Spearman with
# true Dice on the pool, each followed by its estimate on validation proposals (mining uses only the
# order within an image, which the per-image figure measures)
_JUDGE_FIELDS = ("top1_dice", "spearman", "val_spearman", "image_spearman", "val_image_spearman")


def ladder_table(ladder: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the ladder: one line per rung, mean ± std over seeds (and the gain over base).

    ``ladder``: one dict per seed as written to results.json (keys seed, base_dice, pool_truth,
    labeled_only_dice, perfect_label_dice, oracle_best_of_k_dice, pool_*, judges {label: {top1_dice,
    spearman, val_spearman, image_spearman, val_image_spearman, ...}}, methods {name: final_dice}).
    An entry with ``pool_truth`` false (an unlabeled pool) adds a note on the rungs left out.
    """
    if not ladder:
        return ""
    base = [e["base_dice"] for e in ladder]
    lines = [
        f"| rung | test Dice, mean ± std over {len(ladder)} seeds (gain over base) |",
        "|---|---|",
        f"| base | {_fmt(base)} |",
    ]
    for key, label in (
        ("labeled_only_dice", "fine-tuning on the labeled images alone (recipe control)"),
        ("perfect_label_dice", "fine-tuning on the pool's true masks (perfect-label ceiling)"),
        ("oracle_best_of_k_dice", "sft on the oracle's best of K (bank ceiling)"),
    ):
        if any(e.get(key) is not None for e in ladder):
            lines.append(f"| {label} | {_fmt([e.get(key) for e in ladder], base)} |")
    methods: dict[str, list[float | None]] = defaultdict(list)
    for e in ladder:
        for name in sorted({n for x in ladder for n in x.get("methods", {})}):
            methods[name].append(e.get("methods", {}).get(name))
    for name, vals in sorted(methods.items(), key=lambda kv: -np.mean([v for v in kv[1] if v is not None])):
        lines.append(f"| {name} | {_fmt(vals, base)} |")
    out = "\n".join(lines) + "\n"
    if not all(e.get("pool_truth", True) for e in ladder):
        out += (
            "\nThe pool has no ground truth (`data.unlabeled_path`): the rungs that need its labels"
            " (fine-tuning on the pool's true masks, sft on the oracle's best of K) and the true-Dice"
            " figures on the pool are left out.\n"
        )
    pool = [
        ("pool_base_dice", "base model's mask"),
        ("pool_median_proposal_dice", "median proposal"),
        ("pool_best_of_k_dice", "best of K (oracle)"),
    ]
    lines = [
        "",
        "| on the unlabeled pool | true Dice | Spearman with true Dice | estimated on validation"
        " | per-image Spearman | estimated on validation |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in pool:
        if any(key in e for e in ladder):
            lines.append(f"| {label} | {_fmt([e.get(key) for e in ladder])} | - | - | - | - |")
    judges = sorted({j for e in ladder for j in e.get("judges", {})})
    for j in judges:
        stats = [e.get("judges", {}).get(j, {}) for e in ladder]
        cells = [_fmt([s.get(f) for s in stats]) for f in _JUDGE_FIELDS]
        lines.append(f"| judge {j}: top-1 pick | {' | '.join(cells)} |")
    return out + "\n".join(lines) + "\n"
