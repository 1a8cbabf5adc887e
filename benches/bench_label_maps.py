"""Speed of label-map statistics and of the binary path, as ratios to baselines timed in the same run.

Run: ``python benches/bench_label_maps.py [--quick] [--threads T] [--repeats R]``; prints a markdown
section, which ``benches/bench_miners_sweep.py`` also writes into docs/benchmarks.md.

Two banks:

- **3D label maps**, (96, 8, 48, 64, 48) uint8 with C = 3 (``--quick``: (12, 8, 48, 64, 48)): per image
  an ellipsoid organ (class 1) holding a smaller one (class 2) on background, and K proposals that move
  its centre by about a voxel and scale its radii by a few percent, so they differ at the boundaries
  as MC dropout and test-time augmentation proposals do.
- **2D binary masks**, the realistic bank of benches/bench_mining.py (``proposal_bank``: jittered
  ellipses), (1024, 16, 128, 128) uint8 (``--quick``: (128, 16, 128, 128)).

Rows, each the best of ``--repeats`` calls (one call for the NumPy baselines):

- read pass: ``torch.amax`` over the bank with the same thread count, the time to read it once;
  timed alternately with the Rust call so that both see the same machine load;
- ``rndpo.pairwise_stats``: ``num_classes=3`` on the label maps, binary on the 2D bank;
- numpy broadcast (labels): ``(f[:, :, None] != f[:, None]).sum(-1)`` over the flattened label maps
  ``f``, eight images at a time (the whole bank at once would need an (N, K, K, P) temporary);
- numpy packbits (binary): ``numpy_baseline.pairwise_stats_reference``.

"read ratio" is read pass / time (1.0: as fast as reading the bank once); "speedup" is the baseline's
time over the Rust call's. The targets (issue 28): label maps >= 0.5 of a read pass and >= 10x the
NumPy broadcast; binary >= 0.7 of a read pass and >= 5x NumPy packbits.
"""

from __future__ import annotations

import os

# Idle OpenMP workers of torch sleep instead of spinning on the cores that the Rust threads use
# next (libgomp spins for a while after each parallel region by default). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
from collections.abc import Callable

import numpy as np

from _timing import best_of

__all__ = ["label_bank", "label_maps_section", "numpy_label_disagreement"]


def label_bank(n: int, k: int, spatial: tuple[int, int, int], classes: int, seed: int = 0) -> np.ndarray:
    """(n, k, *spatial) uint8 label maps: nested ellipsoids of classes 1..classes-1 on background 0.

    Per image a centre and radii (a sixth to a quarter of each side); per proposal the centre moves
    by N(0, 1) voxels and every radius by a factor U(0.93, 1.07). Class c fills the ellipsoid of
    radii scaled by 1 - (c - 1) / classes, so each class is a shell around the next.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((n, k, *spatial), dtype=np.uint8)
    axes = np.ogrid[tuple(slice(0, s) for s in spatial)]
    side = np.array(spatial, dtype=np.float64)
    for i in range(n):
        centre = rng.uniform(0.35, 0.65, 3) * side
        radii = rng.uniform(1 / 6, 1 / 4, 3) * side
        for j in range(k):
            c = centre + rng.normal(0.0, 1.0, 3)
            r = radii * rng.uniform(0.93, 1.07, 3)
            d = sum(((a - c[x]) / r[x]) ** 2 for x, a in enumerate(axes))
            for cls in range(1, classes):
                out[i, j][d <= (1 - (cls - 1) / classes) ** 2] = cls
    return out


def numpy_label_disagreement(bank: np.ndarray, chunk: int = 8) -> np.ndarray:
    """(N, K, K) int64 voxels whose labels differ, ``(f[:, :, None] != f[:, None]).sum(-1)`` by chunks."""
    n, k = bank.shape[:2]
    f = bank.reshape(n, k, -1)
    out = np.empty((n, k, k), dtype=np.int64)
    for s in range(0, n, chunk):
        out[s : s + chunk] = (f[s : s + chunk, :, None] != f[s : s + chunk, None]).sum(-1)
    return out


def _read_and_rust(bank: np.ndarray, rust: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best read pass and best Rust call, timed alternately."""
    import torch

    tensor = torch.from_numpy(bank)
    reads, calls = [], []
    for _ in range(repeats):
        reads.append(best_of(tensor.amax, 1))
        calls.append(best_of(rust, 1))
    return min(reads), min(calls)


def _rows(name: str, bank: np.ndarray, read: float, rust: float, baseline: tuple[str, float]) -> list[str]:
    """Markdown rows of one bank: the read pass, the Rust call and the NumPy baseline."""
    shape = ", ".join(str(d) for d in bank.shape)
    mib = bank.nbytes / 2**20
    label, t_base = baseline
    lines = []
    for what, t in (("read pass (torch.amax)", read), ("rndpo.pairwise_stats (Rust)", rust), (label, t_base)):
        lines.append(
            f"| {name} | ({shape}) uint8, {mib:.0f} MiB | {what} | {t * 1e3:.1f} | {read / t:.2f} | {t / rust:.1f}x |"
        )
    return lines


def _verdict(
    what: str, read: float, rust: float, baseline: float, min_read: float, min_speedup: float
) -> str:
    ratio, speedup = read / rust, baseline / rust
    met = "met" if ratio >= min_read and speedup >= min_speedup else "**not met**"
    return (
        f"- {what}: {ratio:.2f} of a read pass (target >= {min_read}), {speedup:.0f}x NumPy "
        f"(target >= {min_speedup:g}x): {met}."
    )


def _measure_labels(repeats: int, quick: bool) -> tuple[list[str], float, float, float]:
    """Rows of the 3D label-map bank, and its read-pass, Rust and NumPy times."""
    import rndpo

    labels = label_bank(12 if quick else 96, 8, (48, 64, 48), 3)
    stats = rndpo.pairwise_stats(labels, num_classes=3)
    if not np.array_equal(stats.disagreement[:8], numpy_label_disagreement(labels[:8])):
        raise AssertionError("label-map disagreement differs from the NumPy broadcast")
    read, rust = _read_and_rust(labels, lambda: rndpo.pairwise_stats(labels, num_classes=3), repeats)
    numpy = best_of(lambda: numpy_label_disagreement(labels), 1)
    scores = np.random.default_rng(1).random(labels.shape[:2])
    mine = best_of(lambda: rndpo.mine_pairs(labels, scores, "top_vs_rest", num_classes=3), repeats)
    name = "3D label maps, C = 3"
    rows = _rows(name, labels, read, rust, ("numpy broadcast `!=`", numpy))
    rows.append(
        f"| {name} | (same) | rndpo.mine_pairs top_vs_rest (Rust) | {mine * 1e3:.1f} | {read / mine:.2f} | |"
    )
    return rows, read, rust, numpy


def _measure_binary(repeats: int, quick: bool) -> tuple[list[str], float, float, float]:
    """Rows of the realistic 2D binary bank, and its read-pass, Rust and NumPy times."""
    import rndpo
    from bench_mining import proposal_bank
    from numpy_baseline import pairwise_stats_reference

    binary = proposal_bank(128 if quick else 1024, 16, 128)
    ref = pairwise_stats_reference(binary[:32])
    if not np.array_equal(rndpo.pairwise_stats(binary[:32]).intersection, ref.intersection):
        raise AssertionError("binary intersections differ from the NumPy reference")
    read, rust = _read_and_rust(binary, lambda: rndpo.pairwise_stats(binary), repeats)
    numpy = best_of(lambda: pairwise_stats_reference(binary), 1)
    rows = _rows("2D binary (bench_mining)", binary, read, rust, ("numpy packbits (reference)", numpy))
    return rows, read, rust, numpy


def label_maps_section(threads: int, repeats: int, quick: bool) -> str:
    """Measures both banks and returns the markdown section (a table and the verdicts)."""
    import torch

    torch.set_num_threads(threads)
    label_rows, *labels = _measure_labels(repeats, quick)
    binary_rows, *binary = _measure_binary(repeats, quick)
    return "\n".join(
        [
            f"Threads: {threads} (rayon and torch); best of {repeats} calls, one for NumPy.",
            "",
            "| bank | shape, dtype | operation | time (ms) | read ratio | speedup of Rust |",
            "|---|---|---|---:|---:|---:|",
            *label_rows,
            *binary_rows,
            "",
            _verdict("label maps", *labels, 0.5, 10),
            _verdict("binary path", *binary, 0.7, 5),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller banks (about 20 s)")
    parser.add_argument("--threads", type=int, default=None, help="rayon and torch threads")
    parser.add_argument("--repeats", type=int, default=7, help="best of this many calls")
    args = parser.parse_args(argv)
    threads = args.threads or int(os.environ.get("RAYON_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    os.environ["RAYON_NUM_THREADS"] = str(threads)  # read by the Rust core at its first call
    print(label_maps_section(threads, args.repeats, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
