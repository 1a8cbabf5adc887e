"""Base U-Net on the built-in synthetic set: test Dice with a small label budget vs all labels, and time.

``python benches/bench_label_budget.py [--budgets 0.1 1.0] [--seeds 0 1 2] [--threads 2]``

Everything is at the package defaults a ``rndpo run`` uses: ``DataConfig()`` (400 images, 64 x 64,
10% val, 20% test, split seed 0), ``ModelConfig()`` (U-Net channels (8, 16, 32, 64), dropout 0.1) and
``BaseTrainConfig()`` (AdamW on 16 images a step until validation Dice stops improving, at most 2000
steps: ``--steps`` changes the cap), so every budget is trained to convergence on its own labels.
Model and training seeds vary; the data and its splits do not, so the spread is the training's.
Prints a markdown table: labeled images, test Dice (mean +- std over seeds) and base-training wall time.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from rndpo.config import DataConfig, ModelConfig
from rndpo.metrics.evaluation import evaluate
from rndpo.nets import network_from_config
from rndpo.pipeline import load_data, split_data
from rndpo.training.supervised import BaseTrainConfig, train_base

__all__ = ["main", "train_and_score"]


def train_and_score(
    budget: float, seeds: list[int], steps: int = BaseTrainConfig().steps
) -> tuple[int, list[float], list[float]]:
    """(labeled images, test Dice per seed, base-training seconds per seed) of base models at ``budget``.

    Data, splits, model and evaluation are the ones ``rndpo run`` builds from the default config.
    """
    data_cfg = DataConfig(label_budget=budget)
    splits = split_data(data_cfg, load_data(data_cfg))
    scores, seconds = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model = network_from_config(ModelConfig(), splits.labeled.images.shape[1])
        config = BaseTrainConfig(steps=steps)
        result = train_base(model, splits.labeled, splits.val, config, seed=seed, progress=False)
        scores.append(evaluate(model, splits.test, distances=False).means()["dice"])
        seconds.append(result.seconds)
        print(f"  budget {budget} seed {seed}: Dice {scores[-1]:.3f} ({result.seconds:.0f} s of training)")
    return len(splits.labeled), scores, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=BaseTrainConfig().steps, help="base-training step cap")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"device cpu, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.steps} steps")
    print("| label budget | labeled images | test Dice (mean +- std) | base training s (mean) |")
    print("|---|---|---|---|")
    for budget in args.budgets:
        n_labeled, scores, seconds = train_and_score(budget, args.seeds, args.steps)
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        mean, time_s = statistics.mean(scores), statistics.mean(seconds)
        print(f"| {budget:g} | {n_labeled} | {mean:.3f} +- {spread:.3f} | {time_s:.0f} |")


if __name__ == "__main__":
    main()
