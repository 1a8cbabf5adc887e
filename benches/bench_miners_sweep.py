"""Speed sweep of the pairwise-statistics miners (issue #7, speed part): one command, one report.

Run: ``python benches/bench_miners_sweep.py`` (full sweep, a few minutes on 2 cores; writes
docs/benchmarks.md and docs/bench_miners.png) or ``python benches/bench_miners_sweep.py --quick``
(about 30 s smoke run; writes nothing unless ``--write``). ``--threads T`` sets the thread count of
both the Rust core (rayon) and torch; the default is ``RAYON_NUM_THREADS`` or the CPU count.

Implementations (all compute the (N, K, K) disagreement sizes |A xor B|; every one is checked
against the Rust result on each case it runs):

- ``rust``: ``rndpo.pairwise_stats`` (bit-packed, rayon over images, reads the bank in place).
- ``numpy reference``: ``numpy_baseline.pairwise_stats_reference`` (benches/numpy_baseline.py) (np.packbits + AND/XOR +
  np.bitwise_count, chunked, one thread).
- ``numpy naive``: ``(m[:, :, None, :] ^ m[:, None, :, :]).sum(-1)`` on the whole (N, K, P) bank
  in one expression, NumPy's default int64 accumulator; it materialises an (N, K, K, P) temporary,
  so it runs only where that temporary is at most ``--naive-cap-mib``.
- ``torch cpu`` / ``torch cuda``: :func:`torch_pairwise_stats` below, masks as float32 and the
  intersections as one batched matmul ``X @ X^T`` per chunk of images, sizes as row sums,
  ``|A xor B| = |A| + |B| - 2 |A ∩ B|`` (exact: every partial sum is an integer below 2**24). The
  CUDA time includes the host-to-device copy of the bank and a final synchronise; without CUDA the
  column is skipped.

Columns: time = best of ``--repeats`` calls (one call for the two NumPy baselines); GB/s = bank
bytes / time; "read ratio" = time of one read pass over the same bank (``torch.amax`` over its
uint8 view with the same thread count, best of the same repeats, measured in the same process just
before) / time, so 1.0 means "as fast as reading the bank once". Peak memory = the largest resident
set size during one call minus the resident size before it, measured in-process: glibc's
``malloc_trim(0)`` returns freed heap to the kernel, writing ``5`` to ``/proc/self/clear_refs``
resets the kernel's high-water mark ``VmHWM`` to the current RSS, and ``VmHWM - VmRSS(before)`` is
read from ``/proc/self/status`` after the call. It counts every allocation (NumPy, torch, Rust,
thread stacks) that was touched, but not the bank itself, which exists before the call. A "-" is a
cell that was not run (too slow or too large, see the caps); nothing is extrapolated.

Memory-mapped bank larger than memory would allow to copy: a child process caps its private data
with ``RLIMIT_DATA`` (``--mmap-cap-mib``, default 1536 MiB), maps a ``--mmap-mib`` (default 4096
MiB) bank file from /tmp with ``np.memmap(mode="r")``, runs ``rndpo.pairwise_stats`` on it and then
tries ``np.array(bank)``. File-backed pages of the mapping do not count against the cap (they are
page cache, which the kernel can drop), private copies do. The child reports its peak resident
set ``VmHWM`` (what ``ru_maxrss`` measures, but per process image: ``ru_maxrss`` survives fork and
exec, so a child of a large parent would report the parent's peak), which counts both, and
``RssAnon`` (private resident memory) before and after the Rust call.

Label maps: ``benches/bench_label_maps.py`` (``pairwise_stats(..., num_classes=3)`` on a 3D bank, and the
binary path on the realistic 2D bank, each against a read pass and NumPy) is included
(``--skip-label-maps`` to leave it out).

Objectives: ``benches/bench_losses.py`` (fused preference loss against the naive composition, CPU
and CUDA when available) is run as a child process and its table is included (``--skip-objectives``
to leave it out).
"""

from __future__ import annotations

import os

# Idle OpenMP workers of torch sleep instead of spinning on the cores that the Rust threads use
# next (libgomp spins for a while after each parallel region by default). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import ctypes
import datetime
import json
import math
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _timing import best_of

__all__ = [
    "Case",
    "Row",
    "main",
    "make_bank",
    "naive_pairwise_disagreement",
    "torch_pairwise_stats",
]

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Case:
    """One bank shape of the sweep: (n, k, *spatial) of dtype ``dtype``."""

    sweep: str
    n: int
    k: int
    spatial: tuple[int, ...]
    dtype: str

    @property
    def pixels(self) -> int:
        """Pixels per mask P."""
        return math.prod(self.spatial)

    @property
    def nbytes(self) -> int:
        """Bank size in bytes (one byte per pixel for uint8 and bool)."""
        return self.n * self.k * self.pixels

    @property
    def label(self) -> str:
        """Shape as (N, K, *S) dtype."""
        dims = ", ".join(str(d) for d in (self.n, self.k, *self.spatial))
        return f"({dims}) {self.dtype}"


@dataclass(frozen=True, slots=True)
class Row:
    """Measurements of one implementation on one case; ``None`` = not run."""

    case: Case
    implementation: str
    device: str
    seconds: float | None
    read_seconds: float
    peak_bytes: int | None
    note: str = ""


@dataclass(slots=True)
class Limits:
    """Caps that keep the slow baselines off the large cases."""

    reference_bytes: int
    naive_temp_bytes: int
    repeats: int
    extras: dict[str, str] = field(default_factory=dict)


def make_bank(n: int, k: int, spatial: Sequence[int], dtype: str, seed: int = 0) -> np.ndarray:
    """(n, k, *spatial) bool or uint8 proposals: per image a random ellipsoid, K jittered copies.

    Each proposal scales the ellipsoid's radii by an independent factor in [0.9, 1.1] and shifts
    its centre by up to 2 pixels per axis, so the proposals of one image mostly agree.
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in spatial], indexing="ij")
    out = np.empty((n, k, *spatial), dtype=np.bool_)
    for i in range(n):
        centre = rng.uniform(0.3, 0.7, len(spatial)) * np.array(spatial)
        radius = rng.uniform(0.1, 0.3, len(spatial)) * np.array(spatial)
        for j in range(k):
            c = centre + rng.uniform(-2, 2, len(spatial))
            r = radius * rng.uniform(0.9, 1.1)
            d = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r, strict=True))
            out[i, j] = d <= 1
    return out if dtype == "bool" else out.view(np.uint8)


def naive_pairwise_disagreement(bank: np.ndarray) -> np.ndarray:
    """(N, K, K) int64 |A xor B| as a NumPy user would write it (one broadcast expression)."""
    n, k = bank.shape[:2]
    m = bank.reshape(n, k, -1)
    return (m[:, :, None, :] ^ m[:, None, :, :]).sum(-1)


def torch_pairwise_stats(
    bank: np.ndarray, device: str = "cpu", chunk_bytes: int = 64 * MIB
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sizes (N, K), intersection and disagreement (N, K, K) int64 of a (N, K, *S) 0/1 bank in torch.

    Chunks of images are converted to float32 (at most ``chunk_bytes`` of float32 per chunk) and
    the intersections computed as a batched matmul ``X @ X^T``; results are copied back as int64.
    """
    import torch

    n, k = bank.shape[:2]
    flat = bank.reshape(n, k, -1)
    p = flat.shape[2]
    if p >= 2**24:
        raise ValueError(f"masks must have fewer than 2**24 pixels for exact float32 sums, got P = {p}")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would round the counts
    sizes = torch.empty((n, k), dtype=torch.int64)
    inter = torch.empty((n, k, k), dtype=torch.int64)
    dis = torch.empty((n, k, k), dtype=torch.int64)
    step = max(1, chunk_bytes // max(1, k * p * 4))
    for s in range(0, n, step):
        x = torch.from_numpy(np.ascontiguousarray(flat[s : s + step])).to(device)
        x = x.to(torch.float32)
        both = torch.bmm(x, x.transpose(1, 2))
        ones = x.sum(-1)
        either = ones[:, :, None] + ones[:, None, :] - 2 * both
        sizes[s : s + step] = ones.to("cpu", torch.int64)
        inter[s : s + step] = both.to("cpu", torch.int64)
        dis[s : s + step] = either.to("cpu", torch.int64)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return sizes.numpy(), inter.numpy(), dis.numpy()


def _status_kib(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status in KiB (empty where unavailable)."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in keys:
                out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def _reset_peak() -> int | None:
    """Trims the heap, resets VmHWM to the current RSS and returns that RSS in bytes (None: no support)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    rss = _status_kib("VmRSS").get("VmRSS")
    return None if rss is None else rss * 1024


def _peak_since(baseline: int | None) -> int | None:
    """VmHWM - baseline in bytes, or None."""
    hwm = _status_kib("VmHWM").get("VmHWM")
    if baseline is None or hwm is None:
        return None
    return max(0, hwm * 1024 - baseline)


def _disagreement(result: object) -> np.ndarray:
    if isinstance(result, tuple):
        return np.asarray(result[2])
    if isinstance(result, np.ndarray):
        return result
    return np.asarray(result.disagreement)  # type: ignore[attr-defined]


def _implementations(threads: int, cuda: bool) -> list[tuple[str, str, Callable[[np.ndarray], object], bool]]:
    """(name, device description, function, slow) per implementation."""
    import torch

    import rndpo
    from numpy_baseline import pairwise_stats_reference

    impls: list[tuple[str, str, Callable[[np.ndarray], object], bool]] = [
        ("rust", f"cpu, {threads} threads (rayon)", rndpo.pairwise_stats, False),
        ("torch cpu", f"cpu, {threads} threads (torch)", lambda b: torch_pairwise_stats(b, "cpu"), False),
        ("numpy reference", "cpu, 1 thread (numpy)", pairwise_stats_reference, True),
        ("numpy naive", "cpu, 1 thread (numpy)", naive_pairwise_disagreement, True),
    ]
    if cuda:
        name = torch.cuda.get_device_name()
        impls.insert(2, ("torch cuda", f"cuda: {name}", lambda b: torch_pairwise_stats(b, "cuda"), False))
    return impls


def _runs(name: str, case: Case, limits: Limits) -> tuple[bool, str]:
    if name == "numpy reference" and case.nbytes > limits.reference_bytes:
        return False, f"bank > {limits.reference_bytes // MIB} MiB"
    if name == "numpy naive" and case.nbytes * case.k > limits.naive_temp_bytes:
        return False, f"(N, K, K, P) temporary > {limits.naive_temp_bytes // MIB} MiB"
    return True, ""


def measure_case(case: Case, limits: Limits, threads: int, cuda: bool) -> list[Row]:
    """All implementations on one case; checks each result against the Rust one."""
    import torch

    bank = make_bank(case.n, case.k, case.spatial, case.dtype)
    read_view = torch.from_numpy(bank.view(np.uint8))
    read = best_of(lambda: read_view.amax(), limits.repeats)
    rows = []
    expected: np.ndarray | None = None
    for name, device, fn, slow in _implementations(threads, cuda):
        runs, why = _runs(name, case, limits)
        if not runs:
            rows.append(Row(case, name, device, None, read, None, why))
            continue
        baseline = _reset_peak()
        start = time.perf_counter()
        result = fn(bank)
        first = time.perf_counter() - start
        peak = _peak_since(baseline)
        dis = _disagreement(result)
        if expected is None:
            expected = dis
        elif not np.array_equal(dis, expected):
            raise AssertionError(f"{name} disagrees with rust on {case.label}")
        if slow:
            seconds = first
        else:
            if name == "rust":
                read = min(read, best_of(lambda: read_view.amax(), limits.repeats))
            seconds = best_of(lambda fn=fn: fn(bank), limits.repeats)
        rows.append(Row(case, name, device, seconds, read, peak))
    return rows


def sweep_cases(quick: bool) -> list[Case]:
    """The cases of the default (or quick) sweep, uint8 and bool."""
    target = (4 if quick else 32) * MIB
    ns = (2, 16) if quick else (2, 4, 8, 16, 32, 64)
    ks = (2, 16) if quick else (2, 4, 8, 16, 32, 64)
    sizes = (64, 128) if quick else (64, 128, 256, 512)
    volume = (16, 32, 32) if quick else (32, 64, 64)
    shapes: list[tuple[str, int, int, tuple[int, ...]]] = []
    shapes += [("N", n, 16, (128, 128)) for n in ns]
    shapes += [("K", max(1, target // (k * 128 * 128)), k, (128, 128)) for k in ks]
    shapes += [("size", max(1, target // (16 * s * s)), 16, (s, s)) for s in sizes]
    shapes += [("3D", max(1, target // (16 * math.prod(volume))), 16, volume)]
    if not quick:
        shapes += [("large", 1024, 16, (128, 128))]
    return [
        Case(sweep, n, k, spatial, dtype) for sweep, n, k, spatial in shapes for dtype in ("uint8", "bool")
    ]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: Sequence[Row]) -> str:
    """The sweep as a markdown table, one line per (case, implementation)."""
    lines = [
        "| sweep | bank (N, K, *S) dtype | MiB | implementation | device, threads | time (ms) "
        "| GB/s | read ratio | peak memory (MiB) | note |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        c = r.case
        gbs = None if r.seconds is None else c.nbytes / r.seconds / 1e9
        ratio = None if r.seconds is None else r.read_seconds / r.seconds
        ms = None if r.seconds is None else r.seconds * 1e3
        peak = None if r.peak_bytes is None else r.peak_bytes / MIB
        lines.append(
            f"| {c.sweep} | {c.label} | {c.nbytes / MIB:.1f} | {r.implementation} | {r.device} "
            f"| {_fmt(ms, '.2f')} | {_fmt(gbs, '.2f')} | {_fmt(ratio, '.2f')} | {_fmt(peak, '.1f')} "
            f"| {r.note} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: Path, title: str) -> None:
    """Log-log plot of time against bank bytes (uint8 cases), one line per implementation.

    Lines join the N sweep (K = 16, 128 x 128, growing N, and the large case); the K, size and 3D
    cases, which all have about the same bank size, are drawn as unjoined markers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    uint8 = [r for r in rows if r.case.dtype == "uint8"]
    series: dict[str, list[tuple[int, float, bool]]] = {
        "read pass (torch.amax)": [
            (r.case.nbytes, r.read_seconds, r.case.sweep in ("N", "large"))
            for r in uint8
            if r.implementation == "rust"
        ]
    }
    for r in uint8:
        if r.seconds is not None:
            series.setdefault(r.implementation, []).append(
                (r.case.nbytes, r.seconds, r.case.sweep in ("N", "large"))
            )
    for name, points in series.items():
        joined = sorted((x, y) for x, y, line in points if line)
        loose = [(x, y) for x, y, line in points if not line]
        style = "--" if name.startswith("read") else "-"
        color = None
        if joined:
            (handle,) = ax.plot(*zip(*joined, strict=True), style, marker="o", markersize=3, label=name)
            color = handle.get_color()
        if loose:
            label = None if joined else name
            ax.plot(*zip(*loose, strict=True), "x", color=color, markersize=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bank size (bytes)")
    ax.set_ylabel("time (s), best of repeats")
    ax.set_title(title + "\nlines: N sweep (K = 16, 128 x 128); x: K, size and 3D cases", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_bank_file(path: Path, n: int, k: int, spatial: tuple[int, ...]) -> None:
    """Writes an (n, k, *spatial) uint8 bank to ``path`` by tiling a 64-image block."""
    block = make_bank(min(n, 64), k, spatial, "uint8", seed=1)
    with path.open("wb") as f:
        for start in range(0, n, block.shape[0]):
            f.write(block[: min(block.shape[0], n - start)].tobytes())


def mmap_case(total_mib: int, cap_mib: int, threads: int) -> dict[str, object]:
    """Runs the capped child on a ``total_mib`` memory-mapped bank; returns its JSON report."""
    k, spatial = 16, (128, 128)
    n = max(1, total_mib * MIB // (k * math.prod(spatial)))
    with tempfile.TemporaryDirectory(prefix="rndpo-mmap-", dir="/tmp") as tmp:
        path = Path(tmp) / "bank.u8"
        start = time.perf_counter()
        _write_bank_file(path, n, k, spatial)
        written = time.perf_counter() - start
        cmd = [sys.executable, str(Path(__file__).resolve()), "--mmap-child", str(path), str(n), str(k)]
        cmd += [str(d) for d in spatial]
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads), RNDPO_MMAP_CAP=str(cap_mib * MIB))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:], "n": n}
    report = json.loads(proc.stdout)
    report["write_seconds"] = written
    return report


def _mmap_child(argv: Sequence[str]) -> int:
    """Child of :func:`mmap_case`: caps private data, maps the bank, runs Rust, tries a copy."""
    cap = int(os.environ["RNDPO_MMAP_CAP"])
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    path, n, k, *spatial = argv
    shape = (int(n), int(k), *(int(s) for s in spatial))

    import rndpo

    bank = np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
    before = _status_kib("VmHWM", "RssAnon")
    start = time.perf_counter()
    stats = rndpo.pairwise_stats(bank)
    rust = time.perf_counter() - start
    status = _status_kib("RssAnon", "RssFile", "VmHWM")
    # Spot check against the mask sizes of the first images.
    first = np.asarray(bank[:2]).reshape(min(2, shape[0]), shape[1], -1)
    ok = bool(np.array_equal(stats.sizes[: first.shape[0]], first.sum(-1, dtype=np.int64)))
    start = time.perf_counter()
    read = int(np.max(bank))
    read_seconds = time.perf_counter() - start
    try:
        copy = np.array(bank)
        copy_outcome = f"succeeded ({copy.nbytes} bytes; the cap is too high to show anything)"
        del copy
    except MemoryError as exc:
        copy_outcome = f"MemoryError: {exc}"
    report = {
        "n": shape[0],
        "shape": list(shape),
        "bank_bytes": int(np.prod(shape)),
        "cap_bytes": cap,
        "rust_seconds": rust,
        "numpy_max_seconds": read_seconds,
        "max_value": read,
        "sizes_match": ok,
        "peak_rss_before_kib": before.get("VmHWM"),
        "peak_rss_after_kib": status.get("VmHWM"),
        "rss_anon_before_kib": before.get("RssAnon"),
        "rss_anon_after_kib": status.get("RssAnon"),
        "rss_file_after_kib": status.get("RssFile"),
        "copy": copy_outcome,
    }
    print(json.dumps(report))
    return 0


def _kib(report: dict[str, object], key: str) -> str:
    value = report.get(key)
    return "-" if not isinstance(value, int) else f"{value / 1024:.0f} MiB"


def mmap_markdown(report: dict[str, object], threads: int) -> str:
    """The memory-mapped case as markdown."""
    if "error" in report:
        return f"Memory-mapped case failed: `{report['error']}`"
    bank = int(report["bank_bytes"])  # type: ignore[call-overload]
    rust = float(report["rust_seconds"])  # type: ignore[arg-type]
    read = float(report["numpy_max_seconds"])  # type: ignore[arg-type]
    lines = [
        f"Bank {tuple(report['shape'])} uint8 = {bank / MIB:.0f} MiB in a file under /tmp, "  # type: ignore[arg-type]
        f"`np.memmap(mode='r')`, child process with `RLIMIT_DATA` = "
        f"{int(report['cap_bytes']) // MIB} MiB (file written in "  # type: ignore[call-overload]
        f"{float(report['write_seconds']):.1f} s, so its pages were in the page cache).",  # type: ignore[arg-type]
        "",
        "| step | result |",
        "|---|---|",
        f"| rndpo.pairwise_stats (cpu, {threads} threads, rayon) | {rust:.2f} s, {bank / rust / 1e9:.2f} GB/s; "
        f"sizes of the first images match: {report['sizes_match']} |",
        f"| read pass (np.max over the memmap, 1 thread) | {read:.2f} s, {bank / read / 1e9:.2f} GB/s |",
        f"| peak RSS (VmHWM) before / after the Rust call | {_kib(report, 'peak_rss_before_kib')} / "
        f"{_kib(report, 'peak_rss_after_kib')} (includes the mapped file pages it read) |",
        f"| private (anonymous) RSS before / after the Rust call | {_kib(report, 'rss_anon_before_kib')} / "
        f"{_kib(report, 'rss_anon_after_kib')} |",
        f"| `np.array(bank)` (a copy) under the same cap | {report['copy']} |",
    ]
    return "\n".join(lines)


def objectives(repeats: int, threads: int) -> str:
    """Runs benches/bench_losses.py as a child and returns its output (or why it failed)."""
    cmd = [sys.executable, str(REPO / "benches" / "bench_losses.py"), "--repeats", str(repeats)]
    cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        return f"`{' '.join(cmd[1:])}` failed:\n\n```\n{proc.stderr.strip()[-2000:]}\n```"
    return (
        f"`python benches/bench_losses.py --repeats {repeats} --threads {threads}`:\n\n" + proc.stdout.strip()
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--mmap-child"]:
        return _mmap_child(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke sweep (about 30 s)")
    parser.add_argument("--threads", type=int, default=None, help="rayon and torch threads")
    parser.add_argument(
        "--repeats", type=int, default=None, help="best of this many calls (default 3, quick 2)"
    )
    parser.add_argument(
        "--reference-cap-mib", type=int, default=None, help="largest bank for numpy reference"
    )
    parser.add_argument(
        "--naive-cap-mib", type=int, default=None, help="largest (N, K, K, P) temporary for numpy naive"
    )
    parser.add_argument(
        "--mmap-mib", type=int, default=None, help="memory-mapped bank size (default 4096, quick 256)"
    )
    parser.add_argument(
        "--mmap-cap-mib",
        type=int,
        default=None,
        help="RLIMIT_DATA of the mmap child (default 1536, quick 192)",
    )
    parser.add_argument("--skip-mmap", action="store_true")
    parser.add_argument("--skip-label-maps", action="store_true")
    parser.add_argument("--skip-objectives", action="store_true")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the docs (default: yes, no with --quick)",
    )
    parser.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "bench_miners.png")
    args = parser.parse_args(argv)
    quick = args.quick
    threads = args.threads or int(os.environ.get("RAYON_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    os.environ["RAYON_NUM_THREADS"] = str(threads)  # read by the Rust core at its first call
    import torch

    torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    limits = Limits(
        reference_bytes=(args.reference_cap_mib or (4 if quick else 32)) * MIB,
        naive_temp_bytes=(args.naive_cap_mib or (32 if quick else 256)) * MIB,
        repeats=args.repeats or (2 if quick else 3),
    )
    write = (not quick) if args.write is None else args.write
    device = f"cuda: {torch.cuda.get_device_name()}" if cuda else "no CUDA device (torch cuda column skipped)"
    command = "python benches/bench_miners_sweep.py " + " ".join(argv)
    header = [
        f"- command: `{command.strip()}`",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical CPUs; threads: {threads} (rayon and torch)",
        f"- device: {device}",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        f"- repeats: best of {limits.repeats}; numpy reference up to {limits.reference_bytes // MIB} MiB banks, "
        f"numpy naive up to {limits.naive_temp_bytes // MIB} MiB temporaries",
    ]
    print("\n".join(header), flush=True)
    t0 = time.perf_counter()
    rows: list[Row] = []
    for case in sweep_cases(quick):
        case_rows = measure_case(case, limits, threads, cuda)
        rows += case_rows
        rust = next(r for r in case_rows if r.implementation == "rust")
        print(
            f"  {case.sweep:5s} {case.label:36s} rust {_fmt(rust.seconds and rust.seconds * 1e3, '8.2f')} ms "
            f"(read ratio {rust.read_seconds / (rust.seconds or math.inf):.2f}) "
            f"[{time.perf_counter() - t0:5.1f} s]",
            flush=True,
        )
    table = markdown_table(rows)
    print()
    print(table)
    mmap_md = ""
    if not args.skip_mmap:
        report = mmap_case(
            args.mmap_mib or (256 if quick else 4096), args.mmap_cap_mib or (192 if quick else 1536), threads
        )
        mmap_md = mmap_markdown(report, threads)
        print()
        print(mmap_md)
    labels_md = ""
    if not args.skip_label_maps:
        from bench_label_maps import label_maps_section

        labels_md = label_maps_section(threads, 7, quick)
        print()
        print(labels_md)
    objectives_md = ""
    if not args.skip_objectives:
        objectives_md = objectives(3 if quick else 15, threads)
        print()
        print(objectives_md)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    if write:
        title = f"rndpo miners, uint8 banks; {_cpu_model()}, {threads} threads"
        plot(rows, args.plot, title)
        doc = [
            "# Benchmarks",
            "",
            "Generated by `benches/bench_miners_sweep.py` (its module docstring defines every column); "
            "do not edit by hand.",
            "",
            *header,
            "",
            "## Miners: pairwise statistics",
            "",
            table,
            "",
            f"![time against bank size]({os.path.relpath(args.plot, args.markdown.parent)})",
            "",
        ]
        if mmap_md:
            doc += ["## Memory-mapped bank under a memory cap", "", mmap_md, ""]
        if labels_md:
            doc += [
                "## Label maps (3D, several structures) and the binary path",
                "",
                "From `benches/bench_label_maps.py` (its docstring defines the banks and rows).",
                "",
                labels_md,
                "",
            ]
        if objectives_md:
            doc += ["## Objectives: fused preference loss vs naive composition", "", objectives_md, ""]
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(doc))
        print(f"wrote {args.markdown} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
