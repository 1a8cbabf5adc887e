"""Where a run's time goes: the wall-clock seconds of each stage it computed, per seed.

``OUT/timings.json`` maps ``"seed <s>"`` to {stage: seconds}, updated (atomically) each time a stage is
computed: ``base`` (training), ``proposals``, ``calibration``, ``scores <judge>``, ``ladder <rung>`` and one
entry per fine-tuning run (``<method> (<judge>, <miner>)``). A stage loaded from the cache keeps the time
recorded when it was computed, so a resumed run still reports every stage; a stage resumed from its own
checkpoint reports only the part that ran in the process that finished it. results.md shows the table
("Where the time went"); results.json leaves it out, so that a resumed run writes the same results.json
byte for byte as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rndpo.pipeline.distributed import rank
from rndpo.storage import write_json

__all__ = ["TIMINGS_FILE", "read_timings", "stage_timer", "timings_table"]

TIMINGS_FILE = "timings.json"


def read_timings(out: Path) -> dict[str, dict[str, float]]:
    """{"seed <s>": {stage: seconds}} from ``out/timings.json`` ({}: none there, or unreadable)."""
    try:
        raw = json.loads((out / TIMINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        str(seed): {str(k): float(v) for k, v in stages.items() if isinstance(v, (int, float))}
        for seed, stages in raw.items()
        if isinstance(stages, dict)
    }


@contextmanager
def stage_timer(out: Path, seed: int, stage: str) -> Iterator[None]:
    """Time the block and record it as ``stage`` of ``seed`` in ``out/timings.json`` when it ends without
    an exception (rank 0 writes; the other ranks only run the block)."""
    start = time.perf_counter()
    yield
    if rank() != 0:
        return
    seconds = time.perf_counter() - start
    table = read_timings(out)
    table.setdefault(f"seed {seed}", {})[stage] = round(seconds, 2)
    write_json(out / TIMINGS_FILE, table)


def timings_table(timings: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown: one row per stage (in the order first recorded), minutes per seed and the share of the
    seed's total; a last row with each seed's total."""
    seeds = list(timings)
    stages: list[str] = []
    for per_seed in timings.values():
        stages += [s for s in per_seed if s not in stages]
    totals = {seed: sum(timings[seed].values()) for seed in seeds}
    head = "| stage | " + " | ".join(f"{s}: min (share)" for s in seeds) + " |"
    lines = [head, "|---|" + "---|" * len(seeds)]

    def cell(seed: str, stage: str) -> str:
        v = timings[seed].get(stage)
        if v is None:
            return "-"
        share = v / totals[seed] if totals[seed] > 0 else 0.0
        return f"{v / 60:.1f} ({share:.0%})"

    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(cell(seed, stage) for seed in seeds) + " |")
    lines.append("| **total** | " + " | ".join(f"{totals[s] / 60:.1f}" for s in seeds) + " |")
    return "\n".join(lines) + "\n"
