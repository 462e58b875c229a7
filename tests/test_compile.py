"""model.compile: static shapes through mask buckets, so a run compiles once per bucket and then never again, and
the compiled, padded step gives the numbers of the eager, unpadded one.

Dynamo's counter of captured graphs (torch._dynamo.utils.counters["stats"]["unique_graphs"]) is what is counted:
every graph is one compile of a block for one input shape (the target encoder's full clip, the context encoder's
packed families, the predictor's packed families).
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cfg

from vjepa.data.loader import build_mask_generator
from vjepa.distributed import init_distributed
from vjepa.train.ema import ema_pairs
from vjepa.train.loop import build_training
from vjepa.train.schedules import hyper
from vjepa.train.step import Objective, grid_of, train_step

# 16 frames of 64 px, patch 16: 8 x 4 x 4 = 128 tokens, so the kept counts vary from step to step
CLIP = ["data.frames_per_clip=16", "data.crop_size=64"]


def _trainer(tmp_path, *extra):
    torch._dynamo.reset()
    cfg = tiny_cfg(tmp_path, *CLIP, *extra)
    models, optimizer, aux = build_training(cfg, init_distributed("cpu"), torch.float32)
    encoder, predictor, target = models["encoder"], models["predictor"], models["target_encoder"]
    ema_t, ema_s = ema_pairs(encoder, target)
    gen = build_mask_generator(cfg)
    growth = cfg.model.compile_buckets if cfg.model.compile else 0.0
    video = torch.randn(4, 3, 16, 64, 64, generator=torch.Generator().manual_seed(0))

    def step(s: int):
        masks = gen(s, 4)
        if growth:
            masks = [m.bucketed(growth) for m in masks]
        out = train_step(
            encoder=encoder, target_encoder=target, predictor=predictor, optimizer=optimizer, ema_targets=ema_t,
            ema_sources=ema_s, video=video, masks=masks, grid=grid_of(video, 2, 16), hp=hyper(cfg.optim, s),
            objective=Objective.from_config(cfg.optim), aux=aux,
        )  # fmt: skip
        return out, masks

    return step


def test_one_compile_per_bucket_then_none(tmp_path):
    from torch._dynamo.utils import counters

    # buckets growing by 1.5 (8, 16, 24, 40, 64, 96, 144): few enough shapes for a quick test
    step = _trainer(tmp_path, "model.compile=true", "model.compile_backend=aot_eager", "model.compile_buckets=1.5")
    before = counters["stats"]["unique_graphs"]
    keys = set()
    for s in range(30):
        _, masks = step(s)
        keys.add(tuple((m.ctx_idx.shape[1], m.tgt_idx.shape[1]) for m in masks))
    graphs = counters["stats"]["unique_graphs"] - before
    gen = build_mask_generator(tiny_cfg(tmp_path, *CLIP))
    raw = {tuple((m.ctx_idx.shape[1], m.tgt_idx.shape[1]) for m in gen(s, 4)) for s in range(30)}
    assert len(raw) > len(keys) >= 2  # the masks change; the buckets fold them into fewer shapes
    assert graphs <= 1 + 2 * len(keys)  # target encoder once, encoder and predictor once per bucket shape
    for s in range(30):  # the same shapes again: nothing new is compiled
        step(s)
    assert counters["stats"]["unique_graphs"] - before == graphs


def test_compiled_bucketed_step_equals_eager(tmp_path):
    """inductor on the padded masks against eager on the raw ones: the padded slots change nothing (one step
    whose masks get padded, so each block compiles once)."""
    gen = build_mask_generator(tiny_cfg(tmp_path, *CLIP))
    s = next(s for s in range(20) if any(m.bucketed(1.5).ctx_idx.shape != m.ctx_idx.shape for m in gen(s, 4)))
    eager = _trainer(tmp_path / "a")
    compiled = _trainer(tmp_path / "b", "model.compile=true", "model.compile_buckets=1.5")  # inductor
    (a, _), (b, masks) = eager(s), compiled(s)
    assert any(bool((~m.ctx_valid).any()) for m in masks)  # padded slots were there
    assert float(b.loss) == pytest.approx(float(a.loss), rel=1e-5, abs=1e-6)
    for fa, fb in zip(a.family_losses, b.family_losses):
        assert float(fb) == pytest.approx(float(fa), rel=1e-5, abs=1e-6)
    assert float(b.target_spread) == pytest.approx(float(a.target_spread), rel=1e-5)
