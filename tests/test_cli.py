"""The `vjepa` command: synth -> pretrain from the CSV list; config errors; torchrun with 2 CPU processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_MODEL

from vjepa.cli import main

TINY = [
    *TINY_MODEL,
    "data.frames_per_clip=8",
    "data.frame_step=2",
    "data.crop_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "optim.total_steps=3",
    "optim.warmup_steps=1",
    "train.log_every=1",
]


def test_synth_then_pretrain_from_csv(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "synth"), "--num-videos", "4", "--frames", "20", "--size", "64"]) == 0
    csv = tmp_path / "synth" / "train.csv"
    lines = csv.read_text().splitlines()
    assert len(lines) == 4 and all(Path(line.rsplit(" ", 1)[0]).exists() for line in lines)
    run = tmp_path / "run"
    rc = main(["pretrain", *TINY, "data.source=csv", f"data.csv_paths=[{csv}]", f"train.run_dir={run}"])
    assert rc == 0
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert "step 3/3 loss" in capsys.readouterr().out


def test_pretrain_from_shards_and_from_a_weighted_mix(tmp_path, capsys):
    """synth -> make-shards -> pretrain from the shards, then from shards + list + synthetic mixed by weight."""
    assert main(["synth", "--out", str(tmp_path / "synth"), "--num-videos", "4", "--frames", "20", "--size", "64"]) == 0
    csv = tmp_path / "synth" / "train.csv"
    shards = tmp_path / "shards"
    assert main(["data", "make-shards", str(csv), "--out", str(shards), "--max-per-shard", "2"]) == 0
    assert len(list(shards.glob("*.tar"))) == 2 and (shards / "shards.txt").exists()
    run = tmp_path / "run_shards"
    src = f"data.sources=[{{kind: shards, path: {shards / 'shards.txt'}}}]"
    assert main(["pretrain", *TINY, src, "data.shard_shuffle=2", f"train.run_dir={run}"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 3
    mix = (
        f"data.sources=[{{kind: shards, path: {shards / 'shards.txt'}, weight: 2}}, {{kind: csv, path: {csv}}},"
        " {kind: synthetic, weight: 1}]"
    )
    run = tmp_path / "run_mix"
    assert main(["pretrain", *TINY, mix, "data.batch_size=4", "data.repeat=2", f"train.run_dir={run}"]) == 0
    assert "step 3/3 loss" in capsys.readouterr().out


def test_config_typo_is_a_clear_error(tmp_path, capsys):
    assert main(["pretrain", "data.source=synthetic", "optim.lrate=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrate" in err and "'lr'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  sorce: synthetic\n")
    assert main(["pretrain", "--config", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def _torchrun_two(*target: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.distributed
def test_torchrun_two_cpu_processes(tmp_path):
    run = tmp_path / "ddp"
    out = _torchrun_two(
        "-m",
        "vjepa.cli",
        "pretrain",
        *TINY,
        "data.source=synthetic",
        "data.synthetic_videos=16",
        f"train.run_dir={run}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "world size 2" in out.stdout and "global batch 4" in out.stdout
    assert (run / "checkpoints" / "latest").read_text() == "step_00000003"


@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names are read from /proc")
def test_pretrain_joins_the_process_group_threads_before_exit(tmp_path):
    """After `vjepa pretrain` returns, no gloo thread is left to outlive the interpreter (vjepa/distributed.py:
    one left behind could abort a finished rank at exit). Fails without shutdown's mesh cleanup: the group's
    pt_gloo_runloop and gloo_tcp_loop threads stay."""
    script = tmp_path / "pretrain_then_threads.py"
    script.write_text(
        "import os, sys\n"
        "from vjepa.cli import main\n"
        "rc = main(['pretrain', *sys.argv[1:]])\n"
        "names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
        "print('rc', rc, 'gloo threads', sorted(n for n in names if 'gloo' in n), flush=True)\n"
    )
    out = _torchrun_two(
        str(script), *TINY, "data.source=synthetic", "data.synthetic_videos=16", f"train.run_dir={tmp_path / 'run'}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("rc 0 gloo threads []") == 2, out.stdout[-2000:]


def test_missing_csv_list_is_a_clear_error(tmp_path, capsys):
    rc = main(
        [
            "pretrain",
            *TINY,
            "data.source=csv",
            f"data.csv_paths=[{tmp_path / 'nope.csv'}]",
            f"train.run_dir={tmp_path / 'run'}",
        ]
    )
    assert rc == 2
    assert "nope.csv" in capsys.readouterr().err


def test_version_and_top_level_names():
    """`vjepa --version` prints the package version (one source: vjepa/__init__.py, read by setup.py too);
    the names users reach for are importable from the top level, lazily."""
    import re

    import vjepa
    from vjepa.embed import Embedder
    from vjepa.exports import export
    from vjepa.pretrained import load_pretrained, random_like

    out = subprocess.run([sys.executable, "-m", "vjepa.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"vjepa {vjepa.__version__}", out
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert "version=VERSION" in setup and re.fullmatch(r"\d+\.\d+\.\d+", vjepa.__version__)
    assert vjepa.load_pretrained is load_pretrained and vjepa.random_like is random_like
    assert vjepa.Embedder is Embedder and vjepa.export is export
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vjepa.nope  # noqa: B018
