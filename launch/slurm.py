"""Submit `vjepa pretrain` to SLURM with submitit (or run the same path on this machine with `--executor local`).

    vjepa launch slurm --nodes 16 --gpus-per-node 8 --partition learn --time 4320 \\
        -- --config configs/pretrain/vitl16.yaml train.run_dir=/checkpoint/me/vitl16
    vjepa launch slurm --array configs/a.yaml configs/b.yaml -- optim.total_steps=1000    # one array task each
    vjepa launch slurm --sweep sweep.txt -- --config configs/pretrain/vitl16.yaml        # one line per task
    vjepa launch slurm --executor local --gpus-per-node 0 --tasks-per-node 1 --wait -- ...  # debug, no cluster

Everything after `--` goes to `vjepa pretrain` (`python -m vjepa.launch.slurm` is the same command). The config of
every task is loaded and validated before anything is submitted or created: a bad config gives the one-line
error of `vjepa pretrain` and exit status 2. Each submission gets a folder `<log-dir>/<YYYYmmdd-HHMMSS>/` with
`code/` (a snapshot of the vjepa sources, vjepa.evals and vjepa.launch included, that the jobs import from, so a
requeued job runs the code it was submitted with), submitit's logs and pickles (named by job id) and
`starts/<job id>/start_NNN.yaml` (resolved config, git revision, host and time of every (re)start; launch/job.py).

A job stopped by preemption (SIGTERM) or by the time limit (USR2, `--signal-delay` seconds before it; raise it if
a checkpoint takes longer) writes a checkpoint at its current step and is requeued; it resumes from that
checkpoint (train.resume is on by default), up to `--max-requeues` times for time limits. A task whose training
fails raises, so the job ends FAILED. A sweep file holds one `vjepa pretrain` argument list per line (overrides,
optionally `--config FILE`, layered over the configs after `--`; `#` starts a comment), appended to the
arguments after `--`; every task must name its own train.run_dir.

Departs from the official launcher, which maps the SLURM variables itself and fixes the rendezvous port.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

EXECUTORS = ("slurm", "local")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("--executor", choices=EXECUTORS, default="slurm", help="local: submitit's local executor")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--tasks-per-node", type=int, default=0, help="0: one per GPU (1 without GPUs)")
    parser.add_argument("--cpus-per-task", type=int, default=12)
    parser.add_argument("--mem-gb", type=int, default=0, help="0: the partition's default")
    parser.add_argument("--partition", default="")
    parser.add_argument("--account", default="")
    parser.add_argument("--qos", default="")
    parser.add_argument("--constraint", default="", help="node features, e.g. 'volta32gb'")
    parser.add_argument("--exclude", default="", help="nodes to avoid, e.g. 'node[01-03]'")
    parser.add_argument("--time", type=int, default=4320, help="time limit in minutes")
    parser.add_argument("--signal-delay", type=int, default=120, help="seconds between USR2 and the time limit")
    parser.add_argument("--max-requeues", type=int, default=20, help="requeues after a time limit (preemption: any)")
    parser.add_argument(
        "--setup", action="append", default=[], metavar="LINE", help="shell line run before the tasks (repeatable)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--array", nargs="+", default=[], metavar="CONFIG", help="one array task per config file")
    group.add_argument("--sweep", default="", metavar="FILE", help="one array task per line of pretrain arguments")
    parser.add_argument("--array-parallelism", type=int, default=0, help="array tasks running at once (0: all)")
    parser.add_argument("--log-dir", default="runs/slurm_logs")
    parser.add_argument("--job-name", default="vjepa")
    parser.add_argument("--no-snapshot", action="store_true", help="import the code as installed, not a copy")
    parser.add_argument("--wait", action="store_true", help="wait for the jobs; exit 1 if one failed")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the arguments of vjepa pretrain")


class LaunchError(ValueError):
    """Bad launcher arguments; the message is printed as one line."""


def _split(args: list[str], where: str) -> tuple[list[str] | None, list[str]]:
    """(config files, overrides) of a `vjepa pretrain` argument list."""
    parser = argparse.ArgumentParser(prog=f"vjepa pretrain ({where})", add_help=False, exit_on_error=False)
    parser.add_argument("--config", "-c", action="append", default=None)
    parser.add_argument("--print-config", action="store_true")
    parser.add_argument("overrides", nargs="*")
    try:
        parsed, unknown = parser.parse_known_intermixed_args(args)
    except argparse.ArgumentError as err:
        raise LaunchError(f"{where}: {err}") from None
    if unknown:
        raise LaunchError(f"{where}: unknown arguments {unknown}")
    if parsed.print_config:
        raise LaunchError(f"{where}: --print-config is for vjepa pretrain; run that instead")
    return parsed.config, parsed.overrides


def task_arguments(rest: list[str], array: list[str], sweep: str) -> list[tuple[str, list[str]]]:
    """(label, pretrain arguments) of every task to submit."""
    config, overrides = _split(rest, "arguments after --")
    variants: list[tuple[str, list[str]]] = []
    if array:
        variants = [(f"array task {i} ({path})", ["--config", path]) for i, path in enumerate(array)]
    elif sweep:
        try:
            lines = Path(sweep).read_text().splitlines()
        except OSError as err:
            raise LaunchError(f"--sweep {sweep}: {err.strerror or err}") from None
        for n, line in enumerate(lines, 1):
            words = shlex.split(line, comments=True)
            if words:
                variants.append((f"{sweep}:{n} (array task {len(variants)})", words))
        if not variants:
            raise LaunchError(f"--sweep {sweep}: no argument lines")

    def flags(paths: list[str] | None) -> list[str]:
        return [word for path in paths or () for word in ("--config", path)]

    if not variants:
        return [("job", [*flags(config), *overrides])]
    out = []
    for label, words in variants:
        own_config, own_overrides = _split(words, label)
        # the configs after -- first, the task's own over them (e.g. a base recipe, then an ablation file)
        out.append((label, [*flags(config), *flags(own_config), *overrides, *own_overrides]))
    return out


def validate_tasks(tasks: list[tuple[str, list[str]]]) -> None:
    """Load every task's config as `vjepa pretrain` would; ConfigError/LaunchError name the task and the key.
    The logging backends a task lists must import here (the jobs normally share this environment), so a missing
    wandb is found at submission, not at the start of every job."""
    from vjepa.config import ConfigError, load_config
    from vjepa.train.metrics import LoggerError, RunLogger

    run_dirs: dict[Path, str] = {}
    for label, args in tasks:
        config, overrides = _split(args, label)
        try:
            cfg = load_config(config, overrides)
        except ConfigError as err:
            raise ConfigError(str(err) if len(tasks) == 1 else f"{label}: {err}") from None
        try:
            RunLogger.check_installed(cfg.train.loggers)
        except LoggerError as err:
            raise LaunchError(f"{label}: {err} (checked in this environment before submitting)") from None
        run_dir = Path(cfg.train.run_dir).expanduser().resolve()
        if run_dir in run_dirs:
            raise LaunchError(f"{label} and {run_dirs[run_dir]} share train.run_dir={run_dir}; give each its own")
        run_dirs[run_dir] = label


def submission_folder(log_dir: Path) -> Path:
    """A new `<log_dir>/<timestamp>[-N]` folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        folder = log_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder.resolve()
        except FileExistsError:
            continue
    raise LaunchError(f"{log_dir}: could not create a new submission folder")


def executor_parameters(args: argparse.Namespace, setup: list[str]) -> dict[str, object]:
    """submitit AutoExecutor parameters for `args` (cluster-specific ones prefixed with the executor's name)."""
    tasks = args.tasks_per_node or max(1, args.gpus_per_node)
    params: dict[str, object] = dict(
        name=args.job_name,
        nodes=args.nodes,
        tasks_per_node=tasks,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        timeout_min=args.time,
    )
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.executor == "local":
        return {**params, "local_setup": setup}
    slurm = dict(
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        exclude=args.exclude,
    )
    params.update({f"slurm_{k}": v for k, v in slurm.items() if v})
    params.update(slurm_setup=setup, slurm_signal_delay_s=args.signal_delay)
    if args.array_parallelism:
        params["slurm_array_parallelism"] = args.array_parallelism
    return params


def make_executor(args: argparse.Namespace, folder: Path, code_dir: Path | None) -> object:
    """The submitit executor of a submission (on SLURM, submitit's files go to one folder per job id)."""
    import submitit
    from vjepa.launch.job import setup_lines

    executor = submitit.AutoExecutor(
        folder=folder / "%j" if args.executor == "slurm" else folder,
        cluster=args.executor,
        slurm_max_num_timeout=args.max_requeues,
        local_max_num_timeout=args.max_requeues,
    )
    executor.update_parameters(**executor_parameters(args, [*args.setup, *setup_lines(code_dir)]))
    return executor


def failure_reason(trace: str) -> str:
    """The exception line of a failed job's traceback as submitit reports it (else its first line)."""
    found = re.findall(r"^\w[\w.]*(?:Error|Failed|Exception|Interrupt)\w*: .*$", trace, re.M)
    return found[-1] if found else trace.strip().splitlines()[0]


def run(args: argparse.Namespace) -> int:
    from vjepa.config import ConfigError

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    try:
        tasks = task_arguments(rest, args.array, args.sweep)
        validate_tasks(tasks)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import submitit
    from vjepa.launch.job import Task, snapshot

    folder = submission_folder(Path(args.log_dir))
    code_dir = None if args.no_snapshot else folder / "code"
    revision = snapshot(code_dir) if code_dir else "not snapshotted"
    executor = make_executor(args, folder, code_dir)
    work = [Task(task_args, str(folder), str(code_dir) if code_dir else None) for _, task_args in tasks]
    with submitit.helpers.clean_env():  # no RANK/MASTER_PORT/SLURM_* of this shell leak into the jobs
        if len(work) == 1:
            jobs = [executor.submit(work[0])]
        else:
            with executor.batch():
                jobs = [executor.submit(task) for task in work]
    for (label, task_args), job in zip(tasks, jobs):
        print(f"submitted job {job.job_id} ({label}): vjepa pretrain {shlex.join(task_args)}")
    print(f"logs in {folder}; code {code_dir or 'as installed'} at git revision {revision}", flush=True)
    if not args.wait:
        return 0
    failed = 0
    for job in jobs:
        try:
            print(f"job {job.job_id}: {job.result()}")
        except Exception as err:  # submitit raises FailedJobError/UncompletedJobError with the task's traceback
            failed += 1
            print(f"job {job.job_id} failed: {failure_reason(str(err))}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vjepa.launch.slurm")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    from vjepa.launch.slurm import main as _main  # the importable module, not __main__, so the pickled task is found

    sys.exit(_main())
