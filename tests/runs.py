"""The smallest experiment the CLI can run (a few seconds on one core), shared by the reliability tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rndpo.cli import main

TINIEST = """
seeds = [0]
methods = ["dpo"]
[data]
n_images = 24
image_size = 16
label_budget = 0.3
[model]
channels = [4, 8]
[base]
steps = 4
warmup_steps = 0
eval_every = 2
batch_size = 4
[proposals]
k = 3
[judges]
names = ["noisy_oracle"]
qc_steps = 2
[mining]
strategies = ["all_pairs"]
[finetune]
steps = 2
eval_every = 1
batch_size = 2
"""


def write_config(folder: Path, text: str = TINIEST) -> Path:
    """The tiniest config (or ``text``) as ``folder/tiny.toml``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


def run(config: Path, out: Path, *flags: str) -> int:
    """``rndpo run config --out out --quiet --device cpu *flags``; the exit code."""
    return main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu", *flags])


def rows(out: Path) -> list[dict]:
    """The run rows of results.json (metrics, curves and per-step training logs)."""
    return json.loads((out / "results.json").read_text())["runs"]


def stage_files(out: Path) -> set[str]:
    """Names of the stage folders and files under out/stages and out/runs."""
    return {p.name for d in ("stages", "runs") if (out / d).is_dir() for p in (out / d).iterdir()}


def run_records(out: Path, names: set[str] | None = None) -> dict[str, dict]:
    """The fine-tuning records in out/runs (curve, train log, ...) by miner; only ``names`` if given."""
    found = {}
    for path in sorted((out / "runs").glob("*.json")):
        if path.name.startswith("ladder-"):  # the headroom ladder's rungs are not method runs
            continue
        if names is None or path.name in names:
            record = json.loads(path.read_text())
            found[record["miner"]] = record
    return found


def tiny_run(factory: pytest.TempPathFactory, name: str, text: str = TINIEST) -> tuple[Path, Path]:
    """(config, out) of a finished run of ``text`` in a fresh folder: for module-scoped fixtures."""
    root = factory.mktemp(name)
    config = write_config(root, text)
    assert run(config, root / "out") == 0
    return config, root / "out"


def copy_run(out: Path, folder: Path) -> Path:
    """A copy of run folder ``out`` as ``folder/out`` (tests corrupt or resume the copy)."""
    return Path(shutil.copytree(out, folder / "out"))
