"""rndpo.training.supervised: loss, augmentation, and a short seeded base training on tiny synthetic disks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import disks
from oracles import oracle_rotate_nearest, oracle_segmentation_loss
from rndpo.config import ConfigError
from rndpo.inference import rotate
from rndpo.nets.unet import UNet
from rndpo.training.supervised import (
    BaseTrainConfig,
    BaseTrainResult,
    augment_batch,
    segmentation_loss,
    snapshot_steps,
    train_base,
)

SMALL = (4, 8, 16)


def _model(in_channels: int = 1) -> UNet:
    torch.manual_seed(0)
    return UNet(in_channels=in_channels, channels=SMALL, dropout=0.1)


# the fixed-length recipe (no patience, no warm-up, cosine): the tests of patience and cooldown set them
FAST = BaseTrainConfig(
    steps=24,
    batch_size=8,
    lr=3e-3,
    eval_every=8,
    n_snapshots=3,
    patience=0,
    cooldown=0.0,
    warmup_steps=0,
    schedule="cosine",
)


@pytest.fixture(scope="module")
def trained() -> tuple[UNet, dict[str, torch.Tensor], BaseTrainResult]:
    model = _model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_base(model, disks(16), disks(6, seed=1), FAST, progress=False)
    return model, initial, result


# ---- loss ----


@pytest.mark.parametrize("seed", range(4))
def test_segmentation_loss_matches_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (3, 1, 5, 6))
    target = (rng.random((3, 1, 5, 6)) < 0.4).astype(np.float64)
    got = segmentation_loss(torch.from_numpy(logits), torch.from_numpy(target))
    assert math.isclose(float(got), oracle_segmentation_loss(logits, target), rel_tol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 6),
    st.floats(0.1, 20),
    st.integers(0, 2**31 - 1),
)
def test_segmentation_loss_property(b: int, size: int, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, scale, (b, 1, size, size))
    target = (rng.random((b, 1, size, size)) < 0.5).astype(np.float64)
    got = float(segmentation_loss(torch.from_numpy(logits), torch.from_numpy(target)))
    assert math.isclose(got, oracle_segmentation_loss(logits, target), rel_tol=1e-9, abs_tol=1e-12)
    assert got >= 0


def test_segmentation_loss_closed_form_and_gradcheck() -> None:
    # logits 0 everywhere: BCE = log 2; p = 1/2, 4 pixels, 2 foreground: Dice = (2 * 1 + 1) / (2 + 2 + 1)
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64)
    assert math.isclose(float(segmentation_loss(logits, target)), math.log(2) + 1 - 3 / 5, rel_tol=1e-12)
    z = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(2, 1, 3, 3) < 0.5).to(torch.float64)
    assert torch.autograd.gradcheck(lambda z: segmentation_loss(z, t), (z,))
    with pytest.raises(
        ValueError, match=r"target must have the logits' shape \(2, 1, 3, 3\), got \(2, 3, 3\)"
    ):
        segmentation_loss(z, t[:, 0])


# ---- augmentation ----


def test_rotate_matches_pixel_loop_oracle_and_rot90() -> None:
    img = np.random.default_rng(0).random((9, 14)).astype(np.float32)
    for deg in (30.0, -20.0, 180.0):
        ours = rotate(torch.from_numpy(img)[None, None], torch.tensor([math.radians(deg)]), mode="nearest")
        assert np.mean(ours[0, 0].numpy() != oracle_rotate_nearest(img, deg)) < 0.02
    sq = np.random.default_rng(1).random((8, 8)).astype(np.float32)
    r90 = rotate(torch.from_numpy(sq)[None, None], torch.tensor([math.pi / 2]), mode="bilinear")[0, 0].numpy()
    np.testing.assert_allclose(r90, np.rot90(sq, 1), atol=1e-5)


def test_augment_batch_shapes_binary_and_seeded() -> None:
    data = disks(6, size=24)
    x = torch.from_numpy(data.images)
    y = torch.from_numpy(data.masks.astype(np.float32)).unsqueeze(1)
    a = augment_batch(x, y, torch.Generator().manual_seed(3))
    b = augment_batch(x, y, torch.Generator().manual_seed(3))
    c = augment_batch(x, y, torch.Generator().manual_seed(4))
    assert a[0].shape == x.shape and a[1].shape == y.shape
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert set(torch.unique(a[1]).tolist()) <= {0.0, 1.0}
    assert float(a[0].min()) >= 0 and float(a[0].max()) <= 1
    # rotations keep the disk (roughly) the same size
    assert abs(float(a[1].sum()) - float(y.sum())) < 0.1 * float(y.sum())


def test_augment_batch_keeps_the_scale_of_images_outside_0_1() -> None:
    """The one image rule: a z-scored / CT-range batch is augmented on its own scale, the same as the
    [0, 1] batch it is an affine copy of (each image spans exactly [0, 1] there)."""
    rng = np.random.default_rng(2)
    unit = rng.random((4, 1, 16, 16)).astype(np.float32)
    unit[:, :, 0, 0], unit[:, :, 0, 1] = 0.0, 1.0  # each image spans exactly [0, 1]
    y = torch.from_numpy((unit > 0.5).astype(np.float32))
    a, ya = augment_batch(torch.from_numpy(unit), y, torch.Generator().manual_seed(5))
    b, yb = augment_batch(torch.from_numpy(unit * 400 - 200), y, torch.Generator().manual_seed(5))
    assert torch.equal(ya, yb)
    np.testing.assert_allclose(b.numpy(), a.numpy() * 400 - 200, atol=1e-3)


def test_augment_keeps_image_and_mask_aligned() -> None:
    """With the image equal to its mask, every augmented foreground pixel stays at least as bright as
    every background pixel (geometry shared, intensity maps monotone)."""
    rng = np.random.default_rng(0)
    masks = (rng.random((8, 1, 16, 16)) < 0.4).astype(np.float32)
    x, y = augment_batch(
        torch.from_numpy(masks.copy()),
        torch.from_numpy(masks),
        torch.Generator().manual_seed(0),
        max_rotation=0,
    )
    assert not torch.equal(y, torch.from_numpy(masks))  # something moved
    for xi, yi in zip(x, y, strict=True):
        assert float(xi[yi > 0.5].min()) >= float(xi[yi < 0.5].max())


def test_snapshot_steps() -> None:
    assert snapshot_steps(300, 3) == (100, 200, 300)
    assert snapshot_steps(10, 4) == (2, 5, 8, 10)
    assert snapshot_steps(5, 0) == ()


# ---- training ----


def test_training_lowers_loss_and_changes_every_parameter(
    trained: tuple[UNet, dict[str, torch.Tensor], BaseTrainResult],
) -> None:
    model, initial, result = trained
    steps = [h[0] for h in result.history]
    assert steps == [8, 16, 24]
    assert result.history[-1][1] < result.history[0][1]
    assert all(math.isfinite(loss) and 0 <= dice <= 1 for _, loss, dice in result.history)
    assert result.best_val_dice == max(h[2] for h in result.history)
    assert result.best_step in steps
    final = dict(model.named_parameters())
    for name, before in initial.items():
        if name in final:
            assert not torch.equal(final[name].detach(), before), f"parameter {name} did not change"
    # the model ends with the selected state
    for name, value in model.state_dict().items():
        assert torch.equal(value, result.state_dict[name])
    assert not model.training


def test_snapshots_count_and_differ(trained: tuple[UNet, dict[str, torch.Tensor], BaseTrainResult]) -> None:
    _, _, result = trained
    assert len(result.snapshots) == 3
    assert result.snapshot_steps == (8, 16, 24)
    w = [s["head.weight"] for s in result.snapshots]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert all(v.device.type == "cpu" for s in result.snapshots for v in s.values())


def test_without_onednn_training_does_not_depend_on_the_thread_count() -> None:
    """What the README promises for runs that must match across thread counts: with oneDNN off, the
    same run at 1 and 2 torch threads gives the same weights bit for bit (with it on they part, since
    the convolution's weight gradient sums in a thread-dependent order)."""
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    states = []
    try:
        torch.backends.mkldnn.enabled = False
        for n in (1, 2):
            torch.set_num_threads(n)
            states.append(train_base(_model(), disks(16), disks(6, seed=1), FAST, progress=False).state_dict)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_training_is_reproducible(trained: tuple[UNet, dict[str, torch.Tensor], BaseTrainResult]) -> None:
    _, _, result = trained
    before = torch.random.get_rng_state()
    again = train_base(_model(), disks(16), disks(6, seed=1), FAST, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    assert again.history == result.history
    for name, value in result.state_dict.items():
        assert torch.equal(value, again.state_dict[name]), name
    for s1, s2 in zip(result.snapshots, again.snapshots, strict=True):
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
    other = train_base(
        _model(), disks(16), disks(6, seed=1), dataclasses.replace(FAST, steps=8), seed=1, progress=False
    )
    assert not torch.equal(other.state_dict["head.weight"], result.snapshots[0]["head.weight"])


def test_training_rgb_without_augment_or_snapshots() -> None:
    cfg = BaseTrainConfig(
        steps=3, batch_size=4, eval_every=2, n_snapshots=0, augment=False, schedule="constant", patience=0
    )
    result = train_base(
        _model(3), disks(5, size=20, channels=3), disks(2, size=20, seed=2, channels=3), cfg, progress=False
    )
    assert result.snapshots == []
    assert [h[0] for h in result.history] == [2, 3]


@pytest.mark.parametrize(
    ("labeled", "val", "model_channels", "error", "match"),
    [
        (
            disks(4).subset(np.arange(0)),
            disks(2),
            1,
            ValueError,
            "labeled must hold at least one image, got 0",
        ),
        (disks(4), disks(2).subset(np.arange(0)), 1, ValueError, "val must hold at least one image, got 0"),
        (
            disks(4, channels=3),
            disks(2, channels=3),
            1,
            ValueError,
            "labeled.images must have model.in_channels = 1 channels, got 3",
        ),
        (
            disks(4),
            disks(2, channels=3),
            1,
            ValueError,
            r"val.images must have as many channels as labeled.images \(1\), got 3",
        ),
        ("not data", disks(2), 1, TypeError, "labeled must be a SegmentationDataset, got str"),
    ],
)
def test_bad_input(
    labeled: object, val: object, model_channels: int, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        train_base(_model(model_channels), labeled, val, FAST, progress=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"steps": 0}, "base.steps must be >= 1, got 0"),
        ({"batch_size": 2.5}, "base.batch_size must be an integer, got float 2.5"),
        ({"n_snapshots": 30, "steps": 10}, "base.n_snapshots must be <= base.steps = 10, got 30"),
        ({"lr": -1.0}, "base.lr must be > 0, got -1.0"),
        ({"lr": math.nan}, "base.lr must be a finite number"),
        ({"schedule": "step"}, r"base.schedule must be one of \['cosine', 'constant'\], got 'step'"),
        ({"max_rotation": 200.0}, r"base.max_rotation must be in \[0, 180\]"),
    ],
)
def test_bad_config(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BaseTrainConfig(**changes)  # type: ignore[arg-type]


def test_config_type_checked() -> None:
    with pytest.raises(TypeError, match="config must be a BaseTrainConfig, got dict"):
        train_base(_model(), disks(2), disks(2), {"steps": 2}, progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"seed must be an int, got float 1\.0"):
        train_base(_model(), disks(2), disks(2), FAST, seed=1.0, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device must be a torch device such as 'cpu' or 'cuda', got 'gpu'"):
        train_base(_model(), disks(2), disks(2), FAST, device="gpu", progress=False)
    for f in dataclasses.fields(BaseTrainConfig):
        assert f.metadata.get("help"), f.name


# ---- convergence: patience, min_delta, warm-up ----


def _first_stop(
    history: list[tuple[int, float, float]], patience: int, min_delta: float, window: int = 1
) -> int | None:
    """Oracle: the evaluation step at which the stopping rule fires, read off a full run's history."""
    best, stale = -math.inf, 0
    values = [h[2] for h in history]
    for i, (step, _, _) in enumerate(history):
        last = values[max(0, i - window + 1) : i + 1]
        level = sum(last) / len(last)  # the plain mean: exact for window 1, no tolerance needed
        stale = 0 if level > best + min_delta else stale + 1
        best = max(best, level)
        if stale >= patience:
            return step
    return None


@pytest.mark.parametrize(
    ("patience", "min_delta", "window"), [(1, 0.0, 1), (2, 0.0, 1), (2, 0.02, 1), (3, 0.05, 1), (2, 0.0, 3)]
)
def test_patience_stops_where_the_full_run_says(patience: int, min_delta: float, window: int) -> None:
    """A run with patience trains exactly the steps of a full run up to the evaluation where validation
    Dice had not risen by more than min_delta for ``patience`` evaluations (same history, same best)."""
    cfg = dataclasses.replace(FAST, steps=64, eval_every=4, n_snapshots=0, schedule="constant")
    full = train_base(_model(), disks(16), disks(6, seed=1), cfg, progress=False)
    stop = _first_stop(full.history, patience, min_delta, window)
    early = train_base(
        _model(),
        disks(16),
        disks(6, seed=1),
        dataclasses.replace(cfg, patience=patience, min_delta=min_delta, patience_window=window),
        progress=False,
    )
    assert stop is not None and stop < cfg.steps  # every case stops early on this run (the rule is exercised)
    expected = stop
    assert early.stopped_step == expected and full.stopped_step == cfg.steps
    assert early.history == [h for h in full.history if h[0] <= expected]
    best = max(early.history, key=lambda h: h[2])  # max keeps the first of equal values: the earlier step
    assert (early.best_step, early.best_val_dice) == (best[0], best[2])


def test_patience_zero_trains_every_step_and_keeps_the_fixed_snapshots(
    trained: tuple[UNet, dict[str, torch.Tensor], BaseTrainResult],
) -> None:
    _, _, result = trained
    assert result.stopped_step == FAST.steps
    assert result.snapshot_steps == snapshot_steps(FAST.steps, FAST.n_snapshots)


def test_an_early_stopped_run_picks_its_snapshots_from_evaluations() -> None:
    cfg = dataclasses.replace(FAST, steps=200, eval_every=4, n_snapshots=3, patience=1, lr=1e-2)
    result = train_base(_model(), disks(16), disks(6, seed=1), cfg, progress=False)
    assert result.stopped_step < cfg.steps  # patience 1 stops at the first evaluation without a gain
    assert len(result.snapshots) == 3 and len(result.snapshot_steps) == 3
    evaluated = [h[0] for h in result.history]
    assert all(s in evaluated and s <= result.stopped_step for s in result.snapshot_steps)
    assert list(result.snapshot_steps) == sorted(result.snapshot_steps)


def test_many_evaluations_keep_a_bounded_spread_of_states() -> None:
    from rndpo.training.supervised import _EvalStates

    kept = _EvalStates(limit=8)
    for step in range(1, 101):
        kept.add(step, {"w": torch.full((1,), float(step))})
        assert len(kept.states) <= 8
    steps = sorted(kept.states)
    assert steps[0] == 1 and steps[-1] >= 90  # the first and a recent one survive the thinning
    picked, states = kept.pick((10, 50, 100))
    assert list(picked) == [max(s for s in steps if s <= t) for t in (10, 50, 100)]
    assert [float(s["w"]) for s in states] == [float(s) for s in picked]  # each state is its step's


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_base_lr_factor_closed_form(schedule: str) -> None:
    from rndpo.training.supervised import base_lr_factor

    cfg = BaseTrainConfig(steps=100, warmup_steps=10, schedule=schedule)
    assert [base_lr_factor(s, cfg) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert base_lr_factor(10, cfg) == pytest.approx(1.0)
    end = 0.05 if schedule == "cosine" else 1.0
    assert base_lr_factor(100, cfg) == pytest.approx(end) and base_lr_factor(500, cfg) == pytest.approx(end)
    mid = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 45 / 90)) if schedule == "cosine" else 1.0
    assert base_lr_factor(55, cfg) == pytest.approx(mid)
    # without warm-up the cosine is the one base training always had (bit for bit)
    plain = BaseTrainConfig(steps=300, schedule="cosine", warmup_steps=0)
    assert all(
        base_lr_factor(s, plain) == 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, 300) / 300))
        for s in range(0, 400, 7)
    )


def test_warm_up_reaches_the_optimizer() -> None:
    """The learning rate AdamW uses at each step follows base_lr_factor (read through a recording hook)."""
    from rndpo.training.supervised import base_lr_factor

    cfg = dataclasses.replace(FAST, steps=12, eval_every=12, n_snapshots=0, warmup_steps=4)
    _, seen = _recorded_lrs(cfg)
    assert seen == pytest.approx([cfg.lr * base_lr_factor(s, cfg) for s in range(cfg.steps)])


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0, 1), min_size=1, max_size=40),
    patience=st.integers(0, 6),
    window=st.integers(1, 5),
)
def test_patience_rule_matches_the_oracle(values: list[float], patience: int, window: int) -> None:
    from rndpo.training import PatienceRule

    rule = PatienceRule(patience, 0.0, window)
    fired = next((i + 1 for i, v in enumerate(values) if rule.update(v)), None)
    history = [(i + 1, 0.0, v) for i, v in enumerate(values)]
    assert fired == (_first_stop(history, patience, 0.0, window) if patience else None)


def _recorded_lrs(cfg: BaseTrainConfig) -> tuple[BaseTrainResult, list[float]]:
    """A run of ``cfg`` and the learning rate AdamW used at each step (read through a recording hook)."""
    seen: list[float] = []
    original = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", recording)
        result = train_base(_model(), disks(16), disks(6, seed=1), cfg, progress=False)
    return result, seen


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_cooldown_follows_the_stop(share: float) -> None:
    """After patience stops a run at step T, round(share x T) more steps run at lr (D - j) / (D + 1)
    (closed form), evaluated every eval_every steps and at the end; up to T the run is the one without
    a cooldown, and the model is the best of the cooldown's evaluations (the annealed states)."""
    cfg = dataclasses.replace(FAST, steps=64, eval_every=4, n_snapshots=2, schedule="constant", patience=2)
    plain, plain_lrs = _recorded_lrs(cfg)
    stop = plain.stopped_step
    assert stop < cfg.steps and plain_lrs == [cfg.lr] * stop  # patience fires; no cooldown: a constant lr
    cooled, lrs = _recorded_lrs(dataclasses.replace(cfg, cooldown=share))
    length = round(share * stop)
    assert cooled.stopped_step == stop + length and len(lrs) == stop + length
    assert lrs[:stop] == plain_lrs
    assert lrs[stop:] == pytest.approx(
        [cfg.lr * (length - j) / (length + 1) for j in range(length)], rel=1e-12
    )
    assert cooled.history[: len(plain.history)] == plain.history
    evaluated = [h[0] for h in cooled.history[len(plain.history) :]]
    assert evaluated == sorted(
        {*range(stop + cfg.eval_every - stop % cfg.eval_every, stop + length + 1, 4), stop + length} - {stop}
    )
    best = max(cooled.history[len(plain.history) :], key=lambda h: h[2])  # max keeps the earlier of ties
    assert (cooled.best_step, cooled.best_val_dice) == (best[0], best[2]) and cooled.best_step > stop
    assert all(s <= cooled.stopped_step for s in cooled.snapshot_steps)


def test_a_run_that_reaches_the_cap_cools_down_too() -> None:
    cfg = dataclasses.replace(FAST, steps=16, eval_every=4, schedule="constant", patience=50, cooldown=0.25)
    result, lrs = _recorded_lrs(cfg)
    assert result.stopped_step == 20 and lrs[16:] == pytest.approx([cfg.lr * (4 - j) / 5 for j in range(4)])


def test_cooldown_needs_patience() -> None:
    """Without patience there is no stop to follow: the run is the fixed-length one."""
    result, lrs = _recorded_lrs(dataclasses.replace(FAST, cooldown=0.5))
    assert result.stopped_step == FAST.steps and len(lrs) == FAST.steps
