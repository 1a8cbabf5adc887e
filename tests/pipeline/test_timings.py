"""Stage timings: timings.json is written only for stages that finish, survives unreadable files, and the
results.md table gives minutes, shares and totals per seed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rndpo.pipeline.timings import TIMINGS_FILE, read_timings, stage_timer, timings_table


def test_each_finished_stage_is_recorded_per_seed(tmp_path: Path) -> None:
    with stage_timer(tmp_path, 0, "base"):
        time.sleep(0.05)
    with stage_timer(tmp_path, 1, "base"):
        pass
    with stage_timer(tmp_path, 0, "proposals"):
        pass
    table = read_timings(tmp_path)
    assert set(table) == {"seed 0", "seed 1"}
    assert list(table["seed 0"]) == ["base", "proposals"]
    assert table["seed 0"]["base"] >= 0.05 - 1e-3
    assert json.loads((tmp_path / TIMINGS_FILE).read_text()) == table


def test_a_stage_that_fails_records_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), stage_timer(tmp_path, 0, "base"):
        raise RuntimeError("killed")
    assert read_timings(tmp_path) == {}


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"seed 0": 3}'])
def test_an_unreadable_file_reads_as_no_timings(tmp_path: Path, content: str) -> None:
    (tmp_path / TIMINGS_FILE).write_text(content)
    assert read_timings(tmp_path) == {}
    with stage_timer(tmp_path, 0, "base"):
        pass
    assert list(read_timings(tmp_path)["seed 0"]) == ["base"]


def test_the_table_gives_minutes_shares_and_totals() -> None:
    text = timings_table({"seed 0": {"base": 120.0, "rndpo": 60.0}, "seed 1": {"base": 60.0}})
    lines = text.strip().splitlines()
    assert lines[0] == "| stage | seed 0: min (share) | seed 1: min (share) |"
    assert lines[2] == "| base | 2.0 (67%) | 1.0 (100%) |"
    assert lines[3] == "| rndpo | 1.0 (33%) | - |"
    assert lines[4] == "| **total** | 3.0 | 1.0 |"
