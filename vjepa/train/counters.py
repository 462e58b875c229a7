"""Running totals of the data counters of a run: clips padded from short videos, short and bad videos skipped.

The loader puts per-batch counts in every batch (vjepa/data/loader.py, BATCH_COUNTERS), each from the process that
built the batch. The loop adds them up per rank; `totals` sums over ranks (one collective, called by every rank on
log and checkpoint steps only) and adds what the run had counted before its last checkpoint, which the checkpoint
records under "data_counts". A run started from another run's checkpoint (train.init_from) counts from zero.
Not in the official code, which retries a random other video without counting.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from vjepa.data.loader import BATCH_COUNTERS
from vjepa.train.checkpoint import read_meta


class DataCounts:
    def __init__(self, base: dict[str, int] | None = None) -> None:
        self.base = {k: int((base or {}).get(k, 0)) for k in BATCH_COUNTERS}
        self.local = dict.fromkeys(BATCH_COUNTERS, 0)

    @classmethod
    def for_run(cls, ckpt: str | Path | None, run_dir: str | Path) -> DataCounts:
        """Continue the totals of `ckpt` when it is a checkpoint of this run folder; zero otherwise."""
        if ckpt is None or not Path(ckpt).resolve().is_relative_to(Path(run_dir).resolve()):
            return cls()
        return cls(read_meta(ckpt).get("data_counts"))

    def add(self, batch: dict) -> None:
        for key in BATCH_COUNTERS:
            self.local[key] += int(batch.get(key, 0))

    def totals(self, device: torch.device) -> dict[str, int]:
        """Run totals over all ranks (a collective when there are several ranks)."""
        local = [self.local[k] for k in BATCH_COUNTERS]
        if dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.tensor(local, dtype=torch.float64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            local = [round(x) for x in t.tolist()]
        return {k: self.base[k] + v for k, v in zip(BATCH_COUNTERS, local)}


def summary_line(totals: dict[str, int]) -> str:
    line = f"{totals['short_clips']} clips padded from short videos, {totals['bad_skipped']} unreadable videos skipped"
    if totals["short_skipped"]:
        line += f", {totals['short_skipped']} short videos skipped (data.short_videos=skip)"
    return line
