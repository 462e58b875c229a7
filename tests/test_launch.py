"""The cluster launcher end to end on one machine: submitit's local executor runs the whole SLURM path.

- From an installed copy of the package (pip install --target, run from a folder outside the checkout):
  `vjepa launch slurm --executor local` submits a tiny run; the job gets submitit's timeout signal (USR2) mid-run,
  checkpoints at its step, is requeued, and the requeued job resumes to the losses and weights of an uninterrupted
  run; each start is recorded in its own numbered file and imports the job's code snapshot.
  `vjepa launch local --nproc 1` trains from the installed copy too.
- A bad config (one of an array's too) is rejected before anything is created or submitted.
- A task whose training fails fails the job (its result raises), instead of "completing" with a status code.
- SLURM options (qos, constraint, exclude, setup, signal delay) reach the sbatch script; MASTER_PORT comes from
  submitit and depends on the job id; sweep files and arrays give one argument list per task.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
import torch
from conftest import DIST_VARS, final_weights, log_records, tiny_args
from vjepa.launch import slurm
from vjepa.launch.job import snapshot, source_revision

from vjepa.config import load_config
from vjepa.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def dist_env(pythonpath):
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(PYTHONPATH=str(pythonpath), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package installed with pip into a folder of its own (from a copy of the sources: no build files in
    the checkout)."""
    base = tmp_path_factory.mktemp("installed")
    src = base / "src"
    src.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("vjepa", "evals", "launch"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    site = base / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site, src]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=base)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one top-level package: the evals/ and launch/ folders are installed as vjepa.evals and vjepa.launch
    assert (site / "vjepa" / "launch" / "slurm.py").exists() and (site / "vjepa" / "evals" / "objectives").is_dir()
    assert not (site / "launch").exists() and not (site / "evals").exists()
    return site


def launcher_args(log_dir, *options):
    return ["--executor", "local", "--gpus-per-node", "0", "--cpus-per-task", "1", "--log-dir", str(log_dir), *options]


def wait_for(condition, what, timeout=300):
    """Poll `condition` (no clock is asserted: the timeout only turns a hang into a failure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def first_record(run):
    """True once log.jsonl holds one complete line (it may be read mid-write)."""
    path = run / "log.jsonl"
    return path.exists() and path.read_text().count("\n") >= 1


def test_local_executor_timeout_requeue_and_exact_resume(installed, tmp_path):
    run, logs, steps = tmp_path / "run", tmp_path / "logs", 24
    args = tiny_args(run, f"optim.total_steps={steps}")
    cmd = [sys.executable, "-m", "vjepa.cli", "launch", "slurm", *launcher_args(logs, "--time", "10", "--wait")]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    proc = subprocess.Popen(
        [*cmd, "--", *args], cwd=outside, env=dist_env(installed), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: first_record(run), "the first step of the job")
        [folder] = logs.iterdir()
        [first] = (folder / "starts").glob("*/start_000.yaml")
        pid = int(re.search(r"^# pid: (\d+)$", first.read_text(), re.M).group(1))
        os.kill(pid, signal.SIGUSR2)  # what submitit's local controller (and SLURM --signal) send before the limit
        out = proc.communicate(timeout=300)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    [job_out] = folder.glob("*_0_log.out")
    job_log = job_out.read_text() + next(folder.glob("*_0_log.err")).read_text()
    k = int(re.search(r"preempted at step (\d+) of", job_log).group(1))
    assert 1 <= k < steps and "Requeued job" in job_log, job_log
    assert (run / "checkpoints" / f"step_{k:08d}").is_dir()
    # two starts, two records; both imported the code snapshot of this submission, not the installed copy
    records = sorted(first.parent.glob("start_*.yaml"))
    assert [p.name for p in records] == ["start_000.yaml", "start_001.yaml"]
    for record in records:
        assert f"# code: {folder / 'code' / 'vjepa'}" in record.read_text()
        assert load_config(record) == load_config(None, args)
    full = train(load_config(None, tiny_args(tmp_path / "full", f"optim.total_steps={steps}")))
    assert [r["loss"] for r in log_records(run)] == [r["loss"] for r in full["history"]]
    a, b = final_weights(run), final_weights(tmp_path / "full")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_launch_commands_are_installed(installed, tmp_path):
    """Before, launch/ was not installed: a driver outside the checkout died with "No module named 'launch'"."""
    for tool in ("slurm", "local"):
        cmd = [sys.executable, "-m", "vjepa.cli", "launch", tool, "--help"]
        proc = subprocess.run(cmd, cwd=tmp_path, env=dist_env(installed), capture_output=True, text=True)
        assert proc.returncode == 0 and "vjepa pretrain" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_launch_local_runs_from_the_installed_package(installed, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vjepa.cli", "launch", "local", "--nproc", "1", "--"]
    proc = subprocess.run(
        [*cmd, *tiny_args(run, "optim.total_steps=2")], cwd=tmp_path, env=dist_env(installed), capture_output=True
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert [r["step"] for r in log_records(run)] == [1, 2]


def test_bad_config_is_rejected_before_anything_is_created(tmp_path, capsys):
    logs = tmp_path / "logs"
    assert slurm.main([*launcher_args(logs), "--", *tiny_args(tmp_path / "r"), "optim.lr=fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: optim.lr") and "\n" not in err
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("train:\n  run_dir: runs/a\n")
    bad.write_text("model:\n  depht: 3\n")
    assert slurm.main([*launcher_args(logs), "--array", str(good), str(bad), "--", "data.source=synthetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert "array task 1" in err and "depht" in err and "\n" not in err
    assert slurm.main([*launcher_args(logs), "--array", str(good), str(good), "--", "data.source=synthetic"]) == 2
    assert "share train.run_dir" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as mp:  # a logging backend missing here: `import wandb` raises ImportError
        mp.setitem(sys.modules, "wandb", None)
        args = [*tiny_args(tmp_path / "r"), "train.loggers=[jsonl,wandb]"]
        assert slurm.main([*launcher_args(logs), "--", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.loggers names wandb, which is not installed" in err and "before submitting" in err
    assert "\n" not in err
    assert not logs.exists()


def test_failing_training_fails_the_job(tmp_path, capsys):
    logs = tmp_path / "logs"
    missing = f"data.csv_paths=[{tmp_path / 'missing.csv'}]"
    args = [*tiny_args(tmp_path / "r"), "data.source=csv", missing]
    assert slurm.main([*launcher_args(logs, "--wait"), "--", *args]) == 1
    captured = capsys.readouterr()
    assert "TaskFailed: vjepa pretrain exited with code 2" in captured.err
    job_id = re.search(r"submitted job (\S+)", captured.out).group(1)
    [folder] = logs.iterdir()
    with pytest.raises(submitit.core.utils.FailedJobError, match="exited with code 2"):
        submitit.LocalJob(folder, job_id).result()


def test_slurm_options_reach_the_sbatch_script(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    parser = argparse.ArgumentParser()
    slurm.add_arguments(parser)
    args = parser.parse_args(
        "--nodes 2 --gpus-per-node 8 --qos high --constraint volta32gb --exclude node01,node02 --partition learn"
        " --signal-delay 300 --setup".split()
        + ["module load cuda", "--", "data.source=synthetic"]
    )
    executor = slurm.make_executor(args, tmp_path / "sub", tmp_path / "sub" / "code")
    text = executor._executor._make_submission_file_text("python -m submitit.core._submit X", "uid")
    for line in (
        "#SBATCH --qos=high",
        "#SBATCH --constraint=volta32gb",
        "#SBATCH --exclude=node01,node02",
        "#SBATCH --partition=learn",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --signal=USR2@300",
        "module load cuda",
        f"export PYTHONPATH={tmp_path / 'sub' / 'code'}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export PYTHONSAFEPATH=1",
    ):
        assert line in text, line


def test_master_port_comes_from_the_job_id(monkeypatch):
    """The old launcher used 29500 for every job, so two jobs sharing a node collided."""
    ports = set()
    for job_id in ("1001", "1002"):
        for key, value in dict(
            SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID=job_id, SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_LOCALID="1",
            SLURM_JOB_NODELIST="gpu[07-08]", SLURM_JOB_NUM_NODES="2", SLURM_NODEID="0",
        ).items():  # fmt: skip
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("MASTER_PORT", raising=False)
        env = submitit.helpers.TorchDistributedEnvironment()
        assert (env.master_addr, env.rank, env.world_size, env.local_rank) == ("gpu07", 1, 2, 1)
        ports.add(env.master_port)
    assert len(ports) == 2 and 29500 not in ports


def test_sweep_and_array_give_one_argument_list_per_task(tmp_path):
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("# lr sweep\noptim.lr=1e-3 train.run_dir=runs/a\n\n--config b.yaml train.run_dir=runs/b  # b\n")
    tasks = slurm.task_arguments(["data.source=synthetic"], [], str(sweep))
    assert [t[1] for t in tasks] == [
        ["data.source=synthetic", "optim.lr=1e-3", "train.run_dir=runs/a"],
        ["--config", "b.yaml", "data.source=synthetic", "train.run_dir=runs/b"],
    ]
    tasks = slurm.task_arguments(["optim.lr=1e-3"], ["x.yaml", "y.yaml"], "")
    assert [t[1] for t in tasks] == [["--config", "x.yaml", "optim.lr=1e-3"], ["--config", "y.yaml", "optim.lr=1e-3"]]
    layered = slurm.task_arguments(["--config", "z.yaml"], ["x.yaml"], "")  # the task's file over the shared one
    assert [t[1] for t in layered] == [["--config", "z.yaml", "--config", "x.yaml"]]


def test_snapshot_copies_the_sources_and_records_the_revision(tmp_path):
    revision = snapshot(tmp_path / "code")
    for name in ("vjepa/cli.py", "vjepa/train/loop.py", "vjepa/evals/__init__.py", "vjepa/launch/job.py"):
        assert (tmp_path / "code" / name).is_file(), name  # the installed layout: one top-level package
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == ["vjepa"]
    assert not list((tmp_path / "code").rglob("__pycache__"))
    assert (tmp_path / "code" / "vjepa" / "REVISION").read_text().strip() == revision
    assert source_revision(tmp_path / "code" / "vjepa") == revision  # a snapshot keeps the revision it came from
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if head:
        assert revision.startswith(head)


@pytest.mark.slow
def test_sweep_runs_one_array_task_per_line(tmp_path):
    logs, sweep = tmp_path / "logs", tmp_path / "sweep.txt"
    sweep.write_text(f"optim.lr=1e-3 train.run_dir={tmp_path / 'a'}\noptim.lr=3e-3 train.run_dir={tmp_path / 'b'}\n")
    base = [arg for arg in tiny_args(tmp_path / "unused", "optim.total_steps=2") if not arg.startswith("train.run_dir")]
    assert slurm.main([*launcher_args(logs, "--wait", "--sweep", str(sweep)), "--", *base]) == 0
    for name, lr in (("a", 1e-3), ("b", 3e-3)):
        assert [r["step"] for r in log_records(tmp_path / name)] == [1, 2]
        assert load_config(tmp_path / name / "config.yaml").optim.lr == lr
    [folder] = logs.iterdir()
    assert len(list((folder / "starts").glob("*/start_000.yaml"))) == 2
