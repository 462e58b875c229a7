"""The run folder: an exclusive lock, the policy for a reused folder, config history and log truncation on resume.

One run owns `train.run_dir` at a time. Rank 0 takes an exclusive `fcntl.flock` on `run_dir/.lock` before it
writes anything else there and holds it until the run ends; the file records the holder's pid, host and start
time for the message a second writer gets. The kernel drops a flock when the process holding it dies (kill -9
included), so a lock file left behind by a dead run never blocks a restart: staleness is never guessed from the
file's content, only the kernel's lock counts. Two caveats: the lock descriptor is shared with forked children
(data loader workers), so a killed run's folder stays locked until its workers have noticed and exited (a few
seconds); and on network filesystems flock is only as good as the server's lock support (Linux NFS clients map
it to POSIX byte-range locks, which the server enforces with NFSv4 or NFSv3 with lockd, but not on mounts with
`nolock` or `local_lock=flock|all`; some other network or FUSE filesystems accept flock without enforcing it
between machines). On such a filesystem keep each run_dir to one job.

A fresh start (`train.resume=false`) in a folder that already holds a run (a checkpoint or a non-empty log) is
refused unless `train.existing_run=archive`, which moves that run's files into `run_dir/archive/<UTC time>/`.
Nothing is deleted in either case.

Every start that passes the resume compatibility check writes its resolved config and git revision as
`configs/config_NNN.yaml` and `configs/git_revision_NNN.txt` (numbered per start, never overwritten) and then
replaces `config.yaml` / `git_revision.txt` (the current ones, read by `vjepa export`) atomically. On resume at
step s, `log.jsonl` records with step > s are moved out (into `log_dropped.jsonl`) so the log reads as one run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from vjepa.fileio import atomic_write

# Files and folders that make up a run (what `existing_run=archive` moves); anything else a user put there stays.
RUN_FILES = (
    "checkpoints",
    "log.jsonl",
    "log_dropped.jsonl",
    "tb",
    "wandb",
    "config.yaml",
    "git_revision.txt",
    "configs",
)
LOCK_NAME = ".lock"


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (locked, holds another run, not writable); one-line message."""


def os_error_text(err: OSError) -> str:
    """'No space left on device (ENOSPC)' for an OSError with an errno, else its message."""
    if err.errno is not None and err.errno in errno.errorcode:
        return f"{os.strerror(err.errno)} ({errno.errorcode[err.errno]})"
    return str(err)


def folder_error(what: str, path: Path, err: OSError) -> RunFolderError:
    return RunFolderError(f"cannot {what} {path}: {os_error_text(err)}")


class RunLock:
    """An exclusive flock on run_dir/.lock, held from `acquire` until `release` (or the process's death)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise RunFolderError naming the holder. Creates the folder (and only the lock file)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise folder_error("use run folder", self.path.parent, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderError(
                f"run folder {self.path.parent} is in use by another run ({holder}); wait for it to end, "
                f"stop it, or pick another train.run_dir"
            ) from None
        except OSError as err:
            os.close(fd)
            raise folder_error("lock run folder", self.path.parent, err) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _utc_now()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as err:
            os.close(fd)
            raise folder_error("write to run folder", self.path.parent, err) from None
        self.fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would let a third process lock a different inode)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "holder unknown"
    return f"pid {info.get('pid')} on host {info.get('host', '?')}, started {info.get('started', '?')}"


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------------------------------------
# what the folder holds


STEP_DIR = re.compile(r"^step_(\d+)$")


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint (step_N with a readable meta.json, not .tmp), by step."""
    root = Path(run_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = STEP_DIR.match(p.name)
            if m and p.is_dir() and _meta_ok(p):
                found.append((int(m.group(1)), p))
    return sorted(found)


def _meta_ok(path: Path) -> bool:
    try:
        return isinstance(json.loads((path / "meta.json").read_text()), dict)
    except (OSError, ValueError):
        return False


def log_last_step(run_dir: Path) -> int | None:
    """Largest step in log.jsonl, or None when there is no log or no record in it."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return None
    steps = [s for s, _ in _records(path.read_text()) if s is not None]
    return max(steps) if steps else None


def log_records(run_dir: Path) -> list[dict]:
    """The readable records of run_dir/log.jsonl that carry a step ([] without a log; a torn line is skipped)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for step, line in _records(path.read_text()) if step is not None and step >= 0]


def _records(text: str) -> list[tuple[int | None, str]]:
    """(step or None, line) for each line; unreadable lines (a torn last write) get step -1."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            out.append((-1, line))
            continue
        step = record.get("step") if isinstance(record, dict) else None
        out.append((step if isinstance(step, int) and not isinstance(step, bool) else None, line))
    return out


def holds_run(run_dir: Path) -> str | None:
    """A short description of the run in `run_dir` ('latest checkpoint step 12'), or None if none is there."""
    done = complete_checkpoints(run_dir)
    if done:
        return f"latest checkpoint step {done[-1][0]}"
    root = Path(run_dir) / "checkpoints"
    if root.is_dir() and any(p.name.startswith("step_") for p in root.iterdir()):
        return "incomplete checkpoints only"
    logged = log_last_step(run_dir)  # reads the whole log: only when there is no checkpoint to name
    if logged is not None:
        return f"a log up to step {logged}, no checkpoint"
    return None


def archive_run(run_dir: Path) -> Path:
    """Move the run's files (RUN_FILES) into run_dir/archive/<UTC time>/; returns that folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = Path(run_dir) / "archive" / stamp
    n = 1
    while dest.exists():
        dest = Path(run_dir) / "archive" / f"{stamp}-{n}"
        n += 1
    try:
        dest.mkdir(parents=True)
        for name in RUN_FILES:
            if (Path(run_dir) / name).exists():
                os.replace(Path(run_dir) / name, dest / name)
    except OSError as err:
        raise folder_error("archive the old run in", Path(run_dir), err) from None
    return dest


def check_existing_run(run_dir: Path, resume: bool, policy: str) -> str | None:
    """Apply train.existing_run to a fresh start; returns a note for the log, raises RunFolderError on refuse."""
    if resume:
        return None
    found = holds_run(run_dir)
    if found is None:
        return None
    if policy == "archive":
        dest = archive_run(run_dir)
        return f"train.resume=false: moved the old run ({found}) to {dest}"
    raise RunFolderError(
        f"run folder {run_dir} already holds a run ({found}) and train.resume=false; to continue it set "
        f"train.resume=true, to start over use another train.run_dir or set train.existing_run=archive "
        f"(moves the old run into {Path(run_dir) / 'archive'}/)"
    )


# ---------------------------------------------------------------------------------------------------------------
# writes at start


@dataclass(frozen=True)
class StartRecord:
    number: int
    config: Path
    revision: Path


def _write_new(path: Path, text: str) -> None:
    with open(path, "x") as f:  # "x": never overwrite an earlier start's record
        f.write(text)


def record_start(run_dir: Path, config_text: str, revision: str) -> StartRecord:
    """configs/config_NNN.yaml + git_revision_NNN.txt for this start, then config.yaml / git_revision.txt."""
    folder = Path(run_dir) / "configs"
    try:
        folder.mkdir(exist_ok=True)
        numbers = [int(m.group(1)) for p in folder.iterdir() if (m := re.match(r"^config_(\d+)\.yaml$", p.name))]
        number = max(numbers, default=0) + 1
        while True:
            record = StartRecord(
                number, folder / f"config_{number:03d}.yaml", folder / f"git_revision_{number:03d}.txt"
            )
            try:
                _write_new(record.config, config_text)
                break
            except FileExistsError:
                number += 1
        _write_new(record.revision, revision + "\n")
        atomic_write(Path(run_dir) / "config.yaml", config_text)
        atomic_write(Path(run_dir) / "git_revision.txt", revision + "\n")
    except OSError as err:
        raise folder_error("write the config to run folder", Path(run_dir), err) from None
    return record


def truncate_log(run_dir: Path, step: int) -> int:
    """Keep log.jsonl records with step <= `step` (and records without a step); the others, and unreadable
    lines, are appended to log_dropped.jsonl. Rewrites atomically (temp + os.replace); returns lines dropped."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return 0
    try:
        text = path.read_text()
        keep, drop = [], []
        for s, line in _records(text):
            (drop if s is not None and (s < 0 or s > step) else keep).append(line)
        if not drop and (not text or text.endswith("\n")):
            return 0
        if drop:
            with open(Path(run_dir) / "log_dropped.jsonl", "a") as f:
                f.write("".join(line + "\n" for line in drop))
        atomic_write(path, "".join(line + "\n" for line in keep))
    except OSError as err:
        raise folder_error("rewrite the log in run folder", Path(run_dir), err) from None
    return len(drop)


REVISION_FILE = "REVISION"  # written into a job's code snapshot's vjepa/ folder (launch/job.py)


def source_revision(package_dir: Path) -> str:
    """Git revision of the checkout `package_dir` lives in (+dirty with uncommitted changes); the REVISION file of
    a snapshot; "unknown" for an installed copy (a package that is not the checkout's own folder)."""
    stamp = package_dir / REVISION_FILE
    if stamp.exists():
        return stamp.read_text().strip()

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=package_dir, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or (Path(top) / package_dir.name).resolve() != package_dir:
            return "unknown (not a git checkout)"
        rev = git("rev-parse", "HEAD") or "unknown"
        return rev + ("+dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_revision() -> str:
    """The revision of the vjepa package this process runs (source_revision of its folder)."""
    return source_revision(Path(__file__).resolve().parents[1])
