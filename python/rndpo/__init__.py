"""rndpo: Region-Normalized DPO for medical image segmentation under noisy judges.

``import rndpo`` loads only the mining API (NumPy and the Rust core). The torch side is reached as
submodules, imported on first use: ``rndpo.losses``, ``rndpo.judges``, ``rndpo.data``, ...
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

from rndpo.mining import PairSet, PairwiseStats, mine_pairs, pairwise_stats

try:
    __version__ = version("rndpo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

_SUBMODULES = frozenset(
    {
        "config",
        "data",
        "evaluation",
        "experiment",
        "finetune",
        "inference",
        "judges",
        "losses",
        "metrics",
        "model",
        "proposals",
        "qc_model",
        "reference",
        "reliability",
        "report",
        "storage",
        "supervised",
    }
)

__all__ = ["PairSet", "PairwiseStats", "__version__", "mine_pairs", "pairwise_stats"]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"rndpo.{name}")
    raise AttributeError(f"module 'rndpo' has no attribute {name!r}")
