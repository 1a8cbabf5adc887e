"""A plain install (no extras): with matplotlib hidden, `rndpo demo` runs to the end, skips the plots with
one log line, and still writes every other output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = """
import sys
class _NoMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return None
sys.meta_path.insert(0, _NoMatplotlib())
from rndpo.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

TINY = [
    "data.n_images=40",
    "data.image_size=32",
    "model.channels=[8, 16]",
    "base.steps=20",
    "base.eval_every=10",
    "proposals.k=4",
    "finetune.steps=2",
    "finetune.eval_every=1",
    "finetune.batch_size=4",
    "methods=['rndpo']",
    "seeds=[0]",
    "judges.names=['agreement']",
]


def test_demo_runs_to_the_end_without_matplotlib(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--device", "cpu", *[a for s in TINY for a in ("--set", s)]]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, *argv], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if "matplotlib is not installed" in line]
    assert len(skipped) == 1, proc.stderr
    assert not (out / "curves.png").exists() and not (out / "examples.png").exists()
    for name in ("results.json", "results.csv", "results.md", "rndpo.log", "models/base.pt"):
        assert (out / name).is_file(), name
    assert "matplotlib is not installed" in (out / "rndpo.log").read_text()
    assert "results.json" in proc.stdout and "curves.png" not in proc.stdout  # the closing file list
    assert "\r" not in proc.stderr  # progress bars are off when output is not a terminal
