"""rndpo: Region-Normalized DPO for medical image segmentation under noisy judges.

``import rndpo`` loads only the mining API (NumPy and the Rust core). The torch side is reached as
submodules, imported on first use: ``rndpo.losses.preference``, ``rndpo.judges.base``, ``rndpo.data``, ...
``rndpo.load_model`` and ``rndpo.predict`` (a saved segmenter on new images) are imported the same way.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rndpo.mining import PairSet, PairwiseStats, mine_pairs, pairwise_stats

try:
    __version__ = version("rndpo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

#: the package's public submodules (every module file not starting with "_"), imported on first use
_SUBMODULES = frozenset(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))

#: functions of torch-side submodules, reachable as ``rndpo.<name>`` and imported on first use
_LAZY_FUNCTIONS = {"load_model": "nets", "predict": "inference"}

__all__ = ["PairSet", "PairwiseStats", "__version__", "load_model", "mine_pairs", "pairwise_stats", "predict"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"rndpo.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(f"rndpo.{_LAZY_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module 'rndpo' has no attribute {name!r}")
