"""Crash-safe writes and cache keys."""

from __future__ import annotations

import json
import math

import pytest

from rndpo.storage import atomic_dir, atomic_write, stage_key, write_json


def test_stage_key_is_stable_and_order_free() -> None:
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})
    assert len(stage_key("x")) == 12


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path) -> None:
    target = tmp_path / "r.json"
    write_json(target, {"v": 1})

    def broken(tmp):
        tmp.write_text('{"v": ')  # half-written
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_write_json_refuses_nan(tmp_path) -> None:
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"v": math.nan})
    assert not (tmp_path / "x.json").exists()


def test_atomic_dir_replaces_only_on_success(tmp_path) -> None:
    target = tmp_path / "stage"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_write_npz_writes_exactly_the_named_file(tmp_path) -> None:
    import numpy as np

    from rndpo.storage import write_npz

    target = tmp_path / "pairs.npz"
    write_npz(target, a=np.arange(3), b=np.ones((2, 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.npz"]
    with np.load(target) as z:
        assert z["a"].tolist() == [0, 1, 2] and z["b"].shape == (2, 2)
