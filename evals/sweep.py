"""Seeded ablation sweeps: pretrain every (arm, seed), export and probe it, and aggregate the results.

    vjepa sweep configs/sweeps/objectives.yaml                 # local, one run at a time
    vjepa sweep configs/sweeps/objectives.yaml --jobs 2        # two runs at once
    vjepa sweep configs/sweeps/objectives.yaml --backend slurm # one SLURM array task per run
    vjepa sweep report runs/sweeps/objectives                  # rebuild results.{md,json,csv} and plots
    vjepa sweep table runs/sweeps/objectives --metric "..."    # a table of some metrics of results.json

A sweep file (YAML, strict: unknown keys are errors naming the valid ones) names the base config files, the arms
(each: config files layered over the base and `key=value` overrides; or a `grid` whose product makes the arms),
the pretraining seeds, the baseline arm and the evaluations run on every finished run (the `eval` section is an
eval config of `vjepa eval run` without its backbones: data, extract, evaluations, probe seeds).

Every run lives in `<out>/runs/<arm>/seed<s>/` (the pretraining run folder, `pretrain.log`, `eval/`, `eval.log`
and `sweep_status.json`). A rerun of the sweep skips the runs whose status is `done` and redoes the others: a cut
pretraining resumes from its newest checkpoint, a failed one starts again in the same folder (which resumes).
A failed run is reported with its log path and never stops the others. The sweep's own folder is locked while
it runs (`<out>/.lock`), so two sweeps never write the same runs. At the end (and by `vjepa sweep report`) the
results are aggregated by `vjepa.evals.sweep_stats`. With `prune: true` a run that is done loses its checkpoints and
extracted features (its logs and results stay, and are all the report reads), so a sweep folder stays small
enough to keep, or to commit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vjepa.evals.run import EVAL_KINDS, EvalRunConfig
from vjepa.launch.local import pretrain_command
from vjepa.launch.slurm import failure_reason

from vjepa.config import ConfigError, dump_config, load_config, load_typed
from vjepa.fileio import atomic_write

STATUS = "sweep_status.json"
PREEMPTED = 75  # vjepa pretrain's exit status after a stop signal and a checkpoint
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
# torch.distributed variables of the process that runs the sweep (a test, a job step): a run must not join its group
DIST_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                  "TORCHELASTIC_RUN_ID")  # fmt: skip
_LIVE: set[subprocess.Popen] = set()  # children running now (a stop signal is forwarded to them)
_STOP = threading.Event()  # set by SIGTERM / SIGINT: no new run starts, running ones checkpoint and stop


@dataclass(frozen=True, kw_only=True)
class ArmSpec:
    name: str = ""
    configs: tuple[str, ...] = ()  # layered over the sweep's base configs
    overrides: tuple[str, ...] = ()  # key=value, applied last


@dataclass(frozen=True, kw_only=True)
class SlurmSpec:
    executor: str = "slurm"  # slurm | local (submitit's local executor: the same path on this machine)
    partition: str = ""
    account: str = ""
    qos: str = ""
    time: int = 1440  # minutes per run
    gpus_per_node: int = 1
    cpus_per_task: int = 10
    mem_gb: int = 0
    array_parallelism: int = 64
    setup: tuple[str, ...] = ()  # shell lines before each task (module load, conda activate)


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    name: str = ""  # default: the sweep file's stem
    out: str = ""  # default: runs/sweeps/<name>
    base: tuple[str, ...] = ()  # config files every arm starts from
    overrides: tuple[str, ...] = ()  # every arm, before its own
    arms: tuple[ArmSpec, ...] = ()
    grid: dict[str, Any] = field(default_factory=dict)  # key -> list of values; arms = their product
    seeds: tuple[int, ...] = (0, 1, 2)  # pretraining seeds (train.seed), the same for every arm
    baseline: str = ""  # default: the first arm
    processes: int = 1  # per run: >1 runs pretraining under torchrun with that many processes
    prune: bool = False  # after a run is done, delete its checkpoints and extracted features (results stay)
    eval: EvalRunConfig = field(default_factory=lambda: EvalRunConfig(seeds=(0,)))  # backbones, out: set per run
    slurm: SlurmSpec = field(default_factory=SlurmSpec)


@dataclass(frozen=True)
class Run:
    arm: str
    seed: int
    configs: tuple[str, ...]
    overrides: tuple[str, ...]
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.arm} seed {self.seed}"

    def config_overrides(self) -> list[str]:
        """The arm's overrides, then this run's seed and run folder."""
        return [*self.overrides, f"train.seed={self.seed}", f"train.run_dir={self.folder / 'run'}"]

    def pretrain_args(self) -> list[str]:
        return [*(w for c in self.configs for w in ("--config", c)), *self.config_overrides()]


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def grid_arms(grid: dict[str, Any]) -> list[ArmSpec]:
    if not grid:
        return []
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values, got {values!r}")
        axes.append([(key, v) for v in values])
    arms = []
    for combo in itertools.product(*axes):
        name = "+".join(f"{k.split('.')[-1]}={_value_text(v)}" for k, v in combo).replace(" ", "")
        arms.append(ArmSpec(name=name, overrides=tuple(f"{k}={_value_text(v)}" for k, v in combo)))
    return arms


def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """Read and check a sweep file: every arm's pretraining config is loaded and validated here."""
    path = Path(path)
    cfg = load_typed(SweepConfig, path, list(overrides))
    name = cfg.name or path.stem
    arms = list(cfg.arms) + grid_arms(cfg.grid)
    if not arms:
        raise ConfigError(f"{path}: arms: list at least one arm (or a grid)")
    seen = set()
    for i, arm in enumerate(arms):
        if not NAME.match(arm.name or ""):
            raise ConfigError(f"{path}: arms.{i}.name: {arm.name!r} must be a folder name (letters, digits, _.=+-)")
        if arm.name in seen:
            raise ConfigError(f"{path}: arms.{i}.name: {arm.name!r} is used twice")
        seen.add(arm.name)
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"{path}: seeds: give distinct seeds, got {list(cfg.seeds)}")
    baseline = cfg.baseline or arms[0].name
    if baseline not in seen:
        raise ConfigError(f"{path}: baseline: {baseline!r} is not one of the arms {sorted(seen)}")
    if cfg.slurm.executor not in ("slurm", "local"):
        raise ConfigError(f"{path}: slurm.executor: {cfg.slurm.executor!r} is not one of ['slurm', 'local']")
    if cfg.processes < 1:
        raise ConfigError(f"{path}: processes: must be >= 1, got {cfg.processes}")
    for i, spec in enumerate(cfg.eval.evaluations):
        if spec.kind not in EVAL_KINDS:
            raise ConfigError(f"{path}: eval.evaluations.{i}.kind: {spec.kind!r} is not one of {list(EVAL_KINDS)}")
    if bool(cfg.eval.data.train_csv) != bool(cfg.eval.data.val_csv):
        raise ConfigError(f"{path}: eval.data.train_csv and val_csv: give both or neither (neither: synthetic)")
    cfg = replace(cfg, name=name, out=cfg.out or f"runs/sweeps/{name}", arms=tuple(arms), grid={}, baseline=baseline)
    for run in plan(cfg):
        try:
            load_config(list(run.configs) or None, run.config_overrides())
        except ConfigError as err:
            raise ConfigError(f"{path}: arm {run.arm!r}: {err}") from None
    return cfg


def plan(cfg: SweepConfig) -> list[Run]:
    """Every (arm, seed) of the sweep, arms outer, in file order."""
    root = Path(cfg.out) / "runs"
    return [
        Run(
            arm.name, seed, (*cfg.base, *arm.configs), (*cfg.overrides, *arm.overrides), root / arm.name / f"seed{seed}"
        )
        for arm in cfg.arms
        for seed in cfg.seeds
    ]


def read_status(folder: Path) -> dict:
    try:
        return json.loads((folder / STATUS).read_text())
    except (OSError, ValueError):
        return {}


def write_status(folder: Path, status: dict) -> None:
    atomic_write(folder / STATUS, json.dumps(status, indent=2))


def eval_data(cfg: SweepConfig) -> tuple[str, str]:
    """The train/val lists every run is probed on: the eval section's own, or synthetic videos written once."""
    from vjepa.evals.run import synthetic_lists

    e = cfg.eval
    if e.data.train_csv:
        return e.data.train_csv, e.data.val_csv
    return synthetic_lists(replace(e, out=str(Path(cfg.out) / "eval_data")))


def _child(cmd: list[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run `cmd` with stdout and stderr appended to `log`; (exit status, peak resident memory in MB)."""
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}  # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _LIVE.add(proc)
        try:
            while True:
                try:
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                except InterruptedError:  # a signal handler ran in this thread
                    continue
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            _LIVE.discard(proc)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024.0  # KiB on Linux


def _last_error(log: Path) -> str:
    """The last error-looking line of a log (else its last line)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if re.search(r"(Error|error|Exception|Killed|Traceback)", line):
            return line[:300]
    return lines[-1][:300] if lines else ""


def run_one(cfg: SweepConfig, run: Run, data: tuple[str, str], threads: int = 0) -> dict:
    """Pretrain, then probe, one run; resumable. Returns its final status (state done | failed | cut)."""
    folder = run.folder
    status = read_status(folder)
    if status.get("state") == "done" or _STOP.is_set():
        return status if status.get("state") == "done" else {**status, "state": "cut", "error": "sweep stopped"}
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARIABLES}  # each run is a job of its own
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    status.update(arm=run.arm, seed=run.seed, state="pretraining", host=os.uname().nodename, pid=os.getpid())
    status.setdefault("attempts", 0)
    status["attempts"] += 1
    write_status(folder, status)
    if not status.get("pretrain_done"):
        log = folder / "pretrain.log"
        cmd = pretrain_command(cfg.processes, run.pretrain_args())
        t0 = time.time()
        code, rss = _child(cmd, log, env)
        status["pretrain_s"] = status.get("pretrain_s", 0.0) + time.time() - t0
        status["peak_rss_mb"] = max(status.get("peak_rss_mb", 0.0), rss)
        if code != 0:
            state = "cut" if code == PREEMPTED else "failed"
            error = "stopped by a signal after a checkpoint; resumes from it" if code == PREEMPTED else _last_error(log)
            status.update(state=state, log=str(log), exit_status=code, error=error)
            write_status(folder, status)
            return status
        status["pretrain_done"] = True
    status["state"] = "evaluating"
    write_status(folder, status)
    e = cfg.eval
    eval_cfg = replace(
        e,
        backbones=(str(folder / "run"),),
        names=(run.arm,),
        out=str(folder / "eval"),
        data=replace(e.data, train_csv=data[0], val_csv=data[1]),
    )
    (folder / "eval_config.yaml").write_text(dump_config(eval_cfg))
    log = folder / "eval.log"
    t0 = time.time()
    code, _ = _child([sys.executable, "-m", "vjepa.cli", "eval", "run", str(folder / "eval_config.yaml")], log, env)
    status["eval_s"] = status.get("eval_s", 0.0) + time.time() - t0
    if code != 0:
        state = "cut" if _STOP.is_set() else "failed"
        status.update(state=state, log=str(log), exit_status=code, error=_last_error(log))
    else:
        status.update(state="done", log="", exit_status=0, error="")
        if cfg.prune:
            status["pruned_mb"] = prune_run(folder)
    write_status(folder, status)
    return status


def prune_run(folder: Path) -> float:
    """Delete what a finished run no longer needs for the report (asked for by `prune: true`): its checkpoints and
    the token features its evaluations extracted. Returns the megabytes freed."""
    import shutil

    freed = 0
    targets = [folder / "run" / "checkpoints", *sorted((folder / "eval").glob("**/*_tokens.pt"))]
    for path in targets:
        if path.is_dir():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        elif path.is_file():
            freed += path.stat().st_size
            path.unlink()
    return freed / 2**20


class Progress:
    """Runs done / running / failed and an ETA from the mean duration of the finished runs."""

    def __init__(self, total: int, skipped: int, workers: int) -> None:
        self.total, self.done, self.failed, self.running = total, skipped, 0, 0
        self.workers, self.durations, self.lock = max(1, workers), [], threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.running += 1

    def finish(self, run: Run, status: dict, seconds: float) -> None:
        with self.lock:
            self.running -= 1
            if status.get("state") == "done":
                self.done += 1
                self.durations.append(seconds)
                what = f"done in {seconds:.0f}s"
            else:
                self.failed += 1
                what = f"{status.get('state')}: {status.get('error') or '?'} (log {status.get('log')})"
            left = self.total - self.done - self.failed
            eta = ""
            if self.durations and left:
                secs = sum(self.durations) / len(self.durations) * left / self.workers
                eta = f", ETA {time.strftime('%H:%M:%S', time.gmtime(secs))}"
            print(
                f"[sweep] {run.label} {what} | {self.done}/{self.total} done, {self.running} running, "
                f"{self.failed} failed{eta}",
                flush=True,
            )


def run_local(cfg: SweepConfig, runs: list[Run], jobs: int) -> int:
    data = eval_data(cfg)
    todo = [r for r in runs if read_status(r.folder).get("state") != "done"]
    progress = Progress(len(runs), len(runs) - len(todo), min(jobs, len(todo)))
    print(f"[sweep] {cfg.name}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run", flush=True)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0

    def one(run: Run) -> dict:
        progress.start()
        t0 = time.time()
        try:
            status = run_one(cfg, run, data, threads)
        except Exception as err:  # a broken run folder must not stop the other runs
            status = {"state": "failed", "error": f"{type(err).__name__}: {err}", "log": str(run.folder)}
        progress.finish(run, status, time.time() - t0)
        return status

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, todo))
    return sum(s.get("state") != "done" for s in results)


class SweepTask:
    """What one SLURM array task runs: one (arm, seed), resumable, requeued on preemption or time limit."""

    def __init__(self, sweep_file: str, overrides: list[str], arm: str, seed: int) -> None:
        self.sweep_file, self.overrides, self.arm, self.seed = sweep_file, overrides, arm, seed

    def __call__(self) -> dict:
        cfg = load_sweep(self.sweep_file, self.overrides)
        run = next(r for r in plan(cfg) if r.arm == self.arm and r.seed == self.seed)
        status = run_one(cfg, run, eval_data(cfg))
        if status["state"] == "cut":
            raise RuntimeError(f"{run.label}: pretraining was stopped (status 75); resubmit to resume")
        if status["state"] != "done":
            raise RuntimeError(f"{run.label} failed: {status.get('error')} (log {status.get('log')})")
        return status

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)  # the run resumes from its own checkpoint


def run_slurm(cfg: SweepConfig, runs: list[Run], sweep_file: str, overrides: list[str], wait: bool) -> int:
    import submitit

    s = cfg.slurm
    todo = [r for r in runs if read_status(r.folder).get("state") != "done"]
    eval_data(cfg)  # written once, before the tasks start
    folder = Path(cfg.out) / "submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster=s.executor)
    params: dict[str, Any] = dict(
        name=f"sweep-{cfg.name}", nodes=1, tasks_per_node=1, gpus_per_node=s.gpus_per_node,
        cpus_per_task=s.cpus_per_task, timeout_min=s.time,
    )  # fmt: skip
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    if s.executor == "slurm":
        extra = {"partition": s.partition, "account": s.account, "qos": s.qos}
        params.update({f"slurm_{k}": v for k, v in extra.items() if v})
        params.update(slurm_array_parallelism=s.array_parallelism, slurm_setup=list(s.setup))
    else:
        params["local_setup"] = list(s.setup)
    executor.update_parameters(**params)
    with submitit.helpers.clean_env(), executor.batch():
        jobs = [executor.submit(SweepTask(str(sweep_file), list(overrides), r.arm, r.seed)) for r in todo]
    for run, job in zip(todo, jobs):
        print(f"[sweep] submitted job {job.job_id}: {run.label} ({run.folder})", flush=True)
    print(f"[sweep] {len(jobs)} tasks submitted, {len(runs) - len(todo)} runs already done; logs in {folder}")
    if not wait:
        return 0
    failed = 0
    for run, job in zip(todo, jobs):
        try:
            job.result()
            print(f"[sweep] {run.label} done", flush=True)
        except Exception as err:  # submitit's FailedJobError carries the task's traceback
            failed += 1
            print(f"[sweep] {run.label} failed: {failure_reason(str(err))}", flush=True)
    return failed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("sweep", help="sweep YAML file, or `report` / `table` followed by a sweep folder")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the sweep file (e.g. seeds=[0,1])")
    parser.add_argument("--backend", choices=("local", "slurm"), default="local")
    parser.add_argument("--jobs", type=int, default=1, help="local: runs at once")
    parser.add_argument("--no-wait", action="store_true", help="slurm: return after submitting")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their state, run nothing")
    parser.add_argument("--metric", action="append", default=[], help="table: a metric (repeat), NAME or NAME=LABEL")


def _metric_label(spec: str, known: set[str]) -> tuple[str, str]:
    """`NAME` or `NAME=LABEL` of `vjepa sweep table --metric`; names may hold "=" themselves (knn k=1 top-1), so a
    known name followed by "=" is looked for first."""
    if spec in known:
        return spec, spec
    for name in sorted(known, key=len, reverse=True):
        if spec.startswith(name + "="):
            return name, spec[len(name) + 1 :]
    name, _, label = spec.partition("=")
    return name, label or name


def _forward_stop(signum: int, frame: Any) -> None:
    """SIGTERM / SIGINT: start no new run, and pass the signal on so each running pretraining checkpoints."""
    _STOP.set()
    for proc in list(_LIVE):
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
    print(f"[sweep] {signal.Signals(signum).name}: stopping; rerun the same command to resume", flush=True)


def run(args: argparse.Namespace) -> int:
    from vjepa.evals.sweep_stats import write_report

    from vjepa.train.rundir import RunFolderError, RunLock

    if args.sweep == "table":
        from vjepa.evals.sweep_stats import compact_table

        try:
            if len(args.overrides) != 1 or not args.metric:
                raise ValueError("usage: vjepa sweep table SWEEP_FOLDER --metric NAME[=LABEL] [--metric ...]")
            results = json.loads((Path(args.overrides[0]) / "results.json").read_text())
            known = {r["metric"] for r in results["rows"]}
            pairs = [_metric_label(m, known) for m in args.metric]
            print(compact_table(results, [n for n, _ in pairs], [lab for _, lab in pairs]), end="")
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.sweep == "report":
        if len(args.overrides) != 1:
            print("usage: vjepa sweep report SWEEP_FOLDER", file=sys.stderr)
            return 2
        try:
            print(write_report(Path(args.overrides[0]))["markdown"])
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        cfg = load_sweep(args.sweep, args.overrides)
    except (ConfigError, OSError) as err:
        print(f"sweep config error: {err}", file=sys.stderr)
        return 2
    runs = plan(cfg)
    if args.dry_run:
        for r in runs:
            state = read_status(r.folder).get("state", "new")
            print(f"{state:11s} {r.label}: vjepa pretrain {shlex.join(r.pretrain_args())}")
        return 0
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(dump_config(cfg))
    lock = RunLock(out)
    try:
        lock.acquire()
    except RunFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _forward_stop)
    try:
        if args.backend == "slurm":
            failed = run_slurm(cfg, runs, args.sweep, args.overrides, wait=not args.no_wait)
            if args.no_wait:
                return 0
        else:
            failed = run_local(cfg, runs, max(1, args.jobs))
        report = write_report(out)
        print(report["markdown"])
        stopped = " (stopped by a signal: rerun to resume)" if _STOP.is_set() else ""
        print(f"[sweep] wrote {out / 'results.md'}; {failed} runs not done{stopped}", flush=True)
    finally:
        lock.release()
    return 1 if failed else 0
