"""What each auxiliary objective costs: seconds per training step and peak memory, relative to the plain step.

    python bench/objectives.py                         # every configs/ablations/*.yaml arm + vicreg, 2 threads
    python bench/objectives.py --arms ld,hw_ld --steps 20 train.device=cuda train.dtype=bf16

Each arm is the reference benchmark config of bench/train_step.py (tiny encoder 192 x 12, 16 frames of 96 px,
batch 4, predictor 192 x 6, both mask families, fp32) with the arm's ablation file applied over it (its
objectives, and its optim / mask / model changes; not its run folder), run through the training code's own
`build_training` + `train_step` in fresh processes of its own (so peak memory is the arm's; `--rounds` of them,
arms alternating, the median over rounds reported), on the same clip and masks for every arm. `plain` is the
reference config alone; `vicreg` adds the README demo's VICReg terms (optim.enc_var_weight 1, enc_cov_weight
0.04). Peak memory: max_memory_allocated on CUDA, the process's peak resident set on CPU (which includes the model
and the interpreter, so differences are what matter).
Lines (JSON):
  {"bench": "objectives", "arm", "objectives", "median_s", "rel_step", "peak_mem_mb", "rel_mem", "extra_mem_mb",
   "aux_params", "steps", "threads", "device", "dtype"}
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vjepa.config import load_config  # noqa: E402
from vjepa.data.loader import build_mask_generator  # noqa: E402
from vjepa.distributed import init_distributed  # noqa: E402
from vjepa.train import loop  # noqa: E402
from vjepa.train.ema import ema_pairs  # noqa: E402
from vjepa.train.schedules import hyper  # noqa: E402
from vjepa.train.step import Objective, grid_of, train_step  # noqa: E402

REFERENCE = [  # bench/train_step.py's reference config
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
ABLATIONS = ROOT / "configs" / "ablations"
EXTRA_ARMS = {"plain": [], "vicreg": ["optim.enc_var_weight=1.0", "optim.enc_cov_weight=0.04"]}


def arm_names() -> list[str]:
    return ["plain", "vicreg"] + sorted(p.stem for p in ABLATIONS.glob("*.yaml") if p.stem != "plain")


def arm_config(arm: str, overrides: list[str]):
    if arm in EXTRA_ARMS:
        return load_config(None, [*REFERENCE, *EXTRA_ARMS[arm], *overrides])
    path = ABLATIONS / f"{arm}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown arm {arm!r}; valid: {arm_names()}")
    return load_config(path, [*REFERENCE, "train.run_dir=runs/bench_objectives", *overrides])


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(arm: str, steps: int, warmup: int, overrides: list[str]) -> dict:
    """Median seconds of `steps` training steps (after `warmup`) of one arm, in this process."""
    cfg = arm_config(arm, overrides)
    info = init_distributed(cfg.train.device)
    device, dtype = info.device, loop.compute_dtype(cfg, info.device)
    models, optimizer, aux = loop.build_training(cfg, info, dtype)
    encoder, predictor, target = models["encoder"], models["predictor"], models["target_encoder"]
    ema_t, ema_s = ema_pairs(encoder, target)
    d = cfg.data
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(d.batch_size, 3, d.frames_per_clip, d.crop_size, d.crop_size, generator=gen).to(device)
    grid = grid_of(video, cfg.model.tubelet_size, cfg.model.patch_size)
    masks_gen = build_mask_generator(cfg)
    times = []
    for s in range(warmup + steps):
        masks = [m.to(device) for m in masks_gen(s, d.batch_size, video=video.cpu())]  # built by loader workers
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
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
            hp=hyper(cfg.optim, s),
            clip_grad=cfg.optim.clip_grad,
            objective=Objective.from_config(cfg.optim, cfg.model.levels),
            aux=aux,
            heads=models["objectives"] if aux else None,
            step=s,
            total_steps=cfg.optim.total_steps,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    return {
        "bench": "objectives",
        "arm": arm,
        "objectives": [f"{p.key}:{p.weight:g}" for p in aux],
        "median_s": round(statistics.median(times), 5),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "aux_params": sum(p.numel() for p in models["objectives"].parameters()) if aux else 0,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="", help=f"comma-separated subset of {arm_names()} (default: all)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per arm, arms alternating")
    parser.add_argument("--in-process", default="", help="measure this one arm here (used by the driver)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every arm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.in_process:
        print(json.dumps(measure(args.in_process, args.steps, args.warmup, args.overrides)), flush=True)
        return
    arms = [a for a in args.arms.split(",") if a] or arm_names()
    if "plain" not in arms:
        arms = ["plain", *arms]
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for _ in range(args.rounds):  # alternate arms so that a slow spell of the machine hits all of them
        for arm in arms:
            cmd = [sys.executable, __file__, "--in-process", arm, "--steps", str(args.steps)]
            cmd += ["--warmup", str(args.warmup), "--threads", str(args.threads), *args.overrides]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"arm {arm} failed:\n{out.stderr[-3000:]}")
            runs[arm].append(json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{"))))
    base = None
    for arm in arms:
        record = dict(runs[arm][0])
        record["round_medians_s"] = [r["median_s"] for r in runs[arm]]
        record["median_s"] = round(statistics.median(record["round_medians_s"]), 5)
        record["peak_mem_mb"] = max(r["peak_mem_mb"] for r in runs[arm])
        base = base or record
        record["rel_step"] = round(record["median_s"] / base["median_s"], 3)
        record["rel_mem"] = round(record["peak_mem_mb"] / base["peak_mem_mb"], 3)
        record["extra_mem_mb"] = round(record["peak_mem_mb"] - base["peak_mem_mb"], 1)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
