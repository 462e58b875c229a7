"""The training step on GPUs: seconds per step, clips/s per GPU, peak memory and MFU; JSON lines out.

    torchrun --standalone --nproc-per-node=8 bench/gpu.py          # ViT-L/16, 16 x 224, bf16, FSDP2 on 8 GPUs
    bash bench/gpu.sh                                              # the GPU tests, then this, in at most 6 minutes
    python bench/gpu.py                                            # on a CPU: the FLOP model and a tiny run

Each configuration (activation checkpointing off / on x attention kernel sdpa / flash, when flash_attn is
installed) runs the real training step (vjepa.train.step.train_step on the models of vjepa.train.loop, FSDP2 per
block and root, bf16 parameters with fp32 reduction, both mask families packed) at the largest per-GPU batch that
fits: one step at batch 1 and one at batch 2 give the memory per clip, the batch is what fits in 85% of the GPU's
memory (at most --max-batch), halved on an out-of-memory error. Then --warmup steps, then --steps timed steps.
FLOPs per clip come from the FLOP model of vjepa/flops.py (its docstring has the formula; target encoder on the
full clip, context encoder and predictor per family on the kept tokens, backward twice the forward) and the
peak from its table of dense bf16 peaks per GPU type (--peak-tflops overrides); MFU = FLOPs per clip x clips/s
per GPU / peak.

Lines: {"bench": "flop_model", ...} once, then {"bench": "gpu_step", "ac", "attn", "per_gpu_batch", "s_per_step",
"clips_per_s_per_gpu", "tokens_per_s_per_gpu", "peak_mem_gb", "tflops_per_gpu", "mfu", ...} per configuration.
On a machine without CUDA the step line comes from a tiny fp32 config (so CI runs this file) with "mfu": null.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vjepa.config import load_config  # noqa: E402
from vjepa.data.loader import build_mask_generator  # noqa: E402
from vjepa.distributed import init_distributed, shutdown  # noqa: E402
from vjepa.flops import StepShape, mfu, peak_flops, peak_memory_mb  # noqa: E402
from vjepa.train import loop  # noqa: E402
from vjepa.train.ema import ema_pairs  # noqa: E402
from vjepa.train.schedules import hyper  # noqa: E402
from vjepa.train.step import Objective, grid_of, train_step  # noqa: E402

GPU_CONFIG = ["model.preset=large", "data.frames_per_clip=16", "data.crop_size=224", "train.dtype=bf16"]
CPU_CONFIG = [
    "model.preset=tiny", "model.depth=2", "model.pred_depth=2", "model.pred_embed_dim=96",
    "data.frames_per_clip=8", "data.crop_size=64", "train.dtype=fp32", "train.device=cpu",
]  # fmt: skip


def config(args, ac: bool, attn: str):
    base = GPU_CONFIG if torch.cuda.is_available() else CPU_CONFIG
    overrides = [*base, "data.source=synthetic", "optim.warmup_steps=0", f"model.attn_impl={attn}"]
    overrides += [f"model.activation_checkpointing={str(ac).lower()}", *args.overrides]
    return load_config(None, overrides)


class Runner:
    """Models, optimiser and masks of one configuration; `steps(batch, n)` runs n training steps."""

    def __init__(self, cfg, info, dtype) -> None:
        self.cfg, self.info = cfg, info
        models, self.optimizer, self.aux = loop.build_training(cfg, info, dtype)
        self.encoder, self.predictor = models["encoder"], models["predictor"]
        self.target = models["target_encoder"]
        self.ema = ema_pairs(self.encoder, self.target)
        self.gen = build_mask_generator(cfg)
        self.objective = Objective.from_config(cfg.optim, cfg.model.levels)
        self.counts: list[tuple[list[int], list[int]]] = []
        self.step_index = 0

    def steps(self, batch: int, n: int) -> list[float]:
        d, dev = self.cfg.data, self.info.device
        video = torch.randn(batch, 3, d.frames_per_clip, d.crop_size, d.crop_size, device=dev)
        grid = grid_of(video, self.cfg.model.tubelet_size, self.cfg.model.patch_size)
        times = []
        for _ in range(n):
            masks = [m.to(dev) for m in self.gen(self.step_index, batch)]
            self.counts.append(([m.ctx_idx.shape[1] for m in masks], [m.tgt_idx.shape[1] for m in masks]))
            sync(dev)
            t0 = time.perf_counter()
            train_step(
                encoder=self.encoder, target_encoder=self.target, predictor=self.predictor,
                optimizer=self.optimizer, ema_targets=self.ema[0], ema_sources=self.ema[1], video=video,
                masks=masks, grid=grid, hp=hyper(self.cfg.optim, self.step_index), clip_grad=self.cfg.optim.clip_grad,
                objective=self.objective, aux=self.aux, step=self.step_index,
                pack=self.cfg.model.pack_families,
            )  # fmt: skip
            sync(dev)
            times.append(time.perf_counter() - t0)
            self.step_index += 1
        return times


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fitting_batch(runner: Runner, device: torch.device, max_batch: int) -> int:
    """The per-GPU batch that fits in 85% of the GPU's memory, from the peaks of one step at batch 1 and 2; the
    same on every rank (the smallest)."""
    if device.type != "cuda":
        return 2
    peaks = []
    for b in (1, 2):
        torch.cuda.reset_peak_memory_stats(device)
        runner.steps(b, 1)
        peaks.append(torch.cuda.max_memory_allocated(device))
    per_clip = max(peaks[1] - peaks[0], 1)
    total = torch.cuda.get_device_properties(device).total_memory
    batch = int((0.85 * total - peaks[0]) // per_clip) + 1
    batch = torch.tensor(max(1, min(batch, max_batch)), device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(batch, op=torch.distributed.ReduceOp.MIN)
    return int(batch)


def measure(args, info, dtype, ac: bool, attn: str) -> dict:
    cfg = config(args, ac, attn)
    runner = Runner(cfg, info, dtype)
    dev = info.device
    batch = args.batch or fitting_batch(runner, dev, args.max_batch)
    while True:
        try:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            runner.steps(batch, args.warmup)
            runner.counts.clear()
            times = runner.steps(batch, args.steps)
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            runner.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    shape = StepShape.from_config(cfg)
    ctx = [statistics.fmean(c[f] for c, _ in runner.counts) for f in range(len(runner.counts[0][0]))]
    tgt = [statistics.fmean(t[f] for _, t in runner.counts) for f in range(len(runner.counts[0][1]))]
    flops = shape.step(ctx, tgt)
    sec = statistics.median(times)
    per_gpu = batch / sec
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (
        peak_flops(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None
    )  # fmt: skip
    m = cfg.model.resolved()
    return {
        "bench": "gpu_step",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "world_size": info.world_size,
        "preset": cfg.model.preset,
        "width": m["embed_dim"],
        "depth": m["depth"],
        "frames": cfg.data.frames_per_clip,
        "crop": cfg.data.crop_size,
        "dtype": str(dtype).replace("torch.", ""),
        "ac": ac,
        "attn": attn,
        "per_gpu_batch": batch,
        "steps": args.steps,
        "s_per_step": round(sec, 4),
        "clips_per_s_per_gpu": round(per_gpu, 3),
        "tokens_per_s_per_gpu": round(per_gpu * shape.tokens, 1),
        "peak_mem_gb": round(peak_memory_mb(dev) / 1024, 2),
        "gflops_per_clip": round(flops["step"] / 1e9, 1),
        "tflops_per_gpu": round(flops["step"] * per_gpu / 1e12, 2),
        "peak_tflops": None if peak is None else peak / 1e12,
        "mfu": None if peak is None else round(mfu(flops["step"], per_gpu, peak), 4),
        "ctx_tokens": [round(c, 1) for c in ctx],
        "tgt_tokens": [round(t, 1) for t in tgt],
    }


def flop_model_line(args) -> dict:
    """The FLOP model of the ViT-L/16 16 x 224 step at the mask families' typical kept counts."""
    cfg = load_config(None, [*GPU_CONFIG, "data.source=synthetic", *args.overrides])
    gen = build_mask_generator(cfg)
    draws = [gen(s, 4) for s in range(8)]
    ctx = [statistics.fmean(d[f].ctx_idx.shape[1] for d in draws) for f in range(len(draws[0]))]
    tgt = [statistics.fmean(d[f].tgt_idx.shape[1] for d in draws) for f in range(len(draws[0]))]
    shape = StepShape.from_config(cfg)
    flops = shape.step(ctx, tgt)
    return {
        "bench": "flop_model",
        "preset": cfg.model.preset,
        "tokens": shape.tokens,
        "ctx_tokens": [round(c, 1) for c in ctx],
        "tgt_tokens": [round(t, 1) for t in tgt],
        **{f"gflops_{k}": round(v / 1e9, 1) for k, v in flops.items()},
        "formula": "target + 3 (context + predictor); matmul MACs x 2 (vjepa/flops.py)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=0, help="per-GPU batch (default 0: the largest that fits)")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--ac", default="off,on", help="activation checkpointing settings to run")
    parser.add_argument("--attn", default="sdpa,flash", help="attention kernels (flash only when installed)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's peak (default: from its name)")
    parser.add_argument("--time-budget", type=float, default=330.0, help="seconds; later configurations skipped")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    start = time.perf_counter()
    info = init_distributed("auto")
    dtype = torch.bfloat16 if info.device.type == "cuda" else torch.float32
    if info.is_main:
        print(json.dumps(flop_model_line(args)), flush=True)
    import importlib.util

    kernels = [a for a in args.attn.split(",") if a != "flash" or importlib.util.find_spec("flash_attn")]
    if info.device.type != "cuda":
        kernels, settings = ["sdpa"], [False]
    else:
        settings = [s == "on" for s in args.ac.split(",")]
    for ac in settings:
        for attn in kernels:
            if time.perf_counter() - start > args.time_budget:
                if info.is_main:
                    print(json.dumps({"bench": "gpu_step", "skipped": {"ac": ac, "attn": attn}}), flush=True)
                continue
            record = measure(args, info, dtype, ac, attn)
            if info.is_main:
                print(json.dumps(record), flush=True)
            if info.device.type == "cuda":
                torch.cuda.empty_cache()
    shutdown()


if __name__ == "__main__":
    main()
