"""Kept mask tokens and mask-generation time: the cut over the global batch (before issue 9) against the cut per
group of `mask.group_size` clips (now); prints JSON lines.

    python bench/masks.py                              # 16 x 224 ViT-L grid (8 x 14 x 14), default families
    python bench/masks.py --grid 8 16 16 --group-size 24 --steps 10

Kept tokens: for each global batch (24 and 3072 by default) and mask family, the mean number of context and target
tokens kept per sample over `--steps` steps, for the old cut (one equal-length cut over the whole global batch,
`MaskGenerator(step, G)`) and the new one (`for_rows` over the global batch, groups of `--group-size`; padded slots
not counted). Time: what one process with `--per-process` clips spends on masks per step, old (it drew the whole
global batch and sliced its rows) against new (only the groups of its own rows), median over steps, one thread.
Motion-guided placement (`placement: motion`, vjepa/masks/motion.py): what one process with `--per-process` random
clips of the grid's size (tubelet `--tubelet`, patch `--patch`, 3 channels) spends per batch on its masks with the
default families placed uniformly, the same families placed by motion (token motion from the clips included), and
on the token motion alone; median over steps, one thread (a loader worker's setting).
Lines:
  {"bench": "mask_tokens", "cut": "global" | "group", "global_batch", "family", "ctx_mean", "tgt_mean"}
  {"bench": "mask_time", "global_batch", "per_process", "old_ms", "new_ms"}
  {"bench": "mask_motion_time", "per_process", "clip", "uniform_ms", "motion_ms", "token_motion_ms"}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vjepa.config import MaskConfig  # noqa: E402
from vjepa.masks import FamilyMasks, MaskGenerator  # noqa: E402
from vjepa.masks.motion import token_motion  # noqa: E402


def kept(m: FamilyMasks) -> tuple[float, float]:
    """Mean kept (valid) context and target tokens per sample."""
    ctx = m.ctx_idx.shape[1] if m.ctx_valid is None else float(m.ctx_valid.sum(1).float().mean())
    tgt = m.tgt_idx.shape[1] if m.tgt_valid is None else float(m.tgt_valid.sum(1).float().mean())
    return float(ctx), float(tgt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, nargs=3, default=(8, 14, 14), help="token grid T' H' W'")
    ap.add_argument("--global-batches", type=int, nargs="+", default=(24, 3072))
    ap.add_argument("--group-size", type=int, default=24)
    ap.add_argument("--per-process", type=int, default=24, help="per-process batch for the timing")
    ap.add_argument("--policy", default=MaskConfig().policy)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tubelet", type=int, default=2, help="frames per token (motion timing clips)")
    ap.add_argument("--patch", type=int, default=16, help="pixels per token side (motion timing clips)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = MaskGenerator(
        grid=tuple(args.grid),
        specs=MaskConfig().families,
        policy=args.policy,
        seed=args.seed,
        group_size=args.group_size,
    )
    families = range(len(gen.specs))
    for g in args.global_batches:
        for cut in ("global", "group"):
            sums = [[0.0, 0.0] for _ in families]
            for step in range(args.steps):
                masks = gen(step, g, 0) if cut == "global" else gen.for_rows(step, 0, g, g)
                for f, m in enumerate(masks):
                    c, t = kept(m)
                    sums[f][0] += c / args.steps
                    sums[f][1] += t / args.steps
            for f in families:
                line = {"bench": "mask_tokens", "cut": cut, "global_batch": g, "family": f}
                line.update(ctx_mean=round(sums[f][0], 1), tgt_mean=round(sums[f][1], 1))
                line.update(group_size=args.group_size if cut == "group" else g, grid=list(args.grid))
                print(json.dumps(line), flush=True)
    g, b = max(args.global_batches), args.per_process
    old_ms, new_ms = [], []
    for step in range(args.steps):
        tick = time.perf_counter()
        _ = [m.rows(0, b) for m in gen(step, g, 0)]
        old_ms.append((time.perf_counter() - tick) * 1e3)
        tick = time.perf_counter()
        _ = gen.for_rows(step, 0, b, g)
        new_ms.append((time.perf_counter() - tick) * 1e3)
    line = {"bench": "mask_time", "global_batch": g, "per_process": b, "group_size": args.group_size}
    line.update(old_ms=round(statistics.median(old_ms), 2), new_ms=round(statistics.median(new_ms), 2))
    print(json.dumps(line), flush=True)
    motion_time(args)


def motion_time(args: argparse.Namespace) -> None:
    """One process's mask time per batch: uniform against motion-guided placement of the default families."""
    b, (gt, gh, gw) = args.per_process, args.grid
    clip = [3, gt * args.tubelet, gh * args.patch, gw * args.patch]
    video = torch.randn(b, *clip, generator=torch.Generator().manual_seed(args.seed))  # [b, C, T, H, W]
    specs = MaskConfig().families
    common = dict(grid=tuple(args.grid), policy=args.policy, seed=args.seed, group_size=b)
    uniform = MaskGenerator(specs=specs, **common)
    motion = MaskGenerator(specs=[dataclasses.replace(s, placement="motion") for s in specs], **common)
    times: dict[str, list[float]] = {"uniform_ms": [], "motion_ms": [], "token_motion_ms": []}
    for step in range(args.steps):
        for key, fn in (
            ("uniform_ms", lambda s=step: uniform.for_rows(s, 0, b, b)),
            ("motion_ms", lambda s=step: motion.for_rows(s, 0, b, b, video)),
            ("token_motion_ms", lambda: token_motion(video, tuple(args.grid))),
        ):
            tick = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - tick) * 1e3)
    line = {"bench": "mask_motion_time", "per_process": b, "clip": clip, "grid": list(args.grid)}
    line.update({k: round(statistics.median(v), 2) for k, v in times.items()})
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
