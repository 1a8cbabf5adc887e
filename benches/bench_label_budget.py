"""Base U-Net on the built-in synthetic set: test Dice with a small label budget vs all labels, and time.

``python benches/bench_label_budget.py [--budgets 0.1 1.0] [--seeds 0 1 2] [--threads 2]``

Everything is at the package defaults a ``rndpo run`` uses: ``DataConfig()`` (400 images, 64 x 64,
10% val, 20% test, split seed 0), ``ModelConfig()`` (U-Net channels (8, 16, 32, 64), dropout 0.1) and
``BaseTrainConfig()`` (300 AdamW steps of 16 images, ``--steps`` to change), so every budget gets the
same number of steps.
Model and training seeds vary; the data and its splits do not, so the spread is the training's.
Prints a markdown table: labeled images, test Dice (mean +- std over seeds) and base-training wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rndpo.config import DataConfig, ModelConfig
from rndpo.data import split_dataset, synthetic_dataset
from rndpo.inference import predict_probs
from rndpo.metrics import dice
from rndpo.model import UNet
from rndpo.supervised import BaseTrainConfig, train_base

__all__ = ["main", "train_and_score"]


def train_and_score(budget: float, seed: int, steps: int = 300) -> tuple[int, float, float]:
    """(labeled images, mean test Dice, base-training seconds) of one base model at ``budget``."""
    data, model_cfg = DataConfig(), ModelConfig()
    ds = synthetic_dataset(data.n_images, data.image_size, data.seed)
    splits = split_dataset(
        ds,
        label_budget=budget,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        seed=data.seed,
    )
    torch.manual_seed(seed)
    model = UNet(in_channels=1, channels=model_cfg.channels, dropout=model_cfg.dropout)
    result = train_base(
        model, splits.labeled, splits.val, BaseTrainConfig(steps=steps, seed=seed), progress=False
    )
    probs = predict_probs(model, splits.test.images)
    score = float(dice(probs >= 0.5, splits.test.masks.astype(bool)).mean())
    return len(splits.labeled.images), score, result.seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="base-training steps (default: the package's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"device cpu, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.steps} steps")
    print("| label budget | labeled images | test Dice (mean +- std) | base training s (mean) |")
    print("|---|---|---|---|")
    for budget in args.budgets:
        rows = []
        for seed in args.seeds:
            start = time.perf_counter()
            rows.append(train_and_score(budget, seed, args.steps))
            print(
                f"  budget {budget} seed {seed}: Dice {rows[-1][1]:.3f} ({time.perf_counter() - start:.0f} s)"
            )
        scores = [r[1] for r in rows]
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        seconds = statistics.mean(r[2] for r in rows)
        print(
            f"| {budget:g} | {rows[0][0]} | {statistics.mean(scores):.3f} +- {spread:.3f} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
