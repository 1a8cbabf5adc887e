"""Result files people read: results.json, results.csv, results.md and the plots.

results.json holds ``runs`` (one row per method, judge, miner and seed, with its Dice ``curve`` and
``final_dice_per_image`` on the test images, or test volumes for NIfTI slices), ``ladder`` (the headroom
ladder per seed, see :mod:`rndpo.pipeline.ladder`; empty without a test split, and without the rungs that
need pool labels when the pool has none), the config and the package version. results.md starts with the
ladder, then gives mean +- std over seeds of each (method, judge, miner), and for ``finetune.rounds > 1``
a table per round (rows carry ``rounds``: one dict per round). With ``data.kind = "nifti"`` it says that
its Dice is per volume.
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rndpo import __version__
from rndpo.config import TOP_PICK, RunConfig, config_to_dict
from rndpo.pipeline.ladder import ladder_table
from rndpo.pipeline.structure_table import structure_table
from rndpo.pipeline.timings import timings_table
from rndpo.storage import atomic_write, write_json, write_text

__all__ = [
    "ROW_FIELDS",
    "has_matplotlib",
    "judge_table",
    "output_listing",
    "plot_curves",
    "plot_pair_examples",
    "rounds_table",
    "summary_table",
    "write_reports",
]

ROW_FIELDS = (
    "method",
    "judge",
    "miner",
    "seed",
    "selected_dice",
    "final_dice",
    "base_dice",
    "selected_step",
    "selected_val_dice",
    "base_val_dice",
    "peak_dice",
    "auc_dice",
    "base_hd95",
    "final_hd95",
    "n_pairs",
    "pair_accuracy",
    "harmful_leverage",
    "judge_spearman",
    "judge_top1_accuracy",
    "miner_resolved",
    "label_smoothing_used",
    "val_judge_spearman",
    "val_judge_top1_accuracy",
    "val_pair_accuracy",
    "val_top_pair_accuracy",
    "val_flip_rate",
    "flip_rate",
)
_SUMMARY_FIELDS = (
    "selected_dice",
    "final_dice",
    "base_dice",
    "selected_val_dice",
    "base_val_dice",
    "peak_dice",
    "auc_dice",
    "final_hd95",
    "pair_accuracy",
    "harmful_leverage",
)


_PER_VOLUME = (
    "Validation and test Dice are per volume: the NIfTI volumes are sliced to 2D, and a volume's"
    " intersections and sizes are summed over all its slices (empty ones too) before its Dice, so false"
    " positives on slices without the structure count; the means are over volumes."
)


def _group(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["judge"], row["miner"])].append(row)
    return groups


def _mean_std(values: list[Any]) -> str:
    vals = np.array([v for v in values if v is not None], dtype=np.float64)
    if vals.size == 0:
        return "-"
    if vals.size == 1:
        return f"{vals[0]:.4f}"
    return f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}"


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one line per (method, judge, miner), mean ± sample std over seeds."""
    head = ["method", "judge", "miner", "seeds", *_SUMMARY_FIELDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, judge, miner), group in sorted(_group(rows).items()):
        cells = [method, judge, miner, str(len(group))]
        cells += [_mean_std([r.get(f) for r in group]) for f in _SUMMARY_FIELDS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: the per-round figures results.md shows for runs with ``finetune.rounds > 1`` (:mod:`rndpo.pipeline.rounds`)
_ROUND_SUMMARY = (
    "start_dice",
    "selected_dice",
    "final_dice",
    "n_pairs",
    "pair_accuracy",
    "judge_spearman",
    "judge_top1_accuracy",
    "pool_base_dice",
    "pool_best_of_k_dice",
)


def rounds_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of multi-round runs: one line per (method, judge, miner, round), mean ± sample std
    over seeds of each round's figures (``start_dice``: test Dice of the round's starting policy;
    ``pool_*``: the round's proposal bank on the pool). Empty when no row has ``rounds``."""
    multi = [r for r in rows if r.get("rounds")]
    if not multi:
        return ""
    head = ["method", "judge", "miner", "round", "seeds", *_ROUND_SUMMARY]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, judge, miner), group in sorted(_group(multi).items()):
        for i in range(max(len(r["rounds"]) for r in group)):
            entries = [r["rounds"][i] for r in group if len(r["rounds"]) > i]
            cells = [method, judge, miner, str(i + 1), str(len(entries))]
            cells += [_mean_std([e.get(f) for e in entries]) for f in _ROUND_SUMMARY]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# (validation estimate, realised figure on the pool, column title) of :func:`judge_table`
_JUDGE_COLUMNS = (
    ("val_judge_spearman", "judge_spearman", "Spearman"),
    ("val_judge_top1_accuracy", "judge_top1_accuracy", "top-1 accuracy"),
    ("val_flip_rate", "flip_rate", "flip rate of the mined pairs"),
)


def judge_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of each judge's validation estimates next to the realised figures on the pool
    (``-`` where the pool has no ground truth), one line per (judge, miner, round): mean ± std over seeds,
    each seed counted once (the methods of a seed share its judge figures); with one seed the validation
    Spearman carries its 95% bootstrap interval over the validation images. ``resolved`` counts the
    strategies an ``auto`` miner chose, their seed-specific margins left out."""
    groups: dict[tuple[str, str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        if "val_judge_spearman" in row:
            by_seed = groups[(row["judge"], row["miner"], int(row.get("round", 1)))]
            by_seed.setdefault(row.get("seed", len(by_seed)), row)
    if not groups:
        return ""
    head = ["judge", "miner", "round", "seeds", "resolved"]
    head += [f"{title}: {side}" for _, _, title in _JUDGE_COLUMNS for side in ("validation", "pool")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (judge, miner, round_), seeds in sorted(groups.items()):
        group = list(seeds.values())
        resolved = Counter(str(r.get("miner_resolved") or "none").split(":")[0] for r in group)
        cells = [
            judge,
            miner,
            str(round_),
            str(len(group)),
            ", ".join(f"{k} x{n}" for k, n in sorted(resolved.items())),
        ]
        for val, pool, _ in _JUDGE_COLUMNS:
            estimate = _mean_std([r.get(val) for r in group])
            interval = group[0].get(f"{val}_interval")
            if len(group) == 1 and interval is not None:  # one seed: the estimate's own uncertainty
                estimate += " [{:.4f}, {:.4f}]".format(*interval)
            cells += [estimate, _mean_std([r.get(pool) for r in group])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*ROW_FIELDS, "curve", "val_curve"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        curves = {k: ";".join(f"{s}:{v:.6f}" for s, v in row.get(k, [])) for k in ("curve", "val_curve")}
        writer.writerow({**row, **curves})
    return buf.getvalue()


def output_listing(out: str | Path) -> str:
    """The closing message of a run: every file under ``out``, one a line (the stage cache as a count)."""
    out = Path(out)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    cache = [p for p in files if p.parts[0] == "stages"]
    lines = [f"{len(files)} files written to {out}/:"]
    lines += [f"  {p}" for p in files if p.parts[0] != "stages"]
    if cache:
        lines.append(f"  stages/ ({len(cache)} cached stage files, reused by --resume)")
    return "\n".join(lines)


def has_matplotlib() -> bool:
    """Whether matplotlib (the ``plots`` extra) can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_reports(
    rows: Sequence[dict[str, Any]],
    config: RunConfig,
    out: str | Path,
    *,
    plots: bool = True,
    dataset: str = "",
    ladder: Sequence[dict[str, Any]] = (),
    timings: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """Write results.json, .csv, .md and (with ``plots``) curves.png into ``out``; ``timings``: seconds
    per stage and seed (:mod:`rndpo.pipeline.timings`), a table of results.md (kept out of results.json,
    which a resumed run rewrites byte for byte)."""
    out = Path(out)
    runs = [{k: v for k, v in row.items() if k != "train_log"} for row in rows]
    timings = dict(timings or {})
    write_json(
        out / "results.json",
        {"version": __version__, "config": config_to_dict(config), "ladder": list(ladder), "runs": runs},
    )
    write_text(out / "results.csv", _csv_text(runs))
    head = f"## Headroom ladder\n\n{ladder_table(ladder)}\n## All runs\n\n" if ladder else ""
    if config.data.kind == "nifti" and not config.data.path:
        head = f"{_PER_VOLUME}\n\n{head}"
    rounds = rounds_table(runs)
    tail = f"\n## Rounds\n\n{rounds}" if rounds else ""
    structures = structure_table(runs)
    tail += (
        f"\n## Structures: test Dice, base -> final, mean over seeds\n\n{structures}" if structures else ""
    )
    judges = judge_table(runs)
    tail += f"\n## Judges: validation estimates and the pool\n\n{judges}" if judges else ""
    tail += f"\n## Where the time went (wall clock, minutes)\n\n{timings_table(timings)}" if timings else ""
    write_text(out / "results.md", head + summary_table(runs) + tail)
    if plots:
        plot_curves(runs, out / "curves.png", dataset=dataset)


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path, *, dataset: str = "") -> None:
    """Test Dice against fine-tuning step, one panel per (judge, miner): per method the mean over seeds
    with markers at the evaluation steps and a min-max band over seeds, a star at each seed's selected
    step (best validation Dice), the base Dice as a dashed line; one legend; the title names the
    dataset, the judges and the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = [r for r in rows if r.get("curve")]
    if not rows:
        return
    panels = sorted({(r["judge"], r["miner"] if r["miner"] != TOP_PICK else "") for r in rows})
    panels = [p for p in panels if p[1]] or panels
    size = (max(5.5, 4.5 * len(panels)), 4.2)
    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False, sharey=True)
    colors: dict[str, Any] = {}
    for ax, (judge, miner) in zip(axes[0], panels, strict=True):
        base = [r["base_dice"] for r in rows if r["judge"] == judge and r["base_dice"] is not None]
        if base:
            ax.axhline(float(np.mean(base)), color="0.4", linestyle="--", linewidth=1)
        for (method, j, m), group in sorted(_group(rows).items()):
            if j != judge or (m != miner and m != TOP_PICK):
                continue
            steps = np.array([s for s, _ in group[0]["curve"]])
            curves = np.array([[v for _, v in r["curve"]] for r in group if len(r["curve"]) == len(steps)])
            color = colors.setdefault(method, f"C{len(colors) % 10}")
            ax.plot(steps, curves.mean(axis=0), color=color, marker="o", markersize=3, linewidth=1.3)
            if len(curves) > 1:
                ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=color, alpha=0.15)
            picked = [
                (r["selected_step"], r["selected_dice"]) for r in group if r.get("selected_dice") is not None
            ]
            if picked:
                xs, ys = zip(*picked, strict=True)
                ax.scatter(xs, ys, marker="*", s=90, color=color, edgecolor="black", linewidth=0.6, zorder=5)
        ax.set_title(f"judge {judge}" + (f", miner {miner}" if miner else ""), fontsize=9)
        ax.set_xlabel("fine-tuning step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test Dice")
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=m) for m, c in colors.items()]
    handles += [
        Line2D([], [], color="0.4", linestyle="--", label="base model"),
        Line2D([], [], color="0.5", marker="*", markersize=10, markeredgecolor="black", linestyle="",
               label="selected step (best validation Dice)"),
    ]  # fmt: skip
    ncol = min(len(handles), 6, 3 * len(panels))  # a narrow figure stacks the legend in rows
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    seeds = sorted({r["seed"] for r in rows})
    runs_of_seeds = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
    seed_text = f"{seeds[0]}-{seeds[-1]}" if runs_of_seeds else ", ".join(map(str, seeds))
    judges = ", ".join(sorted({r["judge"] for r in rows}))
    title = f"{dataset or 'dataset'}: test Dice while fine-tuning; judges {judges}; seeds {seed_text}"
    last = max(int(r.get("round", 1)) for r in rows)
    if last > 1:  # a run's row holds its last round's curve, which starts from the previous round's model
        title += f"; judge-driven runs: round {last}"
    fig.suptitle(textwrap.fill(title, width=max(40, 55 * len(panels))), fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.05 * math.ceil(len(handles) / ncol), 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_pair_examples(
    images: np.ndarray,
    masks: np.ndarray,
    image: np.ndarray,
    chosen: np.ndarray,
    rejected: np.ndarray,
    path: str | Path,
    *,
    ground_truth: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    true_dice: np.ndarray | None = None,
    title: str = "",
    n: int = 4,
) -> None:
    """Mined pairs, one row each: the image with the chosen (green) and rejected (red) mask outlines and
    the ground truth (dashed white, where known), then the disagreement region D coloured by which mask
    holds each pixel (green: chosen only, red: rejected only). Panel titles give each proposal's judge
    score and (where known) true Dice; ``title`` names the judge and miner.

    images float32 (N, C, H, W); masks uint8 (N, K, H, W); image/chosen/rejected int64 (P,); ground_truth
    uint8 (N, H, W); scores and true_dice float (N, K). Volumes (N, C, D, H, W) show the slice along D where
    the pair disagrees most; label maps outline the foreground (any structure), and D is where the labels
    differ.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    picks: list[int] | np.ndarray = (
        np.linspace(0, len(image) - 1, num=min(n, len(image))).astype(int) if len(image) else []
    )
    rows = max(1, len(picks))
    fig, axes = plt.subplots(rows, 2, figsize=(6.4, 3.1 * rows + 0.6), squeeze=False)

    def describe(i: int, k: int) -> str:
        parts = [f"#{k}"]
        if scores is not None:
            parts.append(f"score {float(scores[i, k]):.3f}")
        if true_dice is not None:
            parts.append(f"Dice {float(true_dice[i, k]):.3f}")
        return " ".join(parts)

    for row, p in enumerate(picks):
        i, c, r = int(image[p]), int(chosen[p]), int(rejected[p])
        vol, a, b = np.asarray(images[i]), np.asarray(masks[i, c]), np.asarray(masks[i, r])
        truth = None if ground_truth is None else np.asarray(ground_truth[i])
        differ = int(np.count_nonzero(a != b))
        if a.ndim == 3:  # a volume: the slice where the pair disagrees most
            z = int(np.argmax((a != b).reshape(a.shape[0], -1).sum(axis=1)))
            vol, a, b = vol[:, z], a[z], b[z]
            truth = None if truth is None else truth[z]
        img = vol.transpose(1, 2, 0)
        img = img[..., 0] if img.shape[-1] == 1 else (img - img.min()) / max(float(np.ptp(img)), 1e-12)
        win, lose = a.astype(bool), b.astype(bool)
        left, right = axes[row]
        left.imshow(img, cmap="gray")
        for mask, color, style in ((win, "lime", "solid"), (lose, "red", "solid")):
            if mask.any() and not mask.all():
                left.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.2, linestyles=style)
        if truth is not None and truth.any():
            left.contour(
                truth.astype(bool).astype(float),
                levels=[0.5],
                colors="white",
                linewidths=1,
                linestyles="dashed",
            )
        left.set_title(f"image {i}\nchosen {describe(i, c)}\nrejected {describe(i, r)}", fontsize=7)
        overlay = np.zeros((*win.shape, 4))
        overlay[(a != b) & win] = (0.1, 0.8, 0.1, 0.9)  # the chosen map's label there
        overlay[(a != b) & ~win] = (0.9, 0.1, 0.1, 0.9)
        right.imshow(img, cmap="gray")
        right.imshow(overlay)
        right.set_title(f"disagreement D, |D| = {differ}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    handles = [
        Line2D([], [], color="lime", label="chosen"),
        Line2D([], [], color="red", label="rejected"),
        Patch(color=(0.1, 0.8, 0.1), label="D: chosen only"),
        Patch(color=(0.9, 0.1, 0.1), label="D: rejected only"),
    ]
    if ground_truth is not None:
        handles.append(Line2D([], [], color="black", linestyle="dashed", label="ground truth"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(title or "mined preference pairs", fontsize=9)
    fig.tight_layout(rect=(0, 0.6 / (3.1 * rows + 0.6) + 0.02, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
