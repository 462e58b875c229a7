"""Sharded, atomic, resumable checkpoints with torch.distributed.checkpoint (DCP).

Layout of a run folder:
    checkpoints/step_00000100/   DCP shards of {models, optim} + meta.json (step, world size, tensor shapes)
    checkpoints/latest           text file naming the newest complete checkpoint

A checkpoint is written into `step_XXXXXXXX.tmp`, then renamed by rank 0 after every rank has finished, and only
then named in `latest`: a crash mid-write leaves the previous checkpoint intact. A complete checkpoint is a
`step_N` folder with a readable meta.json (written last, before the rename). After a save, older complete
checkpoints (by step number, not by name) beyond `keep_last` are removed; the one just written and any with a
higher step are never touched. A failed write (disk full, read-only folder) raises CheckpointWriteError naming
the cause and path, after removing the partial `.tmp` folder; the previous checkpoint and `latest` stay as they
were. DCP wraps OS errors (CheckpointException, a BaseException, or RuntimeErrors from the zip writer that drop
the errno), so the cause is looked up along the exception chain, then in the message, then in the filesystem
itself (read-only flag, free space).

Resume reads `latest`; when it is missing, unreadable or names an incomplete folder, the newest complete
checkpoint is used instead and the reason is reported; a `latest` naming nothing usable with no complete
checkpoint at all stops with CheckpointStateError rather than starting over.

DCP reshards on load, so a checkpoint written by 2 processes loads into 1. The data position is the step (the
stream is a pure function of it, vjepa/data/loader.py), and no RNG state is needed beyond the seed for the same
reason; the torch RNG state is saved anyway for code that draws from the global generator.

Before loading, the saved tensor names and shapes are compared with the live model, and any difference is
reported by name (DCP's own error for a different architecture is hard to read).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from vjepa.fileio import atomic_write
from vjepa.models.build import check_tensor_shapes
from vjepa.train.rundir import complete_checkpoints, os_error_text


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, read-only folder, ...); the message names cause and path."""


class CheckpointStateError(RuntimeError):
    """The checkpoints of a run are in a state resume cannot trust (e.g. `latest` names a missing folder)."""


def _shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


@dataclass(frozen=True)
class ResumePoint:
    path: Path | None  # the checkpoint to resume from; None: nothing to resume
    note: str = ""  # why it is not the one `latest` names (empty when it is)


def find_resume_point(run_dir: str | Path) -> ResumePoint:
    """The checkpoint a resume should load: `latest`, or the newest complete one when `latest` is missing, unusable
    or older. Raises CheckpointStateError when `latest` names nothing usable and no checkpoint is complete."""
    root = checkpoint_dir(run_dir)
    marker = root / "latest"
    done = complete_checkpoints(Path(run_dir))
    newest = done[-1][1] if done else None
    if not marker.exists():
        note = f"no checkpoints/latest; using the newest complete checkpoint {newest.name}" if newest else ""
        return ResumePoint(newest, note)
    try:
        name = marker.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        name, why = "", f"checkpoints/latest is unreadable ({err})"
    else:
        why = f"checkpoints/latest names {name!r}, which is not a complete checkpoint"
    named = root / name if name and "/" not in name else None
    if named is not None and any(p == named for _, p in done):
        if named == newest:
            return ResumePoint(named)
        return ResumePoint(newest, f"{newest.name} is complete and newer than {name} named by checkpoints/latest")
    if newest is not None:
        return ResumePoint(newest, f"{why}; falling back to the newest complete checkpoint {newest.name}")
    partial = sorted(p.name for p in root.glob("step_*"))
    if partial:
        raise CheckpointStateError(
            f"{why} and no checkpoint in {root} is complete (found {', '.join(partial[:4])}); not starting over: "
            f"move the folder aside or set train.resume=false with train.existing_run=archive"
        )
    return ResumePoint(None, f"{why} and {root} holds no checkpoint; starting from the beginning")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest usable checkpoint of a run (see find_resume_point), or None when there is none."""
    try:
        return find_resume_point(run_dir).path
    except CheckpointStateError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# write errors

_MESSAGE_ERRNOS = {
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
    "file too large": errno.EFBIG,
}


def _chain(err: BaseException) -> list[BaseException]:
    """`err`, its causes and contexts, and the per-rank exceptions a CheckpointException wraps."""
    seen: list[BaseException] = []
    todo = [err]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is x for x in seen):
            continue
        seen.append(e)
        if isinstance(e, CheckpointException):
            todo.extend(pair[0] for pair in e.failures.values() if isinstance(pair, tuple) and pair)
        todo.extend([e.__cause__, e.__context__])
    return seen


def _filesystem_cause(path: Path) -> tuple[str, bool] | None:
    """The cause from the filesystem when the error names none: (text, certain). The read-only flag, then a probe
    write of up to 8 MiB next to the partial checkpoint (its errno is real), then little free space (a guess)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return f"{os.strerror(errno.EROFS)} (EROFS)", True
    target = probe / ".write_probe" if probe.is_dir() else probe.parent / ".write_probe"
    try:
        with open(target, "wb") as f:
            for _ in range(8):
                f.write(bytes(2**20))
                f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        if err.errno:
            return os_error_text(err), True
    finally:
        target.unlink(missing_ok=True)
    free = st.f_bavail * st.f_frsize
    if free < 16 * 2**20:
        return f"{os.strerror(errno.ENOSPC)} (likely ENOSPC: {free / 2**20:.1f} MiB free)", False
    return None


def describe_write_error(err: BaseException, path: Path) -> str:
    """'No space left on device (ENOSPC)' and the like for an error raised while writing under `path`."""
    chain = _chain(err)
    for e in chain:
        if isinstance(e, OSError) and e.errno:
            return os_error_text(e)
    for e in chain:
        text = str(e).lower()
        for needle, code in _MESSAGE_ERRNOS.items():
            if needle in text:
                return f"{os.strerror(code)} ({errno.errorcode[code]})"
    inner = str(chain[-1]).strip().splitlines()
    said = f"{type(chain[-1]).__name__}: {inner[0][:200] if inner else ''}"
    found = _filesystem_cause(path)
    if found is None:
        return said
    text, certain = found
    return text if certain else f"{text}; DCP said {said}"


def _agree(failure: str | None) -> str | None:
    """Collective: the first rank's failure message, on every rank (None when all succeeded)."""
    if dist.get_world_size() == 1:
        return failure
    gathered: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, failure)
    return next((g for g in gathered if g), None)


def _prune(root: Path, newest_step: int, keep_last: int) -> None:
    """Remove complete checkpoints older than `newest_step` beyond the newest `keep_last` (the new one included)."""
    done = complete_checkpoints(root.parent)
    older = [p for s, p in done if s < newest_step]
    for old in older[: max(0, len(older) - (keep_last - 1))]:
        try:
            shutil.rmtree(old)
        except OSError as err:
            print(f"warning: could not remove old checkpoint {old}: {os_error_text(err)}", flush=True)


def _publish(root: Path, tmp: Path, final: Path, step: int, models: nn.Module, extra: dict) -> str | None:
    """Rank 0: meta.json into the finished `tmp`, rename it to `final`, point `latest` at it. Returns the failure
    (and undoes the rename, so `latest` and the folders agree again) or None."""
    renamed = False
    try:
        meta = {"step": step, "world_size": dist.get_world_size(), "shapes": _shapes(models), **extra}
        meta["torch_rng"] = torch.get_rng_state().tolist()
        (tmp / "meta.json").write_text(json.dumps(meta))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        renamed = True
        atomic_write(root / "latest", final.name)
    except OSError as err:
        if renamed:  # `latest` still names the previous checkpoint: take the new one back out of sight
            final.rename(tmp)
        return os_error_text(err)
    return None


def save_checkpoint(
    run_dir: str | Path, step: int, models: nn.Module, optimizer: torch.optim.Optimizer, keep_last: int, extra: dict
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint folder; raises CheckpointWriteError on every
    rank when any rank's write failed (the partial folder removed, the previous checkpoint and `latest` intact)."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = checkpoint_dir(run_dir)
    name = f"step_{step:08d}"
    final, tmp = root / name, root / f"{name}.tmp"
    rank = dist.get_rank()
    failure = None
    try:
        if rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
    except OSError as err:
        failure = os_error_text(err)
    failure = _agree(failure)
    if failure is None:
        try:
            model_sd, optim_sd = get_state_dict(models, optimizer)
            dcp.save({"models": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
        except (Exception, CheckpointException) as err:
            failure = describe_write_error(err, tmp)
        failure = _agree(failure)
    if failure is None:
        if rank == 0:
            failure = _publish(root, tmp, final, step, models, extra)
        failure = _agree(failure)
    if failure is not None:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        raise CheckpointWriteError(f"cannot write checkpoint {name} to {root}: {failure}")
    if rank == 0:
        _prune(root, step, keep_last)
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
