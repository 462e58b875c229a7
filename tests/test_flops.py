"""The FLOP model (vjepa/flops.py) against torch's own FLOP counter on real forward passes, and by hand."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vjepa.config import load_config
from vjepa.flops import StepShape, block_flops, mfu, peak_flops
from vjepa.models.build import build_models


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_block_flops_by_hand():
    # 10 tokens of width 4, MLP ratio 4: 2*10*16*(4+8) matrix FLOPs + 4*10*10*4 attention FLOPs
    assert block_flops(10, 4, 4.0) == 3840 + 1600
    assert block_flops(10, 4, 4.0, attn_tokens=5) == 3840 + 800  # two sequences of 5


@pytest.mark.parametrize("extra", [[], ["model.levels=4", "model.depth=4", "optim.dense_weight=0.5"]])
def test_model_matches_torch_flop_counter(extra):
    cfg = load_config(
        None,
        [
            "model.preset=tiny", "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
            "model.pred_embed_dim=48", "model.pred_depth=2", "model.pred_num_heads=2",
            "data.frames_per_clip=8", "data.crop_size=32", "model.patch_size=8", "data.source=synthetic",
            "model.attn_impl=reference", *extra,  # explicit matmuls: the counter misses CPU SDPA kernels
        ],
    )  # fmt: skip
    encoder, predictor = build_models(cfg)
    shape = StepShape.from_config(cfg)
    assert shape.tokens == 4 * 4 * 4 and shape.patch_dim == 3 * 2 * 64
    video = torch.randn(1, 3, 8, 32, 32)
    grid = (4, 4, 4)
    ctx = [torch.arange(0, 40, 2)[None], torch.arange(1, 64, 3)[None]]  # 20 and 21 kept tokens
    tgt = [torch.arange(1, 40, 2)[None], torch.arange(0, 12)[None]]
    with torch.no_grad():
        assert counted(lambda: encoder(video)) == shape.encoder(None)
        assert counted(lambda: encoder(video, ctx)) == shape.encoder([20, 21])  # packed families
        zs = encoder(video, ctx)
        dense = cfg.optim.dense_weight > 0
        for f, (z, c, t) in enumerate(zip(zs, ctx, tgt)):
            got = counted(lambda: predictor(z, c, t, grid, family=f, return_context=dense))  # noqa: B023
            assert got == shape.predictor(c.shape[1], t.shape[1])
    step = shape.step([20, 21], [20, 12])
    assert step["step"] == step["target_encoder"] + 3 * (step["context_encoder"] + step["predictor"])


def test_pixel_targets_skip_the_target_encoder():
    cfg = load_config(None, ["model.preset=tiny", "optim.target=pixels", "data.source=synthetic"])
    step = StepShape.from_config(cfg).step([100], [50])
    assert step["target_encoder"] == 0 and step["step"] == 3 * (step["context_encoder"] + step["predictor"])


def test_peaks_and_mfu():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("cpu") is None and mfu(1e12, 10.0, None) is None
    assert mfu(1e12, 100.0, 989e12) == pytest.approx(0.1011, rel=1e-3)


def test_gpu_bench_runs_on_cpu():
    """bench/gpu.py on a machine without CUDA: the ViT-L FLOP model line and a tiny fp32 step line."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run(
        [sys.executable, str(script), "--steps", "1", "--warmup", "1"], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    model, step = lines[0], lines[1]
    assert model["bench"] == "flop_model" and model["preset"] == "large" and model["tokens"] == 8 * 14 * 14
    assert model["gflops_step"] == pytest.approx(
        model["gflops_target_encoder"] + 3 * (model["gflops_context_encoder"] + model["gflops_predictor"]), abs=0.2
    )
    assert step["bench"] == "gpu_step" and step["device"] == "cpu" and step["mfu"] is None
    assert step["s_per_step"] > 0 and step["per_gpu_batch"] == 2
