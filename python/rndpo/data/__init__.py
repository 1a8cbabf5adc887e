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
- :func:`load_nifti`: 3D volumes sliced to 2D along an axis (needs ``nibabel``), as :class:`VolumeSlices`
  (groups: the volume of each slice; evaluation on it is per volume).

Images without masks (an unlabeled pool, or new images to segment): :func:`read_images` reads an
``.npz`` holding ``images`` or a folder of image files, each image at its own size, and
:func:`load_unlabeled` resizes and stacks them; :func:`read_unlabeled_folder` reads a folder of NIfTI
volumes (nnU-Net channel naming, or one file per case) as a :class:`VolumeSet`; :func:`read_nifti_image`
reads one NIfTI file (header checked first), as ``rndpo predict`` does for a 2D model's volumes.

One NIfTI volume (``nifti_io.py``): :func:`read_volume` gives its voxels in rndpo's axis order (z, y, x)
(the file's (i, j, k) reversed, never reoriented) with affine, header and spacing (z, y, x) mm;
:func:`write_label_map` and :func:`write_probabilities` write outputs on an input volume's grid, in the
dataset's own label values; :func:`case_name` is the nnU-Net case of a file name.

:func:`split_dataset` makes seeded labeled / unlabeled / val / test splits, group-aware when groups are set.
"""

from rndpo.data.dataset import DatasetSplits, SegmentationDataset, split_dataset
from rndpo.data.dataset_folder import (
    CaseFiles,
    DatasetDescription,
    check_case_headers,
    find_cases,
    load_dataset_folder,
    read_case_image,
    read_dataset_json,
    read_unlabeled_folder,
)
from rndpo.data.label_scheme import LabelScheme, map_label_values
from rndpo.data.loaders import (
    IMAGE_EXTENSIONS,
    load_folder,
    load_nifti,
    load_npz,
    load_unlabeled,
    match_channels,
    read_images,
    read_nifti_image,
    resize_image,
    scale_volume,
)
from rndpo.data.nifti_io import (
    NIFTI_ENDINGS,
    Volume,
    VolumeInfo,
    case_name,
    nifti_stem,
    read_volume,
    read_volume_info,
    write_label_map,
    write_probabilities,
)
from rndpo.data.npz_volumes import load_npz_volumes
from rndpo.data.resample import resample_to_shape, resampled_shape
from rndpo.data.slices import VolumeSlices
from rndpo.data.synthetic import synthetic_dataset
from rndpo.data.volume_set import VolumeSet, normalize_volume

__all__ = [
    "IMAGE_EXTENSIONS",
    "NIFTI_ENDINGS",
    "CaseFiles",
    "DatasetDescription",
    "DatasetSplits",
    "LabelScheme",
    "SegmentationDataset",
    "Volume",
    "VolumeInfo",
    "VolumeSet",
    "VolumeSlices",
    "case_name",
    "check_case_headers",
    "find_cases",
    "load_dataset_folder",
    "load_folder",
    "load_nifti",
    "load_npz",
    "load_npz_volumes",
    "load_unlabeled",
    "map_label_values",
    "match_channels",
    "nifti_stem",
    "normalize_volume",
    "read_case_image",
    "read_dataset_json",
    "read_images",
    "read_nifti_image",
    "read_unlabeled_folder",
    "read_volume",
    "read_volume_info",
    "resample_to_shape",
    "resampled_shape",
    "resize_image",
    "scale_volume",
    "split_dataset",
    "synthetic_dataset",
    "write_label_map",
    "write_probabilities",
]
