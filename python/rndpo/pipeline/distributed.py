"""The pipeline under ``torchrun``: this process's rank, a barrier, and cached stages computed by
rank 0 first (one process: plain calls)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch.distributed as dist

__all__ = [
    "barrier",
    "cached",
    "rank",
]

_T = TypeVar("_T")


def rank() -> int:
    """This process's rank under torchrun (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every rank (nothing without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cached(stage: Callable[[], _T]) -> _T:
    """A cached stage under torchrun: rank 0 computes and caches it first; after the barrier every rank
    calls it again, which reads the cache. With one process it is simply called (twice: the second
    call only reads)."""
    if rank() == 0:
        stage()
    barrier()
    return stage()
