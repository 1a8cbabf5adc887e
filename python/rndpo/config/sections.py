"""Experiment configuration: one frozen dataclass per concern, read from TOML with clear errors.

A run config is a TOML file with the tables ``[data]``, ``[model]``, ``[base]``, ``[proposals]``,
``[judges]``, ``[mining]``, ``[finetune]`` and ``[methods]``, plus top-level ``seeds`` and ``device``.
Every field has a default, so an empty file is the built-in synthetic demo. Unknown keys and invalid
choices raise :class:`ConfigError` naming the key, the valid choices and the value received.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


__all__ = [
    "AUTO",
    "JUDGE_FREE",
    "JUDGE_NAMES",
    "LABEL_FREE_JUDGES",
    "LOSS_TYPES",
    "METHOD_PRESETS",
    "PROPOSAL_SOURCES",
    "STRATEGIES",
    "TOP_PICK",
    "BaseTrainConfig",
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "JudgeConfig",
    "LossType",
    "MethodConfig",
    "MinerSpec",
    "MiningConfig",
    "ModelConfig",
    "Normalization",
    "ProposalConfig",
    "RunConfig",
    "Strategy",
    "UncertaintyMode",
    "check_path_name",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "read_toml",
]


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_path_name(name: object, key: str) -> str:
    """``name`` if it is safe as one path component (``[A-Za-z0-9_.-]+``, not ``.`` or ``..``).

    Raises ValueError naming ``key`` otherwise.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"{key} must be a plain name of letters, digits, '_', '.' and '-' (no path separators, "
            f"not '.' or '..'), got {name!r}"
        )
    return name


def _literal_choices(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return None


def _check_literals(obj: Any, prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        choices = _literal_choices(hints[f.name])
        if choices is not None and getattr(obj, f.name) not in choices:
            raise ConfigError(
                f"{prefix}.{f.name} must be one of {list(choices)}, got {getattr(obj, f.name)!r}"
            )


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Where images and masks come from and how they are split."""

    kind: Literal["synthetic", "npz", "folder", "nifti"] = field(
        default="synthetic", metadata=_help("dataset source")
    )
    path: str = field(default="", metadata=_help("npz file, or folder (folder: images/ and masks/ inside)"))
    mask_path: str = field(default="", metadata=_help("folder: mask folder (default: <path>/masks)"))
    mask_suffix: str = field(default="", metadata=_help("folder: suffix of mask file stems, e.g. _mask"))
    nifti_images: tuple[str, ...] = field(default=(), metadata=_help("nifti: image volume paths"))
    nifti_masks: tuple[str, ...] = field(default=(), metadata=_help("nifti: mask volume paths"))
    nifti_axis: int = field(default=2, metadata=_help("nifti: slicing axis"))
    image_size: int = field(
        default=64, metadata=_help("square size images are resized to (synthetic: generated at)")
    )
    n_images: int = field(default=400, metadata=_help("synthetic: number of images"))
    group_by: Literal["none", "id_prefix"] = field(
        default="none", metadata=_help("npz: group ids so that a group never crosses splits")
    )
    label_budget: float = field(
        default=0.1, metadata=_help("labeled share of the train pool (<=1) or count (>1)")
    )
    val_fraction: float = field(default=0.1, metadata=_help("validation share"))
    test_fraction: float = field(default=0.2, metadata=_help("test share"))
    max_unlabeled: int | None = field(
        default=None, metadata=_help("cap on unlabeled images used for proposals (unset: all)")
    )
    unlabeled_path: str = field(
        default="",
        metadata=_help(
            "truly unlabeled pool: npz with images only, or a folder of images; the labeled set then"
            " gives only train/val/test (label_budget unused)"
        ),
    )
    seed: int = field(default=0, metadata=_help("data generation and split seed"))

    def __post_init__(self) -> None:
        _check_literals(self, "data")
        if self.kind != "synthetic" and self.kind != "nifti" and not self.path:
            raise ConfigError(f"data.path is required for data.kind = {self.kind!r}")
        if self.kind == "nifti" and (
            not self.nifti_images or len(self.nifti_images) != len(self.nifti_masks)
        ):
            raise ConfigError(
                "data.nifti_images and data.nifti_masks must be non-empty lists of equal length"
            )
        if self.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8, got {self.image_size}")
        budget = self.label_budget
        if not (0 < budget < 1 or (budget > 1 and math.isfinite(budget) and budget == int(budget))):
            raise ConfigError(
                "data.label_budget must be a share in (0, 1) or a whole count of labeled images > 1, "
                f"got {budget}"
            )
        if self.max_unlabeled is not None and self.max_unlabeled < 1:
            raise ConfigError(
                f"data.max_unlabeled must be >= 1, or left out for no cap, got {self.max_unlabeled}"
            )


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """U-Net architecture."""

    channels: tuple[int, ...] = field(
        default=(8, 16, 32, 64), metadata=_help("features per level (small enough for 2 CPU cores)")
    )
    dropout: float = field(default=0.1, metadata=_help("dropout probability (MC-dropout proposals)"))

    def __post_init__(self) -> None:
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"model.channels must be positive integers, got {list(self.channels)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


# --- base training and proposals (validated in __post_init__; read by supervised.py, proposals.py)


@dataclass(frozen=True, slots=True)
class BaseTrainConfig:
    """Settings of :func:`train_base`."""

    steps: int = field(default=300, metadata=_help("optimizer steps"))
    batch_size: int = field(
        default=16, metadata=_help("images per step (sampled without replacement per epoch)")
    )
    lr: float = field(default=2e-3, metadata=_help("AdamW learning rate (peak of the cosine schedule)"))
    weight_decay: float = field(default=1e-4, metadata=_help("AdamW weight decay"))
    schedule: Literal["cosine", "constant"] = field(
        default="cosine", metadata=_help("learning-rate schedule: cosine decay to 5% of lr, or constant")
    )
    augment: bool = field(
        default=True, metadata=_help("random flips, 90-degree and small rotations, gamma/contrast/brightness")
    )
    max_rotation: float = field(default=15.0, metadata=_help("largest small-rotation angle in degrees"))
    eval_every: int = field(default=25, metadata=_help("validate every this many steps (and at the end)"))
    n_snapshots: int = field(
        default=3, metadata=_help("evenly spaced snapshot checkpoints kept for proposals")
    )
    seed: int = field(default=0, metadata=_help("seed of batch sampling, augmentation and dropout"))
    device: str = field(default="cpu", metadata=_help("torch device, e.g. cpu or cuda"))

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if (
            isinstance(self.n_snapshots, bool)
            or not isinstance(self.n_snapshots, int)
            or self.n_snapshots < 0
        ):
            raise ValueError(f"n_snapshots must be an int >= 0, got {self.n_snapshots!r}")
        if self.n_snapshots > self.steps:
            raise ValueError(f"n_snapshots must be <= steps = {self.steps}, got {self.n_snapshots}")
        for name in ("lr", "weight_decay", "max_rotation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.max_rotation <= 180:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {self.max_rotation}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be one of ['cosine', 'constant'], got {self.schedule!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


PROPOSAL_SOURCES: tuple[str, ...] = ("mc_dropout", "tta", "threshold", "snapshot", "morph")


@dataclass(frozen=True, slots=True)
class ProposalConfig:
    """Settings of :func:`generate_proposals` (see the module docstring for the allocation rule)."""

    k: int = field(default=8, metadata=_help("proposals per image"))
    sources: tuple[str, ...] = field(
        default=PROPOSAL_SOURCES,
        metadata=_help(f"proposal sources, round-robin in order; from {list(PROPOSAL_SOURCES)}"),
    )
    threshold_low: float = field(default=0.3, metadata=_help("lowest threshold of the threshold source"))
    threshold_high: float = field(default=0.7, metadata=_help("highest threshold of the threshold source"))
    mc_dropout_p: float | None = field(
        default=None, metadata=_help("dropout probability while sampling (None: the model's own)")
    )
    tta_degrees: float = field(default=10.0, metadata=_help("largest rotation of the tta source, in degrees"))
    morph_radius: int = field(default=2, metadata=_help("largest erosion/dilation disk radius in pixels"))
    seed: int = field(default=0, metadata=_help("seed of the MC-dropout samples"))

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive int, got {self.k!r}")
        if not isinstance(self.sources, tuple) or not self.sources:
            raise ValueError(
                f"sources must be a non-empty tuple from {list(PROPOSAL_SOURCES)}, got {self.sources!r}"
            )
        for s in self.sources:
            if s not in PROPOSAL_SOURCES:
                raise ValueError(f"sources entries must be one of {list(PROPOSAL_SOURCES)}, got {s!r}")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources must not repeat a source, got {list(self.sources)}")
        for name in ("threshold_low", "threshold_high", "tta_degrees"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0 < self.threshold_low <= self.threshold_high < 1:
            raise ValueError(
                "threshold_low and threshold_high must satisfy 0 < low <= high < 1, "
                f"got {self.threshold_low} and {self.threshold_high}"
            )
        if self.mc_dropout_p is not None and not 0 < self.mc_dropout_p < 1:
            raise ValueError(f"mc_dropout_p must be None or in (0, 1), got {self.mc_dropout_p}")
        if not 0 <= self.tta_degrees <= 90:
            raise ValueError(f"tta_degrees must be in [0, 90], got {self.tta_degrees}")
        if (
            isinstance(self.morph_radius, bool)
            or not isinstance(self.morph_radius, int)
            or self.morph_radius < 1
        ):
            raise ValueError(f"morph_radius must be a positive int, got {self.morph_radius!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")


UncertaintyMode = Literal["confidence", "entropy", "boundary"]
"""The modes of the uncertainty judge."""
JUDGE_NAMES = ("oracle", "noisy_oracle", "agreement", "consensus", "uncertainty", "learned_qc", "ensemble")
LABEL_FREE_JUDGES = ("agreement", "consensus", "uncertainty", "learned_qc")
"""The judges an ``ensemble`` may combine (those that need no ground truth on the pool)."""
AUTO = "auto"
"""``mining.strategies = ["auto"]`` and ``label_smoothing = "auto"``: resolved from the validation
calibration of the judge (see :mod:`rndpo.judges.calibration`)."""


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Which judges score the proposals."""

    names: tuple[str, ...] = field(
        default=("agreement", "noisy_oracle"), metadata=_help(f"judges, from {list(JUDGE_NAMES)}")
    )
    reliabilities: tuple[float, ...] = field(
        default=(0.7,), metadata=_help("noisy_oracle: target Spearman correlations with true Dice")
    )
    uncertainty_mode: UncertaintyMode = field(default="confidence", metadata=_help("uncertainty judge score"))
    qc_steps: int = field(default=300, metadata=_help("learned_qc: training steps"))
    qc_synthetic: int = field(
        default=16, metadata=_help("learned_qc: synthetic corruptions of each labeled mask added to training")
    )
    qc_rank_weight: float = field(
        default=1.0,
        metadata=_help("learned_qc: weight of the pairwise ranking loss (0: Dice regression only)"),
    )
    qc_jitter: float = field(default=0.1, metadata=_help("learned_qc: training intensity jitter, in [0, 1)"))
    qc_tta: bool = field(
        default=True, metadata=_help("learned_qc: score as the mean over the 8 flips / 90-degree rotations")
    )

    def __post_init__(self) -> None:
        _check_literals(self, "judges")
        for name in self.names:
            if name not in JUDGE_NAMES:
                raise ConfigError(f"judges.names: unknown judge {name!r}; valid choices: {list(JUDGE_NAMES)}")
        if not self.names:
            raise ConfigError("judges.names must name at least one judge")
        for rho in self.reliabilities:
            if not 0.0 <= rho <= 1.0:
                raise ConfigError(f"judges.reliabilities must lie in [0, 1], got {rho}")
        if self.qc_steps < 1:
            raise ConfigError(f"judges.qc_steps must be >= 1, got {self.qc_steps}")
        if self.qc_synthetic < 0:
            raise ConfigError(f"judges.qc_synthetic must be >= 0, got {self.qc_synthetic}")
        if not (math.isfinite(self.qc_rank_weight) and self.qc_rank_weight >= 0):
            raise ConfigError(f"judges.qc_rank_weight must be a finite float >= 0, got {self.qc_rank_weight}")
        if not 0.0 <= self.qc_jitter < 1.0:
            raise ConfigError(f"judges.qc_jitter must lie in [0, 1), got {self.qc_jitter}")

    def judge_labels(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(label, judge name, kwargs) for each judge to run; one noisy oracle per reliability."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        for name in self.names:
            if name == "noisy_oracle":
                out += [(f"noisy_oracle@{rho:g}", name, {"reliability": rho}) for rho in self.reliabilities]
            elif name == "uncertainty":
                out.append((name, name, {"mode": self.uncertainty_mode}))
            else:
                out.append((name, name, {}))
        return out


Strategy = Literal["top_vs_bottom", "top_vs_rest", "adjacent", "all_pairs", "top_vs_random", "random"]
"""The pairing strategies of :func:`rndpo.mine_pairs` (the Rust core's ``Strategy::NAMES``, same order)."""
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
TOP_PICK = "top1"
"""The miner name of ``sft_top`` runs: the judge's top-ranked proposal per image, not a pair strategy."""


class MinerSpec(NamedTuple):
    """One entry of ``mining.strategies`` parsed: the strategy and the min_margin it mines with."""

    name: Strategy
    min_margin: float


@dataclass(frozen=True, slots=True)
class MiningConfig:
    """How preference pairs are mined from judge scores (see :func:`rndpo.mine_pairs`)."""

    strategies: tuple[str, ...] = field(
        default=("top_vs_bottom",),
        metadata=_help(
            f"from {list(STRATEGIES)}; 'name:margin' sets that miner's own min_margin; 'auto' picks"
            " top_vs_bottom, margin-filtered all_pairs or no pairs from the judge's validation calibration"
        ),
    )
    min_margin: float = field(default=0.0, metadata=_help("keep pairs with score margin > this"))
    min_region: int = field(default=1, metadata=_help("minimum disagreement-region size |D|"))
    max_region: int | None = field(default=None, metadata=_help("maximum |D| (unset: no bound)"))
    max_pairs_per_image: int | None = field(default=None, metadata=_help("cap per image (unset: no cap)"))
    max_region_fraction: float | None = field(
        default=None, metadata=_help("keep pairs with |D| <= this * |chosen mask| (unset: no bound)")
    )

    def __post_init__(self) -> None:
        for spec in self.strategies:
            if spec != AUTO:
                self.parse_strategy(spec)
        if not self.strategies:
            raise ConfigError("mining.strategies must name at least one strategy")
        if not self.min_margin >= 0:
            raise ConfigError(f"mining.min_margin must be a number >= 0, got {self.min_margin}")
        if self.min_region < 0:
            raise ConfigError(f"mining.min_region must be >= 0, got {self.min_region}")
        for key in ("max_region", "max_pairs_per_image"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"mining.{key} must be >= 1, or left out for no limit, got {value}")
        fraction = self.max_region_fraction
        if fraction is not None and not (math.isfinite(fraction) and fraction > 0):
            raise ConfigError(
                f"mining.max_region_fraction must be a finite number > 0, or left out, got {fraction}"
            )
        if self.max_region is not None and self.max_region < self.min_region:
            raise ConfigError(
                f"mining.max_region ({self.max_region}) must be >= min_region ({self.min_region})"
            )

    def parse_strategy(self, spec: str) -> MinerSpec:
        """``"all_pairs:0.05"`` -> MinerSpec("all_pairs", 0.05); a bare name gets ``min_margin``."""
        name, _, margin = spec.partition(":")
        if name == AUTO:
            raise ConfigError(
                f"mining.strategies: {AUTO!r} takes no margin and is resolved per judge, got {spec!r}"
            )
        if name not in STRATEGIES:
            raise ConfigError(
                f"mining.strategies: unknown strategy {name!r}; valid choices: {[*STRATEGIES, AUTO]}"
            )
        if not margin:
            return MinerSpec(cast(Strategy, name), self.min_margin)
        try:
            value = float(margin)
        except ValueError:
            raise ConfigError(
                f"mining.strategies: margin of {spec!r} must be a number, got {margin!r}"
            ) from None
        if not value >= 0:
            raise ConfigError(f"mining.strategies: margin of {spec!r} must be >= 0, got {value}")
        return MinerSpec(cast(Strategy, name), value)


OBJECTIVES = ("sft_top", "preference", "mean_teacher", "pseudo_label")
JUDGE_FREE = ("mean_teacher", "pseudo_label")  # semi-supervised baselines: no judge, no pairs
LossType = Literal["sigmoid", "ipo", "hinge", "robust", "cdpo"]
"""The loss types of :func:`rndpo.losses.preference.preference_loss`."""
LOSS_TYPES: tuple[str, ...] = typing.get_args(LossType)
Normalization = Literal["margin", "weight"]
"""Where :func:`rndpo.losses.preference.preference_loss` applies 1 / |D|**p: inside the sigmoid, or as a pair weight."""


@dataclass(frozen=True, slots=True)
class MethodConfig:
    """One fine-tuning objective: pseudo-label SFT on the judge's top pick, a preference loss, or a
    judge-free semi-supervised baseline (mean teacher, confidence-filtered pseudo-labels; see
    :mod:`rndpo.losses.semi_supervised`)."""

    objective: Literal["sft_top", "preference", "mean_teacher", "pseudo_label"] = field(
        default="preference", metadata=_help("objective family")
    )
    loss_type: LossType = field(default="sigmoid", metadata=_help("preference loss type"))
    beta: float = field(
        default=1.0,
        metadata=_help(
            "inverse temperature of the preference loss; "
            "mean_teacher / pseudo_label: weight of the unlabeled term"
        ),
    )
    region_power: float = field(default=1.0, metadata=_help("margin divided by |D|**p: 1 RN-DPO, 0 DPO"))
    normalization: Normalization = field(
        default="margin", metadata=_help("apply 1/|D|**p inside the sigmoid (margin) or as a pair weight")
    )
    label_smoothing: float | Literal["auto"] = field(
        default=0.0,
        metadata=_help(
            'robust/cdpo: assumed label-flip rate, or "auto": the judge\'s flip rate estimated on validation'
        ),
    )
    anchor_weight: float = field(
        default=1.0, metadata=_help("weight of a supervised term on labeled images (0: none)")
    )
    chosen_sft_weight: float = field(
        default=0.0,
        metadata=_help(
            "preference: weight of an SFT term towards each pair's chosen mask, as in RPO (0: none)"
        ),
    )
    ema_decay: float = field(default=0.99, metadata=_help("mean_teacher: EMA decay of the teacher"))
    confidence: float = field(
        default=0.9, metadata=_help("pseudo_label: keep pixels whose base probability max(p, 1-p) >= this")
    )

    def __post_init__(self) -> None:
        _check_literals(self, "methods.<name>")
        if not 0 < self.beta < math.inf:
            raise ConfigError(f"methods.<name>.beta must be > 0 and finite, got {self.beta}")
        if not 0 <= self.region_power < math.inf:
            raise ConfigError(f"methods.<name>.region_power must be >= 0, got {self.region_power}")
        if self.label_smoothing == AUTO:
            if self.loss_type not in ("robust", "cdpo"):
                raise ConfigError(
                    'methods.<name>.label_smoothing = "auto" applies to loss_type robust or cdpo, '
                    f"got {self.loss_type!r}"
                )
        elif isinstance(self.label_smoothing, str) or not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(
                f'methods.<name>.label_smoothing must be in [0, 0.5) or "auto", got {self.label_smoothing!r}'
            )
        elif self.label_smoothing > 0 and self.loss_type not in ("robust", "cdpo"):
            raise ConfigError(
                f"methods.<name>.label_smoothing applies to loss_type robust or cdpo, got {self.loss_type!r}"
            )
        if not 0 <= self.anchor_weight < math.inf:
            raise ConfigError(f"methods.<name>.anchor_weight must be >= 0, got {self.anchor_weight}")
        if not 0 <= self.chosen_sft_weight < math.inf:
            raise ConfigError(f"methods.<name>.chosen_sft_weight must be >= 0, got {self.chosen_sft_weight}")
        if self.chosen_sft_weight > 0 and self.objective != "preference":
            raise ConfigError(
                "methods.<name>.chosen_sft_weight applies to objective preference, "
                f"got objective {self.objective!r}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"methods.<name>.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.5 <= self.confidence < 1.0:
            raise ConfigError(f"methods.<name>.confidence must be in [0.5, 1), got {self.confidence}")

    def loss_options(self) -> dict[str, Any]:
        """The keyword options of :func:`rndpo.losses.preference.preference_loss` this method sets.

        Raises ValueError while ``label_smoothing`` is still ``"auto"`` (the experiment replaces it with
        the judge's estimated flip rate first)."""
        if self.label_smoothing == AUTO:
            raise ValueError(
                'label_smoothing = "auto" must be resolved to a number before training (run_experiment'
                " uses the judge's flip rate estimated on validation)"
            )
        return {
            "beta": self.beta,
            "loss_type": self.loss_type,
            "region_power": self.region_power,
            "label_smoothing": self.label_smoothing,
            "normalization": self.normalization,
        }


# beta sets how far the policy moves before a pair saturates. For a binary mask the log-ratio margin is
# linear in the logits on D (sum over D of +-(z - z_ref)), so with Adam the step size is set by lr and beta
# only decides when sigmoid(-beta * margin) stops pulling: DPO sees the sum over D (|D| is typically
# 10^2-10^3 pixels), RN-DPO the mean, so RN-DPO's beta is about 100x DPO's. The defaults (RN-DPO 1, DPO
# 0.01) come from the fine-tuning recipe search on Kvasir-SEG (docs/results.md): at the previous 5 and
# 0.05 both saturated after a mean logit shift of about 0.6 on D and kept little of the judge's signal.
METHOD_PRESETS: dict[str, MethodConfig] = {
    "sft_top": MethodConfig(objective="sft_top"),
    "dpo": MethodConfig(loss_type="sigmoid", region_power=0.0, beta=0.01),
    "rndpo": MethodConfig(loss_type="sigmoid", region_power=1.0, beta=1.0),
    "rndpo_weight": MethodConfig(loss_type="sigmoid", region_power=1.0, beta=0.01, normalization="weight"),
    "ipo": MethodConfig(loss_type="ipo", region_power=0.0, beta=0.05),
    "rn_ipo": MethodConfig(loss_type="ipo", region_power=1.0, beta=5.0),
    "rn_hinge": MethodConfig(loss_type="hinge", region_power=1.0, beta=1.0),
    "rn_robust": MethodConfig(loss_type="robust", region_power=1.0, beta=1.0, label_smoothing=0.1),
    "rn_cdpo": MethodConfig(loss_type="cdpo", region_power=1.0, beta=1.0, label_smoothing=0.1),
    # judge-free semi-supervised baselines, each with its supervised term on the labeled images
    "mean_teacher": MethodConfig(objective="mean_teacher", beta=10.0, anchor_weight=1.0, ema_decay=0.99),
    "pseudo_label": MethodConfig(objective="pseudo_label", beta=1.0, anchor_weight=1.0, confidence=0.9),
}


@dataclass(frozen=True, slots=True)
class FinetuneConfig:
    """Preference fine-tuning against the frozen base model."""

    steps: int = field(default=300, metadata=_help("optimizer steps per run"))
    batch_size: int = field(default=16, metadata=_help("pairs per step"))
    lr: float = field(default=2e-3, metadata=_help("AdamW peak learning rate"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    schedule: Literal["constant", "cosine"] = field(
        default="cosine",
        metadata=_help("learning rate after warm-up: constant, or cosine decay to 5% of lr"),
    )
    warmup_steps: int = field(default=30, metadata=_help("linear learning-rate warm-up from lr/warmup_steps"))
    grad_clip: float = field(default=1.0, metadata=_help("clip the gradient norm to this (0: no clipping)"))
    augment: bool = field(
        default=True,
        metadata=_help("augment each batch like base training (preference: reference recomputed on it)"),
    )
    eval_every: int = field(default=25, metadata=_help("steps between test-set evaluations"))
    final_window: int = field(
        default=3, metadata=_help("final (sustained) Dice = mean of the last N evaluations")
    )
    rounds: int = field(
        default=1,
        metadata=_help(
            "judge-driven runs: rounds of regenerate, re-score, re-mine, fine-tune from the last policy"
        ),
    )
    reference: Literal["base", "previous"] = field(
        default="base",
        metadata=_help("preference reference in rounds >= 2: the base model, or the previous round's policy"),
    )

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_every", "final_window", "rounds"):
            if getattr(self, key) < 1:
                raise ConfigError(f"finetune.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"finetune.lr must be > 0 and finite, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"finetune.weight_decay must be >= 0 and finite, got {self.weight_decay}")
        _check_literals(self, "finetune")
        if self.warmup_steps < 0:
            raise ConfigError(f"finetune.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.grad_clip >= 0:
            raise ConfigError(f"finetune.grad_clip must be >= 0, got {self.grad_clip}")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A whole experiment: every (method, judge, miner, seed) combination is one fine-tuning run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    base: BaseTrainConfig = field(default_factory=BaseTrainConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    judges: JudgeConfig = field(default_factory=JudgeConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    methods: dict[str, MethodConfig] = field(
        default_factory=lambda: {k: METHOD_PRESETS[k] for k in ("sft_top", "dpo", "rndpo")},
        metadata=_help("presets, or tables name = {preset = ..., <method key> = value}"),
    )
    seeds: tuple[int, ...] = field(
        default=(0,),
        metadata=_help("one run per seed; a seed reseeds base model, proposals, judges and fine-tuning"),
    )
    device: str = field(default="cpu", metadata=_help("torch device (rndpo run: cuda when available)"))

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        needs_truth = sorted({"oracle", "noisy_oracle"} & set(self.judges.names))
        if self.data.unlabeled_path and needs_truth:
            raise ConfigError(
                f"judges.names: {needs_truth} need ground truth on the unlabeled pool, but"
                f" data.unlabeled_path = {self.data.unlabeled_path!r} has none; use label-free judges"
                " (agreement, consensus, uncertainty, learned_qc)"
            )
        if not self.methods:
            raise ConfigError("methods must name at least one method")
        negative = [s for s in self.seeds if s < 0]
        if negative:
            raise ConfigError(f"seeds must be integers >= 0, got {negative[0]}")
        comparing = [j for j in self.judges.names if j in ("agreement", "consensus", "ensemble")]
        preference = [n for n, m in self.methods.items() if m.objective == "preference"]
        if self.proposals.k < 2 and (comparing or preference):
            needs = f"judge {comparing[0]!r}" if comparing else f"preference method {preference[0]!r}"
            raise ConfigError(
                f"proposals.k must be >= 2 for {needs} (it compares proposals), got {self.proposals.k}"
            )


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "base": BaseTrainConfig,
    "proposals": ProposalConfig,
    "judges": JudgeConfig,
    "mining": MiningConfig,
    "finetune": FinetuneConfig,
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML value to the annotated field type, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last: ConfigError | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                last = err
        raise last or ConfigError(f"{key}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    return value


def _section_from_dict(cls: type, raw: Any, prefix: str, base: Any = None) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{prefix}] must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"unknown key {prefix}.{key}; valid keys: {names}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(str(err).replace("methods.<name>", prefix)) from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"[{prefix}] {err}") from None


def _methods_from_dict(raw: Any) -> dict[str, MethodConfig]:
    """``methods`` is a list of preset names, or a table of name -> {preset = ..., overrides}."""
    if isinstance(raw, list):
        out = {}
        for name in raw:
            if name not in METHOD_PRESETS:
                raise ConfigError(f"methods: unknown preset {name!r}; valid choices: {list(METHOD_PRESETS)}")
            out[name] = METHOD_PRESETS[name]
        return out
    if not isinstance(raw, Mapping):
        raise ConfigError(f"methods must be a list of presets or a table, got {type(raw).__name__}")
    methods = {}
    for name, table in raw.items():
        try:
            check_path_name(name, "methods: a method name")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not isinstance(table, Mapping):
            raise ConfigError(f"methods.{name} must be a table, got {type(table).__name__}")
        table = dict(table)
        preset = table.pop("preset", name if name in METHOD_PRESETS else None)
        if preset is not None and preset not in METHOD_PRESETS:
            raise ConfigError(
                f"methods.{name}.preset: unknown preset {preset!r}; valid: {list(METHOD_PRESETS)}"
            )
        base = METHOD_PRESETS[preset] if preset is not None else None
        methods[name] = _section_from_dict(MethodConfig, table, f"methods.{name}", base)
    return methods


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a parsed TOML mapping."""
    top = {"seeds", "device", "methods", *_SECTIONS}
    for key in raw:
        if key not in top:
            raise ConfigError(f"unknown top-level key {key!r}; valid keys: {sorted(top)}")
    kwargs: dict[str, Any] = {
        name: _section_from_dict(cls, raw[name], name) for name, cls in _SECTIONS.items() if name in raw
    }
    if "methods" in raw:
        kwargs["methods"] = _methods_from_dict(raw["methods"])
    if "seeds" in raw:
        kwargs["seeds"] = _coerce(raw["seeds"], tuple[int, ...], "seeds")
    if "device" in raw:
        kwargs["device"] = _coerce(raw["device"], str, "device")
    return RunConfig(**kwargs)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML mapping of a config file (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config."""
    return config_from_dict(read_toml(path))


def config_to_dict(config: Any) -> Any:
    """A JSON/TOML-ready dict of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [config_to_dict(v) for v in config]
    return config
