"""Preemption: real signals to a real `vjepa pretrain` process, then an exact resume; wall-clock checkpoints.

- SIGTERM after the first progress line: the run finishes its step, checkpoints at that step, exits with
  PREEMPTED_EXIT_CODE (a second SIGTERM during the save changes nothing), and resuming gives the losses and final
  weights of an uninterrupted run, bitwise (fp32 on CPU).
- SIGTERM to the whole process group, as SLURM signals every process of a job step at preemption,
  with loader workers: the workers survive it and the run stops the same way.
- `train.checkpoint_every_minutes` writes checkpoints without any `checkpoint_every` step.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DIST_VARS, STEPS, final_weights, log_records, tiny_args

from vjepa.config import ConfigError, load_config
from vjepa.train.checkpoint import latest_checkpoint
from vjepa.train.loop import train
from vjepa.train.preempt import PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[1]


def start_pretrain(args, cwd, new_session=False):
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}  # in-process runs of this session set them
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "vjepa.cli", "pretrain", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=new_session,
    )


def read_until(proc, pattern, seen):
    """Read lines until one matches `pattern`; returns the match (None at EOF). Lines are appended to `seen`."""
    for line in proc.stdout:
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    return None


def test_sigterm_checkpoints_at_the_step_and_resumes_exactly(tmp_path):
    run, seen = tmp_path / "run", []
    proc = start_pretrain(tiny_args(run), tmp_path)
    try:
        assert read_until(proc, r"^step 1/", seen), "".join(seen)
        os.kill(proc.pid, signal.SIGTERM)
        stop = read_until(proc, r"stopping after step (\d+)", seen)
        assert stop, "".join(seen)
        os.kill(proc.pid, signal.SIGTERM)  # a second SIGTERM while the checkpoint is written: ignored
        seen += proc.stdout.readlines()
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    out = "".join(seen)
    assert rc == PREEMPTED_EXIT_CODE, out
    k = int(stop.group(1))
    assert 1 <= k < STEPS
    assert f"preempted at step {k} of {STEPS}" in out
    assert latest_checkpoint(run).name == f"step_{k:08d}"
    assert [r["step"] for r in log_records(run)] == list(range(1, k + 1))

    rest = train(load_config(None, tiny_args(run)))
    assert not rest["preempted"] and [r["step"] for r in rest["history"]] == list(range(k + 1, STEPS + 1))
    full = train(load_config(None, tiny_args(tmp_path / "full")))
    interrupted = [r["loss"] for r in log_records(run)]
    assert interrupted == [r["loss"] for r in full["history"]]  # bitwise
    a, b = final_weights(run), final_weights(tmp_path / "full")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_signal_to_the_process_group_with_loader_workers(tmp_path):
    """SLURM signals every process of the step, loader workers included. PyTorch's worker handler exits on a
    SIGTERM its parent did not send, and the parent then fails ("DataLoader worker ... is killed by signal") before
    it can checkpoint: the workers must start with the stop signals blocked."""
    run, seen = tmp_path / "run", []
    proc = start_pretrain(tiny_args(run, "data.num_workers=2"), tmp_path, new_session=True)
    try:
        assert read_until(proc, r"^step 1/", seen), "".join(seen)
        os.killpg(proc.pid, signal.SIGTERM)
        stop = read_until(proc, r"stopping after step (\d+)", seen)
        seen += proc.stdout.readlines()
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    out = "".join(seen)
    assert rc == PREEMPTED_EXIT_CODE and stop, out
    assert "SIGTERM received" in out
    assert "exited unexpectedly" not in out and "Traceback" not in out, out
    assert latest_checkpoint(run).name == f"step_{int(stop.group(1)):08d}"


def test_checkpoint_every_minutes_writes_checkpoints_between_step_intervals(tmp_path):
    # 1e-6 minutes is 60 microseconds: shorter than any training step, so every step is due; no clock is asserted
    run = tmp_path / "run"
    result = train(load_config(None, tiny_args(run, "optim.total_steps=4", "train.checkpoint_every_minutes=1e-6")))
    assert result["step"] == 4 and not result["preempted"]
    names = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert names == [f"step_{s:08d}" for s in (1, 2, 3, 4)]


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_checkpoint_every_minutes_is_validated(value):
    with pytest.raises(ConfigError, match="train.checkpoint_every_minutes"):
        load_config(None, [f"train.checkpoint_every_minutes={value}", "data.source=synthetic"])


def _children(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
@pytest.mark.distributed
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Two processes under torchrun; only rank 1 is signalled. Both must stop after the same step (the save is
    collective: a rank that kept training would hang it) and leave a checkpoint at that step."""
    run, seen = tmp_path / "run", []
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "vjepa.cli", "pretrain", *tiny_args(run, "data.batch_size=2")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert read_until(proc, r"^step 1/", seen), "".join(seen)
        workers = {}
        for pid in _children(proc.pid):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            rank = next(int(x[5:]) for x in environ if x.startswith(b"RANK="))
            workers[rank] = pid
        os.kill(workers[1], signal.SIGTERM)
        stop = read_until(proc, r"stopping after step (\d+)", seen)
        seen += proc.stdout.readlines()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    out = "".join(seen)
    assert stop and "a stop signal (on another rank) received" in out, out
    assert latest_checkpoint(run).name == f"step_{int(stop.group(1)):08d}"
    assert "exitcode  : 75" in out or "exitcode: 75" in out.replace(" ", ""), out
