"""Stage-key pieces of the fine-tuning runs: what of a method and of ``[finetune]`` a run's key
depends on, and the per-round seeds."""

from __future__ import annotations

from typing import Any

from rndpo.config import FinetuneConfig, MethodConfig, config_to_dict

__all__ = [
    "finetune_key",
    "method_key",
    "round_note",
    "round_seed",
]


# MethodConfig fields added after runs were first cached: left out of a method's key while they hold their
# default, so adding an option does not invalidate every cached run
_METHOD_FIELDS_ADDED = ("chosen_sft_weight",)
_METHOD_DEFAULTS = config_to_dict(MethodConfig())


def method_key(method: MethodConfig) -> dict[str, Any]:
    """The part of a method a run's stage key depends on: every field, less the later-added ones that
    still hold their default (:data:`_METHOD_FIELDS_ADDED`)."""
    return {
        k: v
        for k, v in config_to_dict(method).items()
        if not (k in _METHOD_FIELDS_ADDED and v == _METHOD_DEFAULTS[k])
    }


def finetune_key(config: FinetuneConfig) -> dict[str, Any]:
    """The part of ``[finetune]`` a run's stage key depends on: everything but ``rounds`` and
    ``reference``, which key the rounds >= 2 themselves (so round 1 keeps the keys of ``rounds = 1``)."""
    return {k: v for k, v in config_to_dict(config).items() if k not in ("rounds", "reference")}


def round_seed(seed: int, round: int) -> int:
    """The seed of round ``round``'s proposals and noisy-oracle noise: ``seed`` itself in round 1."""
    return seed if round <= 1 else seed + 100_003 * (round - 1)


def round_note(round: int) -> str:
    """ " (round r)" for log lines of rounds >= 2, "" in round 1."""
    return f" (round {round})" if round > 1 else ""
