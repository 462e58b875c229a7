"""The training data stream: weighted mixing of sources, repeated sampling, masks, and the DataLoader.

Sources (`data.sources`, or the shorthand `data.source` + `data.csv_paths`): CSV lists, folders and the
synthetic videos are *list* sources (finite, indexable); tar shards are *stream* sources (vjepa/data/shards.py).

Units. Each global step draws U = G / k units (G global batch, k = data.repeat); a unit is one decoded video that
gives k samples: k clips of one decoder pass (repeat_mode "clips") or one clip k times, each row with its own
masks (repeat_mode "masks"). Ranks take contiguous slices of U / W units, so the k samples of a video stay on one
rank and one loader worker, and one process with batch G sees exactly the samples of W processes with batch G / W.

Mixing. `mix_counts` apportions the units of every step to the sources by weight, sequentially, so the units any
source has received after step s never differ from s * U * weight by one unit or more (exact proportions, no
randomness). When all sources share frames_per_clip the units of a step mix sources (per-sample mixing; the units
are then shuffled from (seed, step) so every rank gets a mix); when they differ, a whole step comes from one
source (per-step mixing, U = 1 in the apportionment), since a batch holds clips of one length.

Determinism and resume. List source j hands out its units in order: unit number n is video perm_e[n mod L] of
epoch e = n // L, perm_e a permutation seeded from (seed, e) for the first source and (seed, j, e) for the others;
clip positions and crops come from (seed, video, e) inside the dataset. So for list sources the stream is a pure
function of (seed, step): independent of the number of loader workers and of the world size, and resuming at step
s rebuilds it from s (the data position of a checkpoint is its step). Stream (shard) sources are epoch-less
resampled streams: loader worker w of rank r reads its own share of the shards (shard i belongs to stream
r * workers + w modulo the number of streams, when there are at least as many shards as streams; otherwise every
stream uses all shards), picks shards at random with replacement, and shuffles samples through a buffer of
`data.shard_shuffle`. The stream is seeded from (seed, source, rank, worker, start step): a run resumed at step s
draws a fresh, statistically equivalent stream: no sample is replayed on purpose, but it is not the stream the
uninterrupted run would have read, and it changes with the number of workers and ranks.

Motion-guided mask placement (`mask.families.<i>.placement=motion`) reads this rank's clips; each mask group must
then lie on one rank (`mask.group_size` dividing `data.batch_size`, or one process), checked when the stream is built.

Workers. The loader is an IterableDataset: worker w of n produces the batches of steps start + w, start + w + n, ...
and the DataLoader returns them in step order. Masks are drawn in the worker from (seed, step), cut to one length per
group of `mask.group_size` clips of the global batch (see masks/collator.py): each rank draws only the groups its
rows belong to, so the masks of a sample, and the kept token counts, do not depend on the number of ranks or on the
per-rank batch. A worker that dies is reported by the DataLoader (RuntimeError naming the worker); a worker that
hangs stops the run after `data.timeout` seconds.

Short videos and counts. Every list and shard source applies `data.short_videos` (pad | skip, vjepa/data/video.py)
with the same frame step rule (frame_step, fps or duration); images are repeated to a clip and never count as
short; synthetic videos are rendered at full length. Each batch carries BATCH_COUNTERS: the clips padded, short
videos skipped and bad files skipped while loading it, in the process (loader worker) that built it; the training
loop sums them. Short videos never count toward `data.max_bad_fraction`.

Shape legend: G global batch, b per-rank batch, k repeat, U units per step, C channels, T frames, S crop size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vjepa.config import Config, SourceSpec
from vjepa.data.shards import NoReadableShard, expand_shard_pattern, sample_label, sample_media, sample_stream
from vjepa.data.transforms import Transform
from vjepa.data.video import BadFileTracker, ClipSampling
from vjepa.masks.collator import MaskGenerator
from vjepa.seeding import derive_seed, make_generator


def mix_counts(weights: Sequence[float], units_per_step: int, num_steps: int) -> torch.Tensor:
    """Cumulative units per source before each step: int64 [num_steps + 1, K], row s sums to s * units_per_step.

    Sequential apportionment: each step first gives every source the whole part of its share, then the leftover
    units to the sources furthest behind their cumulative target (ties to the lower index)."""
    w = torch.tensor(weights, dtype=torch.float64)
    if w.dim() != 1 or len(w) == 0 or not bool((w > 0).all()):
        raise ValueError(f"mixing weights must be positive, got {list(weights)}")
    w = w / w.sum()
    k, share = len(w), w.tolist()
    if k == 1:
        return (torch.arange(num_steps + 1, dtype=torch.int64) * units_per_step).unsqueeze(1)
    base = [int(units_per_step * share[j]) for j in range(k)]
    rows, have = [[0] * k], [0] * k
    for s in range(num_steps):
        give = [have[j] + base[j] for j in range(k)]
        behind = [(s + 1) * units_per_step * share[j] - give[j] for j in range(k)]
        for j in sorted(range(k), key=lambda j: (-behind[j], j))[: units_per_step - sum(base)]:
            give[j] += 1
        rows.append(give)
        have = give
    return torch.tensor(rows, dtype=torch.int64)


class ListSource:
    """A finite, indexable source: a map-style dataset with keys (index, draw) (VideoDataset, synthetic)."""

    def __init__(self, dataset, *, index: int, seed: int, frames_per_clip: int) -> None:
        self.dataset, self.index, self.seed, self.frames_per_clip = dataset, index, seed, frames_per_clip
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return len(self.dataset)

    def counts(self) -> tuple[int, int, int]:
        """(clips padded, short videos skipped, bad files skipped) by this source in this process."""
        tracker = getattr(self.dataset, "tracker", None)
        return tracker.counts() if tracker is not None else (0, 0, 0)

    def _video_of(self, n: int) -> tuple[int, int]:
        epoch, pos = divmod(n, len(self.dataset))
        if epoch != self._perm_epoch:
            key = (self.seed, "order", epoch) if self.index == 0 else (self.seed, "order", self.index, epoch)
            gen = torch.Generator().manual_seed(derive_seed(*key))
            self._perm, self._perm_epoch = torch.randperm(len(self.dataset), generator=gen), epoch
        return int(self._perm[pos]), epoch

    def unit(self, n: int, k: int, mode: str, ctx: _WorkerContext) -> list[tuple[torch.Tensor, int]]:
        """The k samples (clip float [C, T, S, S], label) of unit number n."""
        index, draw = self._video_of(n)
        ds = self.dataset
        if k == 1 or mode == "masks":
            item = ds[(index, draw)]
            return [(item["video"], item["label"])] * k
        if hasattr(ds, "load"):  # VideoDataset: k clips from one decoder pass
            clips, i, gen = ds.load(index, draw, k)
            label = ds.samples[i][1]
            return [(ds.finish(c, gen), label) for c in clips]
        items = [ds[(index, draw * k + r)] for r in range(k)]  # synthetic: rendering is the cost anyway
        return [(it["video"], it["label"]) for it in items]


class _WorkerContext:
    """Where the current iterator runs: rank, loader worker, number of streams, and the start step."""

    def __init__(self, *, rank: int, world_size: int, start_step: int) -> None:
        info = get_worker_info()
        self.worker, self.num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.stream_id = rank * self.num_workers + self.worker
        self.num_streams = world_size * self.num_workers


class ShardSource:
    """An epoch-less resampled stream of samples from tar shards (see the module docstring)."""

    def __init__(
        self,
        pattern: str,
        *,
        index: int,
        seed: int,
        sampling: ClipSampling,
        transform: Transform,
        backend: str,
        shuffle_buffer: int,
        max_bad_fraction: float,
        short_videos: str = "pad",
        decode_threads: int = 1,
    ) -> None:
        self.shards = expand_shard_pattern(pattern)
        self.decode_threads = decode_threads
        self.short_videos = short_videos
        self.pattern, self.index, self.seed, self.sampling = pattern, index, seed, sampling
        self.frames_per_clip = sampling.frames_per_clip
        self.transform, self.backend, self.shuffle_buffer = transform, backend, max(1, shuffle_buffer)
        self.tracker = BadFileTracker(max_bad_fraction=max_bad_fraction)
        self._samples: Iterator | None = None
        self._count = 0

    def counts(self) -> tuple[int, int, int]:
        return self.tracker.counts()

    def _stream(self, ctx: _WorkerContext) -> Iterator[tuple[str, int, str, bytes]]:
        """(name, label, media extension, media bytes) forever, from this worker's shards (webdataset pipeline)."""
        enough = len(self.shards) >= ctx.num_streams
        mine = self.shards[ctx.stream_id :: ctx.num_streams] if enough else self.shards  # split by node and worker
        seed = derive_seed(self.seed, "shards", self.index, ctx.rank, ctx.worker, ctx.start_step)

        def record(shard: str, reason: str) -> None:
            self.tracker.attempt()
            self.tracker.record(shard, reason)

        samples = sample_stream(mine, seed=seed, shuffle_buffer=self.shuffle_buffer, record_error=record)
        try:
            for shard, name, parts in samples:
                where = f"{shard}::{name}"
                try:
                    ext, data = sample_media(name, parts, shard)
                    label = sample_label(name, parts, shard)
                except ValueError as err:
                    record(where, str(err))
                    continue
                yield where, label, ext, data
        except NoReadableShard as err:  # the summary names the shards and why
            raise RuntimeError(self.tracker.summary(f"no readable shard in {self.pattern} ({err})")) from err

    def close(self) -> None:
        """End this iteration's shard stream now (TrainStream calls it when its iteration ends): the open shard is
        closed here, not whenever the garbage collector reaches the stream's reference cycle."""
        if self._samples is not None:
            self._samples.close()
            self._samples = None

    def unit(self, n: int, k: int, mode: str, ctx: _WorkerContext) -> list[tuple[torch.Tensor, int]]:
        if self._samples is None:
            self._samples = self._stream(ctx)
        while True:
            where, label, ext, data = next(self._samples)
            self._count += 1
            key = (self.seed, "shard-sample", self.index, ctx.rank, ctx.worker, ctx.start_step, self._count)
            gen = make_generator(*key)
            clips_wanted = k if mode == "clips" else 1
            self.tracker.attempt()
            clips = self.tracker.decode(
                data,
                name=f"x.{ext}",
                label=where,
                where="",
                sampling=self.sampling,
                num_clips=clips_wanted,
                gen=gen,
                backend=self.backend,
                short_videos=self.short_videos,
                threads=self.decode_threads,
            )
            if clips is None:
                continue
            videos = [self.transform(c, gen) for c in clips]
            return [(v, label) for v in videos] if mode == "clips" else [(videos[0], label)] * k


# Per-batch counts (ints) in every batch dict, what loading this batch's samples took in this process: clips padded
# from short videos, short videos skipped (data.short_videos=skip), bad (unreadable) files skipped.
BATCH_COUNTERS = ("short_clips", "short_skipped", "bad_skipped")


class TrainStream(IterableDataset):
    """Batches {"video" [b, C, T, S, S], "label" [b], "step", "masks", BATCH_COUNTERS} for [start_step, end_step)."""

    def __init__(
        self,
        *,
        sources: Sequence[ListSource | ShardSource],
        weights: Sequence[float],
        batch_size: int,
        repeat: int,
        repeat_mode: str,
        rank: int,
        world_size: int,
        seed: int,
        start_step: int,
        end_step: int,
        mask_generators: dict[int, MaskGenerator],
    ) -> None:
        if batch_size % repeat:
            raise ValueError(f"repeat={repeat} must divide the per-rank batch size {batch_size}")
        self.sources, self.batch_size, self.repeat, self.mode = list(sources), batch_size, repeat, repeat_mode
        self.rank, self.world, self.seed = rank, world_size, seed
        self.start, self.end = start_step, end_step
        self.mask_generators = mask_generators
        for gen in mask_generators.values():  # placement "motion" cuts each group from its clips: one process each
            if gen.needs_video and world_size > 1 and batch_size % gen.group_size:
                raise ValueError(
                    f"mask placement 'motion' needs each mask group on one process: mask.group_size="
                    f"{gen.group_size} must divide data.batch_size={batch_size} when running {world_size} processes"
                )
        self.units_per_rank = batch_size // repeat
        self.units_per_step = self.units_per_rank * world_size  # U
        self.per_step = len({s.frames_per_clip for s in self.sources}) > 1
        self.counts = mix_counts(weights, 1 if self.per_step else self.units_per_step, end_step)

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def step_units(self, step: int) -> list[tuple[int, int]]:
        """(source, unit number) of the U units of a step, in global batch order."""
        before, after = self.counts[step], self.counts[step + 1]
        if self.per_step:
            j = int(torch.nonzero(after - before)[0])
            first = int(before[j]) * self.units_per_step
            return [(j, first + u) for u in range(self.units_per_step)]
        units = [(j, n) for j in range(len(self.sources)) for n in range(int(before[j]), int(after[j]))]
        if len(self.sources) > 1:
            order = torch.randperm(len(units), generator=make_generator(self.seed, "mix", step)).tolist()
            units = [units[i] for i in order]
        return units

    def data_counts(self) -> list[int]:
        """[clips padded, short videos skipped, bad files skipped] over the sources, in this process."""
        per_source = [s.counts() if hasattr(s, "counts") else (0, 0, 0) for s in self.sources]  # custom: none
        return [sum(c) for c in zip(*per_source)]

    def batch(self, step: int, ctx: _WorkerContext) -> dict:
        units = self.step_units(step)[self.rank * self.units_per_rank : (self.rank + 1) * self.units_per_rank]
        before = self.data_counts()
        samples = [s for j, n in units for s in self.sources[j].unit(n, self.repeat, self.mode, ctx)]
        counted = dict(zip(BATCH_COUNTERS, (a - b for a, b in zip(self.data_counts(), before))))
        video = stack_for_transfer([v for v, _ in samples])  # [b, C, T, S, S]
        label = torch.tensor([lab for _, lab in samples])
        b = len(samples)
        gen = self.mask_generators[video.shape[2]]
        clips = video if gen.needs_video else None  # placement "motion" reads the clips
        masks = gen.for_rows(step, self.rank * b, (self.rank + 1) * b, b * self.world, clips)
        return {"video": video, "label": label, "step": step, "masks": masks, **counted}

    def __iter__(self) -> Iterator[dict]:
        ctx = _WorkerContext(rank=self.rank, world_size=self.world, start_step=self.start)
        try:
            for step in range(self.start + ctx.worker, self.end, ctx.num_workers):
                yield self.batch(step, ctx)
        finally:  # finished, or the iterator was closed: end the sources' streams (open shards) now
            for source in self.sources:
                close = getattr(source, "close", None)
                if close is not None:
                    close()


def stack_for_transfer(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.stack; in a loader worker straight into shared memory, as torch's default_collate does: the batch
    then crosses to the training process without the second full copy that pickling a private tensor makes
    (8 clips of 16 x 224 x 224: about 50 ms per batch saved, bench/data_loader.py)."""
    if get_worker_info() is None:
        return torch.stack(list(tensors))
    first = tensors[0]
    storage = first._typed_storage()._new_shared(len(tensors) * first.numel(), device=first.device)
    out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(list(tensors), out=out)


def source_specs(cfg: Config) -> list[SourceSpec]:
    """data.sources, or the shorthand data.source / data.csv_paths as one source."""
    d = cfg.data
    if d.sources:
        return list(d.sources)
    if d.source == "synthetic":
        return [SourceSpec(kind="synthetic")]
    return [SourceSpec(kind="csv", path=os.pathsep.join(d.csv_paths))]  # several lists: one concatenated source


def video_decoder(cfg: Config) -> str | None:
    """The decoder the file sources use (data.decoder, "auto" resolved to the first that works here), or None when
    every source is synthetic; ImportError naming the install command when the chosen one does not work."""
    if all(spec.kind == "synthetic" for spec in source_specs(cfg)):
        return None
    from vjepa.data.decoders import resolve_backend

    return resolve_backend(cfg.data.decoder)


def decode_threads(cfg: Config) -> int:
    """Decoder threads per loader process: data.decode_threads, or for 0 the CPUs this process may use shared
    among the loader workers (all of them for the main process), at least 1."""
    if cfg.data.decode_threads > 0:
        return cfg.data.decode_threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, cfg.data.num_workers))


def build_transform(cfg: Config) -> Transform:
    from vjepa.data.transforms import VideoTransform

    d = cfg.data
    return VideoTransform(
        crop_size=d.crop_size, scale=d.random_resize_scale, ratio=d.random_resize_aspect, hflip=d.hflip
    )


def build_source(spec: SourceSpec, index: int, cfg: Config) -> ListSource | ShardSource:
    d, seed = cfg.data, cfg.train.seed
    fpc = spec.frames_per_clip or d.frames_per_clip
    transform = build_transform(cfg)
    if spec.kind == "synthetic":
        from vjepa.data.synthetic import SyntheticVideoDataset

        size = d.synthetic_size or d.crop_size * 8 // 7
        ds = SyntheticVideoDataset(
            num_videos=d.synthetic_videos, num_frames=fpc, size=size, seed=seed, transform=transform
        )
        return ListSource(ds, index=index, seed=seed, frames_per_clip=fpc)
    sampling = ClipSampling(frames_per_clip=fpc, frame_step=d.frame_step, fps=d.fps, duration=d.duration)
    if spec.kind == "shards":
        return ShardSource(
            spec.path,
            index=index,
            seed=seed,
            sampling=sampling,
            transform=transform,
            backend=video_decoder(cfg),
            shuffle_buffer=d.shard_shuffle,
            max_bad_fraction=d.max_bad_fraction,
            short_videos=d.short_videos,
            decode_threads=decode_threads(cfg),
        )
    from vjepa.data.video import VideoDataset

    paths = spec.path.split(os.pathsep)
    ds = VideoDataset(
        csv_paths=paths if spec.kind == "csv" else (),
        folders=paths if spec.kind == "folder" else (),
        frames_per_clip=fpc,
        frame_step=d.frame_step,
        fps=d.fps,
        duration=d.duration,
        transform=transform,
        backend=video_decoder(cfg),
        max_bad_fraction=d.max_bad_fraction,
        seed=seed,
        short_videos=d.short_videos,
        decode_threads=decode_threads(cfg),
    )
    return ListSource(ds, index=index, seed=seed, frames_per_clip=fpc)


def build_mask_generator(cfg: Config, frames_per_clip: int | None = None) -> MaskGenerator:
    grid = (
        (frames_per_clip or cfg.data.frames_per_clip) // cfg.model.tubelet_size,
        cfg.data.crop_size // cfg.model.patch_size,
        cfg.data.crop_size // cfg.model.patch_size,
    )
    return MaskGenerator(
        grid=grid,
        specs=cfg.mask.families,
        policy=cfg.mask.policy,
        seed=cfg.train.seed,
        group_size=cfg.mask.group_size,
    )


def build_stream(cfg: Config, *, rank: int, world_size: int, start_step: int, end_step: int) -> TrainStream:
    specs = source_specs(cfg)
    sources = [build_source(spec, j, cfg) for j, spec in enumerate(specs)]
    generators = {s.frames_per_clip: build_mask_generator(cfg, s.frames_per_clip) for s in sources}
    return TrainStream(
        sources=sources,
        weights=[spec.weight for spec in specs],
        batch_size=cfg.data.batch_size,
        repeat=cfg.data.repeat,
        repeat_mode=cfg.data.repeat_mode,
        rank=rank,
        world_size=world_size,
        seed=cfg.train.seed,
        start_step=start_step,
        end_step=end_step,
        mask_generators=generators,
    )


def build_loader(cfg: Config, *, rank: int, world_size: int, start_step: int, end_step: int) -> DataLoader:
    """The training loader: one batch per global step in [start_step, end_step)."""
    stream = build_stream(cfg, rank=rank, world_size=world_size, start_step=start_step, end_step=end_step)
    workers = min(cfg.data.num_workers, max(1, len(stream)))
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=cfg.data.pin_memory and torch.cuda.is_available(),
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        timeout=cfg.data.timeout if workers > 0 else 0,
    )
