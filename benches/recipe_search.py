"""How each fine-tuning recipe change moves the ladder's rungs (issue 14, "what was tried").

    OMP_NUM_THREADS=1 python benches/recipe_search.py --data kvasir_seg --seeds 0 1 \\
        --variants old lr2e-3+beta1 --methods perfect_label dpo rndpo --out results/recipe

Each variant is a set of ``finetune`` (and method) overrides on top of the package defaults. The base
model and proposal bank of each seed are the cached stages of an ``rndpo run`` experiment in --out, so
variants share them. Per (variant, method, seed) it prints base, peak and final test Dice (final = mean of
the last ``final_window`` evaluations) and appends a JSON line to OUT/recipe.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rndpo.config import METHOD_PRESETS, config_from_dict
from rndpo.judges import OracleJudge
from rndpo.mining import mine_pairs
from rndpo.pipeline import Stages, load_data, load_pool, split_data
from rndpo.pipeline.ladder import LADDER_METHOD, mask_pairs, perfect_label_pairs
from rndpo.training.finetuning import (
    TrainingPairs,
    finetune,
    reference_logits,
    summarize_curve,
    summarize_selection,
)

ROOT = Path(__file__).resolve().parents[1]
DATASETS: dict[str, dict[str, Any]] = {
    "kvasir_seg": {
        "kind": "npz",
        "path": "../shared/data/kvasir_seg/data.npz",
        "image_size": 64,
        "label_budget": 0.1,
    },
    "hc18": {
        "kind": "npz",
        "path": "../shared/data/hc18/data.npz",
        "image_size": 64,
        "label_budget": 0.1,
        "group_by": "id_prefix",
        "max_unlabeled": 300,
    },
}


# finetune overrides, method overrides (applied to every method, the label rung included) and RN-DPO's beta
# (DPO gets a hundredth of it, the ratio of the presets)
def _recipe(
    lr: float,
    *,
    steps: int = 150,
    cosine: bool = True,
    augment: bool = True,
    anchor: float = 1.0,
    beta: float = 5.0,
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """One variant: the constant schedule of the old default has no warm-up and no clipping; the cosine
    recipes warm up for a tenth of the steps and clip at 1.0. beta 5.0 (DPO 0.05) was the preset of every
    variant before the beta search."""
    ft: dict[str, Any] = {"steps": steps, "lr": lr, "augment": augment}
    if cosine:
        ft |= {"schedule": "cosine", "warmup_steps": steps // 10, "grad_clip": 1.0}
    else:
        ft |= {"schedule": "constant", "warmup_steps": 0, "grad_clip": 0.0}
    return ft, {"anchor_weight": anchor}, beta


VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], float]] = {
    "old": _recipe(1e-4, cosine=False, augment=False, anchor=0.0),
    "lr3e-4": _recipe(3e-4, cosine=False, augment=False, anchor=0.0),
    "cosine": _recipe(1e-3, augment=False, anchor=0.0),
    "cosine+aug": _recipe(1e-3, anchor=0.0),
    "cosine+aug+anchor": _recipe(1e-3),
    "cosine+aug+anchor300": _recipe(1e-3, steps=300),
    "lr2e-3+aug+anchor300": _recipe(2e-3, steps=300),
    "lr3e-4+aug+anchor": _recipe(3e-4),
    "lr3e-3+aug+anchor": _recipe(3e-3),
    # the beta search: RN-DPO beta (DPO beta / 100) at 300 steps
    "beta2": _recipe(1e-3, steps=300, beta=2.0),
    "beta1": _recipe(1e-3, steps=300, beta=1.0),
    "beta0.3": _recipe(1e-3, steps=300, beta=0.3),
    "lr2e-3+beta1": _recipe(2e-3, steps=300, beta=1.0),  # the package default
    "lr3e-3+beta1": _recipe(3e-3, steps=300, beta=1.0),
}
BETA_SCALE = {"rndpo": 1.0, "dpo": 0.01}  # beta of each preference method, per unit of RN-DPO's


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(DATASETS), default="kvasir_seg")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["old"])
    p.add_argument("--methods", nargs="+", default=["perfect_label", "dpo", "rndpo"])
    p.add_argument("--judge", default="oracle", help="oracle, or noisy_oracle@RHO for the preference methods")
    p.add_argument("--miner", default="top_vs_bottom")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--out", default="results/recipe")
    args = p.parse_args(argv)
    out = Path(args.out) / args.data
    config = config_from_dict({"data": DATASETS[args.data], "seeds": args.seeds})
    splits = split_data(config.data, load_data(config.data))
    stages = Stages(
        config, out, splits, load_pool(config.data, splits), progress=False, keep="none", dataset=args.data
    )
    for seed in args.seeds:
        base_key, model, snapshots = stages.base(seed)
        _, bank = stages.bank(seed, base_key, model, snapshots)
        base_state = {k: v.clone() for k, v in model.state_dict().items()}
        ref = reference_logits(model, bank.images)
        true = OracleJudge().score(bank)
        scores = true
        if args.judge.startswith("noisy_oracle@"):
            from rndpo.judges import make_judge

            scores = make_judge("noisy_oracle", seed=seed, reliability=float(args.judge.split("@")[1])).score(
                bank
            )
        pairs = mine_pairs(bank.masks, scores, args.miner, seed=0)
        train_pairs = TrainingPairs.from_pairs(bank.images, bank.masks, pairs)
        for variant in args.variants:
            ft_over, method_over, beta = VARIANTS[variant]
            ft = dataclasses.replace(config.finetune, eval_every=args.eval_every, **ft_over)
            for name in args.methods:
                method = LADDER_METHOD if name in ("perfect_label", "labeled_only") else METHOD_PRESETS[name]
                method = dataclasses.replace(method, **method_over)
                if name in BETA_SCALE:
                    method = dataclasses.replace(method, beta=beta * BETA_SCALE[name])
                data = perfect_label_pairs(bank) if name == "perfect_label" else train_pairs
                if name == "labeled_only":
                    data = mask_pairs(splits.labeled.images, splits.labeled.masks)
                if method.objective in ("mean_teacher", "pseudo_label"):
                    data = perfect_label_pairs(bank)  # images of the pool; targets unused
                model.load_state_dict(base_state)
                torch.manual_seed(seed)
                start = time.perf_counter()
                res = finetune(
                    model,
                    data,
                    method,
                    ft,
                    splits.test,
                    val=splits.val,
                    seed=seed,
                    ref_logits=ref,
                    labeled=splits.labeled,
                    progress=False,
                )
                s = summarize_curve(res.curve, ft.final_window)
                last = res.train_log[-1]
                acc = last.get("rewards/accuracies")
                rec = {
                    "data": args.data,
                    "variant": variant,
                    "method": name,
                    "judge": "truth" if name in ("perfect_label", "labeled_only") else args.judge,
                    "seed": seed,
                    **s,
                    **summarize_selection(res.curve, res.val_curve, res.selected_step),
                    "gain_final": s["final_dice"] - s["base_dice"],
                    "gain_peak": s["peak_dice"] - s["base_dice"],
                    "reward_acc_last": acc,
                    "seconds": time.perf_counter() - start,
                    "curve": res.curve,
                    "pool_best_of_k": float(true.max(axis=1).mean()),
                }
                print(
                    f"{variant:24s} {name:14s} s{seed} base {s['base_dice']:.4f} peak {s['peak_dice']:.4f} "
                    f"final {s['final_dice']:.4f} gain {rec['gain_final']:+.4f} selected {rec['selected_dice']:.4f} "
                    f"({rec['seconds']:.0f} s)",
                    flush=True,
                )
                with open(Path(args.out) / "recipe.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
