"""Segmentation datasets: the (image, mask) container and splits (``dataset.py``), a built-in synthetic
default (``synthetic.py``) and loaders (``loaders.py``).

Shapes: images are float32 (N, C, H, W); masks are uint8 (N, H, W) with values {0, 1}; ids are str (N,);
groups, when set, are (N,) keys that must never be split across labeled/val/test.

The one image rule, the same at every entry point (datasets, proposals, fine-tuning, prediction): images
are float32 (N, C, H, W) with any finite values; normalisation is the caller's. The loaders below
normalise what they read to [0, 1] (integer images divided by their dtype's maximum, NIfTI volumes by
their percentiles), and a saved model records that, so ``rndpo predict`` repeats it on new files.

Sources, all returning a :class:`SegmentationDataset`:

- :func:`synthetic_dataset`: the built-in default, no files needed (grayscale, C = 1).
- :func:`load_npz`: an ``.npz`` with ``images`` (N, H, W) or (N, H, W, 3) uint8 and ``masks`` (N, H, W).
- :func:`load_folder`: image and mask files matched by file stem (Kvasir-SEG / ISIC layout).
- :func:`load_nifti`: 3D volumes sliced to 2D along an axis (needs ``nibabel``).

Images without masks (an unlabeled pool, or new images to segment): :func:`read_images` reads an
``.npz`` holding ``images`` or a folder of image files, each image at its own size, and
:func:`load_unlabeled` resizes and stacks them.

:func:`split_dataset` makes seeded labeled / unlabeled / val / test splits, group-aware when groups are set.
"""

from rndpo.data.dataset import DatasetSplits, SegmentationDataset, split_dataset
from rndpo.data.loaders import (
    IMAGE_EXTENSIONS,
    load_folder,
    load_nifti,
    load_npz,
    load_unlabeled,
    match_channels,
    read_images,
    resize_image,
    scale_volume,
)
from rndpo.data.synthetic import synthetic_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetSplits",
    "SegmentationDataset",
    "load_folder",
    "load_nifti",
    "load_npz",
    "load_unlabeled",
    "match_channels",
    "read_images",
    "resize_image",
    "scale_volume",
    "split_dataset",
    "synthetic_dataset",
]
