"""Sharded, atomic, resumable checkpoints with torch.distributed.checkpoint (DCP).

Layout of a run folder:
    checkpoints/step_00000100/   DCP shards of {models, optim} + meta.json (step, world size, tensor shapes)
    checkpoints/latest           text file naming the newest complete checkpoint

A checkpoint is written into `step_XXXXXXXX.tmp`, then renamed by rank 0 after every rank has finished, and only
then named in `latest`: a crash mid-write leaves the previous checkpoint intact. The last `keep_last` are kept.
DCP reshards on load, so a checkpoint written by 2 processes loads into 1. The data position is the step (the
stream is a pure function of it, vjepa/data/loader.py), and no RNG state is needed beyond the seed for the same
reason; the torch RNG state is saved anyway for code that draws from the global generator.

Before loading, the saved tensor names and shapes are compared with the live model, and any difference is
reported by name (DCP's own error for a different architecture is hard to read).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from vjepa.export import check_tensor_shapes


def _shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    marker = checkpoint_dir(run_dir) / "latest"
    if not marker.exists():
        return None
    path = checkpoint_dir(run_dir) / marker.read_text().strip()
    return path if (path / "meta.json").exists() else None


def save_checkpoint(
    run_dir: str | Path, step: int, models: nn.Module, optimizer: torch.optim.Optimizer, keep_last: int, extra: dict
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint folder."""
    root = checkpoint_dir(run_dir)
    name = f"step_{step:08d}"
    final, tmp = root / name, root / f"{name}.tmp"
    rank = dist.get_rank()
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_sd, optim_sd = get_state_dict(models, optimizer)
    dcp.save({"models": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    dist.barrier()
    if rank == 0:
        meta = {"step": step, "world_size": dist.get_world_size(), "shapes": _shapes(models), **extra}
        meta["torch_rng"] = torch.get_rng_state().tolist()
        (tmp / "meta.json").write_text(json.dumps(meta))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        marker = root / "latest.tmp"
        marker.write_text(name)
        marker.replace(root / "latest")
        done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in done[: max(0, len(done) - keep_last)]:
            shutil.rmtree(old)
    dist.barrier()
    return final


def read_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


def check_compatible(path: str | Path, models: nn.Module) -> None:
    """Raise CheckpointMismatchError naming the tensors that differ between the checkpoint and `models`."""
    check_tensor_shapes(_shapes(models), read_meta(path)["shapes"], f"checkpoint {path} (a different architecture?)")


def load_checkpoint(path: str | Path, models: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Load models (and optimizer) in place from `path`; returns the meta dict (step, ...)."""
    check_compatible(path, models)
    meta = read_meta(path)
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        model_sd = get_model_state_dict(models)
        dcp.load({"models": model_sd}, checkpoint_id=str(path))
        set_model_state_dict(models, model_sd)
        return meta
    model_sd, optim_sd = get_state_dict(models, optimizer)
    state = {"models": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(models, optimizer, model_state_dict=state["models"], optim_state_dict=state["optim"])
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return meta
