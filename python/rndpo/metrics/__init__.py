"""Metrics: Dice / IoU / HD95 / ASSD, rank correlations, a model's evaluation on a dataset, paired
statistics over seeds.
"""

from rndpo.metrics.evaluation import (
    Evaluation,
    evaluate,
)
from rndpo.metrics.ranking import (
    kendall,
    spearman,
)
from rndpo.metrics.segmentation import (
    MetricSummary,
    assd,
    dice,
    dice_from_counts,
    hd95,
    iou,
    summarize,
)
from rndpo.metrics.stats import (
    PairedResult,
    bootstrap_mean_ci,
    paired_verdict,
)

__all__ = [
    "Evaluation",
    "MetricSummary",
    "PairedResult",
    "assd",
    "bootstrap_mean_ci",
    "dice",
    "dice_from_counts",
    "evaluate",
    "hd95",
    "iou",
    "kendall",
    "paired_verdict",
    "spearman",
    "summarize",
]
