"""Fine-tuning methods: :class:`MethodConfig` (one objective and its loss options) and the named presets.

A ``[methods]`` entry is a preset name, or a table ``name = {preset = ..., <key> = value}`` that
overrides a preset's keys (see :func:`rndpo.config.run.config_from_dict`). Errors name the key as
``methods.<name>.key``.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from rndpo.config._fields import check_fields, help_text
from rndpo.config.bounds import check_bounds
from rndpo.config.errors import ConfigError
from rndpo.config.sections import AUTO

__all__ = [
    "JUDGE_FREE",
    "LOSS_TYPES",
    "METHOD_PRESETS",
    "OBJECTIVES",
    "LossType",
    "MethodConfig",
    "Normalization",
    "Objective",
]


Objective = Literal["sft_top", "preference", "mean_teacher", "pseudo_label"]
"""The fine-tuning objective families."""
OBJECTIVES: tuple[str, ...] = typing.get_args(Objective)
JUDGE_FREE = ("mean_teacher", "pseudo_label")  # semi-supervised baselines: no judge, no pairs
LossType = Literal["sigmoid", "ipo", "hinge", "robust", "cdpo"]
"""The loss types of :func:`rndpo.losses.preference.preference_loss`."""
LOSS_TYPES: tuple[str, ...] = typing.get_args(LossType)
Normalization = Literal["margin", "weight"]
"""Where :func:`rndpo.losses.preference.preference_loss` applies 1 / |D|**p: inside the sigmoid, or as a
pair weight."""


@dataclass(frozen=True, slots=True)
class MethodConfig:
    """One fine-tuning objective: pseudo-label SFT on the judge's top pick, a preference loss, or a
    judge-free semi-supervised baseline (mean teacher, confidence-filtered pseudo-labels; see
    :mod:`rndpo.losses.semi_supervised`)."""

    objective: Objective = field(default="preference", metadata=help_text("objective family"))
    loss_type: LossType = field(default="sigmoid", metadata=help_text("preference loss type"))
    beta: float = field(
        default=1.0,
        metadata=help_text(
            "inverse temperature of the preference loss; "
            "mean_teacher / pseudo_label: weight of the unlabeled term"
        ),
    )
    region_power: float = field(default=1.0, metadata=help_text("margin divided by |D|**p: 1 RN-DPO, 0 DPO"))
    normalization: Normalization = field(
        default="margin", metadata=help_text("apply 1/|D|**p inside the sigmoid (margin) or as a pair weight")
    )
    label_smoothing: float | Literal["auto"] = field(
        default=0.0,
        metadata=help_text(
            'robust/cdpo: assumed label-flip rate, or "auto": the judge\'s flip rate estimated on validation'
        ),
    )
    anchor_weight: float = field(
        default=1.0, metadata=help_text("weight of a supervised term on labeled images (0: none)")
    )
    chosen_sft_weight: float = field(
        default=0.0,
        metadata=help_text(
            "preference: weight of an SFT term towards each pair's chosen mask, as in RPO (0: none)"
        ),
    )
    ema_decay: float = field(default=0.99, metadata=help_text("mean_teacher: EMA decay of the teacher"))
    confidence: float = field(
        default=0.9,
        metadata=help_text("pseudo_label: keep pixels whose base probability max(p, 1-p) >= this"),
    )

    def __post_init__(self) -> None:
        check_fields(self, "methods.<name>")
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
        check_bounds(self, "methods.<name>")

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
