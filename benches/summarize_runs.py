"""Gains and paired verdicts from run records alone (``runs/*.json`` of one or more output folders).

    python benches/summarize_runs.py OUT1/kvasir_seg/runs OUT2/kvasir_seg/runs ... [--vs ladder-labeled_only]
        [--before OLD1/kvasir_seg/runs ...]

For a study that stopped before its report: each record carries its seed, base / final / selected test
Dice and ``final_dice_per_image``, so the gains over the base and the paired comparisons between runs
(same seed, same test images; rndpo.metrics.stats.paired_verdict) need nothing else. A run is named by its
record's file name without the seed and key (``rndpo-noisy_oracle0.7-top_vs_bottom``,
``ladder-perfect_label``). Comparisons against the base model itself need its per-image Dice, which
only ``results.json`` holds; here every method is compared with the ``--vs`` runs instead. With
``--before``, a last table says how each gain moved from the runs of those folders (the same study
before a change of recipe) to these.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rndpo.metrics.stats import paired_verdict


def load_runs(folders: list[Path]) -> dict[str, dict[int, dict[str, Any]]]:
    """name -> seed -> record, from every ``*.json`` in ``folders`` (round files ``-r2-`` are skipped)."""
    runs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            if re.search(r"-r\d+-[0-9a-f]+\.json$", path.name):
                continue
            record = json.loads(path.read_text())
            name = re.sub(r"-s\d+-[0-9a-f]+$", "", path.stem)
            runs[name][int(record["seed"])] = record
    return runs


def gains_table(runs: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Markdown: per run name, seeds, mean ± std over seeds of final - base and selected - base."""
    lines = ["| run | seeds | final - base | selected - base |", "|---|---|---|---|"]
    for name, by_seed in sorted(runs.items()):
        final = np.array([r["final_dice"] - r["base_dice"] for r in by_seed.values()])
        sel = np.array(
            [
                r["selected_dice"] - r["base_dice"]
                for r in by_seed.values()
                if r.get("selected_dice") is not None
            ]
        )
        sel_txt = f"{sel.mean():+.4f} ± {sel.std():.4f}" if len(sel) else "-"
        lines.append(f"| {name} | {len(by_seed)} | {final.mean():+.4f} ± {final.std():.4f} | {sel_txt} |")
    return "\n".join(lines) + "\n"


def _mean_gain(by_seed: dict[int, dict[str, Any]], key: str) -> float:
    """Mean over seeds of ``key`` - base Dice (NaN when no record has ``key``)."""
    gains = [r[key] - r["base_dice"] for r in by_seed.values() if r.get(key) is not None]
    return float(np.mean(gains)) if gains else float("nan")


def moved_table(
    before: dict[str, dict[int, dict[str, Any]]], after: dict[str, dict[int, dict[str, Any]]]
) -> str:
    """Markdown: how each run's mean gain over its base moved from ``before`` to ``after`` (the runs both
    hold), with the mean base test Dice of each first; same seeds are the caller's to choose."""

    def base(runs: dict[str, dict[int, dict[str, Any]]]) -> float:
        by_seed = {s: r["base_dice"] for recs in runs.values() for s, r in recs.items()}
        return float(np.mean(list(by_seed.values())))

    lines = [
        "| run | seeds before / after | final - base: before | after | moved | selected - base: before | after |",
        "|---|---|---|---|---|---|---|",
        f"| base (test Dice) | - | {base(before):.4f} | {base(after):.4f} | {base(after) - base(before):+.4f} | - | - |",
    ]
    for name in sorted(set(before) & set(after)):
        b, a = before[name], after[name]
        fb, fa = _mean_gain(b, "final_dice"), _mean_gain(a, "final_dice")
        sb, sa = _mean_gain(b, "selected_dice"), _mean_gain(a, "selected_dice")
        lines.append(
            f"| {name} | {len(b)} / {len(a)} | {fb:+.4f} | {fa:+.4f} | {fa - fb:+.4f} | {sb:+.4f} | {sa:+.4f} |"
        )
    return "\n".join(lines) + "\n"


def verdict_table(runs: dict[str, dict[int, dict[str, Any]]], pairs: list[tuple[str, str]]) -> str:
    """Markdown: ``a > b`` for each (a, b) present, from paired final per-image Dice over shared seeds."""
    lines = [
        "| claim | mean paired difference | 95% interval | seeds x images | verdict |",
        "|---|---|---|---|---|",
    ]
    for a, b in pairs:
        seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        if not seeds:
            continue
        xa = np.stack([np.asarray(runs[a][s]["final_dice_per_image"]) for s in seeds])
        xb = np.stack([np.asarray(runs[b][s]["final_dice_per_image"]) for s in seeds])
        lines.append(paired_verdict(xa, xb).table_row(f"{a} > {b}"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="runs/ folders")
    parser.add_argument(
        "--vs", nargs="+", default=["ladder-labeled_only"], help="runs every other run is paired with"
    )
    parser.add_argument(
        "--before", nargs="+", type=Path, default=[], help="runs/ folders of the same study before a change"
    )
    args = parser.parse_args(argv)
    runs = load_runs(args.folders)
    if not runs:
        print(f"no run records in {[str(f) for f in args.folders]}", file=sys.stderr)
        return 1
    pairs = [(a, b) for b in args.vs for a in sorted(runs) if a != b]
    print(gains_table(runs))
    print(verdict_table(runs, pairs))
    if args.before:
        print(moved_table(load_runs(args.before), runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
