"""Predicting volumes whole against sliding windows of the training patch, in the same run.

    python benches/bench_inference_window.py            # the hippocampus shapes: 48 x 64 x 48, patch 32 x 48 x 32

The 3D U-Net of configs/msd_hippocampus.toml (random weights: the cost does not depend on them) predicts
``--n`` volumes with :func:`rndpo.inference.sliding_window_probs`: windows of ``--patch`` at overlap 0.5
(the baseline, MONAI's sliding window) and one window the size of the volume (``[model] inference_size``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from _timing import best_of
from rndpo.inference import sliding_window_probs
from rndpo.nets import build_network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="volumes (the hippocampus validation split)")
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 64, 48])
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 48, 32])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    net = build_network("rndpo.UNet", 3, 1, 3, channels=[8, 16, 32, 64], dropout=0.1)
    x = np.random.default_rng(0).random((args.n, 1, *args.shape), dtype=np.float32)
    windows = best_of(lambda: sliding_window_probs(net, x, args.patch, overlap=0.5), args.repeats)
    whole = best_of(lambda: sliding_window_probs(net, x, args.shape), args.repeats)
    print(f"{args.n} volumes of {args.shape}, {torch.get_num_threads()} threads:")
    print(f"  windows of {args.patch}, overlap 0.5: {windows:.2f} s; whole volumes: {whole:.2f} s")
    print(f"  whole / windows: {whole / windows:.2f} ({windows / whole:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
