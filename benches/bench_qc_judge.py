"""How well the learned QC judge ranks the pool's proposals (issue 20: "Better label-free judges").

    OMP_NUM_THREADS=1 python benches/bench_qc_judge.py --data kvasir_seg --seed 0 --out results/qc

Trains (or loads, cached in --out) the base model and the pool's proposal bank of an ``rndpo run``
experiment at the package's study settings (64 x 64, 10% labels), fits the learned QC judge on the
labeled split's own proposals (and, with --synthetic > 0, synthetic corruptions of their masks), and
prints its Spearman, Kendall, top-1 accuracy and pair accuracy (over all within-image pairs) with the
true Dice on the pool bank, next to the agreement judge's. Appends one JSON line per judge to
OUT/qc_judge.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rndpo.config import config_from_dict
from rndpo.judges import (
    LearnedQCJudge,
    OracleJudge,
    judge_reliability,
    judge_settings,
    make_judge,
    pair_quality,
)
from rndpo.mining import mine_pairs
from rndpo.pipeline import Stages, load_data, load_pool, split_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_search import DATASETS  # the study settings: 64 x 64, 10% labels


def _measure(scores: np.ndarray, truth: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
    rel = judge_reliability(scores, truth)
    pairs = mine_pairs(masks, scores, "all_pairs", seed=0)
    pq = pair_quality(pairs, truth)
    return {
        "spearman": rel.spearman,
        "kendall": rel.kendall,
        "mean_image_spearman": rel.mean_image_spearman,
        "top1_accuracy": rel.top1_accuracy,
        "top1_dice": rel.top1_dice,
        "best_dice": rel.best_dice,
        "pair_accuracy": pq.pair_accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(DATASETS), default="kvasir_seg")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/qc")
    p.add_argument(
        "--judge", default="{}", help="LearnedQCJudge keyword arguments as JSON (default: the config's)"
    )
    p.add_argument("--steps", type=int, default=None, help="QC training steps (default: the config's)")
    p.add_argument("--tag", default="", help="a label for this variant in the JSON lines")
    p.add_argument("--no-agreement", action="store_true", help="skip the agreement judge")
    p.add_argument(
        "--fit-on",
        choices=("labeled", "labeled+val"),
        default="labeled",
        help="which labeled images' proposals train the QC judge (the validation split is unseen by the base)",
    )
    args = p.parse_args(argv)
    config = config_from_dict({"data": DATASETS[args.data], "seeds": [args.seed]})
    splits = split_data(config.data, load_data(config.data))
    pool = load_pool(config.data, splits)
    out = Path(args.out) / args.data
    stages = Stages(config, out, splits, pool, progress=False, keep="none", dataset=args.data)
    base_key, model, snapshots = stages.base(args.seed)
    _, bank = stages.bank(args.seed, base_key, model, snapshots)
    truth = OracleJudge().score(bank)
    masks = np.asarray(bank.masks)
    rows: list[dict[str, Any]] = []
    # the package defaults (what an experiment fits the judge with), overridden by --judge
    kwargs: dict[str, Any] = judge_settings("learned_qc", config.judges) | json.loads(args.judge)
    steps = args.steps if args.steps is not None else config.judges.qc_steps
    images, gt = splits.labeled.images, splits.labeled.masks
    if args.fit_on == "labeled+val":
        images = np.concatenate([images, splits.val.images])
        gt = np.concatenate([gt, splits.val.masks])
    train_bank = stages.proposals(model, snapshots, images, gt, args.seed)
    t0 = time.perf_counter()
    qc = LearnedQCJudge(**kwargs)
    fit = qc.fit(train_bank, steps=steps, seed=args.seed, progress=False)
    fit_s = time.perf_counter() - t0
    row = {
        "judge": "learned_qc",
        "kwargs": kwargs,
        "steps": steps,
        "fit_on": args.fit_on,
        "fit_seconds": fit_s,
    }
    row |= {"val_spearman": fit.val_spearman, "val_mae": fit.val_mae}
    row |= _measure(qc.score(bank), truth, masks)
    rows.append(row)
    if not args.no_agreement:
        rows.append({"judge": "agreement"} | _measure(make_judge("agreement").score(bank), truth, masks))
    print(f"{args.data} seed {args.seed}: pool {truth.shape[0]} images x {truth.shape[1]} proposals")
    keys = ("spearman", "kendall", "top1_accuracy", "pair_accuracy")
    for r in rows:
        extra = (
            f"  (fit {r['fit_seconds']:.0f} s, val Spearman {r['val_spearman']})"
            if "fit_seconds" in r
            else ""
        )
        print(f"  {r['judge']:<11}" + "  ".join(f"{k} {r[k]:.3f}" for k in keys) + extra)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "qc_judge.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps({"data": args.data, "seed": args.seed, "tag": args.tag} | r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
