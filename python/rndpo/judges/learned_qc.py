"""The learned quality-control judge: a small CNN that predicts a proposal's Dice from (image, mask).

images float32 (N, Cin, *S) in [0, 1] with S = (H, W) or (D, H, W); masks uint8 (N, K, *S): {0, 1} for a
binary bank, labels 0..C-1 for a label-map bank (``bank.num_classes`` C > 2, fed to the network one-hot);
scores float64 (N, K), the predicted Dice in [0, 1]: the oracle judge's score (mean per-structure Dice
for label maps), so its rankings compare with the oracle's. The network and its training live in
:mod:`rndpo.judges.qc_model`, the synthetic corruptions in :mod:`rndpo.judges.corruptions`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rndpo.judges.base import _bank_ground_truth, _bank_images, _bank_masks, _finite_scores
from rndpo.judges.oracle import OracleJudge
from rndpo.judges.qc_model import QCFitResult, QCNet, fit_qc_model, load_qc_model, predict_qc, save_qc_model
from rndpo.proposals import ProposalBank

__all__ = ["LearnedQCJudge"]


class LearnedQCJudge:
    """A small CNN (:class:`rndpo.judges.qc_model.QCNet`) that predicts a proposal's Dice from (image, mask).

    Train it with :meth:`fit` on a bank of proposals for labeled images (their true Dice is known: the
    oracle's score), then :meth:`score` any bank with the same number of image channels, the same
    ``num_classes`` and the same number of spatial dimensions (2D or 3D; the fitted network records
    both). ``n_synthetic`` corruptions of each training image's true mask (:mod:`rndpo.judges.corruptions`)
    join the proposals, ``rank_weight`` weighs a pairwise ranking loss among each image's masks,
    ``jitter`` is the training intensity jitter, and ``tta`` scores as the mean over 8 views (2D: the
    flips / 90-degree rotations; 3D: the flips along every set of axes). ``max_side`` bounds the side
    of a volume as the 3D network's first convolution sees it (larger volumes are area-downsampled by
    an integer factor). :meth:`save` / :meth:`load` keep the network and its fit result in a folder.
    """

    name = "learned_qc"

    def __init__(
        self,
        *,
        width: int = 16,
        stem_stride: int = 2,
        batch_size: int = 64,
        lr: float = 3e-3,
        n_synthetic: int = 0,
        rank_weight: float = 0.0,
        jitter: float = 0.0,
        tta: bool = False,
        max_side: int = 16,
        device: str = "cpu",
    ) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite float, got {lr!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        if isinstance(n_synthetic, bool) or not isinstance(n_synthetic, int) or n_synthetic < 0:
            raise ValueError(f"n_synthetic must be a non-negative int, got {n_synthetic!r}")
        if not (isinstance(rank_weight, (int, float)) and rank_weight >= 0 and math.isfinite(rank_weight)):
            raise ValueError(f"rank_weight must be a finite float >= 0, got {rank_weight!r}")
        if not (isinstance(jitter, (int, float)) and 0 <= jitter < 1):
            raise ValueError(f"jitter must lie in [0, 1), got {jitter!r}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 4:
            raise ValueError(f"max_side must be an int >= 4, got {max_side!r}")
        self.width = width
        self.stem_stride = stem_stride
        self.batch_size = batch_size
        self.lr = float(lr)
        self.n_synthetic = n_synthetic
        self.rank_weight = float(rank_weight)
        self.jitter = float(jitter)
        self.tta = bool(tta)
        self.max_side = max_side
        self.device = device
        self.model: QCNet | None = None
        self.fit_result: QCFitResult | None = None

    def fit(
        self,
        bank: ProposalBank,
        *,
        val_fraction: float = 0.2,
        steps: int = 300,
        seed: int = 0,
        progress: bool = True,
    ) -> QCFitResult:
        """Train on ``bank`` (needs images and ground truth; 2D or 3D, binary or label maps) plus
        ``n_synthetic`` corruptions of each training image's true mask; a ``val_fraction`` of images (a
        seeded split by image, never by proposal) is held out for the returned validation metrics (on
        the real proposals). The target is :class:`OracleJudge`'s score."""
        masks = _bank_masks(bank)
        images = _bank_images(bank, "LearnedQCJudge.fit")
        truth = OracleJudge().score(bank)
        self.model, self.fit_result = fit_qc_model(
            images,
            masks,
            truth,
            ground_truth=_bank_ground_truth(bank, "LearnedQCJudge.fit"),
            n_synthetic=self.n_synthetic,
            rank_weight=self.rank_weight,
            jitter=self.jitter,
            val_fraction=val_fraction,
            steps=steps,
            batch_size=self.batch_size,
            lr=self.lr,
            width=self.width,
            stem_stride=self.stem_stride,
            num_classes=bank.num_classes,
            max_side=self.max_side,
            seed=seed,
            device=self.device,
            progress=progress,
        )
        return self.fit_result

    def score(self, bank: ProposalBank) -> np.ndarray:
        """float64 (N, K) predicted Dice in [0, 1]; raises ValueError before :meth:`fit` or :meth:`load`."""
        if self.model is None:
            raise ValueError(
                "LearnedQCJudge has no trained model: call fit(bank) or LearnedQCJudge.load(path)"
            )
        masks = _bank_masks(bank)
        if bank.num_classes != self.model.num_classes:
            raise ValueError(
                f"bank.num_classes must be {self.model.num_classes} (as in training), got {bank.num_classes}"
            )
        nd = self.model.spatial_dims
        if len(bank.spatial_shape) != nd:
            raise ValueError(
                f"bank must hold {nd}-D {'images' if nd == 2 else 'volumes'} (as in training), "
                f"got spatial shape {bank.spatial_shape}"
            )
        images = _bank_images(bank, "LearnedQCJudge")
        if images.shape[1] != self.model.in_channels:
            raise ValueError(
                f"bank.images must have {self.model.in_channels} channels (as in training), "
                f"got {images.shape[1]} (shape {images.shape})"
            )
        scores = predict_qc(
            self.model,
            images,
            masks,
            batch_size=max(self.batch_size, 128),
            device=self.device,
            tta=self.tta,
        )
        return _finite_scores(scores, self.name, masks.shape[:2])

    def save(self, path: str | Path) -> Path:
        """Write the network (model.pt), its config and fit result (config.json) into folder ``path``."""
        if self.model is None:
            raise ValueError("LearnedQCJudge has no trained model to save: call fit(bank) first")
        extra = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "n_synthetic": self.n_synthetic,
            "rank_weight": self.rank_weight,
            "jitter": self.jitter,
            "tta": self.tta,
        }
        return save_qc_model(path, self.model, self.fit_result, extra=extra)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> LearnedQCJudge:
        """A judge with the network saved in folder ``path`` by :meth:`save`."""
        model, fit_result, extra = load_qc_model(path, device=device)
        judge = cls(
            width=model.width,
            stem_stride=model.stem_stride,
            batch_size=int(extra.get("batch_size", 64)),
            lr=float(extra.get("lr", 3e-3)),
            n_synthetic=int(extra.get("n_synthetic", 0)),
            rank_weight=float(extra.get("rank_weight", 0.0)),
            jitter=float(extra.get("jitter", 0.0)),
            tta=bool(extra.get("tta", False)),
            max_side=model.max_side,
            device=device,
        )
        judge.model = model
        judge.fit_result = fit_result
        return judge
