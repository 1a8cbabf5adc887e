"""The judge x miner x objective quality study (issue #7), on the synthetic default, Kvasir-SEG and HC18.

    python benches/study.py --grid reduced --out results/study     # about 30 minutes on 2 CPU cores
    python benches/study.py --grid full --out results/study-full --device cuda   # the full grid, on a GPU

Each dataset is one ``rndpo run`` experiment (cached and resumable: rerunning the command continues
where it stopped). The report (default docs/results.md, plots beside it) gives, per dataset, base /
peak / final (sustained) / AUC Dice with std over seeds, pair accuracy and harmful leverage of the
mined sets, and checks the paper's three claims against the numbers:

1. top-ranked mining (top_vs_bottom, top_vs_rest) helps under reliable judges and hurts under weak
   ones, compared with mining that does not anchor on the judge's top pick (adjacent, all_pairs);
2. RN-DPO gives higher sustained (final) Dice and a smaller seed spread than DPO;
3. RN-DPO beats pseudo-label fine-tuning on the judge's choice (sft_top).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rndpo import __version__
from rndpo.config import AUTO, TOP_PICK, FinetuneConfig, config_from_dict
from rndpo.metrics.stats import paired_verdict
from rndpo.pipeline import run_experiment
from rndpo.pipeline.ladder import ladder_table
from rndpo.pipeline.report import plot_curves, rounds_table, summary_table
from rndpo.storage import write_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

DATASETS: dict[str, dict[str, Any]] = {
    "synthetic": {"kind": "synthetic", "n_images": 400, "image_size": 64, "label_budget": 0.1},
    "kvasir_seg": {
        "kind": "npz",
        "path": "kvasir_seg/data.npz",  # relative to --data-root
        "image_size": 64,
        "label_budget": 0.1,
    },
    "hc18": {
        "kind": "npz",
        "path": "hc18/data.npz",
        "image_size": 64,
        "label_budget": 0.1,
        "group_by": "id_prefix",
        "max_unlabeled": 300,
    },
}

TOP_MINERS = ("top_vs_bottom", "top_vs_rest")
OTHER_MINERS = ("adjacent", "all_pairs:0.05")
_FINETUNE = FinetuneConfig()  # the package defaults the stress grids scale

# issue 20: the label-free judges (agreement, the learned QC judge, their validation-weighted ensemble)
# with the miner chosen from each judge's validation calibration, two rounds; DPO, sft_top and the mean
# teacher (the judge-free bar) beside RN-DPO. Grids `judges` (GPU) and `judges_cpu` (2 CPU cores) run it;
# each reuses the cached stages of the ladder grid run before it in the same folders.
_JUDGES_GRID: dict[str, Any] = {
    "seeds": [0, 1, 2, 3, 4],
    "judges": {"names": ["agreement", "learned_qc", "ensemble"]},
    "mining": {"strategies": ["auto"]},
    "finetune": {"rounds": 2},
    "methods": ["sft_top", "dpo", "rndpo", "mean_teacher"],
}

# issue 20's objective grids: the learned QC judge, the miner chosen from its calibration, two rounds
_LEARNED_QC_AUTO_2_ROUNDS: dict[str, Any] = {
    "seeds": [0, 1, 2, 3, 4],
    "judges": {"names": ["learned_qc"]},
    "mining": {"strategies": ["auto"]},
    "finetune": {"rounds": 2},
}

# RN-cDPO with the judge's flip rate estimated on validation: the label-free recipe of issue 20
_RN_CDPO_AUTO: dict[str, Any] = {"preset": "rn_cdpo", "label_smoothing": "auto"}

GRIDS: dict[str, dict[str, Any]] = {
    # a seconds-long run of the whole harness, used by tests/test_study.py
    "smoke": {
        "seeds": [0, 1],
        "data": {"image_size": 32, "n_images": 48, "label_budget": 0.25},
        "model": {"channels": [8, 16]},
        "base": {"steps": 40, "eval_every": 20},
        "proposals": {"k": 4},
        "judges": {"names": ["oracle", "noisy_oracle"], "reliabilities": [0.5]},
        "mining": {"strategies": [*TOP_MINERS, *OTHER_MINERS]},
        "finetune": {"steps": 4, "eval_every": 2, "batch_size": 4},
        "methods": ["sft_top", "dpo", "rndpo"],
    },
    # fits ~30 minutes on 2 CPU cores: 48 x 48 images, 3 seeds, 3 judges, 4 miners, sft_top / DPO / RN-DPO
    "reduced": {
        "seeds": [0, 1, 2],
        "data": {"image_size": 48},
        "base": {"steps": 200},
        "proposals": {"k": 6},
        "judges": {"names": ["oracle", "noisy_oracle", "agreement"], "reliabilities": [0.5]},
        "mining": {"strategies": [*TOP_MINERS, *OTHER_MINERS], "max_pairs_per_image": 4},
        "finetune": {"steps": 60, "eval_every": 10, "batch_size": 16},
        "methods": ["sft_top", "dpo", "rndpo"],
    },
    # full-length fine-tuning on one GPU in minutes (benches/gpu_study.sh): 3 judges, 2 miners, 3 objectives
    "gpu": {
        "seeds": [0, 1, 2],
        "base": {"steps": 600},
        "proposals": {"k": 8},
        "judges": {"names": ["oracle", "noisy_oracle", "agreement"], "reliabilities": [0.5]},
        "mining": {"strategies": ["top_vs_bottom", "all_pairs:0.05"]},
        "finetune": {"steps": 300, "eval_every": 30},
        "methods": ["sft_top", "dpo", "rndpo"],
    },
    # issue 14: the headroom ladder, RN-DPO against DPO, sft_top and two semi-supervised baselines, with
    # paired bootstrap verdicts, for a study judge (noisy oracle) and a realistic one (agreement);
    # package-default fine-tuning recipe (a GPU: benches/gpu_study.sh; CPU: about half an hour per seed
    # and dataset on 2 cores)
    "ladder": {
        "seeds": [0, 1, 2, 3, 4],
        "judges": {"names": ["noisy_oracle", "agreement"], "reliabilities": [0.7]},
        "mining": {"strategies": ["top_vs_bottom", "top_vs_rest"]},
        "methods": ["sft_top", "dpo", "rndpo", "mean_teacher", "pseudo_label"],
    },
    # issue 14 on 2 CPU cores (benches/gpu_study.sh with DEVICE=cpu runs one process per seed): the ladder
    # grid with top_vs_bottom only (about 15 minutes per seed and process)
    "ladder_cpu": {
        "seeds": [0, 1, 2, 3, 4],
        "judges": {"names": ["noisy_oracle", "agreement"], "reliabilities": [0.7]},
        "mining": {"strategies": ["top_vs_bottom"]},
        "methods": ["sft_top", "dpo", "rndpo", "mean_teacher", "pseudo_label"],
    },
    # issue 20 on 2 CPU cores, after ladder_cpu in the same folders (its base models, banks and mean-teacher
    # runs are reused)
    "judges_cpu": _JUDGES_GRID,
    # issue 20, the judges alone: how well the label-free judges rank the pool and how well validation
    # predicts it, with the cheapest judge-driven method (after ladder_cpu in the same folders)
    "judges_pool_cpu": {
        "seeds": [0, 1, 2],
        "judges": {"names": ["agreement", "learned_qc", "ensemble"]},
        "mining": {"strategies": ["auto"]},
        "methods": ["sft_top"],
    },
    # issue 20: the noise-aware objectives with the judge's validated flip rate (label_smoothing = "auto")
    # against RN-DPO and sft_top, learned QC judge, auto miner, two rounds (after judges_cpu in the same
    # folders: its RN-DPO and sft_top runs are reused)
    "robust_cpu": {
        **_LEARNED_QC_AUTO_2_ROUNDS,
        "methods": {
            "sft_top": {},
            "rndpo": {},
            "rn_cdpo_auto": _RN_CDPO_AUTO,
            "rn_robust_auto": {"preset": "rn_robust", "label_smoothing": "auto"},
        },
    },
    # issue 20: RPO's supervised term on the chosen masks (chosen_sft_weight) added to RN-DPO and RN-cDPO,
    # against sft_top, same judge, miner and rounds as robust_cpu (after it in the same folders)
    "rpo_cpu": {
        **_LEARNED_QC_AUTO_2_ROUNDS,
        "methods": {
            "sft_top": {},
            "rndpo": {},
            "rn_cdpo_auto": _RN_CDPO_AUTO,
            "rndpo_sft": {"preset": "rndpo", "chosen_sft_weight": 1.0},
            "rn_cdpo_auto_sft": {**_RN_CDPO_AUTO, "chosen_sft_weight": 1.0},
        },
    },
    # issue 20, the label-free recipe on 10 seeds: RN-cDPO with the validated flip rate and RN-DPO against
    # sft_top, DPO and the mean teacher (after rpo_cpu in the same folders for seeds 0-4)
    "label_free_cpu": {
        **_LEARNED_QC_AUTO_2_ROUNDS,
        "seeds": list(range(10)),
        "methods": {
            "sft_top": {},
            "rndpo": {},
            "rn_cdpo_auto": _RN_CDPO_AUTO,
            "dpo": {},
            "mean_teacher": {},
        },
    },
    # issue 14: where DPO is unstable: 3x the default learning rate, twice the default steps, a noisy judge
    # (Spearman about 0.4) and top-ranked mining
    "stability": {
        "seeds": [0, 1, 2],
        "judges": {"names": ["noisy_oracle"], "reliabilities": [0.4]},
        "mining": {"strategies": ["top_vs_rest"]},
        "finetune": {
            "steps": 2 * _FINETUNE.steps,
            "lr": 3 * _FINETUNE.lr,
            "warmup_steps": 2 * _FINETUNE.warmup_steps,
            "eval_every": 50,
        },
        "methods": ["sft_top", "dpo", "rndpo", "mean_teacher", "pseudo_label"],
    },
    # issue 20 (GPU), after the ladder grid in the same folders (same seeds and splits)
    "judges": _JUDGES_GRID,
    # the full grid of the issue (GPU): every judge, noisy oracles 0.9..0.3, every loss type, 3 seeds
    "full": {
        "seeds": [0, 1, 2],
        "base": {"steps": 600},
        "proposals": {"k": 8},
        "judges": {
            "names": ["oracle", "noisy_oracle", "agreement", "consensus", "uncertainty", "learned_qc"],
            "reliabilities": [0.9, 0.7, 0.5, 0.3],
        },
        "mining": {"strategies": [*TOP_MINERS, *OTHER_MINERS]},
        "finetune": {"steps": 300, "eval_every": 15},
        "methods": [
            "sft_top",
            "dpo",
            "rndpo",
            "rndpo_weight",
            "ipo",
            "rn_ipo",
            "rn_hinge",
            "rn_robust",
            "rn_cdpo",
        ],
    },
}

RELIABLE = ("oracle", "noisy_oracle@0.9")
WEAK = ("noisy_oracle@0.5", "noisy_oracle@0.3", "agreement", "consensus", "uncertainty")


def _cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cells[(r["method"], r["judge"], r["miner"])].append(r)
    return cells


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def _std(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.std([r[key] for r in rows], ddof=1)) if len(rows) > 1 else 0.0


def mining_table(rows: list[dict[str, Any]], method: str) -> tuple[str, list[tuple[str, float, float]]]:
    """Final-minus-base Dice of ``method`` per judge and miner, and (judge, top gain, other gain)."""
    cells = _cells(rows)
    judges = sorted({j for (_, j, _) in cells})
    miners = [*TOP_MINERS, *OTHER_MINERS]
    lines = [
        "| judge | pair acc. (top/other) | " + " | ".join(miners) + " | top - other |",
        "|---" * (len(miners) + 3) + "|",
    ]
    gains = []
    for judge in judges:
        vals = {}
        acc = {}
        for miner in miners:
            group = cells.get((method, judge, miner), [])
            if group:
                vals[miner] = _mean(group, "final_dice") - _mean(group, "base_dice")
                acc[miner] = np.mean([r["pair_accuracy"] for r in group if r["pair_accuracy"] is not None])
        if not vals:
            continue
        top = float(np.mean([vals[m] for m in TOP_MINERS if m in vals]))
        other = float(np.mean([vals[m] for m in OTHER_MINERS if m in vals]))
        top_acc = np.mean([acc[m] for m in TOP_MINERS if m in acc])
        other_acc = np.mean([acc[m] for m in OTHER_MINERS if m in acc])
        gains.append((judge, top, other))
        cells_txt = " | ".join(f"{vals[m]:+.4f}" if m in vals else "-" for m in miners)
        lines.append(f"| {judge} | {top_acc:.2f} / {other_acc:.2f} | {cells_txt} | {top - other:+.4f} |")
    return "\n".join(lines) + "\n", gains


def claims(rows: list[dict[str, Any]]) -> list[str]:
    """The three claims, each checked with the numbers of ``rows`` (one dataset)."""
    cells = _cells(rows)
    out = []
    _, gains = mining_table(rows, "rndpo")
    reliable = [g for g in gains if g[0] in RELIABLE]
    weak = [g for g in gains if g[0] in WEAK]
    if reliable and weak:
        helps = float(np.mean([t - o for _, t, o in reliable]))
        hurts = float(np.mean([t - o for _, t, o in weak]))
        verdict = "holds" if helps > 0 > hurts else "does not hold"
        out.append(
            f"1. Top-ranked mining under reliable judges vs weak judges (RN-DPO, final - base Dice, top-anchored "
            f"minus other miners): reliable {helps:+.4f}, weak {hurts:+.4f}: the claim **{verdict}** here."
        )
    wins_final = wins_std = n = 0
    diffs = []
    for (method, judge, miner), group in cells.items():
        if method != "rndpo" or ("dpo", judge, miner) not in cells:
            continue
        dpo = cells[("dpo", judge, miner)]
        n += 1
        diffs.append(_mean(group, "final_dice") - _mean(dpo, "final_dice"))
        wins_final += _mean(group, "final_dice") > _mean(dpo, "final_dice")
        wins_std += _std(group, "final_dice") < _std(dpo, "final_dice")
    if n:
        verdict = "holds" if wins_final > n / 2 and wins_std > n / 2 else "does not hold"
        out.append(
            f"2. RN-DPO vs DPO over {n} (judge, miner) cells: higher final Dice in {wins_final}/{n} "
            f"(mean difference {np.mean(diffs):+.4f}), smaller seed std in {wins_std}/{n}: the claim **{verdict}** here."
        )
    wins = m = 0
    best_diffs = []
    for judge in sorted({j for (_, j, _) in cells}):
        sft = cells.get(("sft_top", judge, TOP_PICK))
        rn = [g for (meth, j, _), g in cells.items() if meth == "rndpo" and j == judge]
        if not sft or not rn:
            continue
        best = max(_mean(g, "final_dice") for g in rn)
        m += 1
        best_diffs.append(best - _mean(sft, "final_dice"))
        wins += best > _mean(sft, "final_dice")
    if m:
        verdict = "holds" if wins > m / 2 else "does not hold"
        out.append(
            f"3. RN-DPO (best miner) vs sft_top per judge: higher final Dice for {wins}/{m} judges (mean difference "
            f"{np.mean(best_diffs):+.4f}): the claim **{verdict}** here."
        )
    return out


def _last_rounds(
    rows: list[dict[str, Any]], method: str, judge: str, miner: str | None = None
) -> dict[int, dict[str, Any]]:
    """seed -> the last round's row of (method, judge, miner) (miner None: any miner, for methods that
    run with one)."""
    runs = sorted(
        (r for r in rows if r["method"] == method and r["judge"] == judge and miner in (None, r["miner"])),
        key=lambda r: r.get("round", 1),
    )
    return {r["seed"]: r for r in runs}


def _per_image(
    rows: list[dict[str, Any]], method: str, judge: str, miner: str | None = None
) -> dict[int, np.ndarray]:
    """seed -> final per-image test Dice of (method, judge, miner), from its last round."""
    return {
        seed: np.asarray(r["final_dice_per_image"])
        for seed, r in _last_rounds(rows, method, judge, miner).items()
        if "final_dice_per_image" in r
    }


def _verdict_line(claim: str, a: dict[int, np.ndarray], b: dict[int, np.ndarray], **kw: Any) -> str | None:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return paired_verdict(np.stack([a[s] for s in seeds]), np.stack([b[s] for s in seeds]), **kw).table_row(
        claim
    )


# the paired claims' subjects: every judge-driven preference method but DPO, the reference they must beat
_NAMES = {"rndpo": "RN-DPO", "dpo": "DPO"}
GAIN_MARGINS = (0.02, 0.03)  # issue 14's and issue 20's goals over the base


def _subjects(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(method, judge, miner) of every judge-driven preference run but DPO (RN-DPO first)."""
    cells = {
        (r["method"], r["judge"], r["miner"])
        for r in rows
        if r["judge"] != "none" and r["miner"] != TOP_PICK and r["method"] != "dpo"
    }
    return sorted(cells, key=lambda c: (c[0] != "rndpo", c))


def paired_claims(rows: list[dict[str, Any]], ladder: list[dict[str, Any]]) -> str:
    """Markdown table of the issues' claims for RN-DPO and every other judge-driven preference method
    (:func:`_subjects`), each judged by paired differences (same seed, same test images; the last round's
    final Dice) with a 95% bootstrap interval over seeds and images (rndpo.metrics.stats.paired_verdict)."""
    base = {e["seed"]: np.asarray(e["base_dice_per_image"]) for e in ladder}
    # the recipe on the labeled images alone: what a method must beat to show that the pool helped
    control = {
        e["seed"]: np.asarray(e["labeled_only_dice_per_image"])
        for e in ladder
        if "labeled_only_dice_per_image" in e
    }
    perfect = {
        e["seed"]: np.asarray(e["perfect_label_dice_per_image"])
        for e in ladder
        if "perfect_label_dice_per_image" in e
    }
    subjects = _subjects(rows)
    judges = sorted({judge for _, judge, _ in subjects})
    several = len({miner for _, _, miner in subjects}) > 1
    baselines = sorted({r["method"] for r in rows if r["judge"] == "none"})
    lines = [
        "| claim | mean paired difference | 95% interval | seeds x images | verdict |",
        "|---|---|---|---|---|",
    ]

    def add(claim: str, a: dict[int, np.ndarray], b: dict[int, np.ndarray], **kw: Any) -> None:
        line = _verdict_line(claim, a, b, **kw)
        if line:
            lines.append(line)

    for method, judge, miner in subjects:
        ours = _per_image(rows, method, judge, miner)
        name, tag = _NAMES.get(method, method), f"{judge}, {miner}" if several else judge
        for margin in GAIN_MARGINS:
            add(f"{name} ({tag}) >= base + {margin}", ours, base, margin=margin)
        add(f"{name} ({tag}) > base", ours, base)
        add(f"{name} ({tag}) > labeled-only control", ours, control)
        add(f"{name} ({tag}) > DPO ({tag})", ours, _per_image(rows, "dpo", judge, miner))
        add(f"{name} ({tag}) > sft_top ({judge})", ours, _per_image(rows, "sft_top", judge))
        for m in baselines:
            add(f"{name} ({tag}) > {m}", ours, _per_image(rows, m, "none"))
    for judge in judges:
        add(f"sft_top ({judge}) > labeled-only control", _per_image(rows, "sft_top", judge), control)
    for m in baselines:
        add(f"{m} > base", _per_image(rows, m, "none"), base)
        add(f"{m} > labeled-only control", _per_image(rows, m, "none"), control)
    add("labeled-only control > base", control, base)
    add("perfect labels > labeled-only control", perfect, control)
    # stability: the drop from peak to final, one value per seed (no image dimension)
    for method, judge, miner in subjects:
        drops = {
            m: {
                seed: np.asarray([r["peak_dice"] - r["final_dice"]])
                for seed, r in _last_rounds(rows, m, judge, miner).items()
            }
            for m in (method, "dpo")
        }
        name, tag = _NAMES.get(method, method), f"{judge}, {miner}" if several else judge
        add(
            f"{name} ({tag}) drops less from peak to final than DPO",
            drops[method],
            drops["dpo"],
            direction=-1,
        )
    return "\n".join(lines) + "\n"


def stability_table(rows: list[dict[str, Any]]) -> str:
    """Peak, final, the drop from peak to final and the seed spread (std of final) per (method, judge)."""
    lines = [
        "| method | judge | miner | seeds | peak - base | final - base | drop peak -> final (max over seeds) | seed std of final |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, judge, miner), group in sorted(_cells(rows).items()):
        peak = np.array([r["peak_dice"] - r["base_dice"] for r in group])
        final = np.array([r["final_dice"] - r["base_dice"] for r in group])
        drop = peak - final
        lines.append(
            f"| {method} | {judge} | {miner} | {len(group)} | {peak.mean():+.4f} | {final.mean():+.4f} "
            f"| {drop.mean():.4f} ({drop.max():.4f}) | {_std(group, 'final_dice'):.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="reduced")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--out", default="results/study")
    parser.add_argument("--report", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", type=Path, default=DATA, help="folder holding kvasir_seg/ and hc18/")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the grid's seeds")
    parser.add_argument("--judges", nargs="+", help="override the grid's judge names")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    report = Path(args.report)
    sections = []
    timings = {}
    for name in args.datasets:
        raw = copy.deepcopy(GRIDS[args.grid])
        raw["data"] = {**DATASETS[name], **raw.get("data", {})}  # the grid's data keys win
        if "path" in raw["data"]:
            raw["data"]["path"] = str(args.data_root / raw["data"]["path"])
        raw["device"] = args.device
        if args.seeds:
            raw["seeds"] = args.seeds
        if args.judges:
            raw["judges"] = {**raw["judges"], "names": args.judges}
        config = config_from_dict(raw)
        out = Path(args.out) / name
        start = time.perf_counter()
        result = run_experiment(config, out, resume=True, progress=not args.quiet, keep="none")  # no models
        timings[name] = time.perf_counter() - start
        plot = report.parent / f"{report.stem}_{name}_curves.png"
        plot_curves(
            [r for r in result.rows if r["miner"] in (TOP_PICK, "top_vs_bottom", AUTO)], plot, dataset=name
        )
        if (out / "examples.png").exists():
            shutil.copy(out / "examples.png", report.parent / f"{report.stem}_{name}_examples.png")
        miners = {r["miner"] for r in result.rows} - {TOP_PICK, "pool"}
        table = mining_table(result.rows, "rndpo")[0] if len(miners) > 1 else ""
        sections.append(
            f"## {name}\n\n"
            f"Wall time of this dataset's run (cached stages count as zero): {timings[name] / 60:.1f} min.\n\n"
            + (f"### Headroom ladder\n\n{ladder_table(result.ladder)}\n" if result.ladder else "")
            + "### Claims, paired (same seeds, same test images; final-state Dice per image)\n\n"
            + paired_claims(result.rows, result.ladder)
            + "\n### Stability (Dice relative to base; final = mean of the last evaluations)\n\n"
            + stability_table(result.rows)
            + (
                f"\n### Rounds (each round's figures; round r starts from round r-1's selected weights)\n\n{rounds}"
                if (rounds := rounds_table(result.rows))
                else ""
            )
            + (
                "\n### Earlier claim checks (counts of cells)\n\n"
                + "\n".join(f"- {c}" for c in claims(result.rows))
                + "\n\n### Mining x judge (RN-DPO, final - base test Dice, mean over seeds)\n\n"
                + table
                if len(miners) > 1
                else ""
            )
            + f"\n### All cells (mean ± std over {len(config.seeds)} seeds)\n\n"
            + summary_table(result.rows)
            + f"\n![curves]({plot.name})\n"
        )
    header = (
        f"# Quality study: judge x miner x objective\n\n"
        f"Generated by `python benches/study.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
        f"(rndpo {__version__}, device {args.device}, {time.strftime('%Y-%m-%d')}). "
        f"Grid `{args.grid}`: `{GRIDS[args.grid]}` (before the command's overrides).\n\n"
        "selected = test Dice of the model picked at the step with the best validation Dice (the figure to quote); "
        "final = mean test Dice of the last 3 evaluations (sustained); peak = maximum of the test curve (picked "
        "on test data: optimistic, for study only); AUC = mean over the whole curve; "
        "pair_accuracy = share of mined pairs whose chosen mask has the higher true Dice (for sft_top: share of "
        "images where the judge's top pick is a truly best proposal); harmful_leverage = share of the total "
        "disagreement-region size carried by wrongly ordered pairs.\n\n"
    )
    write_text(report, header + "\n".join(sections))
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
