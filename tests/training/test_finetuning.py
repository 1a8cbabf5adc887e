"""Preference fine-tuning: ln 2 at step 0, every parameter moves, exact resume, DDP == single process."""

from __future__ import annotations

import dataclasses
import itertools
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rndpo.config import METHOD_PRESETS, FinetuneConfig
from rndpo.data import synthetic_dataset
from rndpo.losses import sft_top_loss
from rndpo.mining import mine_pairs
from rndpo.nets.unet import UNet
from rndpo.training.finetuning import (
    TrainingPairs,
    finetune,
    reference_logits,
    summarize_curve,
    top_choice_pairs,
)


def _setup(seed: int = 0):
    data = synthetic_dataset(n_images=24, size=32, seed=seed)
    torch.manual_seed(seed)
    model = UNet(in_channels=1, channels=(8, 16), dropout=0.1)
    rng = np.random.default_rng(seed)
    # proposals: ground truth with random pixel flips of varying strength
    k = 4
    flips = rng.random((len(data), k, 32, 32)) < np.linspace(0.0, 0.2, k)[None, :, None, None]
    masks = (data.masks[:, None] ^ flips).astype(np.uint8)
    scores = -flips.sum(axis=(2, 3)).astype(np.float64)
    pairs = mine_pairs(masks, scores, "top_vs_rest")
    return data, model, masks, scores, pairs


def test_sigmoid_loss_is_ln2_at_step_zero_and_every_parameter_moves() -> None:
    data, model, masks, _, pairs = _setup()
    ref = reference_logits(model, data.images)
    before = {k: v.clone() for k, v in model.named_parameters()}
    cfg = FinetuneConfig(steps=3, batch_size=4, lr=1e-2, eval_every=3)
    result = finetune(
        model,
        TrainingPairs.from_pairs(data.images, masks, pairs),
        METHOD_PRESETS["rndpo"],
        cfg,
        data,
        ref_logits=ref,
        progress=False,
    )
    assert result.train_log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert result.train_log[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), f"parameter {name} did not change"
    assert [s for s, _ in result.curve] == [0, 3]
    assert all(np.isfinite(v) for _, v in result.curve)


def test_sft_top_trains_towards_the_judges_choice() -> None:
    data, model, masks, scores, _ = _setup()
    top = top_choice_pairs(data.images, masks, scores)
    assert np.array_equal(top.chosen, np.argmax(scores, axis=1))
    cfg = FinetuneConfig(steps=2, batch_size=4, eval_every=1)
    result = finetune(model, top, METHOD_PRESETS["sft_top"], cfg, data, progress=False)
    assert len(result.train_log) == 2 and "rewards/margins" not in result.train_log[0]


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path) -> None:
    data, model, masks, _, pairs = _setup()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = reference_logits(model, data.images)
    train = TrainingPairs.from_pairs(data.images, masks, pairs)
    cfg = FinetuneConfig(steps=6, batch_size=4, lr=1e-2, eval_every=2)
    full = finetune(model, train, METHOD_PRESETS["dpo"], cfg, data, ref_logits=ref, seed=5, progress=False)

    model.load_state_dict(base_state)
    ckpt = tmp_path / "run.ckpt"

    def interrupt(step: int, _: dict) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(
            model,
            train,
            METHOD_PRESETS["dpo"],
            cfg,
            data,
            ref_logits=ref,
            seed=5,
            checkpoint=ckpt,
            progress=False,
            on_step=interrupt,
        )
    assert ckpt.exists()
    fresh = UNet(in_channels=1, channels=(8, 16), dropout=0.1)
    fresh.load_state_dict(base_state)
    resumed = finetune(
        fresh,
        train,
        METHOD_PRESETS["dpo"],
        cfg,
        data,
        ref_logits=ref,
        seed=5,
        checkpoint=ckpt,
        progress=False,
    )
    assert resumed.curve == full.curve
    assert [r["loss"] for r in resumed.train_log] == [r["loss"] for r in full.train_log]
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k


def test_no_pairs_and_missing_reference_are_clear_errors() -> None:
    data, model, masks, scores, _ = _setup()
    empty = mine_pairs(masks, scores, "top_vs_rest", min_margin=1e9)
    cfg = FinetuneConfig(steps=1, augment=False)  # with augmentation the reference is recomputed
    with pytest.raises(ValueError, match="no pairs"):
        finetune(model, TrainingPairs.from_pairs(data.images, masks, empty), METHOD_PRESETS["dpo"], cfg, data)
    pairs = mine_pairs(masks, scores, "top_vs_rest")
    with pytest.raises(ValueError, match="ref_logits are required"):
        finetune(model, TrainingPairs.from_pairs(data.images, masks, pairs), METHOD_PRESETS["dpo"], cfg, data)


def test_summarize_curve() -> None:
    s = summarize_curve([(0, 0.5), (10, 0.7), (20, 0.6), (30, 0.55)], final_window=3)
    assert s == pytest.approx(
        {"base_dice": 0.5, "peak_dice": 0.7, "final_dice": 0.6166666666, "auc_dice": 0.5875}
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rndpo_3_steps() -> dict[str, np.ndarray]:
    """Final state of 3 RN-DPO steps (batch 8) on the shared tiny setup, in this process's world."""
    data, model, masks, _, pairs = _setup()
    ref = reference_logits(model, data.images)
    cfg = FinetuneConfig(steps=3, batch_size=8, lr=1e-2, eval_every=3)
    train = TrainingPairs.from_pairs(data.images, masks, pairs)
    result = finetune(model, train, METHOD_PRESETS["rndpo"], cfg, data, ref_logits=ref, progress=False)
    return {k: v.numpy() for k, v in result.state_dict.items()}


def _ddp_worker(rank: int, world: int, port: int, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        out[rank] = _rndpo_3_steps()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_matches_one_process() -> None:
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    single = _rndpo_3_steps()
    for k, v in single.items():
        np.testing.assert_array_equal(out[0][k], out[1][k])  # ranks stay in sync
        np.testing.assert_allclose(out[0][k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def test_selection_on_validation_without_a_test_set() -> None:
    from rndpo.metrics.evaluation import evaluate

    data, model, masks, _, pairs = _setup()
    val = data.subset(np.arange(12))
    train = TrainingPairs.from_pairs(data.images, masks, pairs)
    ref = reference_logits(model, data.images)
    cfg = FinetuneConfig(steps=6, batch_size=4, lr=3e-2, eval_every=2)
    result = finetune(model, train, METHOD_PRESETS["rndpo"], cfg, val=val, ref_logits=ref, progress=False)
    assert result.curve == [] and result.final_hd95 is None and result.final_dice_per_image is None
    steps, values = zip(*result.val_curve, strict=True)
    assert steps == (0, 2, 4, 6)
    assert result.selected_step == steps[int(np.argmax(values))]
    fresh = UNet(in_channels=1, channels=(8, 16), dropout=0.1)
    fresh.load_state_dict(result.selected_state_dict)
    assert evaluate(fresh, val, distances=False).means()["dice"] == max(values)
    # ties go to the earlier step: with a vanishing learning rate every evaluation scores the same
    torch.manual_seed(0)
    flat = UNet(in_channels=1, channels=(8, 16), dropout=0.1)
    tiny = FinetuneConfig(steps=4, batch_size=4, lr=1e-12, eval_every=2)
    still = finetune(flat, train, METHOD_PRESETS["rndpo"], tiny, val=val, ref_logits=ref, progress=False)
    assert len({v for _, v in still.val_curve}) == 1 and still.selected_step == 0


@pytest.mark.parametrize("preset", ["mean_teacher", "pseudo_label", "rndpo"])
def test_recipe_and_baselines_resume_exactly(preset: str, tmp_path) -> None:
    """Augmentation, warm-up + cosine, clipping and the mean teacher's EMA all survive an interruption."""
    _resume_case(preset, tmp_path, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda(tmp_path) -> None:
    """A checkpoint written on CUDA resumes there (the generator state must come back as a CPU
    ByteTensor: loading it onto the GPU failed with "RNG state must be a torch.ByteTensor")."""
    _resume_case("rndpo", tmp_path, "cuda")


def _resume_case(preset: str, tmp_path, device: str) -> None:
    data, model, masks, scores, pairs = _setup()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    ref = reference_logits(model, data.images)
    train = (
        TrainingPairs.from_pairs(data.images, masks, pairs)
        if preset == "rndpo"
        else top_choice_pairs(data.images, masks, scores)
    )
    method = METHOD_PRESETS[preset]
    cfg = FinetuneConfig(
        steps=6,
        batch_size=4,
        lr=1e-2,
        eval_every=2,
        augment=True,
        warmup_steps=2,
        schedule="cosine",
        grad_clip=1.0,
    )
    kw = {"ref_logits": ref, "labeled": data, "seed": 3, "progress": False, "device": device}
    full = finetune(model, train, method, cfg, data, **kw)
    assert any(not torch.equal(base[k], v) for k, v in full.state_dict.items())
    assert all(math.isfinite(m["loss"]) for m in full.train_log)
    assert [m["lr"] for m in full.train_log][:2] == pytest.approx([5e-3, 1e-2])

    def interrupt(step: int, _: dict) -> None:
        if step == 5:
            raise KeyboardInterrupt

    model.load_state_dict(base)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        finetune(model, train, method, cfg, data, checkpoint=ckpt, on_step=interrupt, **kw)
    fresh = UNet(in_channels=1, channels=(8, 16), dropout=0.1)
    fresh.load_state_dict(base)
    resumed = finetune(fresh, train, method, cfg, data, checkpoint=ckpt, **kw)
    if device == "cpu":
        assert resumed.curve == full.curve
        for k, v in full.state_dict.items():
            assert torch.equal(v, resumed.state_dict[k]), k
    else:  # cuDNN kernels need not be bit-reproducible
        assert [s for s, _ in resumed.curve] == [s for s, _ in full.curve]
        for k, v in full.state_dict.items():
            torch.testing.assert_close(v, resumed.state_dict[k], rtol=1e-4, atol=1e-5, msg=k)
    assert all(t.device.type == "cpu" for t in resumed.selected_state_dict.values())


def test_augmented_preference_loss_is_ln2_at_step_zero() -> None:
    """With augmentation the reference is recomputed on the augmented batch, so policy == reference."""
    data, model, masks, _, pairs = _setup()
    train = TrainingPairs.from_pairs(data.images, masks, pairs)
    cfg = FinetuneConfig(steps=2, batch_size=8, lr=1e-2, eval_every=2, augment=True)
    result = finetune(
        model, train, METHOD_PRESETS["rndpo"], cfg, data, progress=False
    )  # no ref_logits needed
    assert result.train_log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert result.train_log[1]["loss"] != pytest.approx(math.log(2), abs=1e-6)


def test_chosen_sft_weight_adds_the_sft_loss_of_the_chosen_masks() -> None:
    """RPO's term: at step 0 the loss is ln 2 plus the weight times sft_top_loss of the batch's chosen
    masks, recomputed here from the step-0 batch the trainer draws."""
    data, model, masks, _, pairs = _setup()
    train = TrainingPairs.from_pairs(data.images, masks, pairs)
    ref = reference_logits(model, data.images)
    batch = torch.randint(len(train), (4,), generator=torch.Generator().manual_seed(0)).numpy()
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(data.images[train.image[batch]]))
    chosen = torch.from_numpy(masks[train.image[batch], train.chosen[batch]])
    expected_sft = float(sft_top_loss(logits, chosen))
    method = dataclasses.replace(METHOD_PRESETS["rndpo"], chosen_sft_weight=0.5)
    cfg = FinetuneConfig(steps=1, batch_size=4, eval_every=1, augment=False)
    result = finetune(model, train, method, cfg, ref_logits=ref, progress=False)
    step0 = result.train_log[0]
    assert step0["chosen_sft_loss"] == pytest.approx(expected_sft, rel=1e-5)
    assert step0["loss"] == pytest.approx(math.log(2) + 0.5 * expected_sft, rel=1e-5)
    plain = finetune(model, train, METHOD_PRESETS["rndpo"], cfg, ref_logits=ref, progress=False)
    assert "chosen_sft_loss" not in plain.train_log[0]


def test_lr_factor_warmup_then_cosine_to_five_percent() -> None:
    from rndpo.training.finetuning import lr_factor

    cfg = FinetuneConfig(steps=10, warmup_steps=4, schedule="cosine")
    f = [lr_factor(s, cfg) for s in range(10)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[-1] == pytest.approx(0.05)
    assert all(a >= b for a, b in itertools.pairwise(f[3:]))
    assert lr_factor(7, FinetuneConfig(steps=10, schedule="constant", warmup_steps=0)) == 1.0
