"""How far the base model is from convergence: one long base training, its whole validation curve, the
test Dice of its best validation state, and where the stopping rule would stop for several settings.

    OMP_NUM_THREADS=1 python benches/base_convergence.py --dataset kvasir_seg --seed 0 \\
        --set steps=3000 --set 'schedule="constant"' --set warmup_steps=30

The rule (``[base] patience`` and ``min_delta``, :class:`rndpo.training.PatienceRule`) is replayed on the
recorded curve of a run without it (``patience = 0`` here: ``steps`` is the run's length), so one run
shows every setting; the test Dice is that of the best state of the whole run.
Datasets: ``synthetic`` (the demo's data) or a folder name under --data-root (``kvasir_seg``, ``hc18``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import tomllib
import torch

from rndpo.config import config_from_dict
from rndpo.metrics import evaluate
from rndpo.nets import network_from_config
from rndpo.pipeline import load_data, split_data
from rndpo.training import PatienceRule, train_base

GROUPED = {"hc18": "id_prefix"}  # datasets whose cases must not be split across labeled/val/test


def data_section(name: str, root: Path) -> dict[str, Any]:
    if name == "synthetic":
        return {"kind": "synthetic", "n_images": 300, "image_size": 64, "label_budget": 0.1}
    data = {"kind": "npz", "path": str(root / name / "data.npz"), "image_size": 64, "label_budget": 0.1}
    return {**data, **({"group_by": GROUPED[name]} if name in GROUPED else {})}


def replay(curve: list[float], patience: int, min_delta: float, window: int) -> tuple[int, int]:
    """(index of the evaluation where the rule stops, index of the best one up to there)."""
    rule, best = PatienceRule(patience, min_delta, window), 0
    for i, value in enumerate(curve):
        stop = rule.update(value)
        best = i if value > curve[best] else best
        if stop:
            return i, best
    return len(curve) - 1, best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    p.add_argument("--set", action="append", default=[], help="[base] key=value (TOML value)")
    p.add_argument("--patience", type=int, nargs="*", default=[4, 8, 12, 20])
    p.add_argument("--min-delta", type=float, nargs="*", default=[0.0, 0.01])
    p.add_argument("--window", type=int, nargs="*", default=[1, 3], help="patience_window values")
    args = p.parse_args()
    # the whole curve is trained (patience 0: steps is the length) and the rule replayed on it
    base = {"patience": 0, **tomllib.loads("\n".join(args.set))}  # key=value lines in TOML syntax
    cfg = config_from_dict({"data": data_section(args.dataset, args.data_root), "base": base})
    splits = split_data(cfg.data, load_data(cfg.data))
    torch.manual_seed(args.seed)
    model = network_from_config(cfg.model, splits.labeled.images.shape[1])
    start = time.perf_counter()
    result = train_base(model, splits.labeled, splits.val, cfg.base, seed=args.seed, progress=False)
    test = evaluate(model, splits.test, distances=False).means()["dice"] if len(splits.test) else None
    steps = [h[0] for h in result.history]
    curve = [h[2] for h in result.history]
    print(
        f"{args.dataset} seed {args.seed}, [base] {base}: {len(splits.labeled)} labeled, {len(splits.val)} val"
    )
    print(
        f"trained {result.stopped_step} steps in {time.perf_counter() - start:.0f} s; best validation Dice"
        f" {result.best_val_dice:.4f} at step {result.best_step}; its test Dice {test}"
    )
    print("validation curve: " + " ".join(f"{s}:{v:.3f}" for s, v in zip(steps, curve, strict=True)))
    print(
        "\n| patience_window | patience | min_delta | stops at step | best step there | its validation Dice |"
    )
    print("|---|---|---|---|---|---|")
    for window in args.window:
        for patience in args.patience:
            for delta in args.min_delta:
                stop, best = replay(curve, patience, delta, window)
                print(
                    f"| {window} | {patience} | {delta} | {steps[stop]} | {steps[best]} | {curve[best]:.3f} |"
                )


if __name__ == "__main__":
    main()
