"""examples/own_model.py runs as a user would run it, and its saved model reloads and segments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_own_model_example_runs_and_saves_a_loadable_model(tmp_path: Path) -> None:
    pytest.importorskip("monai")
    script = ROOT / "examples" / "own_model.py"
    assert len(script.read_text().splitlines()) <= 40
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "the 'snapshot' source is skipped" in proc.stderr
    assert "pairs; val Dice" in proc.stdout
    info = json.loads((tmp_path / "own.json").read_text())
    assert info["method"] == "rndpo" and info["architecture"] == {  # recorded by build_network
        "name": "monai.BasicUNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "kwargs": {"features": [8, 8, 16, 32, 64, 8], "dropout": 0.1},
    }

    import rndpo

    model = rndpo.load_model(tmp_path / "own.pt")
    images = np.random.default_rng(0).normal(size=(3, 1, 32, 32)).astype(np.float32)
    masks = rndpo.predict(model, images).masks
    assert masks.shape == (3, 32, 32) and masks.dtype == np.uint8
