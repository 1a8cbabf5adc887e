"""Speed of rndpo.pairwise_stats / mine_pairs (Rust) against NumPy baselines, measured in one run.

Run: ``python benches/bench_mining.py [--n 1024 --k 16 --size 128 --repeats 5]``. Prints a
markdown table. Baselines, all timed in this process on the same bank:

- read pass: ``torch.amax`` over the whole uint8 bank with as many threads as the core uses
  (the time to stream the bank from memory once; the floor for any exact method);
- numpy packbits: ``numpy_baseline.pairwise_stats_reference`` (benches/numpy_baseline.py) (np.packbits + AND/XOR +
  np.bitwise_count over chunks of images, with the 0/1 value check);
- numpy packbits (no checks): the same kernel without the value check, the best NumPy baseline;
- numpy broadcast (naive): ``(m[:, :, None, :] ^ m[:, None, :, :]).sum(-1)`` in one expression
  on the first ``--naive-images`` images (a (n, K, K, P) uint8 temporary, summed with NumPy's
  default int64 accumulator), timed once and scaled linearly to N images (marked "extrapolated":
  the full bank would need a K times larger temporary than the bank itself).

Two banks: "proposals" (realistic: K jittered ellipses per image, proposals mostly agree) and
"noise" (i.i.d. pixels at density 0.3: the worst case, nothing agrees).
"""

from __future__ import annotations

import os

# Idle OpenMP workers of torch sleep instead of spinning on the cores that the Rust threads use
# next (libgomp spins for a while after each parallel region by default). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse

import numpy as np
import torch

import rndpo
from _timing import best_of
from numpy_baseline import mine_pairs_reference, pairwise_stats_reference

__all__ = ["main"]


def proposal_bank(n: int, k: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, k, size, size) uint8: per image an ellipse, K proposals with jittered centre and radii."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, k, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for start in range(0, n, 32):
        c = min(32, n - start)
        cy = rng.uniform(0.3, 0.7, (c, 1)) * size + rng.normal(0, 1.5, (c, k))
        cx = rng.uniform(0.3, 0.7, (c, 1)) * size + rng.normal(0, 1.5, (c, k))
        ry = rng.uniform(0.1, 0.3, (c, 1)) * size * rng.uniform(0.9, 1.1, (c, k))
        rx = rng.uniform(0.1, 0.3, (c, 1)) * size * rng.uniform(0.9, 1.1, (c, k))
        d = ((yy - cy[..., None, None].astype(np.float32)) / ry[..., None, None].astype(np.float32)) ** 2
        d += ((xx - cx[..., None, None].astype(np.float32)) / rx[..., None, None].astype(np.float32)) ** 2
        out[start : start + c] = d <= 1
    return out


def noise_bank(n: int, k: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, k, size, size) uint8 with i.i.d. pixels of density 0.3."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, k, size, size), dtype=np.uint8)
    for start in range(0, n, 32):
        c = min(32, n - start)
        out[start : start + c] = rng.random((c, k, size, size), dtype=np.float32) < 0.3
    return out


def packbits_unchecked(bank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference kernel without the value check: the best NumPy baseline."""
    n, k = bank.shape[:2]
    flat = bank.reshape(n, k, -1)
    sizes = np.empty((n, k), np.int64)
    inter = np.empty((n, k, k), np.int64)
    dis = np.empty((n, k, k), np.int64)
    step = max(1, (1 << 22) // max(1, k * k * ((flat.shape[2] + 7) // 8)))
    for s in range(0, n, step):
        p = np.packbits(flat[s : s + step], axis=-1)
        a, b = p[:, :, None], p[:, None]
        sizes[s : s + step] = np.bitwise_count(p).sum(-1, dtype=np.int64)
        inter[s : s + step] = np.bitwise_count(a & b).sum(-1, dtype=np.int64)
        dis[s : s + step] = np.bitwise_count(a ^ b).sum(-1, dtype=np.int64)
    return sizes, inter, dis


def broadcast_naive(bank: np.ndarray) -> np.ndarray:
    """|A xor B| the way a NumPy user would write it: (N, K, K) int64.

    ``(m[:, :, None, :] ^ m[:, None, :, :]).sum(-1)`` over the whole (N, K, P) bank at once, with
    NumPy's default accumulator for uint8 sums (int64 on 64-bit Linux); no chunking, no packing.
    """
    n, k = bank.shape[:2]
    m = bank.reshape(n, k, -1)
    return (m[:, :, None, :] ^ m[:, None, :, :]).sum(-1)


def bench_bank(name: str, bank: np.ndarray, *, repeats: int, naive_images: int) -> list[str]:
    """Markdown rows for one (N, K, H, W) uint8 bank."""
    n, k = bank.shape[:2]
    r = repeats
    tensor = torch.from_numpy(bank)
    rust_stats = rndpo.pairwise_stats(bank)
    ref = pairwise_stats_reference(bank[: min(n, 64)])
    for field in ("sizes", "intersection", "disagreement"):
        assert np.array_equal(getattr(rust_stats, field)[: min(n, 64)], getattr(ref, field)), field
    # Interleave the read pass and the Rust call so that both see the same machine load.
    read, rust = [], []
    for _ in range(r):
        read.append(best_of(lambda: tensor.amax(), 1))
        rust.append(best_of(lambda: rndpo.pairwise_stats(bank), 1))
    t_read, t_rust = min(read), min(rust)
    t_ref = best_of(lambda: pairwise_stats_reference(bank), 1)
    t_unchecked = best_of(lambda: packbits_unchecked(bank), 1)
    m = min(n, naive_images)
    t_naive = best_of(lambda: broadcast_naive(bank[:m]), 1) * n / m
    scores = np.random.default_rng(1).random((n, k))
    t_mine = best_of(lambda: rndpo.mine_pairs(bank, scores, "all_pairs"), r)
    t_mine_ref = best_of(lambda: mine_pairs_reference(bank, scores, "all_pairs"), 1)
    rows = [
        ("read pass (torch.amax)", t_read),
        ("rndpo.pairwise_stats (Rust)", t_rust),
        ("numpy packbits (reference)", t_ref),
        ("numpy packbits (no checks)", t_unchecked),
        (f"numpy broadcast (extrapolated from {m} images)", t_naive),
        ("rndpo.mine_pairs all_pairs (Rust)", t_mine),
        ("mine_pairs_reference all_pairs (numpy)", t_mine_ref),
    ]
    lines = []
    for label, t in rows:
        base = t_mine if label.startswith("mine_pairs_reference") else t_rust
        lines.append(f"| {name} | {label} | {t * 1e3:.1f} | {t_read / t:.2f} | {t / base:.1f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-images", type=int, default=8, help="images timed for the broadcast baseline")
    args = parser.parse_args(argv)
    threads = int(os.environ.get("RAYON_NUM_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    n, k, size, r = args.n, args.k, args.size, args.repeats
    mib = n * k * size * size / 2**20
    print(f"bank (N, K, H, W) = ({n}, {k}, {size}, {size}) uint8 = {mib:.0f} MiB; threads = {threads}; ")
    print(f"repeats = {r} (best of); CPU count = {os.cpu_count()}\n")
    print("| bank | operation | time (ms) | read pass / time | rust speedup vs this |")
    print("|---|---|---:|---:|---:|")
    for name, make in (("proposals", proposal_bank), ("noise", noise_bank)):
        for line in bench_bank(name, make(n, k, size), repeats=r, naive_images=args.naive_images):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
