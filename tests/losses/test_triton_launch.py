"""rndpo.losses._triton_launch.Launcher: the caching and dispatch logic with fake kernels (no GPU, no Triton).

The fake JIT kernel records its launches and returns a fake compiled kernel that records direct launches,
so each test sees which path a launch took and with which arguments. The real kernels are exercised by
tests/losses/test_losses_triton.py (interpreter on CPU: JIT path; CUDA: both paths, compared bit for bit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from rndpo.losses import _triton_launch
from rndpo.losses._triton_launch import Launcher


class FakeCompiled:
    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.function = object()
        self.packed_metadata = ("meta",)
        self.calls = calls

    def run(self, *args: Any) -> None:
        self.calls.append(args)


class FakeKernel:
    """Indexable by a grid like a JITFunction; returns ``compiled`` (None: like the interpreter)."""

    __name__ = "fake_kernel"

    def __init__(self, compiled: Any = "new") -> None:
        self.jit_calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        self.direct_calls: list[tuple[Any, ...]] = []
        self.compiled = compiled
        self.compiled_made = 0

    def __getitem__(self, grid: Any) -> Any:
        def launch(*args: Any, **kwargs: Any) -> Any:
            self.jit_calls.append((grid, args, kwargs))
            if self.compiled != "new":
                return self.compiled
            self.compiled_made += 1
            return FakeCompiled(self.direct_calls)

        return launch


@pytest.fixture(autouse=True)
def _direct_mode() -> Iterator[None]:
    previous = _triton_launch.launch_mode()
    _triton_launch.set_launch_mode("direct")
    yield
    _triton_launch.set_launch_mode(previous)


def _launcher(kernel: FakeKernel, idle: list[bool] | None = None) -> Launcher:
    hooks = idle if idle is not None else [True]
    return Launcher(kernel, ("C", "BLOCK"), stream=lambda device: 1000 + device, hooks_idle=lambda: hooks[0])


def test_first_launch_jit_then_direct_with_the_same_arguments() -> None:
    kernel = FakeKernel()
    launch = _launcher(kernel)
    x, y = torch.zeros(64), torch.zeros(32, dtype=torch.int64)
    launch((4, 2, 1), 0, (x, y, 7, 0.5), (1, 128))
    assert kernel.jit_calls == [((4, 2, 1), (x, y, 7, 0.5), {"C": 1, "BLOCK": 128})]
    assert kernel.direct_calls == []
    launch((5, 3, 1), 0, (x, y, 7, 0.5), (1, 128))
    assert len(kernel.jit_calls) == 1
    ((grid0, grid1, grid2, stream, function, packed, meta, enter, leave, *args),) = kernel.direct_calls
    assert (grid0, grid1, grid2, stream) == (5, 3, 1, 1000)
    assert packed == ("meta",) and function is not None
    assert (meta, enter, leave) == (None, None, None)
    assert args == [x, y, 7, 0.5, 1, 128]  # runtime arguments, then the constexprs in signature order
    assert (launch.jit_launches, launch.direct_launches) == (1, 1)


@pytest.mark.parametrize(
    "change",
    ["constexpr", "dtype", "alignment", "int_one", "int_div16", "int64", "device"],
)
def test_a_new_specialization_goes_through_the_jit(change: str) -> None:
    kernel = FakeKernel()
    launch = _launcher(kernel)
    base = torch.zeros(64, dtype=torch.uint8)
    args: tuple[Any, ...] = (base, 2)
    launch((1, 1, 1), 0, args, (1, 128))
    constexprs, device = (1, 128), 0
    if change == "constexpr":
        constexprs = (3, 128)
    elif change == "dtype":
        args = (base.view(torch.int8), 2)
    elif change == "alignment":
        args = (base[1:], 2)  # one byte off a 16-byte boundary
    elif change == "int_one":
        args = (base, 1)
    elif change == "int_div16":
        args = (base, 32)
    elif change == "int64":
        args = (base, 2**40 + 2)
    else:
        device = 1
    launch((1, 1, 1), device, args, constexprs)
    assert len(kernel.jit_calls) == 2 and kernel.direct_calls == []
    launch((1, 1, 1), device, args, constexprs)  # now cached
    assert len(kernel.jit_calls) == 2 and len(kernel.direct_calls) == 1
    assert kernel.direct_calls[0][3] == 1000 + device


def test_same_specialization_other_values_launch_directly() -> None:
    kernel = FakeKernel()
    launch = _launcher(kernel)
    launch((1, 1, 1), 0, (torch.zeros(16), 3, 0.25), (2, 64))
    other = torch.ones(32)  # another tensor of the same dtype and alignment, other int and float values
    launch((1, 1, 1), 0, (other, 5, -1.5), (2, 64))
    assert len(kernel.jit_calls) == 1
    assert kernel.direct_calls[0][9:] == (other, 5, -1.5, 2, 64)


def test_jit_mode_never_launches_directly() -> None:
    kernel = FakeKernel()
    launch = _launcher(kernel)
    _triton_launch.set_launch_mode("jit")
    for _ in range(3):
        launch((1, 1, 1), 0, (torch.zeros(4),), (1, 16))
    assert len(kernel.jit_calls) == 3 and kernel.direct_calls == [] and kernel.compiled_made == 3


def test_registered_launch_hook_uses_the_jit() -> None:
    kernel = FakeKernel()
    idle = [True]
    launch = _launcher(kernel, idle)
    args = (torch.zeros(4),)
    launch((1, 1, 1), 0, args, (1, 16))
    idle[0] = False  # e.g. a profiler registered a launch hook
    launch((1, 1, 1), 0, args, (1, 16))
    assert len(kernel.jit_calls) == 2 and kernel.direct_calls == []
    idle[0] = True
    launch((1, 1, 1), 0, args, (1, 16))
    assert len(kernel.direct_calls) == 1


@pytest.mark.parametrize("returned", [None, object()])
def test_falls_back_to_the_jit_and_logs_once(returned: object, caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeKernel(compiled=returned)  # the interpreter returns None; an unknown Triton something else
    launch = _launcher(kernel)
    with caplog.at_level(logging.DEBUG, logger="rndpo.losses._triton_launch"):
        for _ in range(3):
            launch((1, 1, 1), 0, (torch.zeros(4),), (1, 16))
    assert not launch.direct_available
    assert len(kernel.jit_calls) == 3
    assert sum("direct Triton launch unavailable" in r.getMessage() for r in caplog.records) == 1


def test_compile_future_is_resolved() -> None:
    compiled = FakeCompiled([])

    class Future:
        def result(self) -> FakeCompiled:
            return compiled

    kernel = FakeKernel(compiled=Future())
    launch = _launcher(kernel)
    launch((1, 1, 1), 0, (torch.zeros(4),), (1, 16))
    launch((1, 1, 1), 0, (torch.zeros(4),), (1, 16))
    assert len(kernel.jit_calls) == 1 and len(compiled.calls) == 1


def test_bad_mode_and_argument_are_named() -> None:
    with pytest.raises(ValueError, match="mode must be one of 'jit', 'direct', got 'fast'"):
        _triton_launch.set_launch_mode("fast")
    with pytest.raises(ValueError, match="RNDPO_TRITON_LAUNCH must be one of 'jit', 'direct', got 'x'"):
        _triton_launch._read_mode("x")
    with pytest.raises(TypeError, match="unsupported kernel argument of type str"):
        _launcher(FakeKernel())((1, 1, 1), 0, ("s",), (1, 16))


def test_hooks_idle_reads_triton_launch_hooks() -> None:
    triton = pytest.importorskip("triton")
    runtime = getattr(getattr(triton, "knobs", None), "runtime", None)
    if runtime is None or not hasattr(runtime.launch_enter_hook, "add"):
        pytest.skip("this Triton has no HookChain launch hooks")

    def hook(metadata: object) -> None:
        pass

    assert _triton_launch._hooks_idle()
    runtime.launch_enter_hook.add(hook)
    try:
        assert not _triton_launch._hooks_idle()
    finally:
        runtime.launch_enter_hook.remove(hook)
    assert _triton_launch._hooks_idle()
