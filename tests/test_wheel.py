"""The built abi3 wheel installs into a fresh virtual environment and works there."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MATURIN = shutil.which("maturin") or str(Path(sys.executable).with_name("maturin"))

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="building a wheel needs cargo")


def _run(*cmd: str | Path, cwd: Path = ROOT) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(MATURIN, "build", "--release", "--sdist", "--out", out)
    return out


def test_one_abi3_wheel_and_an_sdist(dist: Path) -> None:
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1 and "-cp310-abi3-" in wheels[0].name, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "rndpo/py.typed" in names and "rndpo/_core.pyi" in names
    assert any(n.startswith("rndpo/_core") and n.endswith(".so") for n in names)
    sdists = list(dist.glob("*.tar.gz"))
    assert len(sdists) == 1
    members = tarfile.open(sdists[0]).getnames()
    assert any(m.endswith("/Cargo.lock") for m in members)
    assert any(m.endswith("rust/core/src/lib.rs") for m in members)


def test_wheel_installs_and_runs_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # --system-site-packages makes the already-installed torch visible; the venv's own rndpo wins.
    _run(sys.executable, "-m", "venv", "--system-site-packages", venv)
    py = venv / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    _run(py, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel)
    check = (
        "import importlib.metadata as md, sys, numpy as np, rndpo\n"
        f"assert rndpo.__file__.startswith({str(venv)!r}), rndpo.__file__\n"
        "assert rndpo.__version__ == md.version('rndpo'), (rndpo.__version__, md.version('rndpo'))\n"
        "m = np.zeros((2, 3, 4, 4), np.uint8); m[:, 1, :2] = 1; m[:, 2] = 1\n"
        "p = rndpo.mine_pairs(m, np.array([[0.9, 0.5, 0.1]] * 2), 'top_vs_rest')\n"
        "print(len(p), p.region_size.tolist())\n"
    )
    assert _run(py, "-c", check, cwd=tmp_path).strip() == "4 [8, 16, 8, 16]"
    assert "usage: rndpo" in _run(venv / "bin" / "rndpo", "--help", cwd=tmp_path)
