"""load_model on a hand-edited MODEL.json or a corrupt MODEL.pt: the declared sizes are checked against
the caps, and the described network (built on the meta device) against the weights' shapes, before
anything is allocated; every failure is a one-line ValueError naming the file (issue 30)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rndpo.cli import main
from rndpo.data.input_limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VOXELS
from rndpo.nets import UNet, load_model, save_model


def _saved(folder: Path, channels: tuple[int, ...] = (2, 4), **info: Any) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    net = UNet(1, 1, channels, dropout=0.0, norm="none")
    return save_model(
        folder / "model.pt", net, in_channels=1, image_size=16, scaling={"kind": "unit"}, **info
    )


def _edit(js: Path, **changes: Any) -> None:
    info = json.loads(js.read_text())
    for key, value in changes.items():
        if key == "channels":
            info["architecture"]["kwargs"]["channels"] = value
        else:
            info[key] = value
    js.write_text(json.dumps(info))


def _one_line(err: pytest.ExceptionInfo[ValueError], *parts: str) -> None:
    text = str(err.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, (part, text)


@pytest.mark.parametrize(
    ("changes", "parts"),
    [
        ({"image_size": 200000}, ["image_size 200000", str(DEFAULT_MAX_PIXELS), "RNDPO_MAX_PIXELS"]),
        ({"patch_size": [4096, 4096, 4096]}, ["patch_size", str(DEFAULT_MAX_VOXELS), "RNDPO_MAX_VOXELS"]),
        ({"inference_size": [2**20, 2**20]}, ["inference_size", "RNDPO_MAX_VOXELS"]),
        ({"channels": [60000, 60000]}, ["channels[0] = 60000", "cap of 4096", "RNDPO_MAX_CHANNELS"]),
        ({"channels": [2] * 1000}, ["channels has 1000 entries"]),
        ({"in_channels": 10**9}, ["in_channels = 1000000000", "RNDPO_MAX_CHANNELS"]),
        ({"image_size": "big"}, ["image_size must be a positive integer, got 'big'"]),
        ({"spacing": [1.0, -2.0, 1.0]}, ["spacing must be a list of 1 to 3 positive numbers"]),
    ],
)
def test_hand_edited_sizes_are_refused_before_anything_is_built(
    changes: dict[str, Any], parts: list[str], tmp_path: Path
) -> None:
    pt, js = _saved(tmp_path / "m")
    _edit(js, **changes)
    with pytest.raises(ValueError) as err:
        load_model(pt)
    _one_line(err, str(js), *parts)


def test_a_cap_can_be_raised_by_its_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pt, js = _saved(tmp_path / "m")
    _edit(js, image_size=20000)
    with pytest.raises(ValueError, match="RNDPO_MAX_PIXELS"):
        load_model(pt)
    monkeypatch.setenv("RNDPO_MAX_PIXELS", str(20000**2))
    assert load_model(pt).image_size == 20000


_MEASURE = """
import resource, sys
from rndpo.nets import load_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(sys.argv[1])
    print("loaded")
except ValueError as err:
    print(err)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_description_that_does_not_fit_the_weights_allocates_nothing(tmp_path: Path) -> None:
    pt, js = _saved(tmp_path / "m")
    _edit(js, channels=[16, 4000])  # within the caps; building it would take 600 MB before the check
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(pt)], capture_output=True, text=True, check=True, timeout=300
    )
    message, grew_mib = done.stdout.strip().splitlines()
    assert str(pt) in message and "do not fit the network model.json describes" in message
    assert "the network has shape (16, 1, 3, 3), the file (2, 1, 3, 3)" in message
    assert int(grew_mib) < 100, done.stdout


def _flip_offsets(pt: Path) -> list[int]:
    """Every fourth byte of the pickle (data.pkl, first in the archive), every 23rd byte after it."""
    with zipfile.ZipFile(pt) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
    end = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size
    return [*range(0, end, 4), *range(end, pt.stat().st_size, 23)]


def test_a_byte_flipped_or_truncated_weights_file_is_one_line_naming_it(tmp_path: Path) -> None:
    pt, _ = _saved(tmp_path / "m")
    good = pt.read_bytes()
    outcomes: dict[str, int] = {"loaded": 0, "refused": 0}
    corruptions = [good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1 :] for i in _flip_offsets(pt)]
    corruptions += [good[:n] for n in range(0, len(good), 97)]
    for data in corruptions:
        pt.write_bytes(data)
        try:  # warnings are errors in this suite: none may escape either
            load_model(pt)
            outcomes["loaded"] += 1  # a flip inside tensor data: other weights, same shapes
        except ValueError as err:
            text = str(err)
            assert str(pt) in text and "\n" not in text, text
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 10, outcomes


def test_rndpo_predict_with_a_hand_edited_model_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pt, js = _saved(tmp_path / "m")
    _edit(js, image_size=200000)
    np.savez(tmp_path / "in.npz", images=np.zeros((2, 8, 8), np.uint8))
    assert (
        main(["predict", str(pt), "--images", str(tmp_path / "in.npz"), "--out", str(tmp_path / "o.npz")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(js) in err and "RNDPO_MAX_PIXELS" in err, err
    assert not (tmp_path / "o.npz").exists()
