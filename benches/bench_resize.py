"""Shrinking a large 2D image: rndpo's sparse-matrix path against scikit-image's ``resize`` (the
baseline, measured in the same run), with the largest difference between the two.

    python benches/bench_resize.py --size 4096 --to 128

Images over 2**22 pixels take the sparse path in ``rndpo.data.image_resize.resize_image``; smaller ones
go through scikit-image itself, so the ratio printed here is what a large PNG gains when it is read.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from skimage.transform import resize

from _timing import best_of
from rndpo.data.image_resize import resize_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the square input image")
    parser.add_argument("--to", type=int, default=128, help="side of the output")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    image = np.random.default_rng(0).random((1, args.size, args.size), dtype=np.float32)

    def baseline() -> np.ndarray:
        out = resize(
            image, (1, args.to, args.to), order=1, mode="edge", anti_aliasing=True, preserve_range=True
        )
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    ours_s = best_of(lambda: resize_image(image, args.to), args.repeats)
    base_s = best_of(baseline, args.repeats)
    diff = float(np.abs(resize_image(image, args.to) - baseline()).max())
    print(
        f"{args.size} x {args.size} -> {args.to} x {args.to}: scikit-image {base_s:.2f} s, rndpo {ours_s:.3f} s"
    )
    print(f"speed-up {base_s / ours_s:.0f}x; largest difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
