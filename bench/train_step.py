"""Benchmark the V-JEPA training step; prints JSON lines.

    python bench/train_step.py                         # reference config (below), 2 threads, fp32
    python bench/train_step.py --config configs/debug/tiny_cpu.yaml --steps 20 data.batch_size=8

Reference config (issue 2): tiny encoder (192 wide, 12 deep), 16 frames of 96 x 96, batch 4, predictor depth 6
and width 192, both mask families, fp32, 2 threads. One line per measurement:
  {"bench": "train_step", ...}   median seconds per full step (same code as training: FSDP2 world size 1,
                                  fused AdamW, EMA), clips/s, peak memory
  {"bench": "breakdown", ...}    median seconds per phase: target encoder, context encoder forward, predictor
                                  forward + loss, backward, optimizer, EMA
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vjepa.config import load_config  # noqa: E402
from vjepa.data.loader import build_mask_generator  # noqa: E402
from vjepa.distributed import init_distributed, shutdown  # noqa: E402
from vjepa.train import loop  # noqa: E402
from vjepa.train.ema import ema_pairs, ema_update  # noqa: E402
from vjepa.train.optim import build_optimizer, set_hyper  # noqa: E402
from vjepa.train.schedules import hyper  # noqa: E402
from vjepa.train.step import compute_targets, grid_of, train_step  # noqa: E402

REFERENCE = [
    "model.preset=tiny",
    "model.pred_depth=6",
    "model.pred_embed_dim=192",
    "data.source=synthetic",
    "data.frames_per_clip=16",
    "data.crop_size=96",
    "data.batch_size=4",
    "train.dtype=fp32",
    "optim.warmup_steps=0",
]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-fsdp", action="store_true", help="plain modules (to measure the FSDP2 overhead)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = ([] if args.config else REFERENCE) + args.overrides
    cfg = load_config(args.config, overrides)
    info = init_distributed(cfg.train.device)
    device, dtype = info.device, loop.compute_dtype(cfg, info.device)

    torch.manual_seed(0)
    encoder, predictor = loop.build_models(cfg)
    import copy

    target = copy.deepcopy(encoder).requires_grad_(False)
    encoder, predictor, target = (m.to(device) for m in (encoder, predictor, target))
    if not args.no_fsdp:
        for m in (encoder, predictor):
            loop.apply_fsdp(m, m.blocks, info.mesh, dtype)
        loop.apply_fsdp(target, target.blocks, info.mesh, dtype, no_backward=True)
    optimizer = build_optimizer(cfg.optim, {"encoder": encoder, "predictor": predictor}, device)
    ema_t, ema_s = ema_pairs(encoder, target)
    gen = build_mask_generator(cfg)
    d = cfg.data
    b = d.batch_size
    video = torch.randn(b, 3, d.frames_per_clip, d.crop_size, d.crop_size, device=device)
    grid = grid_of(video, cfg.model.tubelet_size, cfg.model.patch_size)
    masks_per_step = [gen(s, b) for s in range(args.warmup + args.steps)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for s in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        train_step(
            encoder=encoder,
            target_encoder=target,
            predictor=predictor,
            optimizer=optimizer,
            ema_targets=ema_t,
            ema_sources=ema_s,
            video=video,
            masks=masks_per_step[s],
            grid=grid,
            hp=hyper(cfg.optim, s),
            clip_grad=cfg.optim.clip_grad,
            loss_exp=cfg.optim.loss_exp,
        )
        sync()
        if s >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    base = {
        "threads": args.threads,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "batch": b,
        "frames": d.frames_per_clip,
        "crop": d.crop_size,
        "encoder": cfg.model.preset,
        "enc_depth": cfg.model.resolved()["depth"],
        "pred_depth": cfg.model.pred_depth,
        "pred_width": cfg.model.pred_embed_dim,
        "families": len(cfg.mask.families),
        "fsdp": not args.no_fsdp,
    }
    print(
        json.dumps(
            {
                "bench": "train_step",
                **base,
                "median_s": round(med, 5),
                "min_s": round(min(times), 5),
                "clips_per_s": round(b / med, 3),
                "peak_mem_mb": round(peak_memory_mb(device), 1),
            }
        ),
        flush=True,
    )

    # ---- where the time goes: the same work, phase by phase
    phases: dict[str, list[float]] = {
        k: [] for k in ("target_encoder", "encoder_fwd", "predictor_fwd_loss", "backward", "optimizer", "ema")
    }
    from vjepa.losses import jepa_loss
    from vjepa.masks.ops import gather_tokens

    for s in range(args.warmup + args.steps):
        masks = masks_per_step[s]
        hp = hyper(cfg.optim, s)
        stamps: list[float] = []

        def mark(stamps: list[float] = stamps) -> None:
            sync()
            stamps.append(time.perf_counter())

        set_hyper(optimizer, hp.lr, hp.weight_decay)
        optimizer.zero_grad(set_to_none=True)
        mark()
        h = compute_targets(target, video)
        mark()
        zs = encoder(video, [m.ctx_idx for m in masks], [m.ctx_valid for m in masks])
        mark()
        loss = 0.0
        for f, (m, z) in enumerate(zip(masks, zs)):
            p = predictor(z, m.ctx_idx, m.tgt_idx, grid, family=f, ctx_valid=m.ctx_valid, tgt_valid=m.tgt_valid)
            loss = loss + jepa_loss(p.float(), gather_tokens(h, m.tgt_idx), 1.0, m.tgt_valid)
        loss = loss / len(masks)
        mark()
        loss.backward()
        mark()
        if cfg.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], cfg.optim.clip_grad
            )
        optimizer.step()
        mark()
        ema_update(ema_t, ema_s, hp.momentum)
        mark()
        if s >= args.warmup:
            for k, (a, z) in zip(phases, zip(stamps[:-1], stamps[1:])):
                phases[k].append(z - a)
    med_phase = {k: round(statistics.median(v), 5) for k, v in phases.items()}
    total = sum(med_phase.values())
    print(
        json.dumps(
            {
                "bench": "breakdown",
                **base,
                **{f"{k}_s": v for k, v in med_phase.items()},
                **{f"{k}_pct": round(100 * v / total, 1) for k, v in med_phase.items()},
            }
        ),
        flush=True,
    )
    shutdown()


if __name__ == "__main__":
    main()
