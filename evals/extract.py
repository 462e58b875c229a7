"""Extract frozen-encoder features (pooled, per time step or tokens) for every video of a CSV list into one file.

    vjepa eval extract --checkpoint runs/x --csv val.csv --out val_feats.pt --clips 2 --views 3 --output pooled
    torchrun --nproc_per_node 4 -m vjepa.cli eval extract ...   (each rank takes a contiguous slice)

Per video, `clips` temporal clips of frames_per_clip frames at frame_step are cut from `clips` equal segments of
the video (one position per segment, drawn from a generator seeded by (seed, row of the list): the multi-clip
sampling of vjepa/data/video.py), and from each clip `views` spatial crops of crop_size x crop_size: the short
side is resized to `short_side` (default crop_size, aspect kept), then the crops are spread evenly along the long
side (1 view: centre; 3 views: left/centre/right, or top/centre/bottom for portrait video). Views are ordered
clip-major: v = clip * views + view. A square frame with short_side = crop_size leaves no room, so its views
coincide (a note says so; raise --short-side, e.g. crop * 256 / 224 as in the official evals).
Videos shorter than one clip's span are not dropped: their clip indices are clamped to the last frame (the
official eval loader skips them; we keep every row and count them as "short").

Saved with torch.save (format in docs/feature-files.md): {"format": "vjepa.features", "output", "features" [N, V, D]
| [N, V, T', D] | [N, V, K, D], "labels" int64 [N], "paths", "grid" (T', H', W'), "encoder", "config", "skipped"
(list of {"path", "line", "reason"})}; `extract_features` returns that dict (plus a summary) on rank 0.
Unusable videos (missing, empty, undecodable) are skipped, never fatal: their rows are left out and listed with
the reason. Across processes (torchrun, any process group) each rank extracts a
contiguous slice of the list and writes a part file; rank 0 merges them in order after a barrier. Batches are
formed from fixed groups of consecutive rows, so the file is identical for any number of processes.
Progress (videos/s, ETA) goes to stderr.

Shapes: N videos, V = clips x views, T frames per clip, S crop size, T' = T / tubelet, K = T' * H' * W' tokens,
D width.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from vjepa.evals.probe_io import FEATURE_FORMAT, check_features

from vjepa.data.media import is_image
from vjepa.data.transforms import normalize_frames, resize_frames, short_side_size
from vjepa.data.video import ClipSampling, clip_starts, load_clips, read_csv_list
from vjepa.embed import OUTPUTS, Embedder, default_backend
from vjepa.fileio import atomic_target
from vjepa.seeding import make_generator
from vjepa.train.metrics import format_duration

FORMAT = FEATURE_FORMAT
PROGRESS_EVERY = 10.0  # seconds between progress lines
MAX_NAMED = 10  # skipped videos named on stderr per rank (all are listed in the result and the file)


def view_offsets(length: int, crop: int, views: int) -> list[int]:
    """Start of each of `views` crops of size `crop` spread evenly over `length` pixels (1 view: centred)."""
    if views == 1:
        return [(length - crop) // 2]
    return [round(k * (length - crop) / (views - 1)) for k in range(views)]


def make_views(clip: torch.Tensor, *, crop_size: int, short_side: int, views: int) -> torch.Tensor:
    """uint8 clip [T, H, W, 3] -> float [V, C, T, S, S]: short side resized to short_side, V crops along the
    long side (centred on the short side), ImageNet-normalised."""
    h, w = short_side_size(clip.shape[1], clip.shape[2], short_side)
    x = resize_frames(clip, (h, w))  # [T, 3, h, w]
    s = crop_size
    across = (h - s) // 2 if w >= h else (w - s) // 2
    out = []
    for off in view_offsets(max(h, w), s, views):
        top, left = (across, off) if w >= h else (off, across)
        out.append(normalize_frames(x[:, :, top : top + s, left : left + s]))  # [C, T, S, S]
    return torch.stack(out)  # [V, C, T, S, S]


def load_eval_clips(
    path: str, *, sampling: ClipSampling, num_clips: int, gen: torch.Generator, backend: str
) -> tuple[list[torch.Tensor], bool]:
    """(num_clips uint8 clips [T, H, W, 3], whether the video was shorter than one clip's span). Too-short videos
    get indices clamped to their last frame. Raises DecodeError / UnusableVideo for unusable files."""
    from vjepa.data.decoders import open_video

    if is_image(path):
        return load_clips(path, name=path, sampling=sampling, num_clips=num_clips, gen=gen, backend=backend), False
    t = sampling.frames_per_clip
    with open_video(path, backend=backend) as vr:
        step = sampling.step_for(vr.fps)
        span = sampling.span(step)
        short = vr.num_frames < span
        starts = [0] * num_clips if short else clip_starts(vr.num_frames, span, num_clips, gen)
        indices = [min(s + k * step, vr.num_frames - 1) for s in starts for k in range(t)]  # [num_clips * T]
        frames = vr.get_frames(indices)  # [num_clips * T, H, W, 3]
    return list(frames.split(t)), short


class _ListVideos(torch.utils.data.Dataset):
    """Row i of the list -> {"index", "video": float [V, C, T, S, S] or None, "error", "short"}."""

    def __init__(
        self,
        rows: list[tuple[str, int, int]],
        *,
        sampling: ClipSampling,
        clips: int,
        views: int,
        crop_size: int,
        short_side: int,
        seed: int,
        backend: str,
    ) -> None:
        self.rows, self.sampling, self.clips, self.views = rows, sampling, clips, views
        self.crop_size, self.short_side, self.seed, self.backend = crop_size, short_side, seed, backend

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from vjepa.data.decoders import DecodeError
        from vjepa.data.video import UnusableVideo

        path = self.rows[i][0]
        gen = make_generator("extract-clips", self.seed, i)
        try:
            clips, short = load_eval_clips(
                path, sampling=self.sampling, num_clips=self.clips, gen=gen, backend=self.backend
            )
            kw = dict(crop_size=self.crop_size, short_side=self.short_side, views=self.views)
            video = torch.cat([make_views(c, **kw) for c in clips])  # [clips * views, C, T, S, S]
        except (DecodeError, UnusableVideo, OSError, RuntimeError, ValueError) as err:
            return {"index": i, "video": None, "error": f"{type(err).__name__}: {err}", "short": False}
        return {"index": i, "video": video, "error": None, "short": short}


def _as_list(items: list) -> list:
    return items


def _slice_groups(n: int, group: int, rank: int, world_size: int) -> list[list[int]]:
    """This rank's groups of consecutive rows: the list is cut into groups of `group` rows, and each rank takes a
    contiguous run of groups. Batches are whole groups, so they do not depend on the number of processes."""
    groups = [list(range(a, min(n, a + group))) for a in range(0, n, group)]
    lo, hi = rank * len(groups) // world_size, (rank + 1) * len(groups) // world_size
    return groups[lo:hi]


def extract_features(
    encoder: nn.Module | str | os.PathLike,
    csv_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    clips: int = 1,
    views: int = 1,
    output: str = "pooled",
    frames_per_clip: int | None = None,
    frame_step: int = 4,
    crop_size: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    short_side: int | None = None,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    backend: str | None = None,
    half: bool = False,
) -> dict:
    """Extract features of every video in `csv_path` and save them to `out_path` (see the module docstring).

    encoder: a frozen encoder or anything `vjepa.pretrained.load_pretrained` reads. frames_per_clip / crop_size
    default to the encoder's. batch_size: clips per forward pass (rows are grouped so that a group's clips fit).
    half: store float16 features. With world_size > 1 every rank calls this inside an initialised process group.
    Returns, on rank 0, the saved feature dict plus a summary (out, num_videos, num_extracted, short, shape,
    seconds, videos_per_s); on other ranks the summary only. "skipped" lists {"path", "line", "reason"}."""
    start = time.perf_counter()
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if clips < 1 or views < 1 or batch_size < 1:
        raise ValueError(f"clips, views and batch_size must be >= 1, got {clips}, {views}, {batch_size}")
    if world_size > 1 and not (dist.is_initialized() and dist.get_world_size() == world_size):
        raise RuntimeError(f"world_size={world_size} needs an initialised process group of that size (torchrun)")
    if not isinstance(encoder, nn.Module):
        from vjepa.pretrained import load_pretrained

        encoder = load_pretrained(encoder, device=device)
    embedder = Embedder(encoder, device=device, batch_size=batch_size)
    fpc = frames_per_clip or embedder.frames_per_clip
    crop = crop_size or embedder.crop_size
    short_side = short_side or crop
    if short_side < crop:
        raise ValueError(f"short_side {short_side} is smaller than crop_size {crop}")
    if backend is None:
        backend = default_backend()
    rows = read_csv_list(csv_path)
    grid = embedder.grid((fpc, crop, crop))
    per_video = {"pooled": (embedder.embed_dim,), "frames": (grid[0], embedder.embed_dim)}
    per_video["tokens"] = (math.prod(grid), embedder.embed_dim)
    v = clips * views
    groups = _slice_groups(len(rows), max(1, batch_size // v), rank, world_size)
    mine = [i for g in groups for i in g]
    sampling = ClipSampling(frames_per_clip=fpc, frame_step=frame_step)
    kw = dict(clips=clips, views=views, crop_size=crop, short_side=short_side, seed=seed, backend=backend)
    data = _ListVideos(rows, sampling=sampling, **kw)
    loader = torch.utils.data.DataLoader(data, batch_sampler=groups, collate_fn=_as_list, num_workers=num_workers)
    feats, labels, paths, skipped, short = [], [], [], [], 0
    done, last_print = 0, time.perf_counter()
    noted_views = False
    for items in loader:
        good = [it for it in items if it["video"] is not None]
        for it in items:
            if it["video"] is None:
                path, _, lineno = rows[it["index"]]
                skipped.append({"path": path, "line": lineno, "reason": it["error"]})
                if len(skipped) <= MAX_NAMED:
                    more = " (further skips are only counted)" if len(skipped) == MAX_NAMED else ""
                    print(f"extract: skipping {path} (line {lineno}): {it['error']}{more}", file=sys.stderr)
        if good:
            video = torch.cat([it["video"] for it in good])  # [b * V, C, T, S, S]
            if views > 1 and not noted_views and torch.equal(good[0]["video"][0], good[0]["video"][views - 1]):
                note = f"views coincide (square frames, short side {short_side} = crop {crop}); raise --short-side"
                print(f"extract: note: {note}", file=sys.stderr)
                noted_views = True
            tokens = embedder.clip_tokens(video)  # [b * V, N, D]
            if output == "pooled":
                x = embedder.pooled(tokens)  # [b * V, D]
            elif output == "frames":
                x = embedder.frames(tokens, grid)  # [b * V, T', D]
            else:
                x = tokens  # [b * V, N, D]
            x = x.cpu().to(torch.float16 if half else torch.float32)
            feats.extend(x.unflatten(0, (len(good), v)))  # each [V, ...]
            for it in good:
                labels.append(rows[it["index"]][1])
                paths.append(rows[it["index"]][0])
                short += int(it["short"])
        done += len(items)
        now = time.perf_counter()
        if now - last_print >= PROGRESS_EVERY or done == len(mine):
            rate = done / max(now - start, 1e-9)
            who = f" [rank {rank}/{world_size}]" if world_size > 1 else ""
            eta = format_duration((len(mine) - done) / max(rate, 1e-9))
            msg = f"{done}/{len(mine)} videos, {len(skipped)} skipped, {rate:.2f} videos/s, ETA {eta}"
            print(f"extract{who}: {msg}", file=sys.stderr)
            last_print = now
    dtype = torch.float16 if half else torch.float32
    part = {
        "features": torch.stack(feats) if feats else torch.zeros(0, v, *per_video[output], dtype=dtype),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "paths": paths,
        "skipped": skipped,
        "short": short,
    }
    out_path = Path(out_path)
    if world_size > 1:
        part_file = out_path.with_name(f"{out_path.name}.part{rank:04d}-of-{world_size:04d}")
        torch.save(part, part_file)
        dist.barrier()
        if rank == 0:
            parts = []
            for r in range(world_size):
                f = out_path.with_name(f"{out_path.name}.part{r:04d}-of-{world_size:04d}")
                parts.append(torch.load(f, map_location="cpu", weights_only=True))
            part = {
                "features": torch.cat([p["features"] for p in parts]),
                "labels": torch.cat([p["labels"] for p in parts]),
                "paths": [x for p in parts for x in p["paths"]],
                "skipped": [x for p in parts for x in p["skipped"]],
                "short": sum(p["short"] for p in parts),
            }
    saved: dict[str, Any] = {}
    if rank == 0:
        config = dict(clips=clips, views=views, frames_per_clip=fpc, frame_step=frame_step, crop_size=crop, seed=seed)
        config["short_side"] = short_side
        saved = {
            "format": FORMAT,
            "output": output,
            "features": part["features"],
            "labels": part["labels"],
            "paths": part["paths"],
            "grid": tuple(grid),
            "encoder": str(getattr(encoder, "source", type(encoder).__name__)),
            "config": config,
            "skipped": part["skipped"],
        }
        with atomic_target(out_path) as tmp:
            torch.save(saved, tmp)
    summary = {
        "out": str(out_path),
        "num_videos": len(rows),
        "num_extracted": int(part["features"].shape[0]),
        "skipped": part["skipped"],
        "short": part["short"],
        "shape": list(part["features"].shape),
    }
    if world_size > 1:
        dist.barrier()  # the merged file exists when any rank returns
        if rank == 0:
            for r in range(world_size):
                out_path.with_name(f"{out_path.name}.part{r:04d}-of-{world_size:04d}").unlink(missing_ok=True)
        box = [summary]
        dist.broadcast_object_list(box, src=0)
        summary = {**box[0], "rank": rank}
    seconds = time.perf_counter() - start
    return {**saved, **summary, "seconds": seconds, "videos_per_s": len(mine) / max(seconds, 1e-9)}


def load_features(path: str | os.PathLike) -> dict:
    """Load a features file written by extract_features and check its format and shapes (ValueError if not).

    The shape, dtype and finiteness checks are the probes' (vjepa.evals.probe_io.check_features); this adds the entries
    only extract_features writes (paths, grid, encoder, config)."""
    d = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        what = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{path}: not a features file (format {what!r}, expected {FORMAT!r}); see vjepa eval extract")
    missing = [k for k in ("output", "features", "labels", "paths", "grid", "encoder", "config") if k not in d]
    if missing:
        raise ValueError(f"{path}: features file without entries {missing}")
    d = check_features(d, str(path))
    if d["features"].shape[0] != len(d["paths"]):
        raise ValueError(f"{path}: {d['features'].shape[0]} feature rows but {len(d['paths'])} paths")
    return d


# ----------------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="export file, run folder or Hugging Face folder")
    parser.add_argument("--csv", required=True, help="list of videos: '<path> <label>' per line")
    parser.add_argument("--out", required=True, help="output features file (.pt)")
    parser.add_argument("--clips", type=int, default=1, help="temporal clips per video")
    parser.add_argument("--views", type=int, default=1, help="spatial views per clip")
    parser.add_argument("--output", choices=OUTPUTS, default="pooled")
    parser.add_argument("--frames-per-clip", type=int, default=None, help="default: the encoder's")
    parser.add_argument("--frame-step", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=None, help="default: the encoder's")
    parser.add_argument("--short-side", type=int, default=None, help="resize the short side to this before the crops")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=4, help="decoding processes")
    parser.add_argument(
        "--backend", default=None, help="video decoder (torchcodec, decord, pyav); default: the first that works"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--fp16", action="store_true", help="store float16 features")


def run(args: argparse.Namespace) -> int:
    from vjepa.models.build import NotABackboneError
    from vjepa.pretrained import load_pretrained

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device
    if device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo")  # barrier and a broadcast only: gloo works on CPU and GPU machines
    try:
        encoder = load_pretrained(args.checkpoint, device=device)
        result = extract_features(
            encoder, args.csv, args.out, clips=args.clips, views=args.views, output=args.output,
            frames_per_clip=args.frames_per_clip, frame_step=args.frame_step, crop_size=args.crop_size,
            batch_size=args.batch_size, seed=args.seed, rank=rank, world_size=world, short_side=args.short_side,
            device=device, num_workers=args.num_workers, backend=args.backend, half=args.fp16,
        )  # fmt: skip
    except (NotABackboneError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if own_group:
            dist.destroy_process_group()
    if rank == 0:
        print(
            f"wrote {result['out']}: features {result['shape']} ({result['num_extracted']} of {result['num_videos']}"
            f" videos, {len(result['skipped'])} skipped) at {result['videos_per_s']:.2f} videos/s"
        )
    return 0
