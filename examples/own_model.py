"""Your own model and arrays: a MONAI BasicUNet, a label-free judge, RN-DPO, the selected model saved."""

import sys
from pathlib import Path

import torch
from monai.networks.nets import BasicUNet

import rndpo
from rndpo.config import METHOD_PRESETS, FinetuneConfig
from rndpo.data import SegmentationDataset, synthetic_dataset
from rndpo.finetune import TrainingPairs, finetune, reference_logits
from rndpo.judges import AgreementJudge
from rndpo.model_io import save_model
from rndpo.proposals import generate_proposals
from rndpo.supervised import BaseTrainConfig, train_base

out = Path(sys.argv[1] if len(sys.argv) > 1 else "own_model_out")
demo = synthetic_dataset(n_images=120, size=32)  # stands in for your arrays
images = (demo.images - demo.images.mean()) / demo.images.std()  # float32 (N, C, H, W); any range
labeled, val = (
    SegmentationDataset(images[s], demo.masks[s], demo.ids[s]) for s in (slice(20), slice(20, 40))
)
unlabeled = images[40:]  # no masks needed

torch.manual_seed(0)
arch = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "features": (8, 8, 16, 32, 64, 8)}
model = BasicUNet(**arch, dropout=0.1)
train_base(model, labeled, val, BaseTrainConfig(steps=120, n_snapshots=0), progress=False)
bank = generate_proposals(model, unlabeled, progress=False)  # no snapshots given: that source is skipped
pairs = rndpo.mine_pairs(bank.masks, AgreementJudge().score(bank), "top_vs_bottom", min_region=5)
data, ref = TrainingPairs.from_pairs(bank.images, bank.masks, pairs), reference_logits(model, bank.images)
cfg = FinetuneConfig(steps=30, eval_every=5)
result = finetune(model, data, METHOD_PRESETS["rndpo"], cfg, val=val, ref_logits=ref, progress=False)
sel = result.selected_step
save_model(
    out / "own.pt", model, state_dict=result.selected_state_dict, in_channels=1, image_size=32,
    architecture={"name": "monai.BasicUNet", "config": {**arch, "dropout": 0.1}}, method="rndpo",
    judge="agreement", miner="top_vs_bottom", selected_step=sel, val_dice=dict(result.val_curve)[sel],
)  # fmt: skip
print(
    f"{len(pairs)} pairs; val Dice {result.val_curve[0][1]:.3f} -> {max(v for _, v in result.val_curve):.3f}"
)
