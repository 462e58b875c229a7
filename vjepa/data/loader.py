"""Step-indexed sampling and the training DataLoader.

The data stream is a pure function of (seed, global step, rank): sample number n = step * G + rank * b + j
(G global batch, b per-rank batch) is video perm_e[n mod L] of epoch e = n // L, where perm_e is a permutation
seeded by (seed, e); its clip position and crop are drawn from (seed, index, e) inside the dataset. Ranks take
contiguous slices of the global batch, so 1 process with batch G sees exactly the samples of W processes with
batch G / W. Masks are drawn for the whole global batch from (seed, step) and sliced per rank, so they too are
independent of the world size and of the number of loader workers. Resuming at step k rebuilds the stream from
k: nothing is replayed and the "data position" of a checkpoint is just its step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vjepa.config import Config
from vjepa.masks.collator import MaskGenerator
from vjepa.seeding import derive_seed


class StepBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Yields, for each global step from `start_step`, this rank's keys (index, draw, step)."""

    def __init__(
        self, *, num_videos: int, batch_size: int, rank: int, world_size: int, seed: int, start_step: int, end_step: int
    ) -> None:
        if num_videos <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.b, self.rank, self.world = num_videos, batch_size, rank, world_size
        self.seed, self.start, self.end = seed, start_step, end_step
        self._perm_epoch, self._perm = -1, None

    def _perm_for(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=gen), epoch
        return self._perm

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        first = step * self.b * self.world + self.rank * self.b
        out = []
        for n in range(first, first + self.b):
            epoch, pos = divmod(n, self.n)
            out.append((int(self._perm_for(epoch)[pos]), epoch, step))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start, self.end):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(0, self.end - self.start)


class StepDataset(Dataset):
    """Adds the global step to each sample of a dataset indexed by (index, draw)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        index, draw, step = key
        sample = dict(self.dataset[(index, draw)])
        sample["step"] = step
        return sample


class GlobalMaskCollator:
    """Stacks clips and draws masks for the global batch at the step, keeping this rank's slice."""

    def __init__(self, generator: MaskGenerator, *, rank: int, world_size: int) -> None:
        self.generator, self.rank, self.world = generator, rank, world_size

    def __call__(self, samples: list[dict]) -> dict:
        step = samples[0]["step"]
        if any(s["step"] != step for s in samples):
            raise ValueError("a batch mixes samples of different steps")
        b = len(samples)
        video = torch.stack([s["video"] for s in samples])  # [b, C, T, H, W]
        label = torch.tensor([s["label"] for s in samples])
        lo, hi = self.rank * b, (self.rank + 1) * b
        masks = [m.rows(lo, hi) for m in self.generator(step, b * self.world, rank=0)]
        return {"video": video, "label": label, "step": step, "masks": masks}


def build_dataset(cfg: Config, seed: int) -> Dataset:
    from vjepa.data.transforms import VideoTransform

    d = cfg.data
    transform = VideoTransform(
        crop_size=d.crop_size, scale=d.random_resize_scale, ratio=d.random_resize_aspect, hflip=d.hflip
    )
    if d.source == "synthetic":
        from vjepa.data.synthetic import SyntheticVideoDataset

        size = d.synthetic_size or d.crop_size * 8 // 7
        return SyntheticVideoDataset(
            num_videos=d.synthetic_videos, num_frames=d.frames_per_clip, size=size, seed=seed, transform=transform
        )
    from vjepa.data.video import VideoDataset

    return VideoDataset(
        csv_paths=list(d.csv_paths),
        frames_per_clip=d.frames_per_clip,
        frame_step=d.frame_step,
        num_clips=1,
        transform=transform,
        max_bad_fraction=d.max_bad_fraction,
        seed=seed,
    )


def build_mask_generator(cfg: Config) -> MaskGenerator:
    grid = (
        cfg.data.frames_per_clip // cfg.model.tubelet_size,
        cfg.data.crop_size // cfg.model.patch_size,
        cfg.data.crop_size // cfg.model.patch_size,
    )
    return MaskGenerator(grid=grid, specs=cfg.mask.families, policy=cfg.mask.policy, seed=cfg.train.seed)


def build_loader(cfg: Config, *, rank: int, world_size: int, start_step: int, end_step: int) -> DataLoader:
    """The training loader: one batch per global step in [start_step, end_step)."""
    dataset = StepDataset(build_dataset(cfg, cfg.train.seed))
    sampler = StepBatchSampler(
        num_videos=len(dataset),
        batch_size=cfg.data.batch_size,
        rank=rank,
        world_size=world_size,
        seed=cfg.train.seed,
        start_step=start_step,
        end_step=end_step,
    )
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=GlobalMaskCollator(build_mask_generator(cfg), rank=rank, world_size=world_size),
        num_workers=workers,
        pin_memory=cfg.data.pin_memory and torch.cuda.is_available(),
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
