"""Result files people read: results.json, results.csv, results.md and the plots.

results.json holds ``runs`` (one row per method, judge, miner and seed, with its Dice ``curve``), the
config and the package version. results.md gives mean +- std over seeds of each (method, judge, miner).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rndpo import __version__
from rndpo.config import RunConfig, config_to_dict
from rndpo.storage import atomic_write, write_json, write_text

__all__ = [
    "ROW_FIELDS",
    "has_matplotlib",
    "output_listing",
    "plot_curves",
    "plot_pair_examples",
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
)
_SUMMARY_FIELDS = (
    "selected_dice",
    "final_dice",
    "base_dice",
    "base_val_dice",
    "peak_dice",
    "auc_dice",
    "final_hd95",
    "pair_accuracy",
    "harmful_leverage",
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
) -> None:
    """Write results.json, .csv, .md and (with ``plots``) curves.png into ``out``."""
    out = Path(out)
    runs = [{k: v for k, v in row.items() if k != "train_log"} for row in rows]
    write_json(out / "results.json", {"version": __version__, "config": config_to_dict(config), "runs": runs})
    write_text(out / "results.csv", _csv_text(runs))
    write_text(out / "results.md", summary_table(runs))
    if plots:
        plot_curves(runs, out / "curves.png", dataset=dataset)


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path, *, dataset: str = "") -> None:
    """Test Dice against fine-tuning step, one panel per (judge, miner), mean line and min-max seed band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["judge"], r["miner"] if r["miner"] != "top1" else "") for r in rows})
    panels = [p for p in panels if p[1]] or panels
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False, sharey=True)
    for ax, (judge, miner) in zip(axes[0], panels, strict=True):
        for (method, j, m), group in sorted(_group(rows).items()):
            if j != judge or (m != miner and m != "top1"):
                continue
            steps = np.array([s for s, _ in group[0]["curve"]])
            curves = np.array([[v for _, v in r["curve"]] for r in group if len(r["curve"]) == len(steps)])
            line = ax.plot(steps, curves.mean(axis=0), label=method)[0]
            if len(curves) > 1:
                ax.fill_between(
                    steps, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.2
                )
        ax.set_title(f"judge {judge}" + (f", miner {miner}" if miner else ""), fontsize=9)
        ax.set_xlabel("fine-tuning step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test Dice")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
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
    """Panel of mined pairs: image, chosen mask, rejected mask and their disagreement region D.

    images float32 (N, C, H, W); masks uint8 (N, K, H, W); image/chosen/rejected int64 (P,).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks: list[int] | np.ndarray = (
        np.linspace(0, len(image) - 1, num=min(n, len(image))).astype(int) if len(image) else []
    )
    cols = 4 + (ground_truth is not None)
    fig, axes = plt.subplots(
        max(1, len(picks)), cols, figsize=(2.2 * cols, 2.2 * max(1, len(picks))), squeeze=False
    )
    for row, p in enumerate(picks):
        i = int(image[p])
        img = images[i].transpose(1, 2, 0)
        img = img[..., 0] if img.shape[-1] == 1 else img
        w, lose = masks[i, chosen[p]].astype(bool), masks[i, rejected[p]].astype(bool)
        panels = [
            (img, "image"),
            (w, "chosen"),
            (lose, "rejected"),
            (w ^ lose, f"D (|D|={int((w ^ lose).sum())})"),
        ]
        if ground_truth is not None:
            panels.append((ground_truth[i].astype(bool), "ground truth"))
        for ax, (arr, title) in zip(axes[row], panels, strict=True):
            ax.imshow(arr, cmap="gray")
            ax.set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
