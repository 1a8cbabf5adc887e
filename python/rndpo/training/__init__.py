"""Training: the supervised base segmenter and fine-tuning against the frozen reference."""

from rndpo.training.finetuning import (
    FinetuneResult,
    TrainingPairs,
    finetune,
    lr_factor,
    reference_logits,
    summarize_curve,
    summarize_selection,
    top_choice_pairs,
)
from rndpo.training.supervised import (
    BaseTrainConfig,
    BaseTrainResult,
    augment_batch,
    segmentation_loss,
    snapshot_steps,
    train_base,
)

__all__ = [
    "BaseTrainConfig",
    "BaseTrainResult",
    "FinetuneResult",
    "TrainingPairs",
    "augment_batch",
    "finetune",
    "lr_factor",
    "reference_logits",
    "segmentation_loss",
    "snapshot_steps",
    "summarize_curve",
    "summarize_selection",
    "top_choice_pairs",
    "train_base",
]
