"""Your own model and arrays: a MONAI BasicUNet, a label-free judge, RN-DPO, the selected model saved."""

import sys

import torch

import rndpo
from rndpo.config import METHOD_PRESETS, FinetuneConfig
from rndpo.data import SegmentationDataset, synthetic_dataset
from rndpo.judges import AgreementJudge
from rndpo.nets import build_network, save_model
from rndpo.proposals import generate_proposals
from rndpo.training.finetuning import TrainingPairs, finetune, reference_logits
from rndpo.training.supervised import BaseTrainConfig, train_base

out = sys.argv[1] if len(sys.argv) > 1 else "own_model_out"
demo = synthetic_dataset(n_images=120, size=32)  # stands in for your arrays
images, masks = (demo.images - demo.images.mean()) / demo.images.std(), demo.masks  # any range: yours
labeled = SegmentationDataset(images[:20], masks[:20], demo.ids[:20])
val = SegmentationDataset(images[20:40], masks[20:40], demo.ids[20:40])
unlabeled = images[40:]  # no masks needed

torch.manual_seed(0)
model = build_network("monai.BasicUNet", 2, 1, 1, features=(8, 8, 16, 32, 64, 8), dropout=0.1)  # MONAI's
train_base(model, labeled, val, BaseTrainConfig(steps=120, n_snapshots=0), progress=False)
bank = generate_proposals(model, unlabeled, progress=False)  # no snapshots given: that source is skipped
pairs = rndpo.mine_pairs(bank.masks, AgreementJudge().score(bank), "top_vs_bottom", min_region=5)
data, ref = TrainingPairs.from_pairs(bank.images, bank.masks, pairs), reference_logits(model, bank.images)
cfg = FinetuneConfig(steps=30, eval_every=5)
result = finetune(model, data, METHOD_PRESETS["rndpo"], cfg, val=val, ref_logits=ref, progress=False)
sel, val_dice = result.selected_step, dict(result.val_curve)[result.selected_step]
save_model(f"{out}/own.pt", model, state_dict=result.selected_state_dict, in_channels=1, image_size=32,
           method="rndpo", judge="agreement", miner="top_vs_bottom", selected_step=sel,
           val_dice=val_dice)  # fmt: skip
print(f"{len(pairs)} pairs; val Dice {result.val_curve[0][1]:.3f} -> {val_dice:.3f} at step {sel}")
