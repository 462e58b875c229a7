"""The run folder (issue 9, A1-A5): reused folders, pruning, a dangling `latest`, the lock, config history, log cut.

In-process `train()` calls on the tiny model of test_train.py; the lock tests hold or kill the lock from a real
second process. The fault suite with killed CLI runs is tests/test_faults.py.
"""

import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import losses, tiny_cfg

from vjepa.config import ConfigError, load_config
from vjepa.distributed import init_distributed
from vjepa.exports import read_checkpoint
from vjepa.models.build import CheckpointMismatchError
from vjepa.train.checkpoint import CheckpointStateError, latest_checkpoint, save_checkpoint
from vjepa.train.loop import NonFiniteLoss, build_training, main, train
from vjepa.train.rundir import RunFolderError


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (except the lock) with its bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def steps_of(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]


def ckpt_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step_*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Losses of an uninterrupted 8-step run."""
    return losses(train(tiny_cfg(tmp_path_factory.mktemp("ref") / "run")))


# ---- A1: a fresh run in a used folder, pruning, keep_last


def test_fresh_run_in_used_folder_is_refused_and_nothing_changes(tmp_path):
    run = tmp_path / "used"
    train(tiny_cfg(run, "optim.total_steps=6"))
    before = snapshot(run)
    with pytest.raises(RunFolderError, match=r"already holds a run \(latest checkpoint step 6\)") as err:
        train(tiny_cfg(run, "optim.total_steps=3", "train.resume=false"))
    msg = str(err.value)
    assert "\n" not in msg and str(run) in msg
    assert "train.resume=true" in msg and "train.run_dir" in msg and "train.existing_run=archive" in msg
    assert {k: v for k, v in snapshot(run).items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_archive_moves_the_old_run_and_keeps_the_new_checkpoints(tmp_path):
    """The issue's reproduction: old steps 1..6 in the folder, a new run with keep_last=1 used to delete each of
    its own checkpoints right after writing it (name sort), leaving `latest` dangling."""
    run = tmp_path / "reuse"
    train(tiny_cfg(run, "optim.total_steps=6", "train.checkpoint_every=1", "train.keep_last=1"))
    old_log = (run / "log.jsonl").read_bytes()
    cfg = tiny_cfg(
        run,
        "optim.total_steps=3",
        "train.checkpoint_every=1",
        "train.keep_last=1",
        "train.resume=false",
        "train.existing_run=archive",
    )
    train(cfg)
    assert ckpt_names(run) == ["step_00000003"] and latest_checkpoint(run).name == "step_00000003"
    assert steps_of(run) == [1, 2, 3]
    (archived,) = (run / "archive").iterdir()
    assert ckpt_names(archived) == ["step_00000006"]
    assert (archived / "log.jsonl").read_bytes() == old_log
    assert load_config(run / "config.yaml") == cfg


def test_pruning_never_removes_the_new_checkpoint_and_sorts_by_step(tmp_path):
    run = tmp_path / "mixed"
    cfg = tiny_cfg(run)
    info = init_distributed("cpu")
    models, optimizer, _ = build_training(cfg, info, torch.float32)
    later = run / "checkpoints" / "step_00000100"  # a complete checkpoint with a higher step than ours
    later.mkdir(parents=True)
    (later / "meta.json").write_text(json.dumps({"step": 100}))
    for step in (1, 2, 5):
        save_checkpoint(run, step, models, optimizer, keep_last=2, extra={})
        assert (run / "checkpoints" / f"step_{step:08d}" / "meta.json").exists()
    assert ckpt_names(run) == ["step_00000002", "step_00000005", "step_00000100"]
    save_checkpoint(run, 6, models, optimizer, keep_last=1, extra={})
    assert ckpt_names(run) == ["step_00000006", "step_00000100"]
    assert (run / "checkpoints" / "latest").read_text() == "step_00000006"


@pytest.mark.parametrize("bad", ["train.keep_last=0", "train.keep_last=-1", "train.existing_run=overwrite"])
def test_bad_run_folder_settings_are_config_errors(tmp_path, bad):
    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        tiny_cfg(tmp_path, bad)


def test_resume_wins_over_init_from_and_says_so(tmp_path, capsys):
    train(tiny_cfg(tmp_path / "src", "optim.total_steps=3"))
    run = tmp_path / "r"
    train(tiny_cfg(run, "train.stop_after=4"))
    capsys.readouterr()
    got = train(tiny_cfg(run, f"train.init_from={tmp_path / 'src' / 'checkpoints' / 'step_00000003'}"))
    out = capsys.readouterr().out
    assert "resuming from step_00000004" in out and "train.init_from" in out and "ignored" in out
    assert got["history"][0]["step"] == 5


# ---- A2: a dangling or corrupt `latest`


@pytest.mark.parametrize("marker", ["step_00000009", "", "garbage\x00\n"])
def test_dangling_latest_falls_back_to_newest_complete_checkpoint(tmp_path, capsys, marker, reference):
    run = tmp_path / "d"
    train(tiny_cfg(run, "train.stop_after=6"))
    (run / "checkpoints" / "latest").write_text(marker)
    capsys.readouterr()
    rest = train(tiny_cfg(run))
    out = capsys.readouterr().out
    assert "falling back to the newest complete checkpoint step_00000006" in out
    assert [r["step"] for r in rest["history"]] == [7, 8]
    assert losses(rest) == reference[6:]


def test_latest_naming_a_missing_folder_with_no_complete_checkpoint_stops(tmp_path):
    run = tmp_path / "gone"
    train(tiny_cfg(run, "optim.total_steps=3"))
    ckpt = run / "checkpoints" / "step_00000003"
    (ckpt / "meta.json").unlink()  # what the old pruning left: `latest` names a folder that is not complete
    ckpt.rename(ckpt.with_name("step_00000003.tmp"))
    before = snapshot(run)
    with pytest.raises(CheckpointStateError, match="not starting over"):
        train(tiny_cfg(run, "optim.total_steps=6"))
    assert snapshot(run) == before


# ---- A3: the lock, held by a real second process

# The documented protocol, spelled out: an exclusive flock on run_dir/.lock holding the holder's pid and host.
HOLD = """
import fcntl, json, os, socket, sys, time
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}).encode())
print("locked", flush=True)
time.sleep(120)
"""


def hold_lock(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_then_a_stale_lock_does_not_block(tmp_path):
    run = tmp_path / "locked"
    holder = hold_lock(run)
    try:
        with pytest.raises(RunFolderError, match=f"pid {holder.pid} on host {socket.gethostname()}") as err:
            train(tiny_cfg(run, "optim.total_steps=3"))
        assert "\n" not in str(err.value) and "in use by another run" in str(err.value)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written before the lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    # the dead holder's .lock file is still there, with its pid, but the kernel dropped its lock
    assert str(holder.pid) in (run / ".lock").read_text()
    assert train(tiny_cfg(run, "optim.total_steps=3"))["step"] == 3


# ---- A4: config history, and a failed resume leaves config.yaml alone


def test_config_history_and_failed_resume_keeps_config_yaml(tmp_path):
    run = tmp_path / "hist"
    first = tiny_cfg(run, "optim.total_steps=3")
    train(first)
    before = snapshot(run)
    with pytest.raises(CheckpointMismatchError):
        train(tiny_cfg(run, "optim.total_steps=8", "model.depth=3"))
    assert snapshot(run) == before  # config.yaml byte-identical, no second config record, log untouched
    exported = read_checkpoint(run)  # what `vjepa export RUN` reads
    assert exported.model.depth == 2 and exported.step == 3
    second = tiny_cfg(run, "optim.total_steps=6")
    train(second)
    configs = run / "configs"
    assert sorted(p.name for p in configs.iterdir()) == [
        "config_001.yaml",
        "config_002.yaml",
        "git_revision_001.txt",
        "git_revision_002.txt",
    ]
    assert load_config(configs / "config_001.yaml") == first
    assert load_config(run / "config.yaml") == second


# ---- A5: the log, TensorBoard and W&B after a resume; the logging backends (train.loggers)


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline and quiet, its settings and caches in tmp_path, not the home folder; the server address is a
    closed local port, so anything that tried the network would fail here instead of reaching out."""
    wandb = pytest.importorskip("wandb")
    home = tmp_path / "wandb_home"
    for var, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield wandb
    wandb.teardown()  # ends the W&B service process; the next wandb.setup reads the environment afresh


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (run-<id>.wandb, what `wandb sync` uploads): LevelDB log format
    (32 KiB blocks of chunks: crc32, length, type 1 full / 2 first / 3 middle / 4 last) after a 7-byte header, each
    record a wandb.proto Record."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:7] == b":W&B" + (0xBEE1).to_bytes(2, "little") + b"\x00", data[:7]
    records, pos, chunk = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(chunk))
            chunk = b""
    return records


def wandb_starts(run: Path) -> list[dict]:
    """Per start of the run (its offline folder, oldest first): the run's id, project and name, the config, the loss
    by step from the history, the last summary's loss and the exit code. Ends the W&B service first: finish()
    can return before the service has written out a run's file, its end flushes and closes them."""
    import wandb

    wandb.teardown()

    def values(items) -> dict:
        return {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in items}

    starts = []
    for folder in sorted((run / "wandb").glob("offline-run-*")):
        (path,) = folder.glob("run-*.wandb")
        start = {"loss": {}, "config": {}}
        for r in wandb_records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                start.update(id=r.run.run_id, project=r.run.project, name=r.run.display_name)
                start["config"].update(values(r.run.config.update))
            elif kind == "config":
                start["config"].update(values(r.config.update))
            elif kind == "history":
                row = values(r.history.item)
                start["loss"][row["_step"]] = row["loss"]
            elif kind == "summary":
                start["summary_loss"] = values(r.summary.update).get("loss", start.get("summary_loss"))
            elif kind == "exit":
                start["exit_code"] = r.exit.exit_code
        starts.append(start)
    return starts


def test_log_tensorboard_and_wandb_drop_steps_past_the_resume_point(tmp_path, reference, wandb_offline):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    loggers = "train.loggers=[jsonl,tensorboard,wandb]"
    train(tiny_cfg(run, "train.stop_after=5", loggers))
    run_id = (run / "wandb" / "run_id.txt").read_text().strip()
    # a crash after step 5 was logged but before its checkpoint was named: resume happens at step 3
    (run / "checkpoints" / "latest").write_text("step_00000003")
    shutil.rmtree(run / "checkpoints" / "step_00000005")
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 1.0')  # a torn last line
    train(tiny_cfg(run, loggers))
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["loss"] for r in records] == reference
    dropped = (run / "log_dropped.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in dropped[:2]] == [4, 5] and dropped[2].startswith('{"step": 6')
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 9))
    assert [e.value for e in acc.Scalars("loss")] == [float(torch.tensor(x).float()) for x in reference]  # float32
    # W&B: both starts continue the one run whose id the run folder keeps, each logging what log.jsonl got
    first, second = wandb_starts(run)
    for start in (first, second):
        assert (start["id"], start["project"], start["name"], start["exit_code"]) == (run_id, "vjepa", "tb", 0)
        assert start["config"]["train"]["loggers"] == ["jsonl", "tensorboard", "wandb"]
        assert start["config"]["model"]["embed_dim"] == 64  # the resolved config
    assert first["loss"] == dict(zip(range(1, 6), reference[:5]))
    assert second["loss"] == dict(zip(range(4, 9), reference[3:]))
    assert {**first["loss"], **second["loss"]} == {r["step"]: r["loss"] for r in records}
    assert second["summary_loss"] == reference[-1]


def test_a_failed_run_finishes_its_wandb_run_as_failed(tmp_path, wandb_offline):
    run = tmp_path / "nan"
    cfg = tiny_cfg(run, "train.loggers=[jsonl,wandb]", "optim.warmup_steps=8", "optim.start_lr=1e-4", "optim.lr=1e36")
    with pytest.raises(NonFiniteLoss):
        train(cfg)
    assert wandb_offline.run is None  # finished: a next wandb.init in this process starts a new run
    (start,) = wandb_starts(run)
    assert start["exit_code"] == 1 and start["loss"]


@pytest.mark.parametrize("backend", ["wandb", "tensorboard"])
def test_a_missing_logging_backend_is_one_line_before_the_run_folder_is_touched(tmp_path, monkeypatch, capsys, backend):
    held = tmp_path / "held"
    train(tiny_cfg(held, "optim.total_steps=3"))
    before = snapshot(held)
    monkeypatch.setitem(sys.modules, backend, None)  # what `import wandb` finds when wandb is not installed
    for run in (tmp_path / "fresh", held):
        capsys.readouterr()
        assert main(tiny_cfg(run, "optim.total_steps=6", f"train.loggers=[jsonl,{backend}]")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: train.loggers names {backend}, which is not installed")
        assert "pip install 'vjepa-lab[logging]'" in err
    assert not (tmp_path / "fresh").exists() and snapshot(held) == before


def test_wandb_that_cannot_start_is_one_line(tmp_path, monkeypatch, capsys, wandb_offline):
    monkeypatch.setenv("WANDB_MODE", "nope")  # wandb.init refuses it, as it refuses a missing login online
    assert main(tiny_cfg(tmp_path / "run", "train.loggers=[jsonl,wandb]")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: train.loggers: W&B could not start (") and "mode" in err
