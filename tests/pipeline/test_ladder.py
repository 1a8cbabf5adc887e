"""The headroom ladder's inputs and its table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rndpo.judges import OracleJudge
from rndpo.pipeline.ladder import ladder_table, oracle_pairs, perfect_label_pairs, pool_dice
from rndpo.proposals import ProposalBank


def _bank(with_truth: bool = True) -> ProposalBank:
    rng = np.random.default_rng(0)
    gt = (rng.random((5, 8, 8)) < 0.4).astype(np.uint8)
    flips = rng.random((5, 3, 8, 8)) < np.array([0.0, 0.1, 0.3])[None, :, None, None]
    masks = (gt[:, None] ^ flips).astype(np.uint8)
    probs = np.clip(gt + rng.normal(0, 0.3, gt.shape), 0, 1).astype(np.float32)
    images = rng.random((5, 1, 8, 8)).astype(np.float32)
    return ProposalBank(images, masks, probs=probs, ground_truth=gt if with_truth else None)


def test_perfect_label_pairs_train_on_the_true_masks() -> None:
    bank = _bank()
    data = perfect_label_pairs(bank)
    assert len(data) == 5 and data.masks.shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(data.masks[data.image, data.chosen], bank.ground_truth)
    with pytest.raises(ValueError, match="no ground truth"):
        perfect_label_pairs(_bank(with_truth=False))


def test_oracle_pairs_pick_the_truly_best_proposal_and_pool_dice_orders() -> None:
    bank = _bank()
    true = OracleJudge().score(bank)
    data = oracle_pairs(bank, true)
    np.testing.assert_array_equal(data.chosen, np.zeros(5))  # proposal 0 is the ground truth itself
    pool = pool_dice(bank, true)
    assert pool["pool_best_of_k_dice"] == 1.0
    assert pool["pool_median_proposal_dice"] == pytest.approx(np.median(true, axis=1).mean())
    assert 0 < pool["pool_base_dice"] <= 1


def test_ladder_table_gives_means_and_gains_over_base() -> None:
    ladder: list[dict[str, Any]] = [
        {
            "seed": s,
            "base_dice": 0.5 + 0.01 * s,
            "perfect_label_dice": 0.6 + 0.01 * s,
            "judges": {
                "oracle": {
                    "top1_dice": 0.8,
                    "spearman": 1.0,
                    "val_spearman": 0.9 + 0.01 * s,
                    "image_spearman": 0.7,
                    "val_image_spearman": 0.6 + 0.01 * s,
                }
            },
            "methods": {"rndpo (oracle, tvb)": 0.52 + 0.01 * s},
        }
        for s in range(3)
    ]
    text = ladder_table(ladder)
    assert "| base | 0.5100 ± 0.0100 |" in text
    assert "(perfect-label ceiling) | 0.6100 ± 0.0100 (+0.1000) |" in text
    assert "| rndpo (oracle, tvb) | 0.5300 ± 0.0100 (+0.0200) |" in text
    assert (
        "| judge oracle: top-1 pick | 0.8000 ± 0.0000 | 1.0000 ± 0.0000 | 0.9100 ± 0.0100"
        " | 0.7000 ± 0.0000 | 0.6100 ± 0.0100 |"
    ) in text
    # a seed list without per-image figures (results of an earlier version) leaves those cells empty
    del ladder[0]["judges"]["oracle"]["image_spearman"]
    assert "| 0.7000 ± 0.0000 |" in ladder_table(ladder)
    assert ladder_table([]) == ""


def test_ladder_table_of_an_unlabeled_pool_shows_the_control_and_says_what_is_left_out() -> None:
    entry = {
        "seed": 0,
        "base_dice": 0.5,
        "pool_truth": False,
        "labeled_only_dice": 0.55,
        "judges": {"learned_qc": {"top1_dice": None, "spearman": None, "val_spearman": 0.4}},
        "methods": {"rn_cdpo (learned_qc, auto)": 0.6},
    }
    text = ladder_table([entry])
    assert "| fine-tuning on the labeled images alone (recipe control) | 0.5500 (+0.0500) |" in text
    assert "perfect-label ceiling" not in text and "bank ceiling" not in text
    assert "The pool has no ground truth (`data.unlabeled_path`)" in text
    assert "| judge learned_qc: top-1 pick | - | - | 0.4000 | - | - |" in text
    # a pool with ground truth (or a results file from before pool_truth was written): no note
    for known in ({**entry, "pool_truth": True}, {k: v for k, v in entry.items() if k != "pool_truth"}):
        assert "no ground truth" not in ladder_table([known])
