"""Benchmark the V-JEPA training step; prints JSON lines.

    python bench/train_step.py                      # reference config (below), 2 threads, fp32, all variants
    python bench/train_step.py --official /tmp/jepa # also the official V-JEPA code, from a checkout of
                                                    # github.com/facebookresearch/jepa (never part of this repo)
    python bench/train_step.py --variants ours --config configs/debug/tiny_cpu.yaml data.batch_size=8

Reference config (issue 2): tiny encoder (192 wide, 12 deep), 16 frames of 96 x 96, batch 4, predictor depth 6
and width 192, both mask families, fp32, 2 threads. Variants, each measured in fresh processes of its
own, alternating, `--rounds` times (the median over rounds is reported); in one shared process they disturb each
other (`--in-process` runs them round-robin there anyway):
  ours            the training code path: no FSDP2 wrapping in one fp32 process (train.fsdp=auto), the mask
                  families packed into one sequence through encoder and predictor, shared patch embedding,
                  fused AdamW, _foreach_lerp_ EMA
  ours-fsdp       the same with FSDP2 at world size 1 (train.fsdp=always): the wrapping's cost
  ours-unpacked   the same as ours with one encoder and predictor call per mask family (model.pack_families=false)
  official        the official V-JEPA code itself (--official DIR, a checkout of facebookresearch/jepa): its
                  init_video_model (MultiMaskWrapper, SDPA attention), init_opt (torch AdamW, for-loop on CPU),
                  DDP as its train.py wraps the models, and the step of its app/vjepa/train.py in order:
                  targets, context + predictor, loss and the predictor-variance term, backward, clipping of
                  encoder and predictor, optimizer step, its grad and AdamW loggers, the per-tensor EMA loop.
                  The same sizes and the same masks as ours, fp32.
  official-style  our modules in the official structure (DDP, the clip re-embedded per mask family, loop AdamW,
                  per-tensor EMA): an emulation, for attribution.
Lines:
  {"bench": "train_step", "variant": ..., "median_s", "clips_per_s", "peak_mem_mb", "ours_speedup" (median over
   rounds vs median over rounds), "ours_speedup_by_round", "ours_speedup_paired_median" (the ratio within each
   round, where the two ran back to back, then the median: the number to quote on a machine that drifts), ...}
  {"bench": "breakdown", ...}  median seconds per phase for `ours`: target encoder, context encoder forward,
                                predictor forward + loss, backward, optimizer, EMA
"""

from __future__ import annotations

import argparse
import copy
import json
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
from vjepa.flops import peak_memory_mb  # noqa: E402
from vjepa.losses import jepa_loss  # noqa: E402
from vjepa.masks.ops import gather_tokens  # noqa: E402
from vjepa.models.build import build_models
from vjepa.train import loop  # noqa: E402
from vjepa.train.ema import ema_pairs, ema_update  # noqa: E402
from vjepa.train.optim import param_groups, set_hyper  # noqa: E402
from vjepa.train.schedules import hyper  # noqa: E402
from vjepa.train.step import Objective, compute_targets, grid_of, predict_families, train_step  # noqa: E402

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
VARIANTS = ("ours", "ours-fsdp", "ours-unpacked", "official", "official-style")
DEFAULT_VARIANTS = ("ours", "ours-fsdp", "ours-unpacked", "official-style")  # + official with --official


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


def build_official(cfg, info, repo: str):
    """The official code's models, optimiser and step (module docstring); returns step(video, masks, grid, hp)."""
    sys.path.insert(0, str(Path(repo).resolve()))
    import logging

    from app.vjepa.utils import init_opt, init_video_model
    from src.masks.utils import apply_masks
    from src.utils.logging import adamw_logger, grad_logger
    from torch.nn.parallel import DistributedDataParallel as DDP

    logging.getLogger().setLevel(logging.WARNING)  # its INFO lines would go to our stdout
    m, d, o = cfg.model, cfg.data, cfg.optim
    torch.manual_seed(cfg.train.seed)
    encoder, predictor = init_video_model(
        info.device, patch_size=m.patch_size, num_frames=d.frames_per_clip, tubelet_size=m.tubelet_size,
        model_name=f"vit_{m.preset}", crop_size=d.crop_size, pred_depth=m.pred_depth,
        pred_embed_dim=m.pred_embed_dim, uniform_power=m.uniform_power, use_mask_tokens=True,
        num_mask_tokens=len(cfg.mask.families), zero_init_mask_tokens=True, use_sdpa=True,
    )  # fmt: skip
    target = copy.deepcopy(encoder)
    optimizer, _, scheduler, wd_scheduler = init_opt(
        encoder, predictor, iterations_per_epoch=1000, start_lr=o.lr / 10, ref_lr=o.lr, warmup=0, num_epochs=10,
        wd=o.weight_decay, final_wd=o.final_weight_decay, final_lr=o.final_lr,
    )  # fmt: skip
    encoder, predictor = DDP(encoder, static_graph=True), DDP(predictor, static_graph=True)
    target = DDP(target)
    for p in target.parameters():
        p.requires_grad = False
    clip_grad = o.clip_grad if o.clip_grad > 0 else None

    def step(video, masks, grid, hp):
        scheduler.step()
        wd_scheduler.step()
        masks_enc, masks_pred = [mk.ctx_idx for mk in masks], [mk.tgt_idx for mk in masks]
        with torch.no_grad():
            h = target(video)
            h = F.layer_norm(h, (h.size(-1),))
            h = apply_masks(h, masks_pred, concat=False)
        z = predictor(encoder(video, masks_enc), h, masks_enc, masks_pred)
        loss = sum(torch.mean(torch.abs(zi - hi) ** o.loss_exp) / o.loss_exp for zi, hi in zip(z, h)) / len(h)
        pstd = sum(torch.sqrt(zi.var(dim=1) + 0.0001) for zi in z) / len(z)
        loss = loss + 0.0 * torch.mean(F.relu(1.0 - pstd))  # reg_coeff 0 in its configs, computed all the same
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), clip_grad)
            torch.nn.utils.clip_grad_norm_(predictor.parameters(), clip_grad)
        optimizer.step()
        grad_logger(encoder.named_parameters())
        grad_logger(predictor.named_parameters())
        optimizer.zero_grad()
        adamw_logger(optimizer)
        with torch.no_grad():
            for param_q, param_k in zip(encoder.parameters(), target.parameters()):
                param_k.data.mul_(hp.momentum).add_((1.0 - hp.momentum) * param_q.detach().data)

    return step


def build_variant(name: str, cfg, info, dtype, official_repo: str | None = None):
    if name == "official":
        if not official_repo:
            raise SystemExit("the official variant needs --official DIR (a checkout of facebookresearch/jepa)")
        return build_official(cfg, info, official_repo), None
    if name == "official-style":
        torch.manual_seed(cfg.train.seed)
        encoder, predictor = build_models(cfg)
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
    models, optimizer, aux = loop.build_training(cfg, info, dtype, fsdp=True if name == "ours-fsdp" else None)
    encoder, predictor, target = models["encoder"], models["predictor"], models["target_encoder"]
    ema_t, ema_s = ema_pairs(encoder, target)
    pack = cfg.model.pack_families and name != "ours-unpacked"

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
            pack=pack,
        )

    return step, (encoder, target, predictor, optimizer, ema_t, ema_s, pack)


def breakdown(parts, video, masks_per_step, grid, cfg, sync, warmup):
    """Median seconds per phase of the `ours` step, the phases run one after another with syncs between."""
    encoder, target, predictor, optimizer, ema_t, ema_s, pack = parts
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
        zs = encoder(video, [m.ctx_idx for m in masks], [m.ctx_valid for m in masks], packed=pack)
        sync(), stamps.append(time.perf_counter())
        loss = 0.0
        for m, (p, _) in zip(masks, predict_families(predictor, zs, masks, grid, False, pack)):
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


def drive(args: argparse.Namespace) -> None:
    """Run each variant in fresh processes, alternating, `rounds` times; report the median over rounds.

    Variants sharing one process disturb each other (allocator state), so each gets a process of its own."""
    variants = [v for v in args.variants.split(",") if v]
    common = ["--in-process", "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    common += ["--config", args.config] if args.config else []
    common += ["--official", args.official] if args.official else []
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
            # paired by round (the two ran back to back): robust to the machine's drift between rounds
            ours = [next(r for r in recs if r["bench"] == "train_step")["median_s"] for recs in rounds["ours"]]
            by_round = [round(x / o, 3) for x, o in zip(per_round, ours)]
            record["ours_speedup_by_round"] = by_round
            record["ours_speedup_paired_median"] = round(statistics.median(by_round), 3)
        print(json.dumps(record), flush=True)
    if "ours" in rounds:
        print(json.dumps(next(r for r in rounds["ours"][-1] if r["bench"] == "breakdown")), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="a run config instead of the reference one")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=None, help=f"comma-separated subset of {VARIANTS} (default: all)")
    parser.add_argument("--official", default=None, help="a checkout of facebookresearch/jepa: adds `official`")
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per variant, alternating")
    parser.add_argument("--in-process", action="store_true", help="measure here (one process, round-robin)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    if args.variants is None:
        args.variants = ",".join(DEFAULT_VARIANTS + (("official",) if args.official else ()))
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
    steps = {v: build_variant(v, cfg, info, dtype, args.official) for v in variants}

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
