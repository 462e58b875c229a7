"""`vjepa eval run` (evals/run.py): one eval config, several backbones and seeds, one table; reproducible.

Oracle for reproducibility: the same config run twice gives identical numbers. The table is checked against the
per-evaluation result.json files it summarises (mean over seeds recomputed here).
"""

from __future__ import annotations

import json
import statistics

import pytest
from conftest import tiny_cfg
from vjepa.evals.run import load_eval_config, run_eval_config

from vjepa.cli import main
from vjepa.config import ConfigError
from vjepa.exports import export
from vjepa.train.loop import train


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    run_dir = root / "run"
    train(tiny_cfg(run_dir, "optim.total_steps=2", "data.batch_size=2"))
    return str(export(run_dir, root / "tiny.pt")["out"])


def overrides(backbone, out):
    return [
        f"backbones=[{backbone}, 'random:{backbone}']",
        "names=[pretrained, random]",
        "seeds=[0, 1]",
        "data.synthetic_train=24",
        "data.synthetic_val=24",
        "data.synthetic_frames=8",
        "data.synthetic_size=64",
        "extract.frames_per_clip=8",
        "extract.crop_size=32",
        "evaluations=[{kind: knn}, {kind: linear}, {kind: chiral, embeddings: [avg, time_concat]},"
        " {kind: attentive, epochs: 1, lrs: [1.0e-3], wds: [0.01]}]",
        f"out={out}",
    ]


def test_eval_run_table_and_reproducibility(backbone, tmp_path):
    cfg = load_eval_config(None, overrides(backbone, tmp_path / "a"))
    first = run_eval_config(cfg)
    assert first["columns"] == ["pretrained", "random"]
    metrics = [row["metric"] for row in first["rows"]]
    assert metrics == [
        "knn k=1 top-1", "knn k=3 top-1", "knn k=5 top-1", "linear top-1", "chiral avg", "chiral time_concat",
        "attentive-v1 top-1",
    ]  # fmt: skip
    chiral = json.loads((tmp_path / "a" / "random" / "seed1" / "chiral" / "result.json").read_text())
    row = first["rows"][metrics.index("chiral time_concat")]
    assert row["random"]["values"][1] == chiral["mean_accuracy"]["time_concat"]
    for row in first["rows"]:
        for col in ("pretrained", "random"):
            values = row[col]["values"]
            assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
            assert row[col]["mean"] == pytest.approx(statistics.fmean(values))
    text = (tmp_path / "a" / "results.md").read_text()
    assert "| chiral time_concat |" in text and "pretrained" in text
    stats = {row["metric"]: row for row in first["token_statistics"]}
    assert set(stats) == {"effective_rank", "top3_variance", "within_across_spread"}
    assert len(stats["effective_rank"]["pretrained"]["values"]) == 1  # one extraction of the pretrained backbone
    assert len(stats["effective_rank"]["random"]["values"]) == 2  # one per seed at random init
    assert all(1.0 <= v <= 64 for v in stats["effective_rank"]["random"]["values"])  # width 64
    assert "| effective_rank |" in text
    # The same config again (other folder, same videos) gives the same numbers.
    cfg_b = load_eval_config(None, overrides(backbone, tmp_path / "b"))
    second = run_eval_config(cfg_b)
    assert second["rows"] == first["rows"]


def test_eval_config_errors(backbone, tmp_path, capsys):
    with pytest.raises(ConfigError, match="backbones"):
        load_eval_config(None, [])
    with pytest.raises(ConfigError, match="evaluations.0.kind"):
        load_eval_config(None, [f"backbones=[{backbone}]", "evaluations=[{kind: knnn}]"])
    with pytest.raises(ConfigError, match="unknown key 'seed'"):
        load_eval_config(None, [f"backbones=[{backbone}]", "seed=1"])
    assert main(["eval", "run", f"backbones=[{backbone}]", "data.train_csv=a.csv"]) == 2
    assert "data.val_csv" in capsys.readouterr().err
