"""Tests of rndpo.pipeline.report: the summary statistics, the CSV curves, the closing file listing."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from rndpo.config import RunConfig
from rndpo.pipeline.report import output_listing, summary_table, write_reports


def _row(method: str, seed: int, selected: float | None, final: float) -> dict[str, object]:
    return {
        "method": method,
        "judge": "agreement",
        "miner": "top_vs_rest",
        "seed": seed,
        "selected_dice": selected,
        "final_dice": final,
        "curve": [(0, 0.5), (10, final)],
        "val_curve": [(0, 0.6), (10, 0.7)],
        "train_log": [{"loss": 0.6}],
    }


def _cells(table: str, method: str) -> dict[str, str]:
    lines = [line.strip("|").split("|") for line in table.strip().splitlines()]
    head = [c.strip() for c in lines[0]]
    row = next(r for r in lines[2:] if r[0].strip() == method)
    return dict(zip(head, (c.strip() for c in row), strict=True))


def test_summary_table_gives_mean_and_sample_std_over_seeds() -> None:
    finals = [0.61, 0.64, 0.70]
    rows = [_row("rndpo", s, 0.6 + s / 100, f) for s, f in enumerate(finals)] + [_row("dpo", 0, None, 0.5)]
    table = summary_table(rows)
    rn, dpo = _cells(table, "rndpo"), _cells(table, "dpo")
    assert rn["seeds"] == "3"
    assert rn["final_dice"] == f"{np.mean(finals):.4f} ± {np.std(finals, ddof=1):.4f}"
    assert dpo["final_dice"] == "0.5000"  # one seed: no spread
    assert dpo["selected_dice"] == "-"  # no value at all
    head = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert head[4:6] == ["selected_dice", "final_dice"]  # the figures to quote lead


def test_write_reports_round_trips_rows_and_serialises_curves(tmp_path) -> None:
    rows = [_row("rndpo", 0, 0.6, 0.62)]
    write_reports(rows, RunConfig(), tmp_path, plots=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"][0]["final_dice"] == pytest.approx(0.62)
    assert "train_log" not in saved["runs"][0]  # per-step logs live in runs/<run>.json
    (line,) = csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text()))
    assert line["curve"] == "0:0.500000;10:0.620000" and line["val_curve"] == "0:0.600000;10:0.700000"
    assert (tmp_path / "results.md").read_text() == summary_table(saved["runs"])
    assert not (tmp_path / "curves.png").exists()


def test_output_listing_names_every_file_and_counts_the_cache(tmp_path) -> None:
    for name in (
        "results.json",
        "models/base.pt",
        "stages/bank-1/masks.npy",
        "stages/pairs-2.npz",
        ".rndpo.lock",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    text = output_listing(tmp_path)
    assert text.splitlines()[0] == f"4 files written to {tmp_path}/:"
    assert "  models/base.pt" in text and "  results.json" in text
    assert "stages/ (2 cached stage files, reused by --resume)" in text
    assert ".rndpo.lock" not in text
