"""`make wheel`: a manylinux2014 abi3 wheel and an sdist that carry the license and install where
researchers work (glibc >= 2.17, any CPython >= 3.10, inside a virtual environment or not)."""

from __future__ import annotations

import email
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LICENSE = (ROOT / "LICENSE").read_text()
# manylinux2014 = manylinux_2_17: no symbol of the extension may need a newer glibc.
GLIBC_FLOOR = (2, 17)
PLATFORM_TAGS = {"manylinux_2_17_x86_64", "manylinux2014_x86_64"}
# The torch-free half: NumPy and the Rust core. Prints "4 [8, 16, 8, 16]".
MINING_CHECK = (
    "import numpy as np, rndpo\n"
    "m = np.zeros((2, 3, 4, 4), np.uint8); m[:, 1, :2] = 1; m[:, 2] = 1\n"
    "p = rndpo.mine_pairs(m, np.array([[0.9, 0.5, 0.1]] * 2), 'top_vs_rest')\n"
    "print(len(p), p.region_size.tolist())\n"
)

pytestmark = pytest.mark.skipif(
    shutil.which("cargo") is None or shutil.which("make") is None, reason="`make wheel` needs cargo and make"
)


def _env() -> dict[str, str]:
    """The environment for subprocesses, without PYTHONPATH: an installed rndpo must not see the tree."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}


def _run(*cmd: str | Path, cwd: Path = ROOT) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run `make wheel` into a temporary folder; returns the folder and make's output."""
    out = tmp_path_factory.mktemp("dist")
    cmd = ["make", "--no-print-directory", "wheel", f"DIST={out}", f"PYTHON={sys.executable}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0 and importlib.util.find_spec("ziglang") is None:
        pytest.skip(
            "`make wheel` links with zig, and the ziglang package could not be installed:\n"
            + proc.stderr[-1500:]
        )
    assert proc.returncode == 0, f"make wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out, proc.stdout + proc.stderr


def _wheel(dist: tuple[Path, str]) -> Path:
    wheels = list(dist[0].glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _glibc_versions(so: Path) -> set[tuple[int, ...]]:
    """The GLIBC_x.y versions that the dynamic symbols of ``so`` need (``objdump -T``)."""
    out = _run("objdump", "-T", so)
    return {tuple(int(p) for p in v.split(".")) for v in re.findall(r"\bGLIBC_([0-9.]+[0-9])\b", out)}


def _site_pth(venv: Path, paths: list[str]) -> None:
    """Let ``venv`` import what the running interpreter imports (torch, numpy, ...) after its own packages."""
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "_running_env.pth").write_text("".join(p + "\n" for p in paths))


def test_make_wheel_gives_one_manylinux2014_abi3_wheel_and_one_sdist(dist: tuple[Path, str]) -> None:
    wheel = _wheel(dist)
    name, version, python, abi, platform = wheel.name.removesuffix(".whl").split("-")
    assert (name, python, abi) == ("rndpo", "cp310", "abi3"), wheel.name
    assert set(platform.split(".")) == PLATFORM_TAGS, wheel.name
    with zipfile.ZipFile(wheel) as zf:
        info = f"rndpo-{version}.dist-info"
        tags = {
            line.split(": ")[1]
            for line in zf.read(f"{info}/WHEEL").decode().splitlines()
            if line.startswith("Tag:")
        }
        assert tags == {f"cp310-abi3-{p}" for p in PLATFORM_TAGS}
        names = zf.namelist()
        assert "rndpo/py.typed" in names and "rndpo/_core.pyi" in names
        assert zf.read(f"{info}/licenses/LICENSE").decode() == LICENSE
        meta = email.message_from_bytes(zf.read(f"{info}/METADATA"))
    assert meta["License-Expression"] == "Apache-2.0" and meta.get_all("License-File") == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in meta.get_all("Classifier", []))
    assert meta.get_all("Project-URL") is None and "example.org" not in str(meta)
    # twine check --strict ran inside make wheel, on both files
    assert dist[1].count("PASSED") == 2, dist[1][-2000:]
    (sdist,) = dist[0].glob("*.tar.gz")
    assert sdist.name == f"rndpo-{version}.tar.gz"
    with tarfile.open(sdist) as tf:
        members = set(tf.getnames())
        top = f"rndpo-{version}"
        assert {f"{top}/Cargo.lock", f"{top}/rust/core/src/lib.rs", f"{top}/LICENSE"} <= members
        license_file = tf.extractfile(f"{top}/LICENSE")
        assert license_file is not None and license_file.read().decode() == LICENSE
        pkg_info = tf.extractfile(f"{top}/PKG-INFO")
        assert pkg_info is not None and "License-Expression: Apache-2.0" in pkg_info.read().decode()


@pytest.mark.skipif(
    shutil.which("objdump") is None, reason="reading the symbol versions needs objdump (binutils)"
)
def test_extension_needs_no_glibc_newer_than_manylinux2014(dist: tuple[Path, str], tmp_path: Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as zf:
        (member,) = [n for n in zf.namelist() if n.startswith("rndpo/_core") and n.endswith(".so")]
        so = Path(zf.extract(member, tmp_path))
    versions = _glibc_versions(so)
    assert versions, "objdump -T found no GLIBC symbol version: the check would prove nothing"
    assert max(versions) <= GLIBC_FLOOR, f"needs GLIBC_{'.'.join(map(str, max(versions)))} > 2.17"


def test_wheel_installs_and_runs_in_a_fresh_venv(dist: tuple[Path, str], tmp_path: Path) -> None:
    """A plain venv of the running interpreter (inside a venv or not) that sees the running environment's
    packages through a .pth file, after its own: its own rndpo, the wheel, is the one imported."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _site_pth(venv, [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))])
    py = venv / "bin" / "python"
    _run(py, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", _wheel(dist))
    check = (
        "import importlib.metadata as md, rndpo, rndpo.losses\n"
        f"assert rndpo.__file__.startswith({str(venv)!r}), rndpo.__file__\n"
        f"assert rndpo.losses.__file__.startswith({str(venv)!r}), rndpo.losses.__file__\n"
        "assert rndpo.__version__ == md.version('rndpo'), (rndpo.__version__, md.version('rndpo'))\n"
    ) + MINING_CHECK
    assert _run(py, "-c", check, cwd=tmp_path).strip() == "4 [8, 16, 8, 16]"
    assert "usage: rndpo" in _run(venv / "bin" / "rndpo", "--help", cwd=tmp_path)
    # the README's quickstart, as printed there
    (quickstart,) = re.findall(r"## Quickstart.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    printed = _run(py, "-c", quickstart, cwd=tmp_path)
    assert "grad_fn" in printed, printed


def _other_pythons() -> list[object]:
    """Other CPython >= 3.10 interpreters on this machine: python3.X on PATH, and pyenv's versions."""
    found: dict[tuple[int, int], str] = {}
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python3.{m}") for m in range(10, 20)] + sorted(
        str(p) for p in pyenv.glob("3.*/bin/python3")
    )
    for exe in filter(None, candidates):
        proc = subprocess.run(
            [exe, "-c", "import sys, venv; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            major, minor = map(int, proc.stdout.split())
            if (3, 10) <= (major, minor) != sys.version_info[:2]:
                found.setdefault((major, minor), exe)
    return [pytest.param(found[v], id=f"python{v[0]}.{v[1]}") for v in sorted(found)]


@pytest.mark.parametrize("python", _other_pythons() or [None])
def test_the_abi3_wheel_runs_on_other_pythons(
    dist: tuple[Path, str], tmp_path: Path, python: str | None
) -> None:
    """The mining half (NumPy and the Rust core; torch is not installed for these) on every other CPython."""
    if python is None:
        pytest.skip("no CPython >= 3.10 other than the running one on this machine")
    venv = tmp_path / "venv"
    _run(python, "-m", "venv", venv)
    py = venv / "bin" / "python"
    _run(py, "-m", "pip", "install", "--no-deps", "--no-index", _wheel(dist))
    deps = subprocess.run(
        [py, "-m", "pip", "install", "-q", "numpy>=1.26", "tomli>=2; python_version < '3.11'"],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if deps.returncode != 0:
        pytest.skip(
            f"NumPy for {python} could not be installed from the package index:\n{deps.stderr[-1500:]}"
        )
    assert _run(py, "-c", MINING_CHECK, cwd=tmp_path).strip() == "4 [8, 16, 8, 16]"
    assert "usage: rndpo" in _run(venv / "bin" / "rndpo", "--help", cwd=tmp_path)
