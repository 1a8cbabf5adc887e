"""The quality-study harness runs end to end on a seconds-long grid and states each claim with numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

STUDY = Path(__file__).resolve().parents[1] / "benches" / "study.py"


def _load_study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("study", STUDY)
    assert spec is not None and spec.loader is not None
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


@pytest.mark.slow
def test_smoke_grid_writes_a_report_with_the_three_claims(tmp_path: Path) -> None:
    study = _load_study()
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
    assert text.count("the claim **holds**") + text.count("the claim **does not hold**") == 3
    # issue 14: the ladder first, then paired verdicts with intervals, then the stability table
    assert text.index("### Headroom ladder") < text.index("### Claims, paired") < text.index("### Stability")
    # several miners: each claim names its (judge, miner) cell, DPO paired on the same miner
    for miner in ("top_vs_bottom", "top_vs_rest", "adjacent", "all_pairs:0.05"):
        assert f"| RN-DPO (oracle, {miner}) > DPO (oracle, {miner}) | " in text
    assert "| RN-DPO (oracle, top_vs_bottom) > sft_top (oracle) | " in text
    assert "perfect-label ceiling" in text and "labeled images alone" in text
    assert (tmp_path / "results_synthetic_curves.png").stat().st_size > 0  # <report stem>_<dataset>_curves
    # rerunning reuses every cached stage and rewrites the same report
    assert study.main([*argv, "--quiet"]) == 0

    def body(t: str) -> list[str]:
        return [line for line in t.splitlines()[3:] if not line.startswith("Wall time")]

    assert body(report.read_text()) == body(text)


@pytest.mark.slow
def test_overrides_and_data_root_reach_the_run(tmp_path: Path) -> None:
    from rndpo.data import synthetic_dataset

    study = _load_study()
    # a Kvasir-SEG stand-in under another data root: 48 gray images in the npz layout of ../shared/data
    ds = synthetic_dataset(48, 32, seed=1)
    (tmp_path / "data" / "kvasir_seg").mkdir(parents=True)
    np.savez(
        tmp_path / "data" / "kvasir_seg" / "data.npz",
        images=(ds.images[:, 0] * 255).astype(np.uint8),
        masks=ds.masks,
    )
    report = tmp_path / "r.md"
    argv = ["--grid", "smoke", "--datasets", "kvasir_seg", "--data-root", str(tmp_path / "data")]
    argv += ["--seeds", "3", "--judges", "oracle", "--out", str(tmp_path / "out"), "--report", str(report)]
    assert study.main([*argv, "--quiet"]) == 0
    rows = json.loads((tmp_path / "out" / "kvasir_seg" / "results.json").read_text())["runs"]
    assert {r["seed"] for r in rows} == {3} and {r["judge"] for r in rows} == {"oracle"}
    assert " ".join(argv) in report.read_text()  # the header gives the command with its overrides
    assert (tmp_path / "r_kvasir_seg_curves.png").stat().st_size > 0
