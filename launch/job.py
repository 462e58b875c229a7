"""What a submitted job runs: the submitit task, the code snapshot it imports from, and a record of every start.

`Task` is the callable submitit pickles and runs in every task of the job (one per GPU). It

1. checks that `vjepa` was imported from the job's code snapshot (`snapshot()` copies the installed vjepa source
   trees, vjepa.evals and vjepa.launch included, into the submission folder at submit time, and the job's setup
   puts that copy first on PYTHONPATH with PYTHONSAFEPATH=1, so the working directory cannot shadow it): a
   requeued job runs the code it was submitted with, not whatever the checkout holds by then;
2. exports the torch.distributed variables with submitit's own `TorchDistributedEnvironment` (MASTER_PORT is
   derived from the job id, so two jobs sharing a node do not collide on a fixed port);
3. on rank 0, writes the resolved config, git revision, job id, host and time of this start to
   `<submission>/starts/<job id>/start_NNN.yaml`, a new numbered file per (re)start, never overwritten;
4. runs `vjepa pretrain` in-process and turns its exit status into the job's fate: 0 -> success; 75
   (`PREEMPTED_EXIT_CODE`: a stop signal arrived and a checkpoint was written at that step) -> requeue through
   submitit's own handler (the same path as submitit's timeout signal: `checkpoint()` is called, the countdown of
   allowed timeouts applies, then `scontrol requeue`, or a restart under the local executor); anything else ->
   an exception, so submitit records the failure and SLURM marks the job FAILED.

submitit installs its handler for USR2 (requeue at once) and SIGTERM (ignore) before the task starts; while
training runs, vjepa's own handlers (vjepa/train/preempt.py) replace them so the current step and a checkpoint
finish first. Ranks other than 0 return after a preemption and leave the requeue to rank 0, as submitit does.
"""

from __future__ import annotations

import datetime
import importlib.util
import itertools
import os
import shlex
import shutil
import signal
import socket
from pathlib import Path

from vjepa.train.rundir import REVISION_FILE, source_revision

# The source trees copied into a job's code snapshot: vjepa, and the evals/ and launch/ folders that an editable
# install maps to vjepa.evals and vjepa.launch (in a regular install they are inside vjepa already).
PACKAGES = ("vjepa", "vjepa.evals", "vjepa.launch")


class TaskFailed(RuntimeError):
    """`vjepa pretrain` ended with an error exit status inside a submitted job."""


def package_dirs() -> dict[str, Path]:
    """Source folder of each package in PACKAGES as Python finds it now (importing only the vjepa package)."""
    out = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"package {name!r} is not importable; install vjepa (pip install -e .) first")
        out[name] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return out


def snapshot(dest: Path) -> str:
    """Copy the source trees of PACKAGES into `dest` (which must not exist); returns the git revision, which is
    also written into the copy."""
    dirs = package_dirs()
    revision = source_revision(dirs["vjepa"])
    for name, src in dirs.items():  # into the layout of an installed vjepa: dest/vjepa/evals, dest/vjepa/launch
        target = dest.joinpath(*name.split("."))
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    (dest / "vjepa" / REVISION_FILE).write_text(revision + "\n")
    return revision


def setup_lines(code_dir: Path | None) -> list[str]:
    """Shell lines that make a job import from `code_dir` first (none without a snapshot)."""
    if code_dir is None:
        return []
    path = shlex.quote(str(code_dir))
    return [f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}", "export PYTHONSAFEPATH=1"]


def _check_code(code_dir: str) -> Path:
    import vjepa

    where = Path(vjepa.__file__).resolve().parent
    if not where.is_relative_to(Path(code_dir).resolve()):
        raise TaskFailed(
            f"the job imported vjepa from {where}, not from its code snapshot {code_dir} (Python >= 3.11 is needed"
            " for PYTHONSAFEPATH; on older versions submit from a folder that holds no vjepa/ package)"
        )
    return where


def write_start_record(folder: Path, header: dict[str, str], pretrain_args: list[str]) -> Path:
    """`folder/start_NNN.yaml` with the first free NNN: `header` as comments, then the resolved config (so
    `vjepa pretrain --config start_NNN.yaml` reruns it). Created exclusively: an earlier record is never touched."""
    from vjepa.cli import build_parser
    from vjepa.config import dump_config, load_config

    args = build_parser().parse_args(["pretrain", *pretrain_args])
    text = "".join(f"# {k}: {v}\n" for k, v in header.items()) + dump_config(load_config(args.config, args.overrides))
    folder.mkdir(parents=True, exist_ok=True)
    for n in itertools.count():
        path = folder / f"start_{n:03d}.yaml"
        try:
            with open(path, "x") as f:
                f.write(text)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


class Task:
    """The callable submitit runs in every task; `checkpoint()` is submitit's requeue hook."""

    def __init__(self, pretrain_args: list[str], log_folder: str, code_dir: str | None) -> None:
        self.pretrain_args = list(pretrain_args)
        self.log_folder = log_folder
        self.code_dir = code_dir

    def __call__(self) -> str:
        import submitit

        from vjepa.train.preempt import PREEMPTED_EXIT_CODE

        job = submitit.JobEnvironment()
        imported_from = _check_code(self.code_dir) if self.code_dir else None
        dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        if job.global_rank == 0:
            from vjepa.train.rundir import git_revision

            header = {
                "job": job.job_id,
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "host": socket.gethostname(),
                "pid": str(os.getpid()),
                "world": f"{dist_env.world_size} tasks on {job.num_nodes} node(s), master "
                f"{dist_env.master_addr}:{dist_env.master_port}",
                "git_revision": git_revision(),
                "code": str(imported_from or "not snapshotted"),
                "command": shlex.join(["vjepa", "pretrain", *self.pretrain_args]),
            }
            record = write_start_record(Path(self.log_folder) / "starts" / job.job_id, header, self.pretrain_args)
            print(f"start record {record}", flush=True)
        usr_sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        submitit_handler = signal.getsignal(usr_sig)  # installed by submitit before the task started

        from vjepa.cli import main

        rc = main(["pretrain", *self.pretrain_args])
        if rc == 0:
            return f"finished: {shlex.join(self.pretrain_args)}"
        if rc != PREEMPTED_EXIT_CODE:
            raise TaskFailed(f"vjepa pretrain exited with code {rc} (its error is in {job.paths.stderr})")
        if job.global_rank != 0:
            return "preempted: checkpoint written; rank 0 requeues the job"
        if not callable(submitit_handler):
            raise TaskFailed("preempted after writing a checkpoint, but submitit's signal handler is missing")
        print("preempted after writing a checkpoint: asking submitit to requeue the job", flush=True)
        submitit_handler(usr_sig, None)  # calls checkpoint(), requeues and exits (or raises when out of requeues)
        raise TaskFailed("submitit did not requeue the preempted job")

    def checkpoint(self) -> object:
        import submitit

        return submitit.helpers.DelayedSubmission(Task(self.pretrain_args, self.log_folder, self.code_dir))
