"""Benchmark the V-JEPA training step; prints JSON lines.

    python bench/train_step.py                      # reference config (below), 2 threads, fp32, all variants
    python bench/train_step.py --variants ours --config configs/debug/tiny_cpu.yaml data.batch_size=8

Reference config (issue 2): tiny encoder (192 wide, 12 deep), 16 frames of 96 x 96, batch 4, predictor depth 6
and width 192, both mask families, fp32, 2 threads. Variants, built from the same weights, each measured in
fresh processes of its own, alternating, `--rounds` times (the median over rounds is reported); in one shared
process they disturb each other (`--in-process` runs them round-robin there anyway):
  ours            the training code path: FSDP2 (world size 1 here), shared patch embedding, fused AdamW,
                  _foreach_lerp_ EMA
  ours-plain      the same step without FSDP2 wrapping (its overhead on this machine)
  official-style  the same maths with the official code's structure: DDP, the clip re-embedded per mask family
                  (MultiMaskWrapper), torch's default AdamW on CPU (single-tensor loop), a per-tensor EMA loop.
                  An emulation for attribution, not the official code itself.
Lines:
  {"bench": "train_step", "variant": ..., "median_s", "clips_per_s", "peak_mem_mb", ...}
  {"bench": "breakdown", ...}  median seconds per phase for `ours`: target encoder, context encoder forward,
                                predictor forward + loss, backward, optimizer, EMA
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vjepa.config import load_config  # noqa: E402
from vjepa.data.loader import build_mask_generator  # noqa: E402
from vjepa.distributed import init_distributed, shutdown  # noqa: E402
from vjepa.losses import jepa_loss  # noqa: E402
from vjepa.masks.ops import gather_tokens  # noqa: E402
from vjepa.train import loop  # noqa: E402
from vjepa.train.ema import ema_pairs, ema_update  # noqa: E402
from vjepa.train.optim import param_groups, set_hyper  # noqa: E402
from vjepa.train.schedules import hyper  # noqa: E402
from vjepa.train.step import Objective, compute_targets, grid_of, train_step  # noqa: E402

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
VARIANTS = ("ours", "ours-plain", "official-style")


def official_style_step(*, encoder, target_encoder, predictor, optimizer, video, masks, grid, hp, clip_grad) -> None:
    """The official structure: one backbone call per family (re-embedding the clip), per-tensor EMA loop."""
    set_hyper(optimizer, hp.lr, hp.weight_decay)
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        h = target_encoder(video)
        h = F.layer_norm(h, (h.shape[-1],))
    loss = 0.0
    for f, m in enumerate(masks):
        z = encoder(video, m.ctx_idx)
        p = predictor(z, m.ctx_idx, m.tgt_idx, grid, family=f)
        loss = loss + jepa_loss(p, gather_tokens(h, m.tgt_idx), 1.0)
    (loss / len(masks)).backward()
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad)
    optimizer.step()
    with torch.no_grad():
        for p_k, p_q in zip(target_encoder.parameters(), encoder.module.parameters()):
            p_k.mul_(hp.momentum).add_((1.0 - hp.momentum) * p_q.detach())


def build_variant(name: str, cfg, info, dtype):
    if name == "official-style":
        torch.manual_seed(cfg.train.seed)
        encoder, predictor = loop.build_models(cfg)
        encoder, predictor = encoder.to(info.device), predictor.to(info.device)
        target = copy.deepcopy(encoder).requires_grad_(False)
        from torch.nn.parallel import DistributedDataParallel as DDP

        backbone, target = encoder.backbone, target.backbone
        encoder, predictor = DDP(backbone, static_graph=True), DDP(predictor, static_graph=True)
        groups = param_groups({"encoder": encoder, "predictor": predictor})
        optimizer = torch.optim.AdamW(groups, betas=cfg.optim.betas, eps=cfg.optim.eps)  # default: for-loop on CPU

        def step(video, masks, grid, hp):
            official_style_step(
                encoder=encoder,
                target_encoder=target,
                predictor=predictor,
                optimizer=optimizer,
                video=video,
                masks=masks,
                grid=grid,
                hp=hp,
                clip_grad=cfg.optim.clip_grad,
            )

        return step, None
    models, optimizer, aux = loop.build_training(cfg, info, dtype, fsdp=name == "ours")
    encoder, predictor, target = models["encoder"], models["predictor"], models["target_encoder"]
    ema_t, ema_s = ema_pairs(encoder, target)

    def step(video, masks, grid, hp):
        train_step(
            encoder=encoder,
            target_encoder=target,
            predictor=predictor,
            optimizer=optimizer,
            ema_targets=ema_t,
            ema_sources=ema_s,
            video=video,
            masks=masks,
            grid=grid,
            hp=hp,
            clip_grad=cfg.optim.clip_grad,
            objective=Objective.from_config(cfg.optim, cfg.model.levels),
            aux=aux,
        )

    return step, (encoder, target, predictor, optimizer, ema_t, ema_s)


def breakdown(parts, video, masks_per_step, grid, cfg, sync, warmup):
    """Median seconds per phase of the `ours` step, the phases run one after another with syncs between."""
    encoder, target, predictor, optimizer, ema_t, ema_s = parts
    names = ("target_encoder", "encoder_fwd", "predictor_fwd_loss", "backward", "optimizer", "ema")
    phases: dict[str, list[float]] = {k: [] for k in names}
    for s, masks in enumerate(masks_per_step):
        hp = hyper(cfg.optim, s)
        stamps: list[float] = []
        set_hyper(optimizer, hp.lr, hp.weight_decay)
        optimizer.zero_grad(set_to_none=True)
        sync(), stamps.append(time.perf_counter())
        h = compute_targets(target, video)
        sync(), stamps.append(time.perf_counter())
        zs = encoder(video, [m.ctx_idx for m in masks], [m.ctx_valid for m in masks])
        sync(), stamps.append(time.perf_counter())
        loss = 0.0
        for f, (m, z) in enumerate(zip(masks, zs)):
            p = predictor(z, m.ctx_idx, m.tgt_idx, grid, family=f)
            loss = loss + jepa_loss(p, gather_tokens(h, m.tgt_idx), 1.0)
        sync(), stamps.append(time.perf_counter())
        (loss / len(masks)).backward()
        sync(), stamps.append(time.perf_counter())
        if cfg.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], cfg.optim.clip_grad
            )
        optimizer.step()
        sync(), stamps.append(time.perf_counter())
        ema_update(ema_t, ema_s, hp.momentum)
        sync(), stamps.append(time.perf_counter())
        if s >= warmup:
            for k, a, z in zip(names, stamps[:-1], stamps[1:]):
                phases[k].append(z - a)
    med = {k: statistics.median(v) for k, v in phases.items()}
    total = sum(med.values())
    return {
        **{f"{k}_s": round(v, 5) for k, v in med.items()},
        **{f"{k}_pct": round(100 * v / total, 1) for k, v in med.items()},
    }


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; whole process


def drive(args: argparse.Namespace) -> None:
    """Run each variant in fresh processes, alternating, `rounds` times; report the median over rounds.

    Variants sharing one process disturb each other (allocator state), so each gets a process of its own."""
    variants = [v for v in args.variants.split(",") if v]
    common = ["--in-process", "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    common += ["--config", args.config] if args.config else []
    rounds: dict[str, list[list[dict]]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            cmd = [sys.executable, __file__, *common, "--variants", v, *args.overrides]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"variant {v} failed:\n{out.stderr[-3000:]}")
            rounds[v].append([json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")])
    medians = {}
    for v in variants:
        runs = [next(r for r in recs if r["bench"] == "train_step") for recs in rounds[v]]
        per_round = [r["median_s"] for r in runs]
        medians[v] = statistics.median(per_round)
        memory = max(next(r for r in recs if r["bench"] == "peak_memory")["peak_mem_mb"] for recs in rounds[v])
        record = {
            **runs[0],
            "median_s": round(medians[v], 5),
            "round_medians_s": per_round,
            "clips_per_s": round(runs[0]["batch"] / medians[v], 3),
            "peak_mem_mb": memory,
        }
        record.pop("min_s", None)
        if "ours" in medians and v != "ours":
            record["ours_speedup"] = round(medians[v] / medians["ours"], 3)
        print(json.dumps(record), flush=True)
    if "ours" in rounds:
        print(json.dumps(next(r for r in rounds["ours"][-1] if r["bench"] == "breakdown")), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="a run config instead of the reference one")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, alternating")
    parser.add_argument("--in-process", action="store_true", help="measure here (one process, round-robin)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    if not args.in_process:
        drive(args)
        return
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, ([] if args.config else REFERENCE) + args.overrides)
    info = init_distributed(cfg.train.device)
    device, dtype = info.device, loop.compute_dtype(cfg, info.device)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; valid: {VARIANTS}")
    steps = {v: build_variant(v, cfg, info, dtype) for v in variants}

    d = cfg.data
    b = d.batch_size
    video = torch.randn(b, 3, d.frames_per_clip, d.crop_size, d.crop_size, device=device)
    grid = grid_of(video, cfg.model.tubelet_size, cfg.model.patch_size)
    gen = build_mask_generator(cfg)
    masks_per_step = [[m.to(device) for m in gen(s, b)] for s in range(args.warmup + args.steps)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {v: [] for v in variants}
    for s, masks in enumerate(masks_per_step):
        for v in variants:
            sync()
            t0 = time.perf_counter()
            steps[v][0](video, masks, grid, hyper(cfg.optim, s))
            sync()
            if s >= args.warmup:
                times[v].append(time.perf_counter() - t0)
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
        "steps": args.steps,
    }
    medians = {v: statistics.median(t) for v, t in times.items()}
    for v in variants:
        record = {
            "bench": "train_step",
            "variant": v,
            **base,
            "median_s": round(medians[v], 5),
            "min_s": round(min(times[v]), 5),
            "clips_per_s": round(b / medians[v], 3),
        }
        if "ours" in medians and v != "ours":
            record["ours_speedup"] = round(medians[v] / medians["ours"], 3)
        print(json.dumps(record), flush=True)
    print(
        json.dumps(
            {
                "bench": "peak_memory",
                "peak_mem_mb": round(peak_memory_mb(device), 1),
                "variants": variants,
                "note": "max RSS of the process" if device.type == "cpu" else "cuda allocator",
            }
        )
    )
    if "ours" in steps:
        print(
            json.dumps(
                {
                    "bench": "breakdown",
                    "variant": "ours",
                    **base,
                    **breakdown(steps["ours"][1], video, masks_per_step, grid, cfg, sync, args.warmup),
                }
            )
        )
    shutdown()


if __name__ == "__main__":
    main()
