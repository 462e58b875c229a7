"""Fault suite (issue 9, A): real `vjepa pretrain` runs in subprocesses, killed, locked out, out of disk, read-only.

Each run is the tiny model of test_train.py on one thread. Kills are real signals: SIGKILL mid-step and while a
checkpoint's `.tmp` folder is being written (the writer is frozen with SIGSTOP the moment the folder appears, then
killed, so the kill lands inside the write every time). The full disk is a small tmpfs (the first checkpoint fits,
the second does not) and the read-only folder a tmpfs remounted read-only; both need root and mount(8) and are
skipped, with the reason, elsewhere. Recovery is checked exactly: the resumed run's logged losses and final
weights equal those of an uninterrupted run (fp32 on CPU).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, tiny_cfg

from vjepa.exports import read_checkpoint
from vjepa.train.checkpoint import latest_checkpoint
from vjepa.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
RUN_ARGS = [*TINY_RUN, "train.threads=1"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def start(run: Path, *extra: str) -> subprocess.Popen:
    """`vjepa pretrain` on the tiny model in `run` (a few dozen lines of output: the pipes cannot fill up)."""
    cmd = [sys.executable, "-m", "vjepa.cli", "pretrain", *RUN_ARGS, f"train.run_dir={run}", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run_cli(run: Path, *extra: str) -> tuple[int, str]:
    return finish(start(run, *extra))


def records(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def wait_for(proc: subprocess.Popen, ready, timeout: float = 300, poll: float = 0.002) -> bool:
    """Poll `ready()` until true (True) or the process exits first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if proc.poll() is not None:
            return bool(ready())
        time.sleep(poll)
    raise TimeoutError("the run neither got there nor exited")


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def error_lines(stderr: str) -> list[str]:
    """The lines a user reads: our messages, and any traceback."""
    return [x for x in stderr.splitlines() if x.startswith("error:") or "Traceback" in x]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run).encoder


STEPS = ["optim.total_steps=10", "train.checkpoint_every=2", "train.keep_last=2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its logged losses by step and its final target-encoder weights."""
    run = tmp_path_factory.mktemp("faults") / "reference"
    rc, err = run_cli(run, *STEPS)
    assert rc == 0, err
    return {r["step"]: r["loss"] for r in records(run)}, weights(run)


def assert_same_as_reference(run: Path, reference) -> None:
    losses, final = reference
    got = records(run)
    assert [r["step"] for r in got] == sorted(losses), "every step logged exactly once, in order"
    assert {r["step"]: r["loss"] for r in got} == losses  # exact: same floats
    mine = weights(run)
    assert mine.keys() == final.keys()
    assert all(torch.equal(mine[k], final[k]) for k in final)


@pytest.mark.slow
def test_kill_9_mid_step_then_resume_is_exact(tmp_path, reference):
    run = tmp_path / "killed"
    proc = start(run, *STEPS)
    assert wait_for(proc, lambda: len(records(run)) >= 5), "the run ended before it could be killed"
    kill(proc)
    lock_text = (run / ".lock").read_text()
    assert str(proc.pid) in lock_text  # the dead run's lock file is still there ...
    resumed_from = latest_checkpoint(run)
    assert resumed_from is not None and resumed_from.name in ("step_00000004", "step_00000006")
    rc, err = run_cli(run, *STEPS)  # ... and does not block the restart
    assert rc == 0, err
    assert_same_as_reference(run, reference)


@pytest.mark.slow
def test_kill_9_mid_checkpoint_keeps_previous_and_resume_is_exact(tmp_path, reference):
    def partial(run: Path) -> list[Path]:
        return sorted((run / "checkpoints").glob("step_*.tmp"))

    for attempt in range(3):  # the writer is frozen on sight of the .tmp folder: one attempt is enough in practice
        run = tmp_path / f"ckpt{attempt}"
        proc = start(run, *STEPS)
        caught = wait_for(proc, lambda run=run: latest_checkpoint(run) is not None and bool(partial(run)))
        if caught:
            kill(proc)
            break
        finish(proc)
    else:
        pytest.fail("never caught a checkpoint being written in 3 runs")
    (tmp,) = partial(run)
    previous = latest_checkpoint(run)
    assert (run / "checkpoints" / "latest").read_text() == previous.name
    assert int(previous.name[5:]) < int(tmp.name[5:13])
    assert read_checkpoint(run).step == int(previous.name[5:])  # the previous checkpoint loads
    rc, err = run_cli(run, *STEPS)
    assert rc == 0, err
    assert not partial(run)
    assert_same_as_reference(run, reference)


@pytest.mark.slow
def test_second_writer_is_refused_and_the_first_run_is_unaffected(tmp_path, reference):
    run = tmp_path / "shared"
    first = start(run, *STEPS)
    assert wait_for(first, lambda: len(records(run)) >= 1)
    first.send_signal(signal.SIGSTOP)  # hold the first run mid-training while the second one tries
    try:
        rc, err = run_cli(run, *STEPS)
    finally:
        first.send_signal(signal.SIGCONT)
    assert rc == 2
    assert error_lines(err) == [error_lines(err)[0]] and "in use by another run" in err
    assert f"pid {first.pid}" in err
    rc, err = finish(first)
    assert rc == 0, err
    assert_same_as_reference(run, reference)
    assert sorted(p.name for p in (run / "configs").iterdir()) == ["config_001.yaml", "git_revision_001.txt"]


# ---- a full disk and a read-only folder: a tmpfs of our own


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of a given size at a fresh folder; unmounted at the end. Skips when mounting is not allowed."""
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("mount(8) is not available")
        got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if got.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {got.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def test_full_disk_is_one_line_error_and_previous_checkpoint_survives(tmpfs):
    # a checkpoint of the tiny model is 4.5 MB: the first fits in 7 MB, the second (the first still kept) does not
    run = tmpfs("7m") / "run"
    rc, err = run_cli(run, "optim.total_steps=6", "train.checkpoint_every=3")
    assert rc == 2, err
    (line,) = error_lines(err)
    assert line == (
        f"error: cannot write checkpoint step_00000006 to {run / 'checkpoints'}: No space left on device (ENOSPC)"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_00000003"]  # no .tmp left
    assert (run / "checkpoints" / "latest").read_text() == "step_00000003"
    assert read_checkpoint(run).step == 3  # intact and loadable
    assert [r["step"] for r in records(run)] == [1, 2, 3, 4, 5, 6]


def test_read_only_run_folder_is_one_line_error_and_nothing_changes(tmpfs):
    where = tmpfs("16m")
    run = where / "run"
    train(tiny_cfg(run, "optim.total_steps=3", "train.threads=1"))  # in this process: saves a start-up
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    remount = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr.decode().strip()}")
    rc, err = run_cli(run, "optim.total_steps=6", "train.checkpoint_every=3")
    assert rc == 2
    assert error_lines(err) == [f"error: cannot use run folder {run}: Read-only file system (EROFS)"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# ---- several ranks: only rank 0 takes the lock, every rank gets its verdict


def _locked_out_worker(rank: int, world: int, port: int, run_dir: str, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from vjepa.distributed import shutdown
    from vjepa.train.rundir import RunFolderError

    try:
        train(tiny_cfg(run_dir, "optim.total_steps=3", "data.batch_size=2"))
        verdict = "trained"
    except RunFolderError as err:
        verdict = str(err)
    Path(out_dir, f"rank{rank}.txt").write_text(verdict)
    shutdown()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_on_a_locked_folder_both_exit_with_the_error(tmp_path):
    import socket

    import torch.multiprocessing as mp

    run = tmp_path / "locked"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from vjepa.train.rundir import RunLock; "
            "RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)",
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.start_processes(
            _locked_out_worker, args=(2, port, str(run), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + 240
        while not ctx.join(timeout=5):
            assert time.monotonic() < deadline, "a rank hung instead of exiting"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    for rank in (0, 1):
        verdict = (tmp_path / f"rank{rank}.txt").read_text()
        assert "in use by another run" in verdict and f"pid {holder.pid}" in verdict, (rank, verdict)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]
