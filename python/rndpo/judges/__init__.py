"""Judges score proposals: the ``Judge`` protocol, each judge, the registry that builds them, calibration
on validation.
"""

from rndpo.judges.agreement import (
    AgreementJudge,
    ConsensusJudge,
)
from rndpo.judges.base import (
    Judge,
    TrainableJudge,
)
from rndpo.judges.calibration import (
    ABSTAIN_MAX_ACCURACY,
    AUTO_MARGIN_QUANTILE,
    MAX_LABEL_SMOOTHING,
    TOP_ANCHORED_MIN_ACCURACY,
    JudgeCalibration,
    StrategyChoice,
    auto_label_smoothing,
    calibrate_judge,
    calibrate_judges,
    choose_strategy,
    ensemble_components,
    ensemble_weights,
    margin_quantile,
    pair_accuracy,
    spearman_interval,
    top_pair_accuracy,
)
from rndpo.judges.corruptions import (
    CORRUPTION_KINDS,
    corrupt_mask,
    corruption_set,
)
from rndpo.judges.ensemble import (
    DEFAULT_COMPONENTS,
    RANKING,
    EnsembleJudge,
    rank_average,
    reliability_weights,
)
from rndpo.judges.learned_qc import (
    LearnedQCJudge,
)
from rndpo.judges.oracle import (
    NoisyOracleJudge,
    OracleJudge,
    pearson_for_spearman,
    proposal_dice,
)
from rndpo.judges.qc_model import (
    QCFitResult,
    QCNet,
    fit_qc_model,
    load_qc_model,
    predict_qc,
    save_qc_model,
    synthetic_training_set,
)
from rndpo.judges.registry import (
    JUDGE_NAMES,
    JUDGE_SPECS,
    ComponentBuilder,
    FitSource,
    JudgeLabel,
    JudgeSpec,
    build_judge,
    calibrated_kwargs,
    calibration_judges,
    calibration_settings,
    judge_settings,
    judge_spec,
    key_settings,
    make_judge,
)
from rndpo.judges.reliability import (
    PairQuality,
    ReliabilityReport,
    judge_reliability,
    pair_quality,
)
from rndpo.judges.uncertainty import (
    UncertaintyJudge,
)

__all__ = [
    "ABSTAIN_MAX_ACCURACY",
    "AUTO_MARGIN_QUANTILE",
    "CORRUPTION_KINDS",
    "DEFAULT_COMPONENTS",
    "JUDGE_NAMES",
    "JUDGE_SPECS",
    "MAX_LABEL_SMOOTHING",
    "RANKING",
    "TOP_ANCHORED_MIN_ACCURACY",
    "AgreementJudge",
    "ComponentBuilder",
    "ConsensusJudge",
    "EnsembleJudge",
    "FitSource",
    "Judge",
    "JudgeCalibration",
    "JudgeLabel",
    "JudgeSpec",
    "LearnedQCJudge",
    "NoisyOracleJudge",
    "OracleJudge",
    "PairQuality",
    "QCFitResult",
    "QCNet",
    "ReliabilityReport",
    "StrategyChoice",
    "TrainableJudge",
    "UncertaintyJudge",
    "auto_label_smoothing",
    "build_judge",
    "calibrate_judge",
    "calibrate_judges",
    "calibrated_kwargs",
    "calibration_judges",
    "calibration_settings",
    "choose_strategy",
    "corrupt_mask",
    "corruption_set",
    "ensemble_components",
    "ensemble_weights",
    "fit_qc_model",
    "judge_reliability",
    "judge_settings",
    "judge_spec",
    "key_settings",
    "load_qc_model",
    "make_judge",
    "margin_quantile",
    "pair_accuracy",
    "pair_quality",
    "pearson_for_spearman",
    "predict_qc",
    "proposal_dice",
    "rank_average",
    "reliability_weights",
    "save_qc_model",
    "spearman_interval",
    "synthetic_training_set",
    "top_pair_accuracy",
]
