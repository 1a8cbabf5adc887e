"""The benchmark entry points parse and start: shell scripts pass `bash -n`, Python ones answer --help."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parents[1] / "benches"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", sorted(p.name for p in BENCHES.glob("*.sh")))
def test_shell_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(BENCHES / script)], check=True)


@pytest.mark.parametrize("script", ["bench_label_budget.py", "study.py"])
def test_python_entry_points_answer_help(script: str) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCHES / script), "--help"], check=True, capture_output=True, text=True
    )
    assert out.stdout.startswith("usage:")


def test_every_study_grid_is_a_valid_config() -> None:
    import copy
    import importlib.util

    from rndpo.config import config_from_dict

    spec = importlib.util.spec_from_file_location("study", BENCHES / "study.py")
    assert spec is not None and spec.loader is not None
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    for grid, raw_grid in study.GRIDS.items():
        for name, data in study.DATASETS.items():
            raw = copy.deepcopy(raw_grid)
            raw["data"] = {**data, **raw.get("data", {})}
            config = config_from_dict(raw)
            assert config.seeds and config.methods, (grid, name)
