"""The Triton path of rndpo.losses.preference_loss against the CPU path and the naive composition.

Without a GPU the kernels run on CPU tensors under Triton's interpreter: ``TRITON_INTERPRET=1`` must be
set before ``rndpo.losses._triton_loss`` is imported (triton reads it when ``@triton.jit`` wraps a kernel), so
this module sets it at import time when no CUDA device is present; nothing imports that module earlier
(rndpo.losses imports it lazily, on the first CUDA call). With a GPU the same small cases run compiled
on CUDA, and the tests marked ``cuda`` add realistic sizes and float64 finite differences.
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from factories import boundary_masks
from oracles import naive_preference_loss
from rndpo.losses import (
    _triton_launch,
    _triton_loss,
    check_nonfinite,
    finite_check_mode,
    loss_backend,
    preference_loss,
    set_finite_check_mode,
    set_loss_backend,
)

LOSS_TYPES = ["sigmoid", "ipo", "hinge", "robust", "cdpo"]
FIELDS = ["loss", "losses", "chosen_rewards", "rejected_rewards", "margins", "accuracies", "region_size"]
DEVICE = "cpu" if _triton_loss.INTERPRETED else "cuda"
if _triton_loss.INTERPRETED and _triton_loss.triton_version() < (3, 7):
    # seen with Triton 3.6 and NumPy 2.4: the interpreter turns a runtime loop bound into a Python int
    # with int() of a one-element array, which NumPy rejects (3.9 squeezes it first); compiled on a
    # GPU, Triton 3.6 runs these kernels (tested on an H200)
    pytest.skip("Triton's interpreter needs Triton >= 3.7 here", allow_module_level=True)


@contextlib.contextmanager
def _backend(backend: str) -> Iterator[None]:
    """preference_loss on ``backend`` ('auto', 'torch' or 'triton') inside the block."""
    previous = loss_backend()
    set_loss_backend(backend)
    try:
        yield
    finally:
        set_loss_backend(previous)


@contextlib.contextmanager
def _finite_check(mode: str) -> Iterator[None]:
    """The Triton path's finiteness check in ``mode`` ('sync' or 'deferred') inside the block."""
    previous = finite_check_mode()
    set_finite_check_mode(mode)
    try:
        yield
    finally:
        set_finite_check_mode(previous)


@pytest.fixture(autouse=True)
def _triton_path() -> Iterator[None]:
    """Route preference_loss through the Triton kernels (on CPU tensors only under the interpreter)."""
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.fail("triton kernels are compiled (TRITON_INTERPRET was not set before import) and no GPU")
    with _backend("triton" if DEVICE == "cpu" else "auto"):
        yield


def _on_triton(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of the Triton entry point, so that a test proves it ran the kernels."""
    calls: list[int] = []
    real = _triton_loss.region_preference_loss

    def counted(*args: object, **kwargs: object) -> tuple[torch.Tensor, ...]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_triton_loss, "region_preference_loss", counted)
    return calls


def _eps(loss_type: str) -> float:
    return 0.2 if loss_type in ("robust", "cdpo") else 0.0


def _pairs(
    seed: int, batch: int, classes: int, spatial: tuple[int, ...], dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits (B, C, *S) of ``dtype`` and int64 masks (B, *S) on CPU; pair 0 has D empty."""
    gen = torch.Generator().manual_seed(seed)
    policy = torch.randn((batch, classes, *spatial), generator=gen, dtype=torch.float64).to(dtype)
    ref = (policy.double() + 0.5 * torch.randn(policy.shape, generator=gen, dtype=torch.float64)).to(dtype)
    high = 2 if classes == 1 else classes
    chosen = torch.randint(0, high, (batch, *spatial), generator=gen)
    rejected = torch.randint(0, high, (batch, *spatial), generator=gen)
    rejected[0] = chosen[0]
    return policy, ref, chosen, rejected


def _run(
    inputs: tuple[torch.Tensor, ...], device: str, weights: torch.Tensor, **options: object
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """All outputs (on CPU) and the gradient of loss + sum(weights * losses) w.r.t. policy."""
    policy, ref, chosen, rejected = (t.to(device) for t in inputs)
    policy.requires_grad_()
    out = preference_loss(policy, ref, chosen, rejected, **options)  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(out.loss + (weights.to(device) * out.losses).sum(), policy)
    return {name: getattr(out, name).detach().cpu() for name in FIELDS}, grad.cpu()


def _naive(
    inputs: tuple[torch.Tensor, ...], weights: torch.Tensor, **options: object
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    policy, ref, chosen, rejected = inputs
    policy = policy.double().requires_grad_()
    out = naive_preference_loss(policy, ref.double(), chosen, rejected, **options)  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(out["loss"] + (weights * out["losses"]).sum(), policy)
    return {name: out[name].detach() for name in FIELDS}, grad


def _assert_same(
    got: tuple[dict[str, torch.Tensor], torch.Tensor],
    want: tuple[dict[str, torch.Tensor], torch.Tensor],
    atol: float,
    rtol: float = 0.0,
    grad_rtol: float | None = None,
) -> None:
    for name in FIELDS:
        got_value, want_value = got[0][name].double(), want[0][name].double()
        torch.testing.assert_close(got_value, want_value, atol=atol, rtol=rtol, msg=name)
    grad_rtol = rtol if grad_rtol is None else grad_rtol
    torch.testing.assert_close(got[1].double(), want[1].double(), atol=atol, rtol=grad_rtol)
    assert float(want[1].abs().sum()) > 0  # never two zero gradients


# --- interpreted on CPU (compiled on CUDA where present): small inputs ----------------------------


@pytest.mark.parametrize("region_power", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_matches_cpu_path_and_naive(
    loss_type: str, region_power: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = zlib.crc32(repr((loss_type, region_power)).encode())
    for classes, normalization, spatial in (
        (1, "margin", (5, 7)),
        (1, "weight", (6, 5)),
        (3, "margin", (4, 6)),
    ):
        inputs = _pairs(seed + classes, 3, classes, spatial)
        weights = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
        options = dict(
            beta=0.4,
            loss_type=loss_type,
            region_power=region_power,
            label_smoothing=_eps(loss_type),
            normalization=normalization,
        )
        with _backend("torch"):
            cpu = _run(inputs, "cpu", weights, **options)
        calls = _on_triton(monkeypatch)
        got = _run(inputs, DEVICE, weights, **options)
        assert calls, "the Triton path did not run"
        _assert_same(got, cpu, atol=1e-10)
        _assert_same(got, _naive(inputs, weights, **options), atol=1e-10)


@pytest.mark.parametrize("classes", [1, 4])
def test_volumes(classes: int) -> None:
    inputs = _pairs(7, 3, classes, (3, 4, 5))
    weights = torch.tensor([0.0, 0.5, -0.25], dtype=torch.float64)
    options = dict(beta=0.5, loss_type="sigmoid", region_power=1.0)
    _assert_same(_run(inputs, DEVICE, weights, **options), _naive(inputs, weights, **options), atol=1e-10)


def test_many_blocks_and_pair_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny block sizes: several pixel blocks per pair, several pair chunks and partial chunks per pair
    monkeypatch.setattr(_triton_loss, "BLOCK", 16)
    monkeypatch.setattr(_triton_loss, "BLOCK_B", 2)
    monkeypatch.setattr(_triton_loss, "BLOCK_J", 2)
    for classes in (1, 3):
        inputs = _pairs(21, 5, classes, (9, 10))  # 90 pixels: 6 blocks of 16, 3 partial-chunks of 2
        weights = torch.linspace(-1, 1, 5, dtype=torch.float64)
        options = dict(beta=0.3, loss_type="robust", region_power=0.5, label_smoothing=0.1)
        _assert_same(_run(inputs, DEVICE, weights, **options), _naive(inputs, weights, **options), atol=1e-10)


@pytest.mark.parametrize("normalization", ["margin", "weight"])
def test_empty_regions(normalization: str) -> None:
    policy, ref, chosen, _ = _pairs(3, 3, 1, (4, 5))
    policy = policy.to(DEVICE).requires_grad_()
    out = preference_loss(
        policy, ref.to(DEVICE), chosen.to(DEVICE), chosen.to(DEVICE), beta=0.5, normalization=normalization
    )
    assert out.loss.item() == 0.0
    assert torch.equal(out.losses.cpu(), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(out.region_size.cpu(), torch.zeros(3, dtype=torch.int64))
    (grad,) = torch.autograd.grad(out.loss, policy)
    assert torch.equal(grad.cpu(), torch.zeros_like(policy, device="cpu"))


@pytest.mark.parametrize(
    ("classes", "dtype", "ref_dtype"),
    [
        (1, torch.bfloat16, torch.float16),
        (1, torch.float16, torch.float16),
        (3, torch.bfloat16, torch.float32),
    ],
)
def test_low_precision_inputs(classes: int, dtype: torch.dtype, ref_dtype: torch.dtype) -> None:
    policy, ref, chosen, rejected = _pairs(5, 3, classes, (6, 6), dtype=dtype)
    inputs = (policy, ref.to(ref_dtype), chosen.bool() if classes == 1 else chosen, rejected)
    weights = torch.tensor([0.2, 0.4, -0.6], dtype=torch.float64)
    options = dict(beta=0.5, loss_type="cdpo", region_power=1.0, label_smoothing=0.1)
    got = _run(inputs, DEVICE, weights, **options)
    assert got[0]["loss"].dtype == torch.float32  # float32 accumulation
    assert got[1].dtype == dtype
    # the naive float64 composition sees the same rounded inputs: only float32 accumulation differs, and
    # the gradient is rounded to the input dtype (at most one unit in its last place apart)
    values, grad = _naive(inputs, weights, **options)
    ulp = torch.finfo(dtype).eps
    _assert_same(got, (values, grad.to(dtype)), atol=1e-5, rtol=1e-5, grad_rtol=ulp)


def test_gradient_through_either_output() -> None:
    # backward gets dL/dloss or dL/dlosses alone (the other undefined), as in loss.backward()
    policy, ref, chosen, rejected = _pairs(17, 3, 1, (5, 5))
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def grads(device: str) -> tuple[torch.Tensor, torch.Tensor]:
        p = policy.to(device).requires_grad_()
        args = (ref.to(device), chosen.to(device), rejected.to(device))
        (only_loss,) = torch.autograd.grad(preference_loss(p, *args, beta=0.5).loss, p)
        out = preference_loss(p, *args, beta=0.5)
        (only_losses,) = torch.autograd.grad((weights.to(device) * out.losses).sum(), p)
        return only_loss.cpu(), only_losses.cpu()

    got = grads(DEVICE)
    with _backend("torch"):
        want = grads("cpu")
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=0)
        assert float(w.abs().sum()) > 0


def test_reference_gradient() -> None:
    policy, ref, chosen, rejected = _pairs(9, 3, 3, (4, 4))
    policy = policy.to(DEVICE).requires_grad_()
    ref = ref.to(DEVICE).requires_grad_()
    out = preference_loss(policy, ref, chosen.to(DEVICE), rejected.to(DEVICE), beta=0.5)
    grad, grad_ref = torch.autograd.grad(out.loss, (policy, ref))
    assert torch.equal(grad_ref, -grad)
    assert float(grad.abs().sum()) > 0


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the interpreter's numpy on inf - inf
@pytest.mark.parametrize(("which", "value"), [("policy_logits", math.nan), ("ref_logits", math.inf)])
def test_non_finite_logits_raise(which: str, value: float) -> None:
    policy, ref, chosen, rejected = _pairs(4, 2, 1, (4, 4), dtype=torch.float32)
    bad = policy if which == "policy_logits" else ref
    bad[1, 0, 2, 3] = value
    bad[0, 0, 0, 0] = value
    with pytest.raises(ValueError, match=f"{which} must be finite, got 2 non-finite values"):
        preference_loss(policy.to(DEVICE), ref.to(DEVICE), chosen.to(DEVICE), rejected.to(DEVICE), beta=0.5)


def test_non_finite_input_poisons_every_float_output() -> None:
    policy, ref, chosen, rejected = (t.to(DEVICE) for t in _pairs(4, 3, 3, (4, 4), dtype=torch.float32))
    ref[2, 1, 0, 0] = math.nan
    *outputs, bad = _triton_loss.region_preference_loss(
        policy.requires_grad_(),
        ref,
        chosen,
        rejected,
        acc_dtype=torch.float32,
        beta=0.5,
        loss_type="sigmoid",
        region_power=1.0,
        label_smoothing=0.0,
        normalization="margin",
    )
    assert bad.tolist() == [0, 1]
    for value in outputs[:6]:  # loss, losses, rewards, margins, accuracies
        assert bool(torch.isnan(value).all()), value
    assert outputs[6].tolist() == [int(n) for n in (chosen != rejected).flatten(1).sum(1)]  # |D| stays exact
    (grad,) = torch.autograd.grad(outputs[0], policy)
    assert int(torch.isnan(grad).sum()) == 2 * int((chosen != rejected).sum())  # classes y_w, y_l on D


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_deferred_non_finite_check_raises_at_the_next_call() -> None:
    with _finite_check("deferred"):
        _deferred_calls()
    assert finite_check_mode() == "sync"
    with pytest.raises(ValueError, match="mode must be 'sync' or 'deferred', got 'later'"):
        set_finite_check_mode("later")


def _deferred_calls() -> None:
    assert finite_check_mode() == "deferred"
    policy, ref, chosen, rejected = (t.to(DEVICE) for t in _pairs(4, 2, 1, (4, 4), dtype=torch.float32))
    good = preference_loss(policy, ref, chosen, rejected, beta=0.5)  # call 1: finite
    assert bool(torch.isfinite(good.loss))
    bad_policy = policy.clone()
    bad_policy[1, 0, 2, 3] = math.inf
    out = preference_loss(bad_policy.requires_grad_(), ref, chosen, rejected, beta=0.5)  # call 2: no raise
    assert bool(torch.isnan(out.loss)) and bool(torch.isnan(out.losses).all())
    (grad,) = torch.autograd.grad(out.loss, bad_policy)
    assert bool(torch.isnan(grad).any())
    with pytest.raises(ValueError, match=r"got 1 and 0 non-finite values in preference_loss call 2"):
        preference_loss(policy, ref, chosen, rejected, beta=0.5)
    again = preference_loss(policy, ref, chosen, rejected, beta=0.5)  # the error is raised once
    assert torch.equal(again.loss, good.loss)
    check_nonfinite()  # nothing pending after finite inputs
    preference_loss(policy, ref, chosen, bad_policy.detach()[:, 0] > 0, beta=0.5)  # finite logits
    preference_loss(policy, ref * math.nan, chosen, rejected, beta=0.5)
    with pytest.raises(ValueError, match=r"got 0 and 32 non-finite values"):
        check_nonfinite()


@pytest.mark.skipif(not _triton_loss.INTERPRETED, reason="the interpreter only")
def test_interpreter_falls_back_to_the_jit_path() -> None:
    inputs = _pairs(2, 2, 1, (4, 4))
    _run(inputs, DEVICE, torch.zeros(2, dtype=torch.float64), beta=0.5)
    for launcher in _triton_loss.LAUNCHERS:  # the interpreter returns no compiled kernel to launch
        assert not launcher.direct_available and launcher.direct_launches == 0 and launcher.jit_launches > 0


# --- CUDA only: realistic sizes, float64 finite differences --------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_cuda_realistic_sizes_match_cpu(classes: int, loss_type: str) -> None:
    gen = torch.Generator().manual_seed(1)
    batch, size = 16, 256
    chosen, rejected = boundary_masks(batch, size, gen)
    if classes > 1:  # a second class inside the first: class ids 0, 1, 2
        inner_w, inner_l = boundary_masks(batch, size, gen)
        chosen = chosen.long() + (chosen & inner_w).long()
        rejected = rejected.long() + (rejected & inner_l).long()
    policy = torch.randn(batch, classes, size, size, generator=gen)
    ref = policy + 0.1 * torch.randn(policy.shape, generator=gen)
    weights = torch.randn(batch, generator=gen, dtype=torch.float64)
    options = dict(beta=0.5, loss_type=loss_type, region_power=1.0)
    inputs = (policy, ref, chosen, rejected)
    got = _run(inputs, "cuda", weights.float(), **options)
    want = _run(tuple(t.double() if t.is_floating_point() else t for t in inputs), "cpu", weights, **options)
    _assert_same(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize(("classes", "loss_type"), [(1, "sigmoid"), (1, "ipo"), (3, "robust")])
def test_cuda_gradcheck_float64(classes: int, loss_type: str) -> None:
    policy, ref, chosen, rejected = (t.cuda() for t in _pairs(13, 3, classes, (5, 6)))
    policy.requires_grad_()
    ref.requires_grad_()
    options = dict(beta=0.7, loss_type=loss_type, region_power=0.5, label_smoothing=_eps(loss_type))

    def fn(p: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = preference_loss(p, r, chosen, rejected, **options)  # type: ignore[arg-type]
        return out.loss, out.losses

    assert torch.autograd.gradcheck(fn, (policy, ref), eps=1e-6, atol=1e-7)


def _launch_mode_run(
    mode: str, inputs: tuple[torch.Tensor, ...], weights: torch.Tensor, **options: object
) -> Any:
    previous = _triton_launch.launch_mode()
    _triton_launch.set_launch_mode(mode)
    try:
        return _run(inputs, "cuda", weights, **options)
    finally:
        _triton_launch.set_launch_mode(previous)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize(
    ("classes", "dtype", "loss_type"),
    [
        (1, torch.float32, "sigmoid"),
        (3, torch.float32, "robust"),
        (1, torch.bfloat16, "ipo"),
        (2, torch.float64, "cdpo"),
    ],
)
def test_cuda_direct_launch_equals_jit_bit_for_bit(classes: int, dtype: torch.dtype, loss_type: str) -> None:
    gen = torch.Generator().manual_seed(3)
    batch, size = 8, 96
    chosen, rejected = boundary_masks(batch, size, gen)
    if classes > 1:
        chosen, rejected = chosen.long(), rejected.long() * (classes - 1)
    policy = torch.randn(batch, classes, size, size, generator=gen).to(dtype)
    ref = (policy.float() + 0.1 * torch.randn(policy.shape, generator=gen)).to(dtype)
    weights = torch.randn(batch, generator=gen).to(torch.float64 if dtype == torch.float64 else torch.float32)
    options = dict(beta=0.5, loss_type=loss_type, region_power=0.5, label_smoothing=_eps(loss_type))
    inputs = (policy, ref, chosen, rejected)
    jit = _launch_mode_run("jit", inputs, weights, **options)
    before = [launcher.direct_launches for launcher in _triton_loss.LAUNCHERS]
    direct = [_launch_mode_run("direct", inputs, weights, **options) for _ in range(2)]  # 2nd: cached
    after = [launcher.direct_launches for launcher in _triton_loss.LAUNCHERS]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    for got in direct:
        for name in FIELDS:
            assert torch.equal(got[0][name], jit[0][name]), name
        assert torch.equal(got[1], jit[1])
    _assert_same(jit, _naive(inputs, weights.double(), **options), atol=1e-4, rtol=1e-3, grad_rtol=1e-2)


@pytest.mark.cuda
@cuda
def test_cuda_graph_capture_of_forward_and_backward() -> None:
    gen = torch.Generator().manual_seed(4)
    batch, size = 4, 64
    chosen, rejected = (m.cuda() for m in boundary_masks(batch, size, gen))
    policy = torch.randn(batch, 1, size, size, generator=gen).cuda().requires_grad_()
    ref = (policy.detach() + 0.1 * torch.randn(policy.shape, generator=gen).cuda()).contiguous()

    def step() -> torch.Tensor:
        policy.grad = None
        out = preference_loss(policy, ref, chosen, rejected, beta=0.5)
        out.loss.backward()
        return out.loss

    want_loss = step().detach().clone()
    assert policy.grad is not None
    want_grad = policy.grad.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    policy.grad = None
    with torch.cuda.graph(graph):
        out = preference_loss(policy, ref, chosen, rejected, beta=0.5)
        out.loss.backward()
    graph.replay()
    torch.cuda.synchronize()
    grad = policy.grad
    assert grad is not None
    assert torch.equal(out.loss, want_loss) and torch.equal(grad, want_grad)
    ref[0, 0, 0, 0] = math.nan  # the capture-safe check: NaN poisoning, no sync
    graph.replay()
    torch.cuda.synchronize()
    assert bool(torch.isnan(out.loss)) and bool(torch.isnan(grad).any())


@pytest.mark.cuda
@cuda
def test_cuda_deferred_non_finite_check() -> None:
    policy, ref, chosen, rejected = (t.cuda() for t in _pairs(6, 3, 1, (32, 32), dtype=torch.float32))
    policy[2, 0, 5, 5] = math.nan
    with _finite_check("deferred"):
        out = preference_loss(policy, ref, chosen, rejected, beta=0.5)
        assert bool(torch.isnan(out.loss))
        policy[2, 0, 5, 5] = 0.0
        with pytest.raises(ValueError, match=r"got 1 and 0 non-finite values in preference_loss call 1"):
            preference_loss(policy, ref, chosen, rejected, beta=0.5)
        assert bool(torch.isfinite(preference_loss(policy, ref, chosen, rejected, beta=0.5).loss))
