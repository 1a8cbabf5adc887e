"""Metrics: Dice / IoU / HD95 / ASSD (HD95 / ASSD N-D with spacing), per-structure Dice / HD95 of label
maps and their summary, rank correlations, a model's evaluation on a dataset, paired statistics over seeds.
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
from rndpo.metrics.structures import (
    StructureSummary,
    dice_per_class,
    hd95_per_class,
    summarize_structures,
)

__all__ = [
    "Evaluation",
    "MetricSummary",
    "PairedResult",
    "StructureSummary",
    "assd",
    "bootstrap_mean_ci",
    "dice",
    "dice_from_counts",
    "dice_per_class",
    "evaluate",
    "hd95",
    "hd95_per_class",
    "iou",
    "kendall",
    "paired_verdict",
    "spearman",
    "summarize",
    "summarize_structures",
]
