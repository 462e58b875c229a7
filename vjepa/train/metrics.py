"""What a training run reports: the run logger (progress lines, log.jsonl, TensorBoard, Weights & Biases), throughput
and MFU of a logged window, and the progress line's formatting helpers. Used by the training loop
(vjepa/train/loop.py) and, for `format_duration`, by feature extraction (evals/extract.py).
"""

from __future__ import annotations

import importlib
import json
import secrets
from collections.abc import Sequence
from pathlib import Path

import torch

from vjepa.config import Config, to_dict
from vjepa.fileio import atomic_write
from vjepa.flops import StepShape, mfu, peak_memory_mb
from vjepa.train.rundir import folder_error, truncate_log

# The optional backends of train.loggers and the module each needs (both in the `logging` extra).
BACKEND_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb"}
WANDB_ID_FILE = Path("wandb") / "run_id.txt"  # in the run folder: the W&B run every start of this run continues


class LoggerError(RuntimeError):
    """A backend of train.loggers cannot be used (not installed, or it failed to start); one-line message."""


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a log record other than its step: what TensorBoard and W&B get (lists and None left out)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}


class RunLogger:
    """Progress lines on stdout and the backends of cfg.train.loggers, rank 0 only (`enabled`).

    log.jsonl (backend "jsonl", which the config requires) is always written. Starting at step s (a resume), its
    records past s are moved out first (vjepa/train/rundir.py) and TensorBoard (run_dir/tb) is opened with
    purge_step=s+1, so both read as one run without duplicated or out-of-order steps. Weights & Biases (run_dir/wandb)
    continues one W&B run across the starts of a run folder: its id is kept in run_dir/wandb/run_id.txt
    (resume="allow"); the config is the resolved one, the mode follows WANDB_MODE (offline: `wandb sync` the
    run_dir/wandb/offline-run-* folders later). W&B steps only go up: steps past s that a crashed start had logged
    keep their first values there and the repeats are dropped. A context manager: leaving it closes every backend
    (the W&B run ends as failed on an exception)."""

    def __init__(self, run_dir: Path, enabled: bool, cfg: Config | None = None, start_step: int = 0) -> None:
        self.enabled = enabled
        self.file = None
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        loggers = cfg.train.loggers if cfg is not None else ("jsonl",)
        try:
            if "wandb" in loggers:  # first: the backend most likely to fail to start
                self.wandb = _start_wandb(run_dir, cfg)
                self.print(
                    f"W&B run {self.wandb.id} ({'offline' if self.wandb.offline else 'online'}) in {run_dir / 'wandb'}"
                )
            truncate_log(run_dir, start_step)
            try:
                self.file = open(run_dir / "log.jsonl", "a")
            except OSError as err:
                raise folder_error("open the log in", run_dir, err) from None
            if "tensorboard" in loggers:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        except BaseException:
            self.close(failed=True)
            raise

    @staticmethod
    def check_installed(loggers: Sequence[str]) -> None:
        """Import the optional backends named in `loggers`, or raise LoggerError naming the backend, the key and the
        extra to install. Called before the run folder is locked, so a missing backend leaves the folder untouched."""
        for name in loggers:
            if name not in BACKEND_MODULES:
                continue
            try:
                importlib.import_module(BACKEND_MODULES[name])
            except ImportError as err:
                raise LoggerError(
                    f"train.loggers names {name}, which is not installed ({err}); install it with "
                    f"pip install 'vjepa-lab[logging]', or remove {name} from train.loggers"
                ) from None

    def print(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None or self.wandb is not None:
            values = scalars(record)
            if self.tb is not None:
                for k, v in values.items():
                    self.tb.add_scalar(k, v, record["step"])
            if self.wandb is not None:
                self.wandb.log(values, step=record["step"])

    def close(self, failed: bool = False) -> None:
        """Close every backend (again: a no-op); the W&B run ends as failed when `failed`."""
        if self.file:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            run, self.wandb = self.wandb, None
            run.finish(exit_code=1 if failed else 0)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


def _start_wandb(run_dir: Path, cfg: Config):
    """wandb.init for this run folder: the id from run_dir/wandb/run_id.txt (written on the first start)."""
    import wandb

    id_file = run_dir / WANDB_ID_FILE
    try:
        run_id = id_file.read_text().strip() if id_file.is_file() else ""
        if not run_id:
            run_id = secrets.token_hex(6)  # lower-case letters and digits, as W&B ids
            id_file.parent.mkdir(exist_ok=True)
            atomic_write(id_file, run_id + "\n")
    except OSError as err:
        raise folder_error("keep the W&B run id in", run_dir, err) from None
    try:
        return wandb.init(
            project=cfg.train.wandb_project,
            name=run_dir.resolve().name,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config=to_dict(cfg),
        )
    except Exception as err:  # no login, no network, a bad project name: wandb's own errors are of many kinds
        text = " ".join(str(err).split())[:300] or type(err).__name__  # one line, whatever wandb's message spans
        raise LoggerError(
            f"train.loggers: W&B could not start ({text}); log in with `wandb login`, or set WANDB_MODE=offline "
            "and `wandb sync` the run's wandb/ folder later"
        ) from None


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
