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


def test_summarize_runs_pairs_records_by_seed_and_image(tmp_path: Path) -> None:
    """benches/summarize_runs.py: gains over each record's base and paired verdicts from records alone."""
    import importlib.util
    import json

    import numpy as np

    spec = importlib.util.spec_from_file_location("summarize_runs", BENCHES / "summarize_runs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    for seed in range(3):
        low = rng.uniform(0.3, 0.5, 40)
        for name, per_image, key in (
            ("ladder-labeled_only", low, "aa11"),
            ("rndpo-j-top_vs_rest", low + 0.1, "bb22"),
        ):
            record = {
                "seed": seed,
                "base_dice": 0.4,
                "final_dice": float(per_image.mean()),
                "selected_dice": 0.45,
            }
            record["final_dice_per_image"] = per_image.tolist()
            (tmp_path / f"{name}-s{seed}-{key}.json").write_text(json.dumps(record))
        (tmp_path / f"rndpo-j-top_vs_rest-s{seed}-r2-cc33.json").write_text("{}")  # a round file: skipped
    runs = mod.load_runs([tmp_path])
    assert (
        sorted(runs) == ["ladder-labeled_only", "rndpo-j-top_vs_rest"]
        and len(runs["ladder-labeled_only"]) == 3
    )
    table = mod.verdict_table(runs, [("rndpo-j-top_vs_rest", "ladder-labeled_only")])
    assert "| rndpo-j-top_vs_rest > ladder-labeled_only | +0.1000 |" in table and "**holds**" in table
    gains = mod.gains_table(runs)
    assert "| rndpo-j-top_vs_rest | 3 |" in gains and "| +0.0500 ± 0.0000 |" in gains
