"""From images to probabilities and masks: batched forward passes, test-time transforms, ``rndpo predict``."""

from rndpo.inference.batched import (
    as_image_tensor,
    forward_batched,
    predict_logits,
    predict_probs,
    rotate,
)
from rndpo.inference.prediction import (
    Prediction,
    predict,
    predict_path,
)

__all__ = [
    "Prediction",
    "as_image_tensor",
    "forward_batched",
    "predict",
    "predict_logits",
    "predict_path",
    "predict_probs",
    "rotate",
]
