"""GPU checks (marker `gpu`, not in the default run): bf16 training, flash attention, FSDP2 over NCCL.

    python -m pytest -q -m gpu tests/test_gpu.py        # bash bench/gpu.sh runs these first

- A bf16 run (FSDP2 mixed precision: bf16 parameters, fp32 reduction) follows the fp32 run's losses closely.
- The flash-attn kernel equals SDPA in bf16 (and packed families equal one call per family with it).
- FSDP2 over NCCL: two processes (one GPU each; one process when there is one GPU, sharded anyway with
  train.fsdp=always) give the losses of one unsharded fp32 process.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port, losses, tiny_cfg

from vjepa.train.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = ["train.device=cuda", "data.num_workers=0"]


def test_bf16_run_follows_fp32(tmp_path):
    fp32 = losses(train(tiny_cfg(tmp_path / "a", *CUDA, "train.dtype=fp32", "optim.total_steps=6")))
    bf16 = losses(train(tiny_cfg(tmp_path / "b", *CUDA, "train.dtype=bf16", "optim.total_steps=6")))
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16 == pytest.approx(fp32, rel=0.05)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="flash_attn is not installed")
def test_flash_attention_matches_sdpa():
    from vjepa.models.layers import Attention

    torch.manual_seed(0)
    sdpa = Attention(dim=128, num_heads=4, attn_impl="sdpa").cuda().bfloat16()
    flash = Attention(dim=128, num_heads=4, attn_impl="flash").cuda().bfloat16()
    flash.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 300, 128, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(flash(x), sdpa(x), atol=2e-2, rtol=2e-2)
    packed = flash(x, segments=(120, 180))
    split = torch.cat([flash(x[:, :120]), flash(x[:, 120:])], dim=1)
    torch.testing.assert_close(packed, split, atol=2e-2, rtol=2e-2)


def _worker(rank: int, world: int, port: int, run_dir: str, overrides: list) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from vjepa.distributed import shutdown

    train(tiny_cfg(run_dir, *overrides))
    shutdown()


def test_nccl_fsdp_matches_one_unsharded_process(tmp_path):
    import json

    world = min(2, torch.cuda.device_count())
    common = [*CUDA, "train.dtype=fp32", "optim.total_steps=4"]
    reference = losses(train(tiny_cfg(tmp_path / "ref", *common, "data.batch_size=4")))
    run = tmp_path / "run"
    overrides = [*common, f"data.batch_size={4 // world}", "train.fsdp=always"]
    mp.spawn(_worker, args=(world, free_port(), str(run), overrides), nprocs=world, join=True)
    got = [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert got == pytest.approx(reference, rel=1e-3)
