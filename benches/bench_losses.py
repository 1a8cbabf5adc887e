"""Fused ``preference_loss`` vs the naive composition: time and peak memory, same process; U-Net step times.

Run as a script (``python benches/bench_losses.py [--repeats N] [--threads T] [--device cpu|cuda|all]
[--steps]``) for markdown tables, or with ``pytest benches/bench_losses.py --benchmark-enable`` for
pytest-benchmark timings.

Workload: B pairs of 256 x 256 binary masks (B = 16 on CPU, 64 on CUDA: ``--cpu-batch``,
``--cuda-batch``), float32 policy logits (requires grad) and float32 reference logits; one step =
forward + backward of the loss w.r.t. the policy logits. The naive baseline is
``tests/oracles.py::naive_preference_loss``: per-pixel log-likelihoods of both masks under policy and
reference (F.logsigmoid over every pixel, through autograd), summed, then the same loss formula; it
computes the same outputs as the fused paths (the fused paths also validate their inputs, the naive one
does not). Two mask scenarios: "boundary" (two proposals of one object that differ along its boundary,
the realistic case) and "random" (independent coin-flip masks, |D| about half the pixels, the worst case
for the gather path).

Fused paths: "gather" is the index-gathering ``torch.autograd.Function`` (the CPU path; on CUDA it is
what runs without Triton), "triton" the kernels of ``rndpo.losses._triton_loss`` (the CUDA path when Triton is
installed). On CUDA a "read pass" baseline is timed too: one Triton kernel that reads policy, reference
and both masks once (same grid and block size as the loss's first kernel) and writes one float per
program, i.e. the least any loss over these inputs can cost, launch included.

Peak memory, CPU: the CPU allocator reports every allocation and free to the PyTorch profiler
(``profile_memory=True``) together with the running total of bytes it has handed out; the peak is the
maximum of that running total during one step minus its value before the step's first allocation. The
inputs exist before the step and are not counted; the policy gradient (allocated by both) is. On CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the allocation before.
Time: median over interleaved repeats of the wall time per step (CUDA: 10 steps back to back between two
synchronisations, divided by 10); "GPU ms" is the device time of all kernels, copies and memsets of one
step, from the PyTorch profiler (what the step costs the GPU, without the host's launch overhead).

Launch path and finiteness check (CUDA, Triton): the kernels launch as ``RNDPO_TRITON_LAUNCH`` says
(``direct``, the default: the cached compiled kernel is called without the JIT's per-call binding;
``jit``: Triton's own ``kernel[grid](...)``; the read pass launches the same way), printed in the
header; ``benches/gpu_checks.sh`` runs the script once per mode. "fused" checks the inputs' finiteness
with one device-to-host copy per call (a host sync, the default ``RNDPO_TRITON_FINITE=sync``);
"deferred" is the same step with ``RNDPO_TRITON_FINITE=deferred`` (the copy does not block; the error
comes one call later; ``rndpo.losses.set_finite_check_mode``).

CUDA graphs (``--graphs``, CUDA only): the same forward + backward captured once in a
``torch.cuda.CUDAGraph`` (after warm-up on a side stream) and replayed CUDA_INNER times between two
synchronisations; "graph ms" is the median wall time per replay, which carries no Python, dispatcher
or launch overhead, so it separates the host's share of the eager wall time from the device's. Inside
capture the fused path's finiteness check is the kernel's NaN poisoning alone (capture allows no
sync). A path that cannot be captured shows "-".

``--steps``: one fine-tuning step of the default U-Net (``rndpo.nets.unet.UNet()``, eval mode as in
``rndpo.training.finetuning``, AdamW) on B = 16 images at 128 x 128 and 256 x 256, everything already on the
device: "supervised" = forward, ``rndpo.training.supervised.segmentation_loss`` (BCE + soft Dice), backward,
optimizer step; "RN-DPO" = forward, ``preference_loss`` (sigmoid, region_power 1) against precomputed
reference logits, backward, optimizer step; same model, batch and optimizer. Ratio = RN-DPO / supervised.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from factories import boundary_masks
from oracles import naive_preference_loss
from rndpo.losses import (
    finite_check_mode,
    loss_backend,
    preference_loss,
    set_finite_check_mode,
    set_loss_backend,
)
from rndpo.nets.unet import UNet
from rndpo.training.supervised import segmentation_loss

__all__ = ["main", "make_inputs", "measure"]

CPU_BATCH, CUDA_BATCH, SIZE = 16, 64, 256
STEP_BATCH, STEP_SIZES = 16, (128, 256)
CUDA_INNER = 10  # steps per timed sample on CUDA
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def make_inputs(scenario: str, device: str = "cpu", *, batch: int = CPU_BATCH, size: int = SIZE) -> Inputs:
    """policy float32 (B, 1, H, W) requiring grad, ref float32 (B, 1, H, W), masks bool (B, H, W)."""
    gen = torch.Generator().manual_seed(0)
    policy = torch.randn(batch, 1, size, size, generator=gen)
    ref = policy + 0.1 * torch.randn(batch, 1, size, size, generator=gen)
    if scenario == "random":
        chosen = torch.rand(batch, size, size, generator=gen) > 0.5
        rejected = torch.rand(batch, size, size, generator=gen) > 0.5
    elif scenario == "boundary":
        chosen, rejected = boundary_masks(batch, size, gen)
    else:
        raise ValueError(f"scenario must be 'boundary' or 'random', got {scenario!r}")
    return (policy.to(device).requires_grad_(), ref.to(device), chosen.to(device), rejected.to(device))


def fused_step(inputs: Inputs) -> None:
    """The path preference_loss picks for the inputs' device (Triton on CUDA when installed)."""
    policy, ref, chosen, rejected = inputs
    preference_loss(policy, ref, chosen, rejected, beta=0.5).loss.backward()


def _on_torch(step: Callable[[], None]) -> None:
    """Run ``step`` with preference_loss on its torch (index-gathering) path, also on CUDA."""
    backend = loss_backend()
    set_loss_backend("torch")
    try:
        step()
    finally:
        set_loss_backend(backend)


def gather_step(inputs: Inputs) -> None:
    """The index-gathering fused path, also on CUDA."""
    _on_torch(lambda: fused_step(inputs))


def deferred_step(inputs: Inputs) -> None:
    """The fused path with the deferred finiteness check (no host sync per call)."""
    mode = finite_check_mode()
    set_finite_check_mode("deferred")
    try:
        fused_step(inputs)
    finally:
        set_finite_check_mode(mode)


def _triton_available() -> bool:
    """Whether the Triton kernels of preference_loss import here (the CUDA path uses them then)."""
    try:
        from rndpo.losses import _triton_loss  # noqa: F401
    except ImportError:
        return False
    return True


def naive_step(inputs: Inputs) -> None:
    policy, ref, chosen, rejected = inputs
    naive_preference_loss(policy, ref, chosen, rejected, beta=0.5)["loss"].backward()


def read_pass_step(inputs: Inputs) -> None:
    """One read of policy, ref and both masks by one Triton kernel (CUDA only): the floor of any loss."""
    from _read_pass import read_pass

    read_pass(*inputs)


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


def _cuda_device_ms(step: Callable[[], None], inner: int = CUDA_INNER) -> float:
    """GPU time (ms) per call of ``step``: kernels, copies and memsets, from the PyTorch profiler."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(inner):
            step()
        torch.cuda.synchronize()
    total_us = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages())
    return total_us / 1e3 / inner


def _graph_ms(step: Callable[[Inputs], None], inputs: Inputs, repeats: int) -> float:
    """Median wall ms per replay of ``step`` captured in a CUDA graph (module docstring); nan when the
    step cannot be captured."""
    policy = inputs[0]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compilation, allocator) outside the capture
        for _ in range(3):
            policy.grad = None
            step(inputs)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    policy.grad = None
    try:
        with torch.cuda.graph(graph):
            step(inputs)
    except RuntimeError as err:  # e.g. a host sync inside the step
        print(f"(CUDA graph capture failed for {getattr(step, '__name__', step)}: {err})", file=sys.stderr)
        torch.cuda.synchronize()
        return float("nan")
    times = []
    graph.replay()
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(CUDA_INNER):
            graph.replay()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / CUDA_INNER)
    policy.grad = None
    del graph
    return 1e3 * statistics.median(times)


def _median_times(steps: dict[str, Callable[[], None]], device: str, repeats: int) -> dict[str, float]:
    """Median wall ms per step, interleaved repeats (CUDA: CUDA_INNER steps per sample)."""
    inner = CUDA_INNER if device == "cuda" else 1
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up (and Triton's compilation)
        step()
        step()
    for _ in range(repeats):
        for name, step in steps.items():  # interleaved, so all see the same machine load
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                step()
            _sync(device)
            times[name].append((time.perf_counter() - start) / inner)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def measure(
    scenario: str, device: str, repeats: int, batch: int | None = None, graphs: bool = False
) -> dict[str, float]:
    """Median step times (ms) and peak extra memory (MiB) of every path, and the ratios to naive.

    Keys: {path}_ms, {path}_mib for path in fused, naive (and gather, read, deferred on CUDA; fused is
    the Triton path there when Triton is installed), {path}_gpu_ms on CUDA, speedup, memory_ratio,
    read_ratio (CUDA: fused ms / read-pass ms), region_fraction; with ``graphs`` (CUDA) also
    {path}_graph_ms for fused, naive and read (nan where capture failed)."""
    batch = batch or (CUDA_BATCH if device == "cuda" else CPU_BATCH)
    inputs = make_inputs(scenario, device, batch=batch)
    paths: dict[str, Callable[[Inputs], None]] = {"fused": fused_step, "naive": naive_step}
    if device == "cuda":
        paths["gather"] = gather_step
        if _triton_available():
            paths["read"] = read_pass_step
            paths["deferred"] = deferred_step

    def bound(step: Callable[[Inputs], None]) -> Callable[[], None]:
        def run() -> None:
            inputs[0].grad = None
            step(inputs)

        return run

    steps = {name: bound(step) for name, step in paths.items()}
    result = {f"{name}_ms": ms for name, ms in _median_times(steps, device, repeats).items()}
    peak = _cuda_peak_bytes if device == "cuda" else _cpu_peak_bytes
    for name, step in paths.items():
        result[f"{name}_mib"] = peak(step, inputs) / 2**20
        if device == "cuda":
            result[f"{name}_gpu_ms"] = _cuda_device_ms(steps[name])
    if graphs and device == "cuda":
        for name in ("fused", "naive", "read"):
            if name in paths:
                result[f"{name}_graph_ms"] = _graph_ms(paths[name], inputs, repeats)
    result["speedup"] = result["naive_ms"] / result["fused_ms"]
    result["memory_ratio"] = result["fused_mib"] / result["naive_mib"]
    if "read_ms" in result:
        result["read_ratio"] = result["fused_ms"] / result["read_ms"]
    chosen, rejected = inputs[2], inputs[3]
    result["region_fraction"] = float((chosen != rejected).float().mean())
    result["batch"] = float(batch)
    return result


def step_times(device: str, size: int, repeats: int, batch: int = STEP_BATCH) -> dict[str, float]:
    """Median ms of one supervised and one RN-DPO fine-tuning step of the default U-Net (module doc)."""
    gen = torch.Generator().manual_seed(0)
    model = UNet().to(device).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(batch, 1, size, size, generator=gen).to(device)
    chosen, rejected = (m.to(device) for m in boundary_masks(batch, size, gen))
    target = chosen.unsqueeze(1).float()
    with torch.no_grad():
        ref = model(images)

    def supervised() -> None:
        opt.zero_grad(set_to_none=True)
        segmentation_loss(model(images), target).backward()
        opt.step()

    def rndpo() -> None:
        opt.zero_grad(set_to_none=True)
        preference_loss(model(images), ref, chosen, rejected, beta=0.1).loss.backward()
        opt.step()

    steps: dict[str, Callable[[], None]] = {"supervised": supervised, "rndpo": rndpo}
    if device == "cuda" and _triton_available():
        steps["rndpo_gather"] = lambda: _on_torch(rndpo)
    return _median_times(steps, device, repeats)


def _name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--cpu-batch", type=int, default=CPU_BATCH)
    parser.add_argument("--cuda-batch", type=int, default=CUDA_BATCH)
    parser.add_argument("--steps", action="store_true", help="also time U-Net fine-tuning steps")
    parser.add_argument(
        "--graphs", action="store_true", help="CUDA: also time the steps as CUDA graph replays"
    )
    parser.add_argument("--masks", choices=["boundary", "random", "all"], default="all")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    triton = any(d == "cuda" for d in devices) and _triton_available()
    from rndpo.losses import _triton_launch

    launch = f", launch {_triton_launch.launch_mode()}, finite check {finite_check_mode()}" if triton else ""
    print(
        f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, {SIZE} x {SIZE}, float32; "
        f"CUDA fused path: {'triton' if triton else 'gather'}{launch}"
    )
    print()
    print(
        "| device | B | masks | |D|/pixels | fused path | fused ms | naive ms | speedup "
        "| fused MiB | naive MiB | memory ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    cuda_rows: list[tuple[str, dict[str, float]]] = []
    for device in devices:
        batch = args.cuda_batch if device == "cuda" else args.cpu_batch
        for scenario in ("boundary", "random") if args.masks == "all" else (args.masks,):
            r = measure(scenario, device, args.repeats, batch, graphs=args.graphs)
            fused = "triton" if device == "cuda" and triton else "gather"
            rows = [(fused, r["fused_ms"], r["fused_mib"])]
            if device == "cuda":
                if "deferred_ms" in r:
                    rows.append(("triton deferred", r["deferred_ms"], r["deferred_mib"]))
                rows.append(("gather", r["gather_ms"], r["gather_mib"]))
                cuda_rows.append((scenario, r))
            for path, ms, mib in rows:
                print(
                    f"| {_name(device)} | {batch} | {scenario} | {r['region_fraction']:.3f} | {path} "
                    f"| {ms:.3f} | {r['naive_ms']:.3f} | {r['naive_ms'] / ms:.2f}x | {mib:.1f} "
                    f"| {r['naive_mib']:.1f} | {mib / r['naive_mib']:.2f} |"
                )
    if cuda_rows:
        print()
        print("CUDA, wall ms per step against one read pass over the inputs, and GPU (device) ms per step:")
        print()
        print(
            "| masks | read pass ms | fused ms | fused / read pass | read pass GPU ms | fused GPU ms "
            "| gather GPU ms | naive GPU ms |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for scenario, r in cuda_rows:
            read_ms, read_gpu = r.get("read_ms", float("nan")), r.get("read_gpu_ms", float("nan"))
            print(
                f"| {scenario} | {read_ms:.3f} | {r['fused_ms']:.3f} | {r['fused_ms'] / read_ms:.2f}x "
                f"| {read_gpu:.3f} | {r['fused_gpu_ms']:.3f} | {r['gather_gpu_ms']:.3f} | {r['naive_gpu_ms']:.3f} |"
            )
    if cuda_rows and args.graphs:
        print()
        print(
            "CUDA, wall ms per step: eager (fused: sync / deferred finiteness check) and replayed as a CUDA graph "
            "(no host overhead):"
        )
        print()
        print(
            "| masks | fused ms | deferred ms | fused graph ms | naive ms | naive graph ms | read pass graph ms "
            "| graph speedup | fused graph / read pass graph |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        nan = float("nan")
        for scenario, r in cuda_rows:
            fused_g, naive_g, read_g = (r.get(f"{k}_graph_ms", nan) for k in ("fused", "naive", "read"))
            print(
                f"| {scenario} | {r['fused_ms']:.3f} | {r.get('deferred_ms', nan):.3f} | {fused_g:.3f} "
                f"| {r['naive_ms']:.3f} | {naive_g:.3f} | {read_g:.3f} | {naive_g / fused_g:.2f}x "
                f"| {fused_g / read_g:.2f}x |"
            )
    if args.steps:
        print()
        print(f"U-Net fine-tuning step (default UNet(), eval mode, AdamW), B = {STEP_BATCH}, ms per step:")
        print()
        print(
            "| device | size | supervised ms | RN-DPO ms | RN-DPO / supervised | RN-DPO gather ms | gather / supervised |"
        )
        print("|---|---|---|---|---|---|---|")
        for device in devices:
            for size in STEP_SIZES:
                t = step_times(device, size, args.repeats)
                gather = t.get("rndpo_gather", float("nan"))
                print(
                    f"| {_name(device)} | {size} x {size} | {t['supervised']:.3f} | {t['rndpo']:.3f} "
                    f"| {t['rndpo'] / t['supervised']:.3f} | {gather:.3f} | {gather / t['supervised']:.3f} |"
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
