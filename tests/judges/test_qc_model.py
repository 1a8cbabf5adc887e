"""Tests of rndpo.judges.qc_model: argument checks of fit_qc_model and QCNet, the saved-model format.

The learned QC judge built on it (fit, score, save, load, quality on real proposals) is tested in
tests/judges/test_judges.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from factories import disc_bank
from rndpo.judges import LearnedQCJudge, OracleJudge
from rndpo.judges.qc_model import QCNet, fit_qc_model, load_qc_model, predict_qc, synthetic_training_set
from rndpo.proposals import ProposalBank


@pytest.fixture(scope="module")
def qc_bank() -> ProposalBank:
    return disc_bank(16, 4, 16, seed=5)


def test_qc_fit_validates_arguments(qc_bank: ProposalBank) -> None:
    truth = OracleJudge().score(qc_bank)
    with pytest.raises(ValueError, match=r"val_fraction must lie in \[0, 1\), got 1.0"):
        fit_qc_model(qc_bank.images, qc_bank.masks, truth, val_fraction=1.0, progress=False)
    with pytest.raises(ValueError, match=r"true_dice must have shape \(N, K\) = \(16, 4\), got \(16, 3\)"):
        fit_qc_model(qc_bank.images, qc_bank.masks, truth[:, :3], progress=False)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        fit_qc_model(qc_bank.images, qc_bank.masks, truth, steps=0, progress=False)
    with pytest.raises(ValueError, match="at least one training image"):
        fit_qc_model(qc_bank.images[:1], qc_bank.masks[:1], truth[:1], val_fraction=0.5, progress=False)
    _, no_val = fit_qc_model(
        qc_bank.images, qc_bank.masks, truth, val_fraction=0.0, steps=1, width=2, progress=False
    )
    assert no_val.n_val_images == 0 and no_val.val_mae is None and no_val.val_spearman is None
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        QCNet(0)


def test_qc_load_rejects_other_format(qc_bank: ProposalBank, tmp_path) -> None:
    judge = LearnedQCJudge(width=2)
    judge.fit(qc_bank, steps=1, progress=False)
    path = judge.save(tmp_path / "qc")
    cfg = path / "config.json"
    cfg.write_text(cfg.read_text().replace('"format": 1', '"format": 99'))
    with pytest.raises(ValueError, match="format must be 1, got 99"):
        load_qc_model(path)


def test_qc_fit_validates_new_arguments(qc_bank: ProposalBank) -> None:
    truth = OracleJudge().score(qc_bank)
    args = (qc_bank.images, qc_bank.masks, truth)
    with pytest.raises(ValueError, match=r"ground_truth .* is needed when n_synthetic > 0, got None"):
        fit_qc_model(*args, n_synthetic=2, progress=False)
    with pytest.raises(ValueError, match=r"ground_truth must have shape \(N, H, W\) = \(16, 16, 16\)"):
        fit_qc_model(*args, ground_truth=qc_bank.ground_truth[:3], n_synthetic=2, progress=False)
    with pytest.raises(ValueError, match="n_synthetic must be a non-negative int, got -1"):
        fit_qc_model(*args, n_synthetic=-1, progress=False)
    with pytest.raises(ValueError, match="rank_weight must be a finite float >= 0, got -1"):
        fit_qc_model(*args, rank_weight=-1.0, progress=False)
    with pytest.raises(ValueError, match=r"jitter must lie in \[0, 1\), got 1.0"):
        fit_qc_model(*args, jitter=1.0, progress=False)
    with pytest.raises(ValueError, match="group must be a positive int, got 0"):
        fit_qc_model(*args, group=0, progress=False)
    for kwargs in ({"n_synthetic": -1}, {"rank_weight": float("nan")}, {"jitter": -0.1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            LearnedQCJudge(**kwargs)


def test_synthetic_training_set_matches_numpy_dice(qc_bank: ProposalBank) -> None:
    gt = qc_bank.ground_truth[:4]
    masks, dice = synthetic_training_set(gt, 6, seed=1)
    assert masks.shape == (4, 6, 16, 16) and masks.dtype == np.uint8
    assert dice.shape == (4, 6) and dice.dtype == np.float64
    inter = (masks.astype(bool) & gt[:, None].astype(bool)).sum(axis=(2, 3))
    total = masks.sum(axis=(2, 3)) + gt[:, None].sum(axis=(2, 3))
    np.testing.assert_allclose(dice, 2 * inter / total, atol=1e-12)
    again, _ = synthetic_training_set(gt, 6, seed=1)
    other, _ = synthetic_training_set(gt, 6, seed=2)
    assert np.array_equal(masks, again) and not np.array_equal(masks, other)


def test_synthetic_corruptions_enter_training(qc_bank: ProposalBank) -> None:
    judge = LearnedQCJudge(width=2, n_synthetic=3, rank_weight=1.0, jitter=0.1)
    fit = judge.fit(qc_bank, steps=2, val_fraction=0.25, progress=False)
    assert (fit.n_train_proposals, fit.n_val_proposals) == (12 * (4 + 3), 4 * 4)  # val: real proposals only


def test_predict_tta_is_the_mean_over_the_eight_views(qc_bank: ProposalBank) -> None:
    truth = OracleJudge().score(qc_bank)
    model, _ = fit_qc_model(qc_bank.images, qc_bank.masks, truth, steps=10, width=4, progress=False)
    views = []
    for r in range(4):
        for flip in (False, True):
            x, m = np.rot90(qc_bank.images, r, axes=(2, 3)), np.rot90(qc_bank.masks, r, axes=(2, 3))
            if flip:
                x, m = x[..., ::-1], m[..., ::-1]
            views.append(predict_qc(model, np.ascontiguousarray(x), np.ascontiguousarray(m)))
    np.testing.assert_allclose(
        predict_qc(model, qc_bank.images, qc_bank.masks, tta=True), np.mean(views, 0), atol=1e-6
    )
    assert np.abs(views[0] - views[3]).max() > 1e-6  # the views differ: the mean is not one of them


def test_experiment_fits_the_qc_judge_with_the_config_settings(tmp_path) -> None:
    """``rndpo run`` with judge learned_qc: the saved QC judge carries judges.qc_* and a changed key
    gives a new scores stage (the settings are part of its cache key)."""
    import json

    from runs import TINIEST, run, stage_files, write_config

    def config(n_synthetic: int) -> str:
        return TINIEST.replace('names = ["noisy_oracle"]', 'names = ["learned_qc"]').replace(
            "qc_steps = 2", f"qc_steps = 2\nqc_synthetic = {n_synthetic}\nqc_jitter = 0.2\nqc_tta = false"
        )

    out = tmp_path / "out"
    assert run(write_config(tmp_path / "a", config(2)), out) == 0
    (qc,) = (out / "stages").glob("qc-*")
    extra = json.loads((qc / "config.json").read_text())["extra"]
    assert (extra["n_synthetic"], extra["jitter"], extra["tta"], extra["rank_weight"]) == (2, 0.2, False, 1.0)
    before = {n for n in stage_files(out) if n.startswith("scores-") and n.endswith(".npz")}
    assert run(write_config(tmp_path / "b", config(3)), out, "--resume") == 0
    after = {n for n in stage_files(out) if n.startswith("scores-") and n.endswith(".npz")}
    assert len(before) == 1 and len(after) == 2
