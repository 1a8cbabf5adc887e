"""The package surface: ``import rndpo`` loads the mining API only; submodules load on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import rndpo


def test_every_public_module_file_is_reachable_as_an_attribute() -> None:
    root = Path(rndpo.__file__).parent
    files = {p.stem for p in root.glob("*.py") if not p.name.startswith("_")}
    files |= {p.parent.name for p in root.glob("*/__init__.py")}  # subpackages: rndpo.data
    assert files == set(rndpo._SUBMODULES)
    for name in sorted(files):
        assert getattr(rndpo, name).__name__ == f"rndpo.{name}"


def test_import_rndpo_does_not_import_torch() -> None:
    code = "import sys, rndpo; rndpo.mine_pairs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
