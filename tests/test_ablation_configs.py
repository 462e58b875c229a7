"""Every configs/ablations/*.yaml, layered on the demo config, trains 20 steps on CPU with a finite loss, and
its objectives report their values (the demo model shrunk to 8 frames of 32 px so the whole set stays quick)."""

import math
from pathlib import Path

import pytest

from vjepa.config import load_config
from vjepa.train.loop import train

ROOT = Path(__file__).parents[1] / "configs"
ABLATIONS = sorted((ROOT / "ablations").glob("*.yaml"))
SMALL = [
    "data.frames_per_clip=8",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.synthetic_videos=32",
    "data.num_workers=0",
    "mask.group_size=4",
    "optim.total_steps=20",
    "optim.warmup_steps=2",
    "train.log_every=10",
    "train.checkpoint_every=20",
    "train.threads=0",
]


def test_there_is_an_ablation_per_catalogue_objective():
    from vjepa.objectives import catalogue

    named = set()
    for path in ABLATIONS:
        named |= {spec.name for spec in load_config([ROOT / "debug" / "tiny_cpu.yaml", path]).objectives}
    assert set(catalogue(("vjepa.evals.objectives",))) - {"vicreg"} <= named  # vicreg: the demo's own regulariser


@pytest.mark.parametrize("path", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_ablation_trains_20_steps(path, tmp_path, single_thread):
    cfg = load_config([ROOT / "debug" / "tiny_cpu.yaml", path], [*SMALL, f"train.run_dir={tmp_path / path.stem}"])
    result = train(cfg)
    assert result["step"] == 20
    last = result["history"][-1]
    assert math.isfinite(last["loss"]), last
    for spec in cfg.objectives:
        if spec.weight != 0:
            keys = [k for k in last if k.startswith("aux.") and k.count(".") == 1]
            assert keys and all(math.isfinite(last[k]) for k in keys), last
