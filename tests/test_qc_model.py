"""Tests of rndpo.qc_model: argument checks of fit_qc_model and QCNet, the saved-model format.

The learned QC judge built on it (fit, score, save, load, quality on real proposals) is tested in
tests/test_judges.py.
"""

from __future__ import annotations

import pytest

from factories import disc_bank
from rndpo.judges import LearnedQCJudge, OracleJudge
from rndpo.proposals import ProposalBank
from rndpo.qc_model import QCNet, fit_qc_model, load_qc_model


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
