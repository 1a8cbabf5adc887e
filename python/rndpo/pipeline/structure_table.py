"""The per-structure table of results.md (volumes and label maps): for each method, judge and miner, every
structure's base and final test Dice (means over seeds) and the spread of the gain across structures.

The spread is the sample standard deviation over structures of each structure's mean gain (final - base):
the paper reports that RN-DPO lowers this variance across anatomical structures, so the column sets it
against DPO's on the same data. A structure never scored in a run (absent from truth and prediction of
every test volume) is left out of that run's figures.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["structure_gains", "structure_table"]


def structure_gains(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (method, judge, miner): {"structures": names, "base", "final", "gain": float64 (S,) means over
    seeds (nan where never scored), "spread": std over structures of the mean gain (nan below two), "seeds"}
    from rows with ``base_dice_per_class`` and ``final_dice_per_class``."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("final_dice_per_class") and row.get("base_dice_per_class"):
            groups[(row["method"], row["judge"], row["miner"])].append(row)
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, group in groups.items():
        names = list(group[0]["final_dice_per_class"])

        def table(field: str, group: list[dict[str, Any]] = group, names: list[str] = names) -> np.ndarray:
            return np.array(
                [[np.nan if r[field].get(n) is None else r[field][n] for n in names] for r in group],
                np.float64,
            )

        base, final = table("base_dice_per_class"), table("final_dice_per_class")
        with warnings.catch_warnings():  # a structure never scored gives nan, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            gain = np.nanmean(final - base, axis=0)
            means = gain[np.isfinite(gain)]
            spread = float(np.std(means, ddof=1)) if means.size >= 2 else float("nan")
            out[key] = {
                "structures": names,
                "base": np.nanmean(base, axis=0),
                "final": np.nanmean(final, axis=0),
                "gain": gain,
                "spread": spread,
                "seeds": len(group),
            }
    return out


def structure_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per (method, judge, miner), a column per structure ("base -> final"), and the
    gain's spread across structures; "" when no row has per-structure figures."""
    gains = structure_gains(rows)
    if not gains:
        return ""
    names = next(iter(gains.values()))["structures"]
    head = ["method", "judge", "miner", "seeds", *names, "gain spread across structures"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, judge, miner), g in sorted(gains.items()):
        cells = [method, judge, miner, str(g["seeds"])]
        for b, f in zip(g["base"], g["final"], strict=True):
            cells.append("-" if not np.isfinite(f) else f"{b:.4f} -> {f:.4f} ({f - b:+.4f})")
        cells.append("-" if not np.isfinite(g["spread"]) else f"{g['spread']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
