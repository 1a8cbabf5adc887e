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
from rndpo.training.patches import (
    sample_patches,
)
from rndpo.training.supervised import (
    BaseTrainConfig,
    BaseTrainResult,
    PatienceRule,
    augment_batch,
    base_lr_factor,
    mean_structure_dice,
    segmentation_loss,
    snapshot_steps,
    train_base,
)

__all__ = [
    "BaseTrainConfig",
    "BaseTrainResult",
    "FinetuneResult",
    "PatienceRule",
    "TrainingPairs",
    "augment_batch",
    "base_lr_factor",
    "finetune",
    "lr_factor",
    "mean_structure_dice",
    "reference_logits",
    "sample_patches",
    "segmentation_loss",
    "snapshot_steps",
    "summarize_curve",
    "summarize_selection",
    "top_choice_pairs",
    "train_base",
]
