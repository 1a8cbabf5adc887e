"""Shared test set-up: one torch thread (small tensors run faster without thread hand-offs, and the
suite is stable on a busy 2-core machine) and hypothesis profiles.

HYPOTHESIS_PROFILE=thorough runs many more examples than the fast default used in CI.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

settings.register_profile(
    "fast", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
