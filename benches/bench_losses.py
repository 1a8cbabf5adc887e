"""Fused ``preference_loss`` vs the naive autograd composition: time and peak memory, same process.

Run as a script (``python benches/bench_losses.py [--repeats N] [--threads T]``) for a markdown table, or
with ``pytest benches/bench_losses.py --benchmark-enable`` for pytest-benchmark timings.

Workload: B = 16 pairs of 256 x 256 binary masks, float32 policy logits (requires grad) and float32
reference logits; one step = forward + backward of the loss w.r.t. the policy logits. The naive baseline
is ``tests/oracles.py::naive_preference_loss``: per-pixel log-likelihoods of both masks under policy and
reference (F.logsigmoid over every pixel, through autograd), summed, then the same loss formula; it
computes the same outputs as the fused path (the fused path also validates its inputs, the naive one does
not). Two mask scenarios: "boundary" (two proposals of one object that differ along its boundary, the
realistic case) and "random" (independent coin-flip masks, |D| about half the pixels, the worst case for
the fused path).

Peak memory, CPU: the CPU allocator reports every allocation and free to the PyTorch profiler
(``profile_memory=True``) together with the running total of bytes it has handed out; the peak is the
maximum of that running total during one step minus its value before the step's first allocation. The
inputs exist before the step and are not counted; the policy gradient (allocated by both) is. On CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the allocation before.
Time: median wall time of interleaved repeats (CUDA: synchronised).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler's own logging out of the table

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import naive_preference_loss
from rndpo.losses import preference_loss

__all__ = ["main", "make_inputs", "measure"]

BATCH, SIZE = 16, 256
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def make_inputs(scenario: str, device: str = "cpu", *, batch: int = BATCH, size: int = SIZE) -> Inputs:
    """policy float32 (B, 1, H, W) requiring grad, ref float32 (B, 1, H, W), masks bool (B, H, W)."""
    gen = torch.Generator().manual_seed(0)
    policy = torch.randn(batch, 1, size, size, generator=gen)
    ref = policy + 0.1 * torch.randn(batch, 1, size, size, generator=gen)
    if scenario == "random":
        chosen = torch.rand(batch, size, size, generator=gen) > 0.5
        rejected = torch.rand(batch, size, size, generator=gen) > 0.5
    elif scenario == "boundary":
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        centre = size / 2 + size / 16 * torch.randn(batch, 2, generator=gen)
        radius = size / 4 * (1 + 0.2 * torch.rand(batch, generator=gen))
        shift = size / 64 * torch.randn(batch, 2, generator=gen)

        def disc(c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2 < r[:, None, None] ** 2

        chosen = disc(centre, radius)
        rejected = disc(centre + shift, radius * 0.95)
    else:
        raise ValueError(f"scenario must be 'boundary' or 'random', got {scenario!r}")
    return (policy.to(device).requires_grad_(), ref.to(device), chosen.to(device), rejected.to(device))


def fused_step(inputs: Inputs) -> None:
    policy, ref, chosen, rejected = inputs
    preference_loss(policy, ref, chosen, rejected, beta=0.5).loss.backward()


def naive_step(inputs: Inputs) -> None:
    policy, ref, chosen, rejected = inputs
    naive_preference_loss(policy, ref, chosen, rejected, beta=0.5)["loss"].backward()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _cpu_peak_bytes(step: Callable[[Inputs], None], inputs: Inputs) -> int:
    inputs[0].grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(inputs)
    events: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        kind, fields = event.typed
        if kind == _EventType.Allocation and fields.device.type == "cpu":
            events.append((event.start_time_ns, fields.alloc_size, fields.total_allocated))
    if not events:
        return 0
    events.sort()
    before = events[0][2] - events[0][1]
    return max(total for _, _, total in events) - before


def _cuda_peak_bytes(step: Callable[[Inputs], None], inputs: Inputs) -> int:
    inputs[0].grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(inputs)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def measure(scenario: str, device: str, repeats: int) -> dict[str, float]:
    """Median step times (ms), peak extra memory (MiB) of fused and naive, and their ratios."""
    inputs = make_inputs(scenario, device)
    steps = {"fused": fused_step, "naive": naive_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step(inputs)
    for _ in range(repeats):
        for name, step in steps.items():  # interleaved, so both see the same machine load
            inputs[0].grad = None
            _sync(device)
            start = time.perf_counter()
            step(inputs)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    peak = _cuda_peak_bytes if device == "cuda" else _cpu_peak_bytes
    result = {f"{name}_ms": 1e3 * statistics.median(ts) for name, ts in times.items()}
    for name, step in steps.items():
        result[f"{name}_mib"] = peak(step, inputs) / 2**20
    result["speedup"] = result["naive_ms"] / result["fused_ms"]
    result["memory_ratio"] = result["fused_mib"] / result["naive_mib"]
    chosen, rejected = inputs[2], inputs[3]
    result["region_fraction"] = float((chosen != rejected).float().mean())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(
        f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, "
        f"B = {BATCH}, {SIZE} x {SIZE}, float32"
    )
    print()
    print(
        "| device | masks | |D|/pixels | fused ms | naive ms | speedup "
        "| fused MiB | naive MiB | memory ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        for scenario in ("boundary", "random"):
            r = measure(scenario, device, args.repeats)
            print(
                f"| {name} | {scenario} | {r['region_fraction']:.3f} | {r['fused_ms']:.2f} "
                f"| {r['naive_ms']:.2f} | {r['speedup']:.2f}x | {r['fused_mib']:.1f} "
                f"| {r['naive_mib']:.1f} | {r['memory_ratio']:.2f} |"
            )
    return 0


def test_bench_fused_cpu(benchmark: Callable[..., object]) -> None:
    inputs = make_inputs("boundary")
    benchmark(fused_step, inputs)


def test_bench_naive_cpu(benchmark: Callable[..., object]) -> None:
    inputs = make_inputs("boundary")
    benchmark(naive_step, inputs)


if __name__ == "__main__":
    raise SystemExit(main())
