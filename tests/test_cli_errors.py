"""Bad input: one clear line on stderr, exit code 2, and nothing left behind."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rndpo.cli import main
from rndpo.data import load_folder, load_nifti, load_npz
from rndpo.losses import preference_loss, sft_top_loss, supervised_anchor_loss
from rndpo.mining import mine_pairs
from rndpo.proposals import ProposalBank
from runs import TINIEST, run, write_config


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("rndpo: error: ") and "Traceback" not in err
    return err


# (overrides, key named in the message)
BAD_VALUES = [
    (["finetune.lr=nan"], "finetune.lr"),
    (["finetune.lr=inf"], "finetune.lr"),
    (["base.lr=nan"], "base.lr"),
    (["mining.min_margin=-0.1"], "mining.min_margin"),
    (["proposals.k=1"], "proposals.k"),
    (["proposals.k=1", 'judges.names=["agreement"]', 'methods=["sft_top"]'], "proposals.k"),
    (["data.label_budget=1.0"], "data.label_budget"),
    (["data.label_budget=1.5"], "data.label_budget"),
    (["data.label_budget=inf"], "data.label_budget"),
    (["seeds=[-1]"], "seeds"),
    (["judges.qc_steps=-1"], "judges.qc_steps"),
    (["judges.reliabilities=[nan]"], "judges.reliabilities"),
    (["data.max_unlabeled=-1"], "data.max_unlabeled"),
    (["finetune.weight_decay=-0.1"], "finetune.weight_decay"),
    (["methods={dpo={region_power=nan}}"], "methods.dpo.region_power"),
    (["methods={dpo={anchor_weight=nan}}"], "methods.dpo.anchor_weight"),
    (["methods={dpo={beta=inf}}"], "methods.dpo.beta"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_config_values_are_one_line_naming_the_key_and_leave_nothing(
    overrides: list[str], key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    flags = [f for o in overrides for f in ("--set", o)]
    assert run(config, tmp_path / "out", *flags) == 2
    assert key in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_out_that_is_a_file_or_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    file = tmp_path / "results.txt"
    file.write_text("keep")
    assert run(config, file) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert run(config, file / "sub" / "out") == 2
    assert f"lies under {file}, which is a file" in _one_line_error(capsys)
    assert file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt", "tiny.toml"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_out_that_is_not_writable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert run(config, locked / "out") == 2
        assert "is not writable" in _one_line_error(capsys)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "device",
    [
        "bogus",
        pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
    ],
)
def test_a_device_that_does_not_exist_here(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--device", device]) == 2
    assert repr(device) in _one_line_error(capsys)
    assert not out.exists()


# ---- loaders: a ValueError naming the file, and through the CLI one line with exit 2


def _png_folder(root: Path) -> tuple[Path, Path]:
    from PIL import Image

    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(images / f"{i:02d}.png")
        Image.fromarray(((rng.random((16, 16)) > 0.5) * 255).astype(np.uint8)).save(masks / f"{i:02d}.png")
    return images, masks


BROKEN_PNG = {
    "empty": lambda good: b"",
    "truncated": lambda good: good[:40],
    "corrupt": lambda good: good[:16] + bytes(b ^ 0x5A for b in good[16:]),
    "not an image": lambda good: b"hello, world\n" * 10,
}


@pytest.mark.parametrize("kind", sorted(BROKEN_PNG))
@pytest.mark.parametrize("which", ["images", "masks"])
def test_a_broken_png_names_the_file(
    kind: str, which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = _png_folder(tmp_path / "data")
    victim = (images if which == "images" else masks) / "03.png"
    victim.write_bytes(BROKEN_PNG[kind](victim.read_bytes()))
    with pytest.raises(ValueError, match=f"{victim}: cannot read it as an image"):
        load_folder(images, masks)
    text = TINIEST.replace("n_images = 24\n", f'kind = "folder"\npath = "{tmp_path / "data"}"\n')
    config = write_config(tmp_path / "cfg", text)
    assert run(config, tmp_path / "out") == 2
    assert str(victim) in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


NOT_NPZ = {
    "garbage": b"garbage" * 40,
    "broken zip": b"PK\x03\x04" + b"garbage" * 40,
    "empty": b"",
}


@pytest.mark.parametrize("kind", [*sorted(NOT_NPZ), "an .npy inside"])
def test_a_file_that_is_no_npz_archive_names_the_file(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.npz"
    if kind == "an .npy inside":
        with path.open("wb") as fh:
            np.save(fh, np.zeros((3, 8, 8), np.uint8))
    else:
        path.write_bytes(NOT_NPZ[kind])
    with pytest.raises(ValueError, match=f"path: {path}"):
        load_npz(path)
    text = TINIEST.replace("n_images = 24\n", f'kind = "npz"\npath = "{path}"\n')
    assert run(write_config(tmp_path / "cfg", text), tmp_path / "out") == 2
    assert str(path) in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("which", ["image", "mask"])
def test_a_corrupt_nifti_names_the_file(
    suffix: str, which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    good_image, good_mask = tmp_path / f"im{suffix}", tmp_path / f"mk{suffix}"
    nib.save(nib.Nifti1Image(rng.random((16, 16, 6)).astype(np.float32), np.eye(4)), good_image)
    nib.save(nib.Nifti1Image((rng.random((16, 16, 6)) > 0.5).astype(np.uint8), np.eye(4)), good_mask)
    victim = good_image if which == "image" else good_mask
    victim.write_bytes(b"not a nifti volume" * 30)
    with pytest.raises(ValueError, match=f"{which} {victim}: cannot read it as NIfTI"):
        load_nifti([good_image], [good_mask])
    text = TINIEST.replace(
        "n_images = 24\n",
        f'kind = "nifti"\nnifti_images = ["{good_image}"]\nnifti_masks = ["{good_mask}"]\n',
    )
    assert run(write_config(tmp_path / "cfg", text), tmp_path / "out") == 2
    assert str(victim) in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def _bank(tmp_path: Path) -> Path:
    bank = ProposalBank(np.zeros((2, 1, 8, 8), np.float32), np.zeros((2, 3, 8, 8), np.uint8))
    return bank.save(tmp_path / "bank")


def test_a_zero_byte_npy_in_a_bank_names_the_file(tmp_path: Path) -> None:
    folder = _bank(tmp_path)
    (folder / "masks.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{folder / 'masks.npy'}: cannot read"):
        ProposalBank.load(folder)


@pytest.mark.parametrize("key", ["arrays", "n_images", "k"])
def test_a_bank_manifest_without_its_keys_names_the_file(key: str, tmp_path: Path) -> None:
    folder = _bank(tmp_path)
    meta = json.loads((folder / "bank.json").read_text())
    del meta[key]
    (folder / "bank.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{folder / 'bank.json'}: a bank manifest needs .*'{key}'"):
        ProposalBank.load(folder)


def test_mine_with_a_zero_byte_npy_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.npy").write_bytes(b"")
    np.save(tmp_path / "s.npy", np.zeros((2, 3)))
    assert (
        main(["mine", str(tmp_path / "m.npy"), str(tmp_path / "s.npy"), "--out", str(tmp_path / "p.npz")])
        == 2
    )
    assert f"masks: {tmp_path / 'm.npy'} is not a readable .npy file" in _one_line_error(capsys)
    assert not (tmp_path / "p.npz").exists()


# ---- losses and mining at their edges


@pytest.mark.parametrize("loss", [sft_top_loss, supervised_anchor_loss])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_supervised_losses_on_an_empty_batch_are_zero_with_zero_gradient(loss, dtype: torch.dtype) -> None:
    logits = torch.zeros((0, 1, 8, 8), dtype=dtype, requires_grad=True)
    value = loss(logits, torch.zeros((0, 8, 8), dtype=torch.uint8))
    assert value.item() == 0.0 and value.dtype == dtype
    value.backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape


def _pair_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    policy = torch.randn((3, 1, 8, 8), generator=g, requires_grad=True)
    ref = torch.randn((3, 1, 8, 8), generator=g)
    chosen = (torch.rand((3, 8, 8), generator=g) > 0.5).to(torch.uint8)
    return policy, ref, chosen, 1 - chosen


@pytest.mark.parametrize("beta", [np.float32(2.0), np.float64(2.0), np.int64(2)])
def test_beta_as_a_numpy_number_equals_the_python_float(beta) -> None:
    policy, ref, chosen, rejected = _pair_batch()
    got = preference_loss(policy, ref, chosen, rejected, beta=beta).loss
    want = preference_loss(policy, ref, chosen, rejected, beta=2.0).loss
    assert isinstance(got, torch.Tensor) and got.item() == want.item()


def test_a_beta_that_overflows_the_loss_is_a_clear_error() -> None:
    policy, ref, chosen, rejected = _pair_batch()
    with pytest.raises(FloatingPointError, match=r"beta .* overflowed .* use a smaller beta"):
        preference_loss(policy, ref, chosen, rejected, beta=1e300, region_power=0.0)
    assert math.isfinite(preference_loss(policy, ref, chosen, rejected, beta=1e3).loss.item())


def test_integer_scores_beyond_2_to_53_are_refused_not_rounded() -> None:
    masks = np.zeros((1, 2, 4), np.uint8)
    masks[0, 1, 0] = 1
    exact = np.array([[2**53, 2**53 - 1]], dtype=np.int64)
    assert len(mine_pairs(masks, exact, "top_vs_bottom")) == 1
    beyond = np.array([[2**53 + 1, 2**53]], dtype=np.int64)  # equal once rounded to float64
    with pytest.raises(ValueError, match=r"integer scores must lie in \[-2\*\*53, 2\*\*53\]"):
        mine_pairs(masks, beyond, "top_vs_bottom")


@pytest.mark.parametrize(
    "raw",
    [
        {"mining": {"min_region": 3, "max_region": 3}},  # equal bounds are a valid window of one size
        {"data": {"label_budget": 5}},  # a whole count
        {"data": {"label_budget": 0.999}},
        {"proposals": {"k": 1}, "judges": {"names": ["oracle"]}, "methods": ["sft_top"]},
        {"seeds": [0, 3]},
    ],
)
def test_edge_values_that_are_valid_are_accepted(raw: dict) -> None:
    from rndpo.config import config_from_dict

    config = config_from_dict(raw)
    assert config.mining.max_region == raw.get("mining", {}).get("max_region")
