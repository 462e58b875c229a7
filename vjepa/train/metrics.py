"""What a training run reports: the run logger (progress lines, log.jsonl, TensorBoard), throughput and MFU of a
logged window, and the progress line's formatting helpers. Used by the training loop (vjepa/train/loop.py) and,
for `format_duration`, by feature extraction (evals/extract.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vjepa.flops import StepShape, mfu, peak_memory_mb
from vjepa.train.rundir import folder_error, truncate_log


class RunLogger:
    """Progress lines on stdout, JSON lines in run_dir/log.jsonl, TensorBoard when installed (rank 0 only).

    Starting at step s (a resume), log.jsonl records past s are moved out first (vjepa/train/rundir.py) and
    TensorBoard is opened with purge_step=s+1, so both read as one run without duplicated or out-of-order steps."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        self.file = None
        self.tb = None
        if not enabled:
            return
        truncate_log(run_dir, start_step)
        try:
            self.file = open(run_dir / "log.jsonl", "a")
        except OSError as err:
            raise folder_error("open the log in", run_dir, err) from None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
            except ImportError:
                self.tb = None

    def print(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def kept_tokens(idx: torch.Tensor, valid: torch.Tensor | None) -> float | int:
    """Kept tokens per clip: the index width, or the mean count of valid slots when rows are padded."""
    return int(idx.shape[1]) if valid is None else round(valid.sum(1).float().mean().item(), 1)


def throughput(shape: StepShape, record: dict, world_size: int, peak: float | None, device: torch.device) -> dict:
    """tokens/s (input tokens of the clips, all processes), model TFLOP/s per device and MFU (vjepa/flops.py; MFU
    None without a known peak), peak memory of this process in MB (CUDA allocator, or the CPU's max RSS)."""
    flops = shape.step(record["ctx_tokens"], record["tgt_tokens"])["step"]  # per clip
    per_device = record["clips_per_s"] / world_size
    return {
        "tokens_per_s": record["clips_per_s"] * shape.tokens,
        "tflops_per_device": flops * per_device / 1e12,
        "mfu": mfu(flops, per_device, peak),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
    }


def gpu_text(record: dict) -> str:
    """The progress line's GPU part: MFU (when the peak is known) and peak memory."""
    mfu_text = f" MFU {100 * record['mfu']:.1f}%" if record.get("mfu") is not None else ""
    return f"{mfu_text} mem {record['peak_mem_mb'] / 1024:.1f}G"


def format_duration(seconds: float) -> str:
    """H:MM:SS (negative values as 0): ETAs in progress lines."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
