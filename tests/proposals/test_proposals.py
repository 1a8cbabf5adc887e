"""rndpo.proposals: ProposalBank validation / storage and generate_proposals on tiny disks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rndpo.proposals.bank as proposals_bank
from factories import disks
from oracles import oracle_binary_morph
from rndpo.config import ConfigError
from rndpo.data import SegmentationDataset
from rndpo.inference import predict_logits
from rndpo.nets.unet import UNet
from rndpo.proposals import (
    PROPOSAL_SOURCES,
    ProposalBank,
    ProposalConfig,
    allocate_sources,
    generate_proposals,
)
from rndpo.training.supervised import BaseTrainConfig, train_base

SMALL = (4, 8, 16)


@pytest.fixture(scope="module")
def base() -> tuple[UNet, list[dict[str, torch.Tensor]], SegmentationDataset]:
    torch.manual_seed(0)
    model = UNet(channels=SMALL, dropout=0.2)
    cfg = BaseTrainConfig(steps=30, batch_size=8, lr=1e-2, eval_every=10, n_snapshots=2)
    result = train_base(model, disks(12), disks(4, seed=1), cfg, progress=False)
    return model, result.snapshots, disks(5, seed=2)


def _generate(
    base: tuple[UNet, list[dict[str, torch.Tensor]], SegmentationDataset], **kwargs: object
) -> ProposalBank:
    model, snaps, data = base
    options: dict[str, object] = {
        "snapshots": snaps,
        "ground_truth": data.masks,
        "progress": False,
        "batch_size": 2,
    }
    options.update(kwargs)
    return generate_proposals(model, data.images, **options)  # type: ignore[arg-type]


# ---- generation ----


def test_default_bank_shapes_dtypes_and_sources(base) -> None:  # type: ignore[no-untyped-def]
    model, _, data = base
    bank = _generate(base, config=ProposalConfig(k=10))
    assert bank.masks.shape == (5, 10, 32, 32) and bank.masks.dtype == np.uint8
    assert bank.probs is not None and bank.probs.shape == (5, 32, 32) and bank.probs.dtype == np.float32
    assert bank.ground_truth is not None and np.array_equal(bank.ground_truth, data.masks)
    assert np.array_equal(bank.images, data.images)
    assert bank.sources == PROPOSAL_SOURCES * 2
    assert set(np.unique(bank.masks).tolist()) <= {0, 1}
    expected = torch.sigmoid(predict_logits(model, data.images)[:, 0]).numpy()
    np.testing.assert_allclose(bank.probs, expected, atol=1e-6)
    assert not model.training  # flags restored after MC-dropout


def test_proposals_differ_from_each_other(base) -> None:  # type: ignore[no-untyped-def]
    bank = _generate(base, config=ProposalConfig(k=10))
    flat = bank.masks.reshape(bank.n_images, bank.k, -1)
    for a in range(bank.k):
        for b in range(a + 1, bank.k):
            assert not np.array_equal(flat[:, a], flat[:, b]), (bank.sources[a], bank.sources[b])
    # and within each image most proposals are distinct
    for i in range(bank.n_images):
        assert len({row.tobytes() for row in flat[i]}) >= 6


@pytest.mark.parametrize("source", PROPOSAL_SOURCES)
def test_every_source_alone(base, source: str) -> None:  # type: ignore[no-untyped-def]
    model, snaps, data = base
    bank = _generate(base, config=ProposalConfig(k=3, sources=(source,)))
    assert bank.sources == (source,) * 3
    assert bank.masks.shape == (5, 3, 32, 32)
    x = torch.from_numpy(data.images)
    probs = bank.probs
    assert probs is not None
    if source == "threshold":
        for j, t in enumerate((0.3, 0.5, 0.7)):
            np.testing.assert_array_equal(bank.masks[:, j], probs >= t)
    elif source == "morph":
        base_mask = probs >= 0.5
        for j, (radius, dilate) in enumerate(((1, True), (1, False), (2, True))):
            for i in range(len(data)):
                np.testing.assert_array_equal(
                    bank.masks[i, j], oracle_binary_morph(base_mask[i], radius, dilate)
                )
    elif source == "tta":  # variant 0 is a horizontal flip: flip, predict, flip back
        model.eval()
        with torch.no_grad():
            expected = model(x.flip(-1)).flip(-1)[:, 0] >= 0
        np.testing.assert_array_equal(bank.masks[:, 0], expected.numpy())
        assert not np.array_equal(bank.masks[:, 1], bank.masks[:, 2])
    elif source == "snapshot":
        for j in range(3):
            snap = UNet(channels=SMALL, dropout=0.2)
            snap.load_state_dict(snaps[j % len(snaps)])
            expected = predict_logits(snap, x)[:, 0] >= 0
            np.testing.assert_array_equal(bank.masks[:, j], expected.numpy())
        assert not np.array_equal(bank.masks[:, 0], bank.masks[:, 1])
    else:  # mc_dropout: distinct samples, neither equal to the deterministic base mask
        assert not np.array_equal(bank.masks[:, 0], bank.masks[:, 1])
        assert not np.array_equal(bank.masks[:, 0], probs >= 0.5)


def test_snapshot_modules_and_state_dicts_agree(base) -> None:  # type: ignore[no-untyped-def]
    _, snaps, _ = base
    modules = []
    for state in snaps:
        m = UNet(channels=SMALL, dropout=0.2)
        m.load_state_dict(state)
        modules.append(m)
    cfg = ProposalConfig(k=2, sources=("snapshot",))
    a = _generate(base, config=cfg)
    b = _generate(base, config=cfg, snapshots=modules)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_generation_is_deterministic(base) -> None:  # type: ignore[no-untyped-def]
    cfg = ProposalConfig(k=8)
    a, b = _generate(base, config=cfg, seed=3), _generate(base, config=cfg, seed=3)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.probs, b.probs)
    before = torch.random.get_rng_state()
    c = _generate(base, config=cfg, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    mc = [j for j, s in enumerate(cfg.sources * 2) if s == "mc_dropout"]
    assert not np.array_equal(a.masks[:, mc], c.masks[:, mc])
    others = [j for j in range(8) if j not in mc]
    np.testing.assert_array_equal(a.masks[:, others], c.masks[:, others])


def test_mc_dropout_p_override_is_restored(base) -> None:  # type: ignore[no-untyped-def]
    model = base[0]
    cfg = ProposalConfig(k=2, sources=("mc_dropout",), mc_dropout_p=0.5)
    low = _generate(base, config=dataclasses.replace(cfg, mc_dropout_p=0.01))
    high = _generate(base, config=cfg)
    assert all(m.p == 0.2 for m in model.modules() if isinstance(m, torch.nn.Dropout2d))
    base_mask = high.probs >= 0.5  # type: ignore[operator]
    diff_low = (low.masks[:, 0] != base_mask).sum()
    diff_high = (high.masks[:, 0] != base_mask).sum()
    assert diff_high > diff_low


def test_missing_snapshots_and_bad_arguments(base) -> None:  # type: ignore[no-untyped-def]
    model, _, data = base
    # the defaults work without snapshots: the snapshot source is skipped with a warning
    with pytest.warns(UserWarning, match="no snapshots given, so the 'snapshot' source is skipped"):
        bank = generate_proposals(model, data.images, progress=False)
    assert bank.k == 8 and "snapshot" not in bank.sources
    others = ProposalConfig(sources=("mc_dropout", "tta", "threshold", "morph"))
    assert np.array_equal(
        bank.masks, generate_proposals(model, data.images, config=others, progress=False).masks
    )
    with pytest.raises(ValueError, match=r"sources are only \['snapshot'\], but snapshots is None"):
        generate_proposals(
            model, data.images, config=ProposalConfig(k=1, sources=("snapshot",)), progress=False
        )
    # without the snapshot source no snapshots are needed
    cfg = ProposalConfig(k=2, sources=("threshold",))
    assert generate_proposals(model, data.images, config=cfg, progress=False).k == 2
    with pytest.raises(
        ValueError, match=r"ground_truth must have shape \(N, H, W\) = \(5, 32, 32\), got \(5, 32\)"
    ):
        generate_proposals(model, data.images, config=cfg, ground_truth=data.masks[:, 0], progress=False)
    with pytest.raises(ValueError, match="ground_truth must be uint8"):
        generate_proposals(model, data.images, config=cfg, ground_truth=data.masks * 3, progress=False)
    with pytest.raises(TypeError, match="config must be a ProposalConfig, got dict"):
        generate_proposals(model, data.images, config={"k": 2}, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\)"):
        generate_proposals(model, data.images[0], config=cfg, progress=False)
    with pytest.raises(TypeError, match=r"snapshots\[0\] must be an nn.Module or a state_dict, got int"):
        generate_proposals(
            model, data.images, config=ProposalConfig(k=1, sources=("snapshot",)), snapshots=[3]
        )  # type: ignore[list-item]
    with pytest.raises(ValueError, match="has no dropout module"):
        generate_proposals(
            UNet(channels=SMALL, dropout=0.0),
            data.images,
            config=ProposalConfig(k=1, sources=("mc_dropout",)),
            progress=False,
        )


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"k": 0}, "proposals.k must be >= 1, got 0"),
        ({"k": 2.0}, "proposals.k must be an integer, got float 2.0"),
        (
            {"sources": ("tta", "flip")},
            r"proposals.sources: unknown source 'flip'; valid choices: \['mc_dropout', .*\]",
        ),
        ({"sources": ()}, "proposals.sources must name at least one of"),
        ({"sources": ["tta"]}, "proposals.sources must be a tuple in Python"),
        ({"sources": ("tta", "tta")}, "proposals.sources must not repeat"),
        ({"threshold_low": 0.8}, "0 < low <= high < 1, got 0.8 and 0.7"),
        ({"mc_dropout_p": 1.0}, r"proposals.mc_dropout_p must be in \(0, 1\), or unset .*, got 1.0"),
        ({"morph_radius": 0}, "proposals.morph_radius must be >= 1, got 0"),
        ({"tta_degrees": 120.0}, r"proposals.tta_degrees must be in \[0, 90\]"),
    ],
)
def test_bad_config(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ProposalConfig(**changes)  # type: ignore[arg-type]
    for f in dataclasses.fields(ProposalConfig):
        assert f.metadata.get("help"), f.name


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [(-1, ValueError, "seed must be an int >= 0, got -1"), (1.0, TypeError, "seed must be an int >= 0")],
)
def test_bad_seed(base, seed: object, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        _generate(base, config=ProposalConfig(k=2, sources=("threshold",)), seed=seed)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.lists(st.sampled_from(PROPOSAL_SOURCES), min_size=1, max_size=5, unique=True))
def test_allocation_is_round_robin_and_balanced(k: int, sources: list[str]) -> None:
    plan = allocate_sources(k, sources)
    assert len(plan) == k
    counts = [sum(1 for s, _ in plan if s == src) for src in sources]
    assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True)
    for src in sources:  # variant indices of each source are 0, 1, 2, ...
        assert [i for s, i in plan if s == src] == list(range(counts[sources.index(src)]))
    assert [s for s, _ in plan[: len(sources)]] == sources[:k]


# ---- bank container ----


def _bank(n: int = 3, k: int = 4, h: int = 6, w: int = 5, seed: int = 0, **kwargs: object) -> ProposalBank:
    rng = np.random.default_rng(seed)
    fields: dict[str, object] = {
        "images": rng.random((n, 2, h, w), dtype=np.float32),
        "masks": (rng.random((n, k, h, w)) < 0.5).astype(np.uint8),
        "probs": rng.random((n, h, w), dtype=np.float32),
        "ground_truth": (rng.random((n, h, w)) < 0.5).astype(np.uint8),
        "sources": tuple(f"s{j}" for j in range(k)),
    }
    fields.update(kwargs)
    return ProposalBank(**fields)  # type: ignore[arg-type]


def _assert_banks_equal(a: ProposalBank, b: ProposalBank) -> None:
    for name in ("images", "masks", "probs", "ground_truth"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            np.testing.assert_array_equal(x, y)
    assert a.sources == b.sources


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("optional", [True, False])
def test_save_load_round_trip(tmp_path: Path, mmap: bool, optional: bool) -> None:
    bank = _bank() if optional else _bank(probs=None, ground_truth=None, sources=())
    bank.save(tmp_path / "bank")
    loaded = ProposalBank.load(tmp_path / "bank", mmap=mmap)
    _assert_banks_equal(bank, loaded)
    assert isinstance(loaded.masks, np.memmap) is mmap
    if mmap:
        assert not loaded.masks.flags.writeable
    assert json.loads((tmp_path / "bank" / "bank.json").read_text())["k"] == 4
    # a loaded (memory-mapped) bank can be saved again, over itself
    loaded.subset([0, 2]).save(tmp_path / "bank")
    _assert_banks_equal(ProposalBank.load(tmp_path / "bank"), bank.subset(np.array([0, 2])))


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _bank(seed=1)
    old.save(tmp_path / "bank")
    calls = {"n": 0}
    real_save = np.save

    def failing_save(path: object, arr: np.ndarray, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real_save(path, arr, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(proposals_bank.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _bank(seed=2).save(tmp_path / "bank")
    with pytest.raises(OSError, match="disk full"):
        calls["n"] = 0
        _bank(seed=2).save(tmp_path / "fresh")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank"]  # no partial or temporary folder
    _assert_banks_equal(ProposalBank.load(tmp_path / "bank"), old)  # the old bank is intact


def test_subset(tmp_path: Path) -> None:
    bank = _bank(n=5)
    sub = bank.subset(np.array([4, 1]))
    np.testing.assert_array_equal(sub.masks, bank.masks[[4, 1]])
    np.testing.assert_array_equal(sub.probs, bank.probs[[4, 1]])  # type: ignore[index]
    assert sub.n_images == 2 and sub.k == 4 and sub.sources == bank.sources
    by_mask = bank.subset(np.array([True, False, False, True, False]))
    np.testing.assert_array_equal(by_mask.images, bank.images[[0, 3]])
    with pytest.raises(ValueError, match=r"index must lie in \[0, 5\)"):
        bank.subset([7])
    with pytest.raises(ValueError, match=r"boolean mask must have shape \(5,\)"):
        bank.subset(np.array([True, False]))


def test_bool_masks_become_uint8_views() -> None:
    masks = np.zeros((3, 4, 6, 5), dtype=bool)
    bank = _bank(masks=masks)
    assert bank.masks.dtype == np.uint8 and np.shares_memory(bank.masks, masks)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"images": np.zeros((3, 6, 5), np.float32)}, ValueError, r"images must be float32 \(N, C, H, W\)"),
        ({"images": np.zeros((3, 2, 6, 5), np.float64)}, ValueError, "images must be float32"),
        (
            {"masks": np.zeros((3, 4, 6, 4), np.uint8)},
            ValueError,
            r"masks must be uint8 \(N, K, H, W\) with \(N, H, W\) = \(3, 6, 5\)",
        ),
        ({"masks": np.zeros((3, 0, 6, 5), np.uint8)}, ValueError, "K >= 1"),
        (
            {"masks": np.full((3, 4, 6, 5), 2, np.uint8)},
            ValueError,
            r"masks must be binary \{0, 1\}, got values up to 2",
        ),
        (
            {"probs": np.zeros((3, 6, 5), np.float64)},
            ValueError,
            r"probs must be float32 \(N, H, W\) = \(3, 6, 5\)",
        ),
        (
            {"probs": np.full((3, 6, 5), 1.5, np.float32)},
            ValueError,
            r"probs must be finite probabilities in \[0, 1\]",
        ),
        (
            {"ground_truth": np.zeros((2, 6, 5), np.uint8)},
            ValueError,
            r"ground_truth must be uint8 \(N, H, W\) = \(3, 6, 5\)",
        ),
        ({"ground_truth": np.full((3, 6, 5), 255, np.uint8)}, ValueError, "ground_truth must be binary"),
        ({"sources": ("a", "b")}, ValueError, "sources must name K = 4 proposals, got 2"),
        ({"sources": ["a"] * 4}, TypeError, "sources must be a tuple of str"),
        ({"masks": [[0]]}, TypeError, "masks must be a numpy array, got list"),
    ],
)
def test_bank_validation(changes: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _bank(**changes)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"bank\.json is missing"):
        ProposalBank.load(tmp_path)
    _bank().save(tmp_path / "b")
    (tmp_path / "b" / "probs.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"probs\.npy: listed in bank\.json but missing"):
        ProposalBank.load(tmp_path / "b")
    (tmp_path / "b" / "bank.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bank\.json: invalid JSON"):
        ProposalBank.load(tmp_path / "b")
    (tmp_path / "b" / "bank.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format must be 'rndpo-proposal-bank/1', got 'other'"):
        ProposalBank.load(tmp_path / "b")
