"""The 3D study (issue 29): the headroom ladder on the Decathlon's hippocampus volumes at 10% labels.

    python benches/study_3d.py --out results/study_3d              # 3 seeds, 2 at a time: about 2 h on 2 CPU cores
    python benches/study_3d.py --out results/study_3d --report-only  # rewrite the report from what ran

Each seed is one ``rndpo run configs/msd_hippocampus.toml`` in its own folder (``OUT/seed<s>``; cached and
resumable: rerunning the command continues where it stopped), ``--jobs`` of them at once with the CPU
threads shared out. The methods: sft_top, DPO, RN-DPO, RN-cDPO with the judge's flip rate validated on
the validation volumes (``label_smoothing = "auto"``) and mean teacher, with the ``--judges`` (default: the
agreement judge); the ladder adds the base, the labeled-only control, perfect labels and best-of-K.
The report (default docs/results_3d.md) gives the ladder, mean +- std over seeds, per-structure tables
with the spread of the gain across structures, paired verdicts (same seed, same test volumes) and the
time each stage took.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rndpo.pipeline.ladder import ladder_table
from rndpo.pipeline.report import summary_table
from rndpo.pipeline.structure_table import structure_table
from rndpo.pipeline.timings import read_timings, timings_table
from rndpo.storage import write_text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))  # the 2D study's paired claims, also when loaded by path
from study import paired_claims, stability_table  # noqa: E402

CONFIG = ROOT / "configs" / "msd_hippocampus.toml"
METHODS = (
    '{sft_top = {preset = "sft_top"}, dpo = {preset = "dpo"}, rndpo = {preset = "rndpo"},'
    ' rn_cdpo = {preset = "rn_cdpo", label_smoothing = "auto"}, mean_teacher = {preset = "mean_teacher"}}'
)


def seed_command(seed: int, out: Path, judges: list[str], device: str, data: Path | None) -> list[str]:
    """The ``rndpo run`` of one seed."""
    names = "[" + ", ".join(json.dumps(j) for j in judges) + "]"
    sets = [f"seeds=[{seed}]", f"methods={METHODS}", f"judges.names={names}"]
    if data is not None:
        sets.append(f"data.path={json.dumps(str(data))}")
    cmd = [
        sys.executable,
        "-m",
        "rndpo",
        "run",
        str(CONFIG),
        "--out",
        str(out),
        "--quiet",
        "--device",
        device,
    ]
    if (out / "config.json").exists():
        cmd.append("--resume")
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run_seeds(args: argparse.Namespace) -> None:
    """Every seed's run, ``args.jobs`` at a time, each with ``cpus // jobs`` threads."""
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending = list(args.seeds)
    running: list[tuple[int, subprocess.Popen[bytes]]] = []
    failed = []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            out = args.out / f"seed{seed}"
            log = (args.out / f"seed{seed}.log").open("ab")
            cmd = seed_command(seed, out, args.judges, args.device, args.data)
            print(f"seed {seed}: {' '.join(cmd[:8])} ...", flush=True)
            running.append((seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(5)
        for seed, proc in list(running):
            if proc.poll() is not None:
                running.remove((seed, proc))
                print(f"seed {seed}: exit {proc.returncode}", flush=True)
                if proc.returncode:
                    failed.append(seed)
    if failed:
        raise SystemExit(f"seeds {failed} failed: see {args.out}/seed<s>.log")


def gather(out: Path, seeds: list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(rows, ladder entries, timings) of every seed whose run finished."""
    rows: list[dict[str, Any]] = []
    ladder: list[dict[str, Any]] = []
    timings: dict[str, Any] = {}
    for seed in seeds:
        folder = out / f"seed{seed}"
        path = folder / "results.json"
        if not path.exists():
            print(f"seed {seed}: no results.json yet, left out of the report", file=sys.stderr)
            continue
        doc = json.loads(path.read_text())
        rows += doc["runs"]
        ladder += doc["ladder"]
        timings |= read_timings(folder)
    return rows, ladder, timings


def report(out: Path, seeds: list[int], judges: list[str]) -> str:
    rows, ladder, timings = gather(out, seeds)
    done = sorted({e["seed"] for e in ladder})
    head = (
        "# The 3D study: hippocampus volumes, 10% labels\n\n"
        "Produced by `python benches/study_3d.py` (configs/msd_hippocampus.toml: a 3D U-Net on 32 x 48 x 32"
        " patches, label maps of two structures, whole-volume inference; "
        f"judges {', '.join(judges)}; seeds {done}).\n"
        "Dice is the mean over the two structures of each structure's mean over the test volumes"
        " (every test volume holds both structures).\n"
    )
    parts = [
        head,
        f"## Headroom ladder (test Dice per seed)\n\n{ladder_table(ladder)}",
        f"## Methods: mean +- std over seeds\n\n{summary_table(rows)}",
        f"## Structures: test Dice, base -> final, mean over seeds\n\n{structure_table(rows)}",
        "## Paired verdicts (same seed, same test volumes; 95% bootstrap interval over seeds and volumes)\n\n"
        + paired_claims(rows, ladder),
        f"## Stability: peak and final\n\n{stability_table(rows)}",
        f"## Where the time went (wall clock, minutes)\n\n{timings_table(timings)}" if timings else "",
    ]
    return "\n".join(p for p in parts if p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/study_3d"))
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "results_3d.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--judges", nargs="+", default=["agreement"])
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once (threads shared out)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, help="the hippocampus data.npz (default: the config's path)")
    parser.add_argument("--report-only", action="store_true", help="write the report from finished seeds")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_seeds(args)
    write_text(args.report, report(args.out, args.seeds, args.judges))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
