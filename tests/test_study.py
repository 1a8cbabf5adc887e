"""The quality-study harness runs end to end on a seconds-long grid and states each claim with numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

STUDY = Path(__file__).resolve().parents[1] / "benches" / "study.py"


@pytest.mark.slow
def test_smoke_grid_writes_a_report_with_the_three_claims(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("study", STUDY)
    assert spec is not None and spec.loader is not None
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    report = tmp_path / "results.md"
    argv = [
        "--grid",
        "smoke",
        "--datasets",
        "synthetic",
        "--out",
        str(tmp_path / "out"),
        "--report",
        str(report),
    ]
    assert study.main([*argv, "--quiet"]) == 0
    text = report.read_text()
    for claim in (
        "1. Top-ranked mining",
        "2. RN-DPO vs DPO over 8 (judge, miner) cells",
        "3. RN-DPO (best miner)",
    ):
        assert claim in text
    assert text.count("**holds**") + text.count("**does not hold**") == 3
    assert (tmp_path / "results_synthetic_curves.png").stat().st_size > 0
    # rerunning reuses every cached stage and rewrites the same report
    assert study.main([*argv, "--quiet"]) == 0

    def body(t: str) -> list[str]:
        return [line for line in t.splitlines()[3:] if not line.startswith("Wall time")]

    assert body(report.read_text()) == body(text)
