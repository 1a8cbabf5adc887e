"""Faults in an output folder: corrupted stages are recomputed, never used; one run per folder at a time;
leftovers of killed writes are removed; files follow the umask."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rndpo.storage import CHECKSUMS, atomic_dir, verify_stage, write_json, write_npz
from runs import copy_run, rows, run, stage_files, tiny_run, write_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_run(tmp_path_factory, "integrity")


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    path.write_bytes(bytes(data))


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero_array(path: Path) -> None:
    np.save(path, np.zeros_like(np.load(path)))


def _delete(path: Path) -> None:
    path.unlink()


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "bank images.npy, one byte flipped": ("stages/bank-*/images.npy", _flip_last_byte),
    "bank ground_truth.npy zeroed": ("stages/bank-*/ground_truth.npy", _zero_array),
    "bank masks.npy truncated": ("stages/bank-*/masks.npy", _truncate),
    "bank SHA256SUMS deleted": (f"stages/bank-*/{CHECKSUMS}", _delete),
    "base model.pt, one byte flipped": ("stages/base-*/model.pt", _flip_middle_byte),
    "base model.pt truncated": ("stages/base-*/model.pt", _truncate),
    "scores npz truncated": ("stages/scores-*.npz", _truncate),
    "pairs npz truncated": ("stages/pairs-*.npz", _truncate),
    "pairs npz, one byte flipped": ("stages/pairs-*.npz", _flip_middle_byte),
    "run result json truncated": ("runs/[!l]*.json", _truncate),  # [!l]: not the ladder runs
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_corrupted_stage_is_recomputed_with_a_log_line_and_never_used(
    case: str, tiny: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    pattern, corrupt = CORRUPTIONS[case]
    (victim,) = target.glob(pattern)
    corrupt(victim)
    stage = victim.parent if victim.parent.name.startswith(("bank-", "base-")) else victim
    with caplog.at_level(logging.WARNING, logger="rndpo"):
        assert run(config, target, "--resume") == 0
    assert f"stage {stage.name} failed verification" in caplog.text
    assert victim.name in caplog.text.split("failed verification", 1)[1]
    assert verify_stage(stage) is None
    assert rows(target) == rows(out)  # the recomputed stage equals the uncorrupted one


def test_an_intact_folder_resumes_without_recomputing(
    tiny: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in (target / "stages").rglob("*")}
    with caplog.at_level(logging.INFO, logger="rndpo"):
        assert run(config, target, "--resume") == 0
    assert "failed verification" not in caplog.text and "training the base model" not in caplog.text
    assert {p: p.stat().st_mtime_ns for p in (target / "stages").rglob("*")} == mtimes


def test_a_second_run_on_a_locked_folder_is_refused(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    before = stage_files(target)
    with open(target / ".rndpo.lock", "w") as held:  # what a running rndpo holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        assert run(config, target, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in use by another rndpo run (pid 4242)" in err
    assert stage_files(target) == before


def test_a_fresh_run_on_a_folder_being_created_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    target = tmp_path / "out"
    target.mkdir()
    with open(target / ".rndpo.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run(config, target) == 2
    assert "in use by another rndpo run" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == [".rndpo.lock"]


def test_a_stale_lock_of_a_dead_process_is_taken_over(
    tiny: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    pid = dead.stdout.decode().strip()
    (target / ".rndpo.lock").write_text(f"{pid}\n")
    with caplog.at_level(logging.WARNING, logger="rndpo"):
        assert run(config, target, "--resume") == 0
    assert f"stale lock on {target} (pid {pid} is no longer running it)" in caplog.text


def test_leftovers_of_killed_writes_are_removed_on_start(
    tiny: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    leftovers = [
        target / "stages" / ".base-0123456789ab.0a1b2c3d.tmp",
        target / "stages" / ".bank-0123456789ab.deadbeef.tmp",
        target / "runs" / ".dpo-x.ckpt.12345678.tmp",
        target / ".results.json.abcdef01.tmp",
    ]
    for path in leftovers[:2]:
        path.mkdir()
        (path / "model.pt").write_bytes(b"half")
    for path in leftovers[2:]:
        path.write_bytes(b"half")
    keep = target / "stages" / ".notes.tmp"  # not a name rndpo writes
    keep.write_text("mine")
    with caplog.at_level(logging.INFO, logger="rndpo"):
        assert run(config, target, "--resume") == 0
    for path in leftovers:
        assert not path.exists(), path
        assert f"removed {path}, left by an interrupted write" in caplog.text
    assert keep.read_text() == "mine"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask(umask: int, tmp_path: Path) -> None:
    old = os.umask(umask)
    try:
        write_json(tmp_path / "r.json", {"v": 1}, checksum=True)
        write_npz(tmp_path / "p.npz", a=np.arange(3))
        with atomic_dir(tmp_path / "stage") as tmp:
            (tmp / "x.txt").write_text("1")
        (tmp_path / "plain.txt").write_text("ordinary")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    plain_file = (tmp_path / "plain.txt").stat().st_mode & 0o777
    plain_dir = (tmp_path / "plain").stat().st_mode & 0o777
    assert plain_file == 0o666 & ~umask and plain_dir == 0o777 & ~umask
    for name in ("r.json", "r.json.sha256", "p.npz", "stage/x.txt", f"stage/{CHECKSUMS}"):
        assert (tmp_path / name).stat().st_mode & 0o777 == plain_file, name
    assert (tmp_path / "stage").stat().st_mode & 0o777 == plain_dir


def test_verify_stage_names_the_file_and_the_reason(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "stage") as tmp:
        (tmp / "a.npy").write_bytes(b"abc")
        (tmp / "b.npy").write_bytes(b"def")
    assert verify_stage(tmp_path / "stage") is None
    (tmp_path / "stage" / "b.npy").write_bytes(b"deg")
    assert verify_stage(tmp_path / "stage") == (
        f"{tmp_path / 'stage' / 'b.npy'}: SHA-256 does not match the one recorded when it was written"
    )
    (tmp_path / "stage" / "b.npy").unlink()
    assert verify_stage(tmp_path / "stage") == f"{tmp_path / 'stage' / 'b.npy'}: missing"
    (tmp_path / "stage" / "c.npy").write_bytes(b"")
    assert "c.npy: not listed in SHA256SUMS" in str(verify_stage(tmp_path / "stage"))
    write_npz(tmp_path / "s.npz", checksum=True, a=np.arange(2))
    assert verify_stage(tmp_path / "s.npz") is None
    (tmp_path / "s.npz.sha256").unlink()
    assert (
        verify_stage(tmp_path / "s.npz") == f"{tmp_path / 's.npz.sha256'}: missing (no checksum was recorded)"
    )
