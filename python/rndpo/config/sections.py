"""The sections of a run config: one frozen dataclass per TOML table, with its vocabularies.

``[model]`` :class:`ModelConfig`, ``[base]`` :class:`BaseTrainConfig`,
``[proposals]`` :class:`ProposalConfig`, ``[judges]`` :class:`JudgeConfig`, ``[mining]``
:class:`MiningConfig` and ``[finetune]`` :class:`FinetuneConfig`; base training and fine-tuning share the
optimizer fields of :class:`OptimizerConfig`. Every field has a default and a help text; every section
checks its fields in ``__post_init__`` (types first, then values), so a section built in Python and one
read from TOML fail alike: :class:`~rndpo.config.errors.ConfigError` naming ``section.key``.
``[data]`` is :class:`~rndpo.config.data.DataConfig`, in its own module.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, cast

from rndpo.config._fields import check_fields, help_text
from rndpo.config.bounds import check_bounds
from rndpo.config.data import DataConfig
from rndpo.config.errors import ConfigError

__all__ = [  # DataConfig is handed on from rndpo.config.data
    "AUTO",
    "JUDGE_NAMES",
    "LABEL_FREE_JUDGES",
    "NETWORK_NAMES",
    "PROPOSAL_SOURCES",
    "STRATEGIES",
    "TOP_PICK",
    "BaseTrainConfig",
    "DataConfig",
    "FinetuneConfig",
    "JudgeConfig",
    "MinerSpec",
    "MiningConfig",
    "ModelConfig",
    "NetworkName",
    "OptimizerConfig",
    "ProposalConfig",
    "Schedule",
    "Strategy",
    "UncertaintyMode",
]

AUTO = "auto"
"""``mining.strategies = ["auto"]`` and ``label_smoothing = "auto"``: resolved from the validation
calibration of the judge (see :mod:`rndpo.judges.calibration`)."""


NetworkName = Literal["rndpo.UNet", "monai.UNet", "monai.BasicUNet", "monai.SegResNet"]
"""The networks :func:`rndpo.nets.build_network` builds (``monai.*``: needs MONAI installed)."""
NETWORK_NAMES: tuple[str, ...] = typing.get_args(NetworkName)
_DATA_SET_KWARGS = ("spatial_dims", "in_channels", "out_channels")  # build_network's own arguments


def _check_toml_value(value: Any, key: str) -> None:
    """``value`` must be writable as TOML (so a config prints and reads back): no None, finite floats."""
    if isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_toml_value(item, f"{key}[{i}]")
        return
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigError(f"{key} must be a table with string keys, got key {name!r}")
            _check_toml_value(item, f"{key}.{name}")
        return
    raise ConfigError(
        f"{key} must be a number, string, boolean, list or table (a TOML value), "
        f"got {type(value).__name__} {value!r}"
    )


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The segmentation network (built by rndpo.nets.build_network)."""

    name: NetworkName = field(
        default="rndpo.UNet", metadata=help_text("network (monai.*: needs MONAI installed)")
    )
    channels: tuple[int, ...] = field(
        default=(8, 16, 32, 64),
        metadata=help_text("rndpo.UNet: features per level (small enough for 2 CPU cores)"),
    )
    dropout: float = field(
        default=0.1,
        metadata=help_text(
            "dropout probability (MC-dropout proposals): rndpo.UNet's, and set on networks that take one"
        ),
    )
    kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=help_text(
            "further keyword arguments of the network, an inline table, e.g. {init_filters = 16}"
            " (spatial dims and channels come from the data)"
        ),
    )
    spatial_dims: int | None = field(
        default=None, metadata=help_text("2 or 3 (unset: from the data; set, it must match the data)")
    )
    patch_size: tuple[int, ...] = field(
        default=(),
        metadata=help_text(
            "training patches (foreground oversampled), one int per spatial axis, e.g. [32, 48, 32]"
            " (empty: whole images)"
        ),
    )
    inference_size: tuple[int, ...] = field(
        default=(),
        metadata=help_text(
            "sliding-window inference size, one int per spatial axis, clipped to each image (empty:"
            " patch_size); a window the image's size predicts it whole, in one pass"
        ),
    )

    def __post_init__(self) -> None:
        check_fields(self, "model")
        if self.spatial_dims not in (None, 2, 3):
            raise ConfigError(f"model.spatial_dims must be 2 or 3 (or left out), got {self.spatial_dims}")
        dims = self.spatial_dims or (len(self.patch_size) if self.patch_size else None)
        for key in ("patch_size", "inference_size"):
            size = getattr(self, key)
            bad = len(size) not in (2, 3) or any(p < 4 for p in size) or dims not in (None, len(size))
            if size and bad:
                raise ConfigError(
                    f"model.{key} must be one int >= 4 per spatial axis (2 or 3 of them, as"
                    f" model.spatial_dims and model.patch_size), got {list(size)}"
                )
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"model.channels must be positive integers, got {list(self.channels)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for key, value in self.kwargs.items():
            if key in _DATA_SET_KWARGS:
                raise ConfigError(f"model.kwargs.{key} is set from the data; leave it out")
            _check_toml_value(value, f"model.kwargs.{key}")
        object.__setattr__(self, "kwargs", dict(self.kwargs))  # a copy: the caller's dict may change
        check_bounds(self, "model")


Schedule = Literal["cosine", "constant"]
"""Learning-rate schedules: cosine decay to 5% of lr, or constant (after any warm-up)."""


WARMUP_HELP = help_text("linear learning-rate warm-up from lr/warmup_steps (0: none)")


@dataclass(frozen=True, slots=True)
class OptimizerConfig:
    """AdamW steps, batch size and learning-rate schedule: the fields [base] and [finetune] share.

    A subclass names its TOML table in ``SECTION`` (the prefix of its error messages) and calls
    ``OptimizerConfig.__post_init__(self)`` before its own checks.
    """

    SECTION: ClassVar[str] = "optimizer"

    steps: int = field(default=300, metadata=help_text("optimizer steps"))
    batch_size: int = field(
        default=16,
        metadata=help_text(
            "images (base; sampled without replacement per epoch) or pairs (finetune) per step"
        ),
    )
    lr: float = field(default=2e-3, metadata=help_text("AdamW peak learning rate"))
    weight_decay: float = field(default=0.0, metadata=help_text("AdamW weight decay"))
    schedule: Schedule = field(
        default="cosine",
        metadata=help_text("learning rate (after any warm-up): cosine decay to 5% of lr, or constant"),
    )
    warmup_steps: int = field(default=0, metadata=WARMUP_HELP)

    def __post_init__(self) -> None:
        section = self.SECTION
        check_fields(self, section)
        for key in ("steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{section}.{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"{section}.lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"{section}.weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"{section}.warmup_steps must be >= 0, got {self.warmup_steps}")
        check_bounds(self, section)


@dataclass(frozen=True, slots=True)
class BaseTrainConfig(OptimizerConfig):
    """Settings of :func:`train_base` (seed and device are its arguments, set by the run)."""

    SECTION: ClassVar[str] = "base"

    # trained to convergence by default (README, "Base training"; docs/results.md, "The converged base")
    steps: int = field(
        default=2000, metadata=help_text("optimizer steps (patience: cap before the cooldown)")
    )
    weight_decay: float = field(default=1e-4, metadata=help_text("AdamW weight decay"))  # finetune: 0
    schedule: Schedule = field(
        default="constant",
        metadata=help_text(
            "learning rate (after any warm-up): constant, or cosine decay to 5% of lr over all steps"
        ),
    )
    warmup_steps: int = field(default=30, metadata=WARMUP_HELP)
    augment: bool = field(
        default=True,
        metadata=help_text("random flips, 90-degree and small rotations, gamma/contrast/brightness"),
    )
    max_rotation: float = field(default=15.0, metadata=help_text("largest small-rotation angle in degrees"))
    flip_axes: tuple[int, ...] | None = field(
        default=None,
        metadata=help_text(
            "volumes: the axes flipped in augmentation, 0 = D, 1 = H, 2 = W (unset: all; [] none; leave"
            " out an axis along which left and right structures differ)"
        ),
    )
    eval_every: int = field(default=25, metadata=help_text("validate every this many steps (and at the end)"))
    n_snapshots: int = field(
        default=3, metadata=help_text("evenly spaced snapshot checkpoints kept for proposals")
    )
    patience: int = field(
        default=8,
        metadata=help_text(
            "stop once validation Dice (mean of the last patience_window evaluations) has not improved"
            " by min_delta for this many evaluations (0: train all steps; else steps is the cap)"
        ),
    )
    min_delta: float = field(
        default=0.0, metadata=help_text("the validation-Dice gain that counts as an improvement for patience")
    )
    patience_window: int = field(
        default=3,
        metadata=help_text("patience follows the mean validation Dice of this many latest evaluations"),
    )
    cooldown: float = field(
        default=0.2,
        metadata=help_text(
            "with patience: once it stops training (or at steps), this share of the steps trained more,"
            " the learning rate falling linearly towards 0 (0: stop at once)"
        ),
    )

    def __post_init__(self) -> None:
        OptimizerConfig.__post_init__(self)
        if self.eval_every < 1:
            raise ConfigError(f"base.eval_every must be >= 1, got {self.eval_every}")
        if self.patience < 0:
            raise ConfigError(f"base.patience must be >= 0, got {self.patience}")
        if not (math.isfinite(self.cooldown) and 0 <= self.cooldown <= 1):
            raise ConfigError(f"base.cooldown must be in [0, 1], got {self.cooldown}")
        if self.patience_window < 1:
            raise ConfigError(f"base.patience_window must be >= 1, got {self.patience_window}")
        if not (math.isfinite(self.min_delta) and 0 <= self.min_delta < 1):
            raise ConfigError(f"base.min_delta must be in [0, 1), got {self.min_delta}")
        if self.n_snapshots < 0:
            raise ConfigError(f"base.n_snapshots must be >= 0, got {self.n_snapshots}")
        if self.n_snapshots > self.steps:
            raise ConfigError(
                f"base.n_snapshots must be <= base.steps = {self.steps}, got {self.n_snapshots}"
            )
        if not 0 <= self.max_rotation <= 180:
            raise ConfigError(f"base.max_rotation must be in [0, 180] degrees, got {self.max_rotation}")
        if self.flip_axes is not None and (
            len(set(self.flip_axes)) != len(self.flip_axes) or any(a not in (0, 1, 2) for a in self.flip_axes)
        ):
            raise ConfigError(
                f"base.flip_axes must be distinct axes among 0, 1, 2, got {list(self.flip_axes)}"
            )


PROPOSAL_SOURCES: tuple[str, ...] = ("mc_dropout", "tta", "threshold", "snapshot", "morph")


@dataclass(frozen=True, slots=True)
class ProposalConfig:
    """Settings of :func:`generate_proposals` (see the module docstring for the allocation rule)."""

    k: int = field(default=8, metadata=help_text("proposals per image"))
    sources: tuple[str, ...] = field(
        default=PROPOSAL_SOURCES,
        metadata=help_text(f"proposal sources, round-robin in order; from {list(PROPOSAL_SOURCES)}"),
    )
    threshold_low: float = field(default=0.3, metadata=help_text("lowest threshold of the threshold source"))
    threshold_high: float = field(
        default=0.7, metadata=help_text("highest threshold of the threshold source")
    )
    mc_dropout_p: float | None = field(
        default=None, metadata=help_text("dropout probability while sampling (None: the model's own)")
    )
    tta_degrees: float = field(
        default=10.0, metadata=help_text("largest rotation of the tta source, in degrees")
    )
    morph_radius: int = field(default=2, metadata=help_text("largest erosion/dilation disk radius in pixels"))

    def __post_init__(self) -> None:
        check_fields(self, "proposals")
        if self.k < 1:
            raise ConfigError(f"proposals.k must be >= 1, got {self.k}")
        if not self.sources:
            raise ConfigError(f"proposals.sources must name at least one of {list(PROPOSAL_SOURCES)}")
        for s in self.sources:
            if s not in PROPOSAL_SOURCES:
                raise ConfigError(
                    f"proposals.sources: unknown source {s!r}; valid choices: {list(PROPOSAL_SOURCES)}"
                )
        if len(set(self.sources)) != len(self.sources):
            raise ConfigError(f"proposals.sources must not repeat a source, got {list(self.sources)}")
        if not 0 < self.threshold_low <= self.threshold_high < 1:
            raise ConfigError(
                "proposals.threshold_low and proposals.threshold_high must satisfy 0 < low <= high < 1, "
                f"got {self.threshold_low} and {self.threshold_high}"
            )
        if self.mc_dropout_p is not None and not 0 < self.mc_dropout_p < 1:
            raise ConfigError(
                "proposals.mc_dropout_p must be in (0, 1), or unset for the model's own, "
                f"got {self.mc_dropout_p}"
            )
        if not 0 <= self.tta_degrees <= 90:
            raise ConfigError(f"proposals.tta_degrees must be in [0, 90], got {self.tta_degrees}")
        if self.morph_radius < 1:
            raise ConfigError(f"proposals.morph_radius must be >= 1, got {self.morph_radius}")
        check_bounds(self, "proposals")


UncertaintyMode = Literal["confidence", "entropy", "boundary"]
"""The modes of the uncertainty judge."""
JUDGE_NAMES = ("oracle", "noisy_oracle", "agreement", "consensus", "uncertainty", "learned_qc", "ensemble")
LABEL_FREE_JUDGES = ("agreement", "consensus", "uncertainty", "learned_qc")
"""The judges an ``ensemble`` may combine (those that need no ground truth on the pool)."""


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Which judges score the proposals."""

    names: tuple[str, ...] = field(
        default=("agreement", "noisy_oracle"), metadata=help_text(f"judges, from {list(JUDGE_NAMES)}")
    )
    reliabilities: tuple[float, ...] = field(
        default=(0.7,), metadata=help_text("noisy_oracle: target Spearman correlations with true Dice")
    )
    uncertainty_mode: UncertaintyMode = field(
        default="confidence", metadata=help_text("uncertainty judge score")
    )
    qc_steps: int = field(default=300, metadata=help_text("learned_qc: training steps"))
    qc_synthetic: int = field(
        default=16,
        metadata=help_text("learned_qc: synthetic corruptions of each labeled mask added to training"),
    )
    qc_rank_weight: float = field(
        default=1.0,
        metadata=help_text("learned_qc: weight of the pairwise ranking loss (0: Dice regression only)"),
    )
    qc_jitter: float = field(
        default=0.1, metadata=help_text("learned_qc: training intensity jitter, in [0, 1)")
    )
    qc_tta: bool = field(
        default=True,
        metadata=help_text("learned_qc: score as the mean over the 8 flips / 90-degree rotations"),
    )

    def __post_init__(self) -> None:
        check_fields(self, "judges")
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
        check_bounds(self, "judges")

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
        metadata=help_text(
            f"from {list(STRATEGIES)}; 'name:margin' sets that miner's own min_margin; 'auto' picks"
            " top_vs_bottom, margin-filtered all_pairs or no pairs from the judge's validation calibration"
        ),
    )
    min_margin: float = field(default=0.0, metadata=help_text("keep pairs with score margin > this"))
    min_region: int = field(default=1, metadata=help_text("minimum disagreement-region size |D|"))
    max_region: int | None = field(default=None, metadata=help_text("maximum |D| (unset: no bound)"))
    max_pairs_per_image: int | None = field(default=None, metadata=help_text("cap per image (unset: no cap)"))
    max_region_fraction: float | None = field(
        default=None, metadata=help_text("keep pairs with |D| <= this * |chosen mask| (unset: no bound)")
    )

    def __post_init__(self) -> None:
        check_fields(self, "mining")
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
        check_bounds(self, "mining")

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


@dataclass(frozen=True, slots=True)
class FinetuneConfig(OptimizerConfig):
    """Preference fine-tuning against the frozen base model."""

    SECTION: ClassVar[str] = "finetune"

    warmup_steps: int = field(default=30, metadata=WARMUP_HELP)
    grad_clip: float = field(
        default=1.0, metadata=help_text("clip the gradient norm to this (0: no clipping)")
    )
    augment: bool = field(
        default=True,
        metadata=help_text("augment each batch like base training (preference: reference recomputed on it)"),
    )
    eval_every: int = field(default=25, metadata=help_text("steps between test-set evaluations"))
    final_window: int = field(
        default=3, metadata=help_text("final (sustained) Dice = mean of the last N evaluations")
    )
    rounds: int = field(
        default=1,
        metadata=help_text(
            "judge-driven runs: rounds of regenerate, re-score, re-mine, fine-tune from the last policy"
        ),
    )
    reference: Literal["base", "previous"] = field(
        default="base",
        metadata=help_text(
            "preference reference in rounds >= 2: the base model, or the previous round's policy"
        ),
    )

    def __post_init__(self) -> None:
        OptimizerConfig.__post_init__(self)
        for key in ("eval_every", "final_window", "rounds"):
            if getattr(self, key) < 1:
                raise ConfigError(f"finetune.{key} must be >= 1, got {getattr(self, key)}")
        if not self.grad_clip >= 0:
            raise ConfigError(f"finetune.grad_clip must be >= 0, got {self.grad_clip}")
