"""What verifying a bank stage costs: SHA-256 of a masks.npy against writing it and reading it.

    python benches/bench_verify.py [--mib 512] [--repeats 2]

Writes a random uint8 bank of about --mib MiB to a temporary folder, then times (same process, same
file): np.save + fsync (the write), sha256_file (what --resume does per file), a NumPy read pass over
the memory map, and pairwise_stats. Prints one line per repeat with the ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from rndpo import pairwise_stats
from rndpo.storage import sha256_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="bank size in MiB (multiple of 4)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n = max(1, args.mib * 4)  # (n, 16, 128, 128) uint8: 256 KiB per image, 4 images per MiB
    masks = (np.random.default_rng(0).random((n, 16, 128, 128)) > 0.5).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "masks.npy"
        start = time.perf_counter()
        with path.open("wb") as fh:
            np.save(fh, masks)
            fh.flush()
            os.fsync(fh.fileno())
        write = time.perf_counter() - start
        mib = masks.nbytes / 2**20
        for rep in range(args.repeats):
            start = time.perf_counter()
            sha256_file(path)
            digest = time.perf_counter() - start
            start = time.perf_counter()
            bank = np.load(path, mmap_mode="r")
            int(bank.sum(dtype=np.uint64))
            read = time.perf_counter() - start
            start = time.perf_counter()
            pairwise_stats(bank)
            stats = time.perf_counter() - start
            print(
                f"repeat {rep}: {mib:.0f} MiB  write+fsync {write:.2f} s  sha256 {digest:.2f} s "
                f"({mib / digest:.0f} MiB/s, {digest / write:.2f} of the write)  numpy read pass {read:.2f} s  "
                f"pairwise_stats {stats:.2f} s"
            )


if __name__ == "__main__":
    main()
