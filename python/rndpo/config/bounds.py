"""Documented bounds of config values, checked when a config is read (before any folder is made).

A value inside a key's type can still fail hours later: beta = 1e300 overflows float32 after base
training, a 230-byte method name makes a run file name the file system refuses, ``max_region = 2**64``
leaves the Rust core's integer range. Every section calls :func:`check_bounds` last in its
``__post_init__`` and :class:`~rndpo.config.run.RunConfig` calls :func:`check_run`; each refusal is a
:class:`~rndpo.config.errors.ConfigError` naming the key, the bound and the value. The bounds:

* ``methods.*.beta`` in [1e-6, 1e4]: beta * margin stays far inside float32 (a margin of 2**31 voxels
  times a logit gap of 100 is about 2e11; times 1e4, 2e15); below 1e-6 the preference gradient per voxel
  falls under AdamW's eps (1e-8) for regions of 100 voxels or more, so training learns nothing.
* ``methods.*.region_power`` in [0, 4]: |D| ** p <= (2**31) ** 4 = 2**124 stays below float32's largest
  number (about 2**128), and the normalised margin m / |D| ** p of a per-voxel logit shift d (about
  d * 2**-93 at |D| = 2**31) stays a normal float32 down to d of about 1e-4 even at beta = 1e-6.
* loss weights (``anchor_weight``, ``chosen_sft_weight``, ``judges.qc_rank_weight``) in [0, 1e4].
* ``[base]`` / ``[finetune]`` ``lr`` in (0, 1] and ``lr * weight_decay < 1`` (AdamW multiplies the
  weights by 1 - lr * weight_decay every step).
* ``proposals.k`` and ``judges.qc_synthetic`` <= 1024 (masks held per image); ``proposals.morph_radius``
  <= 64 (a ball of (2r + 1) ** 3 voxels).
* ``data.image_size`` in [8, 4096]; ``model.patch_size`` / ``model.inference_size`` entries in
  [4, 4096] with at most 2**31 voxels in all; ``model.channels`` entries in [1, 4096].
* ``mining.min_region``, ``mining.max_region``, ``mining.max_pairs_per_image`` <= 2**63 - 1 (the core's
  u64 / usize, through :func:`rndpo.mine_pairs`); ``mining.min_margin`` and every ``name:margin`` in
  [0, 1): judge scores lie in [0, 1], so a margin of 1 keeps no pair.
* ``seeds`` and ``data.seed`` in [0, 2**32 - 1]: round r reseeds with seed + 100003 (r - 1), and every
  seed must stay within numpy's, torch's and the core's u64 ranges.
* file names: the longest file rndpo makes from a run id, the temporary copy
  ``.<method>-<judge>-<miner>-s<seed>[-r<round>]-<key>.ckpt.sha256.<8 hex>.tmp``, stays within 255 bytes.
* no silent no-op: ``noisy_oracle`` in ``judges.names`` needs at least one reliability, and judge labels
  and mining strategies must not repeat (they would name the same run and the second would be skipped).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from rndpo.config.errors import ConfigError

__all__ = [
    "BETA_RANGE",
    "FILE_NAME_BYTES",
    "LARGEST_REGION",
    "MAX_CORE_INT",
    "MAX_IMAGE_SIZE",
    "MAX_K",
    "MAX_SEED",
    "REGION_POWER_RANGE",
    "bound_text",
    "check_bounds",
    "check_run",
    "longest_file_name",
]

BETA_RANGE = (1e-6, 1e4)
REGION_POWER_RANGE = (0.0, 4.0)
LARGEST_REGION = 2**31
"""The largest disagreement region (voxels) the loss bounds are derived for."""
MAX_WEIGHT = 1e4
MAX_K = 1024
MAX_IMAGE_SIZE = 4096
MAX_CHANNELS = 4096
MAX_MORPH_RADIUS = 64
MAX_CORE_INT = 2**63 - 1
"""The largest integer :func:`rndpo.mine_pairs` passes to the core (u64 / usize)."""
MAX_SEED = 2**32 - 1
FILE_NAME_BYTES = 255
"""The longest file name (bytes) of common file systems (ext4, XFS, APFS, NTFS)."""
_KEY_CHARS = 16  # a stage key is 12 hex characters (rndpo.storage.stage_key); 4 more as a margin
_LONGEST_SUFFIX = ".ckpt.sha256"  # runs/<id>.ckpt.sha256 (also .json.sha256); models/<id>-final.json is 11
_TEMP_CHARS = len(".") + len(".0123abcd.tmp")  # storage's temporary name .<name>.<8 hex>.tmp


class _Bound(NamedTuple):
    low: float
    high: float
    why: str
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def text(self) -> str:
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{_num(self.low)}, {_num(self.high)}{right}"


def _num(value: float) -> str:
    if value == MAX_CORE_INT:
        return "2**63 - 1"
    if value == MAX_SEED:
        return "2**32 - 1"
    return f"{value:g}" if isinstance(value, float) else str(value)


_WEIGHT = _Bound(0.0, MAX_WEIGHT, "a larger weight swamps the other terms and overflows float32 losses")
_CORE = "the Rust core's u64 / usize range"
_SIZE = _Bound(4, MAX_IMAGE_SIZE, "pixels per axis")
_SEED = _Bound(0, MAX_SEED, "a 32-bit seed; rounds add 100003 per round within the core's u64")

# class name (each class of the MRO is looked up) -> field -> bound; tuples are bounded item by item
_BOUNDS: dict[str, dict[str, _Bound]] = {
    "MethodConfig": {
        "beta": _Bound(
            *BETA_RANGE, "beta * margin must stay finite in float32; below, the gradient is under AdamW's eps"
        ),
        "region_power": _Bound(
            *REGION_POWER_RANGE, "|D| ** p must stay finite in float32 for |D| up to 2**31 voxels"
        ),
        "anchor_weight": _WEIGHT,
        "chosen_sft_weight": _WEIGHT,
    },
    "OptimizerConfig": {
        "lr": _Bound(0.0, 1.0, "an AdamW step moves each weight by about lr", low_open=True),
    },
    "ProposalConfig": {
        "k": _Bound(1, MAX_K, "proposal masks held per image"),
        "morph_radius": _Bound(1, MAX_MORPH_RADIUS, "the ball holds (2r + 1) ** 3 voxels"),
    },
    "JudgeConfig": {
        "qc_rank_weight": _WEIGHT,
        "qc_synthetic": _Bound(0, MAX_K, "corrupted masks held per labeled image"),
    },
    "MiningConfig": {
        "min_margin": _Bound(
            0.0, 1.0, "judge scores lie in [0, 1]: a margin of 1 keeps no pair", high_open=True
        ),
        "min_region": _Bound(0, MAX_CORE_INT, _CORE),
        "max_region": _Bound(1, MAX_CORE_INT, _CORE),
        "max_pairs_per_image": _Bound(1, MAX_CORE_INT, _CORE),
    },
    "DataConfig": {
        "image_size": _Bound(8, MAX_IMAGE_SIZE, "pixels per side"),
        "seed": _SEED,
    },
    "ModelConfig": {
        "channels": _Bound(1, MAX_CHANNELS, "features per level"),
        "patch_size": _SIZE,
        "inference_size": _SIZE,
    },
    "RunConfig": {"seeds": _SEED},
}


def _bounds_of(cls: type) -> dict[str, _Bound]:
    out: dict[str, _Bound] = {}
    for klass in reversed(cls.__mro__):
        out.update(_BOUNDS.get(klass.__name__, {}))
    return out


def bound_text(cls: type, name: str) -> str:
    """The documented bound of field ``name`` of config class ``cls``, e.g. ``"range [1, 1024]"``, or ""."""
    bound = _bounds_of(cls).get(name)
    return "" if bound is None else f"range {bound.text()}"


def _check(value: Any, bound: _Bound, key: str) -> None:
    if value is None:
        return
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            _check(item, bound, f"{key}[{i}]")
        return
    if not bound.holds(value):
        raise ConfigError(f"{key} must be in {bound.text()} ({bound.why}), got {value!r}")


def check_bounds(obj: Any, section: str) -> None:
    """Check the fields of the config section ``obj`` against their documented bounds (module docstring).

    Call it last in ``__post_init__`` (after the type and value checks); keys are ``section.name``.
    """
    for name, bound in _bounds_of(type(obj)).items():
        _check(getattr(obj, name), bound, f"{section}.{name}" if section else name)
    for klass in type(obj).__mro__:
        extra = _EXTRA.get(klass.__name__)
        if extra is not None:
            extra(obj, section)


def _optimizer(cfg: Any, section: str) -> None:
    if cfg.lr * cfg.weight_decay >= 1:
        raise ConfigError(
            f"{section}.weight_decay must be < 1 / lr = {1 / cfg.lr:g} (AdamW scales the weights by"
            f" 1 - lr * weight_decay every step), got {cfg.weight_decay:g}"
        )


def _model(cfg: Any, section: str) -> None:
    for key in ("patch_size", "inference_size"):
        size = getattr(cfg, key)
        if size and math.prod(size) > LARGEST_REGION:
            raise ConfigError(
                f"{section}.{key} must hold at most 2**31 voxels in all, got {list(size)} ({math.prod(size)})"
            )


def _judges(cfg: Any, section: str) -> None:
    if "noisy_oracle" in cfg.names and not cfg.reliabilities:
        raise ConfigError(
            f"{section}.reliabilities is empty, so judge noisy_oracle in {section}.names would run no noisy"
            " oracle (and no method would run with it); list at least one reliability in [0, 1], e.g. [0.7],"
            " or remove noisy_oracle"
        )
    if len(set(cfg.names)) != len(cfg.names):
        raise ConfigError(
            f"{section}.names must not repeat a judge (its runs would be skipped), got {list(cfg.names)}"
        )
    labels: dict[str, float] = {}
    for rho in cfg.reliabilities if "noisy_oracle" in cfg.names else ():
        label = f"noisy_oracle@{rho:g}"
        if label in labels:
            raise ConfigError(
                f"{section}.reliabilities: {labels[label]!r} and {rho!r} give the same judge label {label}"
                " (the second run would be skipped); list each reliability once"
            )
        labels[label] = rho


def _mining(cfg: Any, section: str) -> None:
    if len(set(cfg.strategies)) != len(cfg.strategies):
        raise ConfigError(
            f"{section}.strategies must not repeat an entry (its runs would be skipped),"
            f" got {list(cfg.strategies)}"
        )
    for i, spec in enumerate(cfg.strategies):
        if ":" in spec:
            margin = cfg.parse_strategy(spec).min_margin
            _check(margin, _BOUNDS["MiningConfig"]["min_margin"], f"{section}.strategies[{i}] margin")


_EXTRA = {
    "OptimizerConfig": _optimizer,
    "ModelConfig": _model,
    "JudgeConfig": _judges,
    "MiningConfig": _mining,
}


def longest_file_name(run_id: str) -> int:
    """Bytes of the longest file name rndpo makes from ``run_id``: the temporary copy of its checkpoint's
    checksum, ``.<run_id>.ckpt.sha256.<8 hex>.tmp``."""
    return len(run_id.encode()) + len(_LONGEST_SUFFIX) + _TEMP_CHARS


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:37] + "..."


def check_run(config: Any, judge_free: tuple[str, ...], top_pick: str) -> None:
    """Cross-section bounds of a RunConfig: seeds (via :func:`check_bounds`) and the length of every run
    file name ``<method>-<judge>-<miner>-s<seed>[-r<round>]-<key>`` (see :func:`longest_file_name`)."""
    check_bounds(config, "")
    seed = f"s{max(config.seeds)}"
    rounds = f"-r{config.finetune.rounds}" if config.finetune.rounds > 1 else ""
    key = "0" * _KEY_CHARS
    labels = [label for label, _, _ in config.judges.judge_labels()]
    for name, method in config.methods.items():
        if method.objective in judge_free:
            combos = [("none", "pool", "")]
        else:
            miners = [top_pick] if method.objective == "sft_top" else list(config.mining.strategies)
            combos = [(label, miner, rounds) for label in labels for miner in miners]
        ids = {
            f"{name}-{label}-{miner}-{seed}{rnd}-{key}".replace("@", ""): miner
            for label, miner, rnd in combos
        }
        run_id = max(ids, key=longest_file_name, default="")  # the worst judge label and miner of this method
        total = longest_file_name(run_id)
        if not run_id or total <= FILE_NAME_BYTES:
            continue
        miner = ids[run_id]
        blame_miner = miner != top_pick and len(miner.encode()) > len(name.encode())
        part = miner if blame_miner else name
        where = f"mining.strategies entry {_short(miner)!r}" if blame_miner else f"methods.{_short(name)}"
        allowed = max(len(part.encode()) - (total - FILE_NAME_BYTES), 0)
        raise ConfigError(
            f"{where} is too long for a file name: run files such as"
            f" .{_short(run_id)}.ckpt.sha256.<8 hex>.tmp"
            f" would be {total} bytes, over the {FILE_NAME_BYTES}-byte limit; use at most {allowed} bytes"
            f" here, got {len(part.encode())}"
        )
