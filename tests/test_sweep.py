"""`vjepa sweep`: a tiny sweep end to end (real processes), a forced failure and its resume, a stop signal and its
resume, the SLURM path under submitit's local executor; the statistics against independent values."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vjepa.evals.sweep import load_sweep, plan
from vjepa.evals.sweep_stats import mean_interval, paired, t975

from vjepa.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = [  # the demo, shrunk to seconds
    "model.depth=2", "model.pred_depth=1", "data.synthetic_videos=16", "data.frames_per_clip=8", "data.crop_size=32",
    "data.batch_size=2", "data.num_workers=0", "optim.warmup_steps=1", "train.log_every=2",
    "train.checkpoint_every=4", "train.threads=1",
]  # fmt: skip
EVAL = {
    "data": {"synthetic_train": 24, "synthetic_val": 24, "synthetic_frames": 8, "synthetic_size": 32},
    "extract": {"frames_per_clip": 8, "crop_size": 32, "batch_size": 12},
    "evaluations": [{"kind": "knn"}, {"kind": "linear"}],
}


def write_sweep(tmp: Path, arms: list[dict], steps: int = 6, **extra) -> Path:
    import yaml

    spec = {
        "out": str(tmp / "sweep"),
        "base": [str(ROOT / "configs/debug/tiny_cpu.yaml")],
        "overrides": [*TINY, f"optim.total_steps={steps}"],
        "arms": arms,
        "seeds": [0, 1],
        "eval": EVAL,
        **extra,
    }
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# As if the sweep were started inside a distributed job: its runs must not inherit that job's process group.
DIST_ENV = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


def sweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **DIST_ENV}
    return subprocess.run(
        [sys.executable, "-m", "vjepa.cli", "sweep", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def status(tmp: Path, arm: str, seed: int) -> dict:
    return json.loads((tmp / "sweep" / "runs" / arm / f"seed{seed}" / "sweep_status.json").read_text())


def test_statistics_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 29, 30, 31, 60, 200):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=2e-4), df
    xs = [0.61, 0.58, 0.66, 0.63]
    m, sd, half = mean_interval(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=m, scale=stats.sem(xs))
    assert (m - half, m + half) == pytest.approx((lo, hi), rel=1e-4)
    p = paired({0: 0.7, 1: 0.72, 2: 0.69, 3: 0.5}, {0: 0.6, 1: 0.61, 2: 0.6})  # seed 3 has no baseline: left out
    d = [0.1, 0.11, 0.09]
    assert p["n"] == 3 and p["diff"] == pytest.approx(sum(d) / 3) and p["significant"]
    half = stats.t.ppf(0.975, 2) * stats.tstd(d) / math.sqrt(3)
    assert (p["lo"], p["hi"]) == pytest.approx((sum(d) / 3 - half, sum(d) / 3 + half), rel=1e-3)
    assert not paired({0: 0.1, 1: 0.3}, {0: 0.2, 1: 0.2})["significant"]
    assert "lo" not in paired({0: 0.1}, {0: 0.2})


def test_sweep_file_errors(tmp_path):
    path = write_sweep(tmp_path, [{"name": "a"}, {"name": "a"}])
    with pytest.raises(ConfigError, match="arms.1.name: 'a' is used twice"):
        load_sweep(path)
    path = write_sweep(tmp_path, [{"name": "a", "overrides": ["optim.lrr=1"]}])
    with pytest.raises(ConfigError, match=r"sweep.yaml: arm 'a': .*optim.lrr"):
        load_sweep(path)
    path = write_sweep(tmp_path, [{"name": "a"}], baseline="b")
    with pytest.raises(ConfigError, match="baseline: 'b' is not one of the arms"):
        load_sweep(path)
    path = write_sweep(tmp_path, [{"name": "a", "bogus": 1}])
    with pytest.raises(ConfigError, match="bogus"):
        load_sweep(path)
    path = write_sweep(tmp_path, [], grid={"optim.lr": [1e-3, 3e-4], "mask.group_size": [1, 2]})
    cfg = load_sweep(path)
    assert [a.name for a in cfg.arms] == ["lr=0.001+group_size=1", "lr=0.001+group_size=2",
                                          "lr=0.0003+group_size=1", "lr=0.0003+group_size=2"]  # fmt: skip
    runs = plan(cfg)
    assert len(runs) == 8 and runs[1].pretrain_args()[-2:] == ["train.seed=1", f"train.run_dir={runs[1].folder}/run"]


def test_sweep_failure_resume_and_report(tmp_path):
    missing = tmp_path / "later" / "train.csv"  # does not exist yet: that arm's pretraining fails
    arms = [
        {"name": "plain", "configs": [str(ROOT / "configs/ablations/plain.yaml")]},
        {"name": "broken", "overrides": ["data.source=csv", f"data.csv_paths=[{missing}]"]},
    ]
    path = write_sweep(tmp_path, arms, baseline="plain", prune=True)
    first = sweep(str(path))
    assert first.returncode == 1, first.stdout + first.stderr
    assert "broken seed 0 failed" in first.stdout and "pretrain.log" in first.stdout
    assert status(tmp_path, "plain", 0)["state"] == status(tmp_path, "plain", 1)["state"] == "done"
    run0 = tmp_path / "sweep" / "runs" / "plain" / "seed0"
    assert not (run0 / "run" / "checkpoints").exists() and not list(run0.glob("eval/**/*_tokens.pt"))  # pruned
    assert (run0 / "run" / "log.jsonl").exists() and status(tmp_path, "plain", 0)["pruned_mb"] > 1
    bad = status(tmp_path, "broken", 1)
    assert bad["state"] == "failed" and bad["log"].endswith("pretrain.log") and str(missing) in bad["error"]
    results = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert {(u["arm"], u["state"]) for u in results["unfinished"]} == {("broken", "failed")}
    # fix the cause, rerun: the finished runs are skipped, the failed ones redone
    subprocess.run([sys.executable, "-m", "vjepa.cli", "synth", "--out", str(missing.parent), "--num-videos", "8",
                    "--frames", "16", "--size", "40"], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip  # noqa: E501
    second = sweep(str(path))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 already done, 2 to run" in second.stdout
    assert status(tmp_path, "plain", 0)["attempts"] == 1 and status(tmp_path, "broken", 0)["attempts"] == 2
    results = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert results["unfinished"] == [] and results["baseline"] == "plain"
    rows = {(r["arm"], r["metric"]): r for r in results["rows"]}
    knn = rows[("broken", "knn k=1 top-1")]
    assert knn["n"] == 2 and set(knn["values"]) == {"0", "1"}
    base = rows[("plain", "knn k=1 top-1")]
    diff = [knn["values"][s] - base["values"][s] for s in ("0", "1")]
    assert knn["vs_baseline"]["diff"] == pytest.approx(sum(diff) / 2)
    assert ("plain", "train jepa_loss") in rows and ("plain", "cost s/step") in rows
    md = (tmp_path / "sweep" / "results.md").read_text()
    assert "| plain (baseline) | 2 |" in md and "Δ" in md
    assert (tmp_path / "sweep" / "results.csv").read_text().startswith("arm,metric,n,mean")
    pytest.importorskip("matplotlib")
    assert (tmp_path / "sweep" / "plots" / "training_curves.png").stat().st_size > 1000
    # the report rebuilds the same table from the run folders
    (tmp_path / "sweep" / "results.md").unlink()
    again = sweep("report", str(tmp_path / "sweep"))
    assert again.returncode == 0 and (tmp_path / "sweep" / "results.md").read_text() == md
    # a table of chosen metrics (what the README's study table is made with)
    small = sweep("table", str(tmp_path / "sweep"), "--metric", "knn k=1 top-1=kNN", "--metric", "train jepa_loss")
    assert small.returncode == 0, small.stderr
    lines = small.stdout.splitlines()
    assert lines[0] == "| arm | n | kNN | train jepa_loss |" and lines[2].startswith("| plain (baseline) | 2 | ")
    assert "Δ" in lines[3] and len(lines) == 4
    wrong = sweep("table", str(tmp_path / "sweep"), "--metric", "no such metric")
    assert wrong.returncode == 2 and "no metric 'no such metric'" in wrong.stderr and "knn k=1 top-1" in wrong.stderr


def test_sweep_stopped_by_sigterm_resumes(tmp_path):
    path = write_sweep(tmp_path, [{"name": "plain"}], steps=40, seeds=[0])
    env = {**os.environ, "PYTHONPATH": str(ROOT), **DIST_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "vjepa.cli", "sweep", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    log = tmp_path / "sweep" / "runs" / "plain" / "seed0" / "run" / "log.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    st = status(tmp_path, "plain", 0)
    assert st["state"] == "cut" and st["exit_status"] == 75 and not st.get("pretrain_done"), out
    second = sweep(str(path))
    assert second.returncode == 0, second.stdout + second.stderr
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # resumed, no step logged twice
    assert status(tmp_path, "plain", 0)["attempts"] == 2
    assert (log.parent.parent / "pretrain.log").read_text().count("\n$ ") == 2  # one command per attempt


def test_sweep_through_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    path = write_sweep(
        tmp_path, [{"name": "plain"}], steps=4, seeds=[3], slurm={"executor": "local", "gpus_per_node": 0}
    )
    done = sweep(str(path), "--backend", "slurm")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted job" in done.stdout and status(tmp_path, "plain", 3)["state"] == "done"
    assert (tmp_path / "sweep" / "runs" / "plain" / "seed3" / "eval" / "results.json").exists()
    again = sweep(str(path), "--backend", "slurm")
    assert again.returncode == 0 and "0 tasks submitted, 1 runs already done" in again.stdout


def test_shipped_sweeps_load(monkeypatch):
    monkeypatch.chdir(ROOT)  # their config paths are relative to the repository root
    for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
        cfg = load_sweep(path)  # every (arm, seed) config is loaded and validated
        assert len(plan(cfg)) == len(cfg.arms) * len(cfg.seeds) and len(cfg.seeds) >= 3, path
