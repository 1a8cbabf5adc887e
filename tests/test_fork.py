"""Mining in a forked child: a child of a process whose rayon pool exists must not hang.

Both paths are covered: binary masks and label maps (``num_classes``).

Each case runs in a fresh interpreter with a timeout: the parent mines first (so its global pool
exists), then forks (``os.fork``, a ``multiprocessing`` pool with the fork start method, DataLoader
workers), and the children's results must equal the parent's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

COMMON = """
import os, sys
import numpy as np
import rndpo

rng = np.random.default_rng(0)
MASKS = rng.random((6, 5, 9, 11)) > 0.5
SCORES = rng.random((6, 5))
LABELS = rng.integers(0, 4, (6, 5, 3, 9, 11), dtype=np.uint8)  # label maps, C = 4

def work(i):
    stats = rndpo.pairwise_stats(MASKS)
    pairs = rndpo.mine_pairs(MASKS, SCORES, "all_pairs", seed=i)
    labels = rndpo.pairwise_stats(LABELS, num_classes=4)
    label_pairs = rndpo.mine_pairs(LABELS, SCORES, "random", seed=i, num_classes=4)
    return (stats.disagreement.tolist(), pairs.chosen.tolist(), pairs.rejected.tolist(),
            pairs.region_size.tolist(), labels.intersection.tolist(), labels.disagreement.tolist(),
            label_pairs.chosen.tolist(), label_pairs.region_size.tolist())

EXPECTED = [work(i) for i in range(4)]  # the parent's pool now exists
"""

CASES = {
    "os_fork": """
pid = os.fork()
if pid == 0:
    os._exit(0 if [work(i) for i in range(4)] == EXPECTED else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
""",
    "multiprocessing_fork_pool": """
import multiprocessing as mp
with mp.get_context("fork").Pool(2) as pool:
    assert pool.map(work, range(4)) == EXPECTED
""",
    "dataloader_workers": """
import torch
from torch.utils.data import DataLoader, Dataset

class Mined(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return work(i)

loader = DataLoader(
    Mined(), batch_size=None, num_workers=2, multiprocessing_context="fork", collate_fn=lambda x: x
)
assert list(loader) == EXPECTED
""",
    "fork_of_a_fork": """
pid = os.fork()
if pid == 0:
    assert work(0) == EXPECTED[0]
    grandchild = os.fork()
    if grandchild == 0:
        os._exit(0 if work(1) == EXPECTED[1] else 3)
    _, status = os.waitpid(grandchild, 0)
    os._exit(os.waitstatus_to_exitcode(status))
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forked_child_mines_the_same_pairs_without_hanging(case: str) -> None:
    script = textwrap.dedent(COMMON) + textwrap.dedent(CASES[case]) + "\nprint('ok')\n"
    env = {**os.environ, "RAYON_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: a forked child hung while mining")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
