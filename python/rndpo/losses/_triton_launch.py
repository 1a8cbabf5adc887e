"""Low-overhead launches of Triton kernels: the compiled kernel cached per specialization, launched directly.

``kernel[grid](*args, **constexprs)`` (``JITFunction.run``) binds the arguments, computes the
specialization key, looks the compiled kernel up and builds launch metadata on every call: tens of
microseconds of host time per launch, more than the GPU work of the loss kernels. :class:`Launcher`
does that once per specialization: the first launch with a given key goes through the JIT (compiling
if needed) and keeps the ``CompiledKernel`` it returns; later launches with the same key call
``compiled.run(grid..., stream, function, packed_metadata, None, None, None, *args)``, the call that
``JITFunction.run`` itself ends with (same signature in Triton 3.6 and 3.9).

The key is at least as fine as Triton's own specialization (so a cached kernel is never launched with
arguments it was not compiled for): the device index, the constexpr values, and per runtime argument
its dtype and 16-byte alignment (tensors) or whether it equals 1, is divisible by 16 and fits in
int32 / uint64 (integers); Python floats are always passed as float32.

Switch: ``RNDPO_TRITON_LAUNCH=jit|direct`` (read at import; :func:`set_launch_mode` changes it at run
time); default ``direct``. Direct launching falls back to the JIT for good (logged once at debug level)
when the JIT returns no compiled kernel with ``run``, ``function`` and ``packed_metadata`` (Triton's
interpreter, or an unknown Triton version), and per launch while a Triton launch hook is registered
(profilers such as proton need the JIT's launch metadata).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

__all__ = ["LAUNCH_ENV", "LAUNCH_MODES", "Launcher", "launch_mode", "set_launch_mode"]

LAUNCH_ENV = "RNDPO_TRITON_LAUNCH"
LAUNCH_MODES = ("jit", "direct")
_log = logging.getLogger(__name__)


def _read_mode(value: str | None) -> str:
    mode = value or "direct"
    if mode not in LAUNCH_MODES:
        raise ValueError(f"{LAUNCH_ENV} must be one of 'jit', 'direct', got {mode!r}")
    return mode


_mode = _read_mode(os.environ.get(LAUNCH_ENV))


def launch_mode() -> str:
    """The current launch mode, 'jit' or 'direct'."""
    return _mode


def set_launch_mode(mode: str) -> None:
    """Switch every :class:`Launcher` to 'jit' (Triton's own launch path) or 'direct'."""
    global _mode
    if mode not in LAUNCH_MODES:
        raise ValueError(f"mode must be one of 'jit', 'direct', got {mode!r}")
    _mode = mode


def _arg_key(value: object) -> Hashable:
    """The part of Triton's specialization that one runtime argument can change."""
    if isinstance(value, torch.Tensor):
        return (value.dtype, value.data_ptr() % 16 == 0)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return (value == 1, value % 16 == 0, -(2**31) <= value < 2**31, 0 <= value < 2**64)
    if isinstance(value, float):
        return "float"
    raise TypeError(f"Launcher: unsupported kernel argument of type {type(value).__name__}")


def _knobs_runtime() -> Any:
    """triton.knobs.runtime (Triton >= 3.4), or None."""
    try:
        import triton
    except ImportError:  # pragma: no cover - Launcher is only built where triton imports
        return None
    return getattr(getattr(triton, "knobs", None), "runtime", None)


_RUNTIME = _knobs_runtime()


def _hooks_idle() -> bool:
    """Whether no Triton launch hook is registered (the direct launch passes none). Hooks are
    ``HookChain`` objects in Triton 3.6-3.9 (idle when their ``calls`` list is empty), None in some
    other versions."""
    if _RUNTIME is None:
        return True
    enter, leave = _RUNTIME.launch_enter_hook, _RUNTIME.launch_exit_hook
    return (enter is None or not getattr(enter, "calls", True)) and (
        leave is None or not getattr(leave, "calls", True)
    )


_stream_getter: Callable[[int], Any] | None = None


def _current_stream(device: int) -> Any:
    """The raw handle of torch's current CUDA stream on ``device`` (what Triton launches on)."""
    global _stream_getter
    if _stream_getter is None:
        from triton.runtime import driver

        _stream_getter = driver.active.get_current_stream
    return _stream_getter(device)


class Launcher:
    """``kernel[grid](*args, **constexprs)`` with the compiled kernel cached per specialization.

    kernel: a ``triton.jit`` function (or anything indexable by a grid that returns a launcher);
    constexpr_names: the names of its constexpr parameters, which must be its last parameters, in
    signature order; stream: device index -> raw stream handle (tests pass a fake). Counters
    ``jit_launches`` and ``direct_launches`` count the launches of each kind.
    """

    def __init__(
        self,
        kernel: Any,
        constexpr_names: Sequence[str],
        *,
        stream: Callable[[int], Any] = _current_stream,
        hooks_idle: Callable[[], bool] = _hooks_idle,
    ) -> None:
        self.kernel = kernel
        self.constexpr_names = tuple(constexpr_names)
        self.direct_available = True
        self.jit_launches = 0
        self.direct_launches = 0
        self._cache: dict[Hashable, Any] = {}
        self._stream = stream
        self._hooks_idle = hooks_idle

    def __call__(
        self, grid: tuple[int, int, int], device: int, args: tuple[Any, ...], constexprs: tuple[Any, ...]
    ) -> None:
        """Launch on ``grid`` (3 ints) on CUDA device index ``device`` (ignored by the JIT path, which
        uses the current device) with runtime ``args`` and ``constexprs`` (values, in the order of
        ``constexpr_names``)."""
        if _mode == "direct" and self.direct_available:
            key = (device, constexprs, *[_arg_key(a) for a in args])
            compiled = self._cache.get(key)
            if compiled is not None and self._hooks_idle():
                compiled.run(
                    grid[0],
                    grid[1],
                    grid[2],
                    self._stream(device),
                    compiled.function,
                    compiled.packed_metadata,
                    None,  # launch metadata: only launch hooks read it, and none is registered
                    None,
                    None,
                    *args,
                    *constexprs,
                )
                self.direct_launches += 1
                return
            compiled = self._jit(grid, args, constexprs)
            if compiled is None or hasattr(compiled, "result"):  # None (interpreter) or a compile future
                compiled = getattr(compiled, "result", lambda: None)()
            if all(
                getattr(compiled, name, None) is not None for name in ("run", "function", "packed_metadata")
            ):
                self._cache[key] = compiled
            else:
                self.direct_available = False
                _log.debug(
                    "rndpo: direct Triton launch unavailable for %s (the JIT returned %s); using the JIT",
                    getattr(self.kernel, "__name__", self.kernel),
                    type(compiled).__name__,
                )
            return
        self._jit(grid, args, constexprs)

    def _jit(self, grid: tuple[int, int, int], args: tuple[Any, ...], constexprs: tuple[Any, ...]) -> Any:
        self.jit_launches += 1
        return self.kernel[grid](*args, **dict(zip(self.constexpr_names, constexprs, strict=True)))
