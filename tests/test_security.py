"""Attacks through an output folder or a config: no code runs, no path escapes --out, no folder is lost."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
import torch

from rndpo.config import ConfigError, config_from_dict
from rndpo.storage import CHECKSUMS, load_weights
from runs import copy_run, rows, run, stage_files, tiny_run, write_config


class _Poison:
    """Unpickling this object would create the folder ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _poison(path: Path, marker: Path, shape: dict | None = None) -> None:
    torch.save({**(shape or {}), "best": _Poison(marker)}, path)


def _resign(path: Path) -> None:
    """Rewrite the checksums of ``path`` the way an attacker who edits the folder would."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sums = path.parent / CHECKSUMS
    if sums.exists():
        lines = [
            f"{digest}  {path.name}" if line.endswith(f"  {path.name}") else line
            for line in sums.read_text().splitlines()
        ]
        sums.write_text("\n".join(lines) + "\n")
    else:
        path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_run(tmp_path_factory, "security")


def test_load_weights_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _poison(tmp_path / "model.pt", marker)
    with pytest.raises(ValueError, match=r"model\.pt: refusing to load.*posix\.mkdir"):
        load_weights(tmp_path / "model.pt")
    assert not marker.exists()


def test_load_weights_accepts_what_rndpo_writes(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": torch.Generator().manual_seed(3).get_state(),
        "curve": [(0, 0.5)],
        "log": [{"loss": 1.0}],
        "step": 1,
    }
    torch.save(state, tmp_path / "c.ckpt")
    back = load_weights(tmp_path / "c.ckpt")
    assert back["step"] == 1 and torch.equal(back["generator"], state["generator"])
    opt.load_state_dict(back["optimizer"])


def _base_model(target: Path) -> Path:
    (weights,) = (target / "stages").glob("base-*/model.pt")
    return weights


def _checkpoint(target: Path) -> Path:
    (result,) = (target / "runs").glob("[!l]*.json")  # [!l]: a method run, not a ladder rung
    result.unlink()  # the run is unfinished: its checkpoint is read on resume
    return result.with_suffix(".ckpt")


@pytest.mark.parametrize("victim", [_base_model, _checkpoint], ids=["base model.pt", "fine-tuning .ckpt"])
def test_a_poisoned_weights_file_in_a_resumed_folder_runs_nothing(
    victim, tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    path = victim(target)
    marker = tmp_path / "pwned"
    _poison(path, marker)
    _resign(path)  # an attacker who edits the folder can rewrite its checksums too
    capsys.readouterr()
    assert run(config, target, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refusing to load" in err and path.name in err
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "a\\b", "", "x y", "/abs", "ok\n"])
def test_method_names_that_are_not_plain_file_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="methods: a method name must be a plain name"):
        config_from_dict({"methods": {name: {"preset": "dpo"}}})


def test_a_method_name_cannot_write_outside_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = write_config(tmp_path).read_text().replace('methods = ["dpo"]\n', "")
    config = write_config(tmp_path, text + '\n[methods."../../escaped"]\npreset = "dpo"\n')
    assert run(config, tmp_path / "a" / "out") == 2
    assert "must be a plain name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_overwrite_refuses_a_folder_that_holds_no_rndpo_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("precious")
    config = write_config(tmp_path)
    assert run(config, thesis, "--overwrite") == 2
    assert "holds no rndpo run" in capsys.readouterr().err
    assert (thesis / "chapter1.tex").read_text() == "precious"
    assert sorted(p.name for p in thesis.iterdir()) == ["chapter1.tex"]


def test_overwrite_with_a_config_that_fails_removes_nothing(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = tiny
    target = copy_run(out, tmp_path)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    bad_data = write_config(tmp_path / "bad", '[data]\nkind = "npz"\npath = "no/such.npz"\n')
    assert run(bad_data, target, "--overwrite") == 2
    assert "dataset not found" in capsys.readouterr().err
    bad_value = write_config(tmp_path / "bad2", "[finetune]\nlr = nan\n")
    assert run(bad_value, target, "--overwrite") == 2
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before


def test_overwrite_replaces_a_previous_run_and_says_what_it_removed(
    tiny: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, out = tiny
    target = copy_run(out, tmp_path)
    (target / "stages" / "stale-leftover.npz").write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="rndpo"):
        assert run(config, target, "--overwrite") == 0
    assert "--overwrite: removed the previous run in" in caplog.text and "stages" in caplog.text
    assert "stale-leftover.npz" not in stage_files(target)
    assert rows(target) == rows(out)
