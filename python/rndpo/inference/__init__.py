"""From images to probabilities and masks: batched and sliding-window forward passes, test-time transforms,
``rndpo predict``."""

from rndpo.inference.batched import (
    as_image_tensor,
    forward_batched,
    labels_from_probs,
    predict_logits,
    predict_probs,
    rotate,
)
from rndpo.inference.outputs import OutputFiles
from rndpo.inference.prediction import (
    MAX_SCALE,
    Prediction,
    check_scale,
    predict,
    predict_path,
)
from rndpo.inference.sliding_window import (
    autocast_dtype,
    sliding_window_logits,
    sliding_window_probs,
)
from rndpo.inference.volume_prediction import SPACING_TOLERANCE, predict_volumes, segment_volume

__all__ = [
    "MAX_SCALE",
    "SPACING_TOLERANCE",
    "OutputFiles",
    "Prediction",
    "as_image_tensor",
    "autocast_dtype",
    "check_scale",
    "forward_batched",
    "labels_from_probs",
    "predict",
    "predict_logits",
    "predict_path",
    "predict_probs",
    "predict_volumes",
    "rotate",
    "segment_volume",
    "sliding_window_logits",
    "sliding_window_probs",
]
