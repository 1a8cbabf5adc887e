"""A run folder someone hands over is untrusted (issue 30): rndpo follows no symbolic link inside it,
prints no byte of a file it did not write, and ``--overwrite`` deletes only a folder rndpo made."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

import pytest

from rndpo import __version__
from rndpo.config import config_from_dict, config_to_dict, read_toml
from rndpo.pipeline.experiment import _log_file
from rndpo.pipeline.rundir import check_out, clear_out, lock_out
from rndpo.storage import atomic_dir, stage_ready, write_json, write_text
from runs import run, write_config

SECRET = b"TOPSECRET: bytes of a file outside the run folder 0123456789\n"


def _outside(tmp_path: Path) -> Path:
    """A precious file outside every run folder."""
    target = tmp_path / "elsewhere" / "precious.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(SECRET)
    return target


def _untouched(target: Path) -> None:
    assert target.stat().st_size == len(SECRET) and target.read_bytes() == SECRET


def _tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder`` (links not followed): file bytes, link targets, folders."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = path.read_bytes()
    return found


def _fake_run(folder: Path, config: Path) -> Path:
    """A run folder as rndpo leaves it (its config.json, a stage, a run), without running anything."""
    marker = {"version": __version__, "config": config_to_dict(config_from_dict(read_toml(config)))}
    write_json(folder / "config.json", marker)
    (folder / "stages").mkdir()
    (folder / "stages" / "scores-0123456789ab.npz").write_bytes(b"scores")
    (folder / "runs").mkdir()
    (folder / "runs" / "dpo-s0.json").write_text("{}\n")
    return folder


def _nothing_printed_from(target: Path, *texts: str) -> None:
    for text in texts:
        assert "TOPSECRET" not in text, f"bytes of {target} were printed"


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- links: the lock, the log, the names rndpo writes, OUT itself --------------------------------------


def test_lock_out_refuses_a_lock_that_links_outside(tmp_path: Path) -> None:
    target = _outside(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".rndpo.lock").symlink_to(target)
    with pytest.raises(ValueError, match=r"\.rndpo\.lock is a symbolic link; rndpo does not follow links"):
        with lock_out(out):
            pass
    _untouched(target)


@pytest.mark.parametrize("flag", ["", "--resume", "--overwrite"])
def test_a_lock_linked_outside_is_refused_by_the_cli(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path / "cfg")
    target = _outside(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    if flag:
        _fake_run(out, config)
    (out / ".rndpo.lock").symlink_to(target)
    before = _tree(out)
    with caplog.at_level(logging.INFO, logger="rndpo"):
        assert run(config, out, *([flag] if flag else [])) == 2
    captured = capsys.readouterr()
    assert ".rndpo.lock is a symbolic link" in _one_line(captured.err)
    _nothing_printed_from(target, captured.out, captured.err, caplog.text)
    _untouched(target)
    assert _tree(out) == before


@pytest.mark.parametrize(
    "name", ["rndpo.log", "results.json", "timings.json", "config.json", "stages", "runs", "models"]
)
def test_a_link_at_a_name_rndpo_writes_is_refused_on_resume(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path / "cfg")
    elsewhere = _outside(tmp_path).parent
    out = _fake_run(tmp_path / "out", config)
    link = out / name
    if name == "config.json":  # the marker itself lies outside
        link.rename(elsewhere / name)
        link.symlink_to(elsewhere / name)
    elif name in ("stages", "runs", "models"):
        shutil.rmtree(link, ignore_errors=True)
        link.symlink_to(elsewhere, target_is_directory=True)
    else:
        link.symlink_to(elsewhere / "precious.txt")
    outside, before = _tree(elsewhere), _tree(out)
    with caplog.at_level(logging.INFO, logger="rndpo"):
        assert run(config, out, "--resume") == 2
    captured = capsys.readouterr()
    err = _one_line(captured.err)
    assert f"{link} is a symbolic link; rndpo does not follow links inside a run folder" in err
    _nothing_printed_from(elsewhere, captured.out, captured.err, caplog.text)
    assert _tree(elsewhere) == outside and _tree(out) == before
    _untouched(elsewhere / "precious.txt")


def test_an_out_that_is_a_link_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg")
    real = _fake_run(tmp_path / "real", config)
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    before = _tree(real)
    with pytest.raises(ValueError, match=r"out is a symbolic link; rndpo does not follow links for a run"):
        check_out(link, resume=True, overwrite=False)
    with pytest.raises(ValueError, match="is a symbolic link"):
        with lock_out(link):
            pass
    assert _tree(real) == before


def test_the_log_is_never_opened_through_a_link(tmp_path: Path) -> None:
    target = _outside(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "rndpo.log").symlink_to(target)
    with pytest.raises(ValueError, match=r"rndpo\.log is a symbolic link; rndpo does not follow links"):
        with _log_file(out / "rndpo.log"):
            logging.getLogger("rndpo").info("a line that must not land in the target")
    _untouched(target)
    with _log_file(out / "fresh.log"):  # a plain file is still appended to
        logging.getLogger("rndpo").info("a line")
    assert (out / "fresh.log").read_text().endswith("INFO a line\n")


# --- the lock's content is never echoed ---------------------------------------------------------------


def test_a_stale_lock_that_holds_no_pid_is_not_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".rndpo.lock").write_bytes(SECRET)
    with caplog.at_level(logging.INFO, logger="rndpo"):
        with lock_out(out) as path:
            assert path.read_text() == f"{os.getpid()}\n"
    assert "held something that is not a pid" in caplog.text
    _nothing_printed_from(out / ".rndpo.lock", caplog.text)


def test_a_busy_lock_that_holds_no_pid_is_not_printed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".rndpo.lock", "wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(SECRET)
        held.flush()
        with pytest.raises(FileExistsError, match=r"in use by another rndpo run \(pid unknown\)") as err:
            with lock_out(out):
                pass
    _nothing_printed_from(out / ".rndpo.lock", str(err.value))


# --- storage: a link where a file or stage is written ---------------------------------------------------


def test_atomic_writes_refuse_a_link_at_the_destination(tmp_path: Path) -> None:
    target = _outside(tmp_path)
    folder = tmp_path / "out" / "runs"
    folder.mkdir(parents=True)
    (folder / "a.json").symlink_to(target)
    with pytest.raises(ValueError, match=r"a\.json is a symbolic link; rndpo does not follow links"):
        write_json(folder / "a.json", {"x": 1})
    (folder / "b.json.sha256").symlink_to(target)
    with pytest.raises(ValueError, match=r"b\.json\.sha256 is a symbolic link"):
        write_text(folder / "b.json", "{}\n", checksum=True)
    assert sorted(p.name for p in folder.iterdir()) == ["a.json", "b.json.sha256"]  # no temp file left
    assert os.readlink(folder / "a.json") == str(target)
    _untouched(target)


def test_stage_folders_refuse_a_link(tmp_path: Path) -> None:
    target = _outside(tmp_path)
    stages = tmp_path / "out" / "stages"
    stages.mkdir(parents=True)
    (stages / "base-0123456789ab").symlink_to(target.parent, target_is_directory=True)
    before = _tree(target.parent)
    with pytest.raises(ValueError, match=r"base-0123456789ab is a symbolic link"):
        stage_ready(stages / "base-0123456789ab")
    with pytest.raises(ValueError, match=r"base-0123456789ab is a symbolic link"):
        with atomic_dir(stages / "base-0123456789ab") as tmp:
            (tmp / "model.pt").write_bytes(b"weights")
    assert _tree(target.parent) == before
    assert [p.name for p in stages.iterdir()] == ["base-0123456789ab"]


# --- --overwrite empties only what rndpo made; --resume with --overwrite --------------------------------


def test_overwrite_refuses_a_git_repository_with_a_config_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "cfg")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "src").mkdir()
    (repo / "src" / "main.py").write_text("print('precious')\n")
    (repo / "config.json").write_text('{"name": "my project", "secret": "TOPSECRET"}\n')
    before = _tree(repo)
    assert run(config, repo, "--overwrite") == 2
    err = _one_line(capsys.readouterr().err)
    assert "holds no rndpo run" in err and "refusing to delete anything" in err
    _nothing_printed_from(repo / "config.json", err)
    assert _tree(repo) == before


def test_overwrite_refuses_a_run_folder_holding_entries_rndpo_does_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "cfg")
    out = _fake_run(tmp_path / "out", config)
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "notes.txt").write_text("precious")
    before = _tree(out)
    assert run(config, out, "--overwrite") == 2
    err = _one_line(capsys.readouterr().err)
    assert "entries rndpo does not write: '.git', 'notes.txt'" in err
    assert _tree(out) == before


@pytest.mark.parametrize(
    "marker",
    [SECRET, b'["version", "config"]', b'{"version": "0.1", "config": {"no_such_section": 1}}'],
    ids=["not json", "not an object", "a config rndpo cannot load"],
)
def test_clear_out_refuses_a_config_json_rndpo_did_not_write(marker: bytes, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "stages").mkdir(parents=True)
    (out / "config.json").write_bytes(marker)
    before = _tree(out)
    with pytest.raises(FileExistsError, match="holds no rndpo run") as err:
        clear_out(out)
    with pytest.raises(FileExistsError, match="holds no rndpo run"):
        check_out(out, resume=False, overwrite=True)
    _nothing_printed_from(out / "config.json", str(err.value))
    assert _tree(out) == before


def test_overwrite_accepts_exactly_the_names_a_run_writes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg")
    out = _fake_run(tmp_path / "out", config)
    (out / "models").mkdir()
    for name in (
        ".rndpo.lock",
        "rndpo.log",
        "results.json",
        "results.csv",
        "results.md",
        "curves.png",
        "examples.png",
        "timings.json",
        ".results.json.0123abcd.tmp",  # a write killed half-way
    ):
        (out / name).write_text("x")
    (out / "my-notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"entries rndpo does not write: 'my-notes\.txt'\);"):
        check_out(out, resume=False, overwrite=True)
    with pytest.raises(FileExistsError, match=r"'my-notes\.txt'"):
        clear_out(out)
    assert (out / "my-notes.txt").read_text() == "precious" and (out / "stages").is_dir()
    (out / "my-notes.txt").unlink()
    check_out(out, resume=False, overwrite=True)
    clear_out(out)
    assert [p.name for p in out.iterdir()] == [".rndpo.lock"]


def test_resume_with_overwrite_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "cfg")
    out = _fake_run(tmp_path / "out", config)
    before = _tree(out)
    assert run(config, out, "--resume", "--overwrite") == 2
    assert "--resume and --overwrite: pass one, not both" in _one_line(capsys.readouterr().err)
    assert _tree(out) == before
    with pytest.raises(ValueError, match="pass one, not both"):
        check_out(tmp_path / "fresh", resume=True, overwrite=True)
