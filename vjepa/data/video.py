"""Video dataset over CSV lists, decoded with decord, robust to bad files.

CSV format (official V-JEPA): one sample per line, `<path> <integer label>`, separated by whitespace, no header.
The line is split at its last whitespace run, so paths may contain spaces (the official pandas reader cannot do
that). Relative paths are resolved against the folder of the CSV file (the official code resolves them against
the working directory). Blank lines are ignored; any other malformed line is a ValueError naming file:line.

Clip sampling: a clip is frames_per_clip frames at frame_step, i.e. frame indices start + k * frame_step; it spans
(frames_per_clip - 1) * frame_step + 1 frames (the official code needs frames_per_clip * frame_step frames and
spaces frames with linspace, so its step is slightly above frame_step). Videos shorter than the span are unusable
(like the official code, no padding). With num_clips = n > 1 the range of valid starts [0, len - span] is cut into
n equal segments and each clip starts uniformly at random inside its own segment (evenly spaced, random within;
clips may overlap for short videos), and a list of n clips is returned, each with its own transform draw.

Bad files (missing, unreadable, truncated, too short): __getitem__ moves on to the next index (index + 1 mod len,
same draw, seeded from the index actually used) and reports that index in "index". Each bad hit is counted; the
first few distinct files are named in warnings, and once at least `min_attempts` loads were attempted and the
bad fraction exceeds max_bad_fraction a RuntimeError names the files. A file found bad is remembered and counts as
bad again without being re-decoded. The official code retries a random other index and never gives up.
Counters (num_attempts, num_bad, bad_files) live in the dataset object, so with DataLoader workers each worker
process counts its own share: the threshold is applied per worker.

Shape legend: T = frames_per_clip, H, W decoded size, C = 3, S = crop size of the transform.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from vjepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Transform, normalize_clip
from vjepa.seeding import make_generator

MAX_NAMED_WARNINGS = 5  # distinct bad files named in warnings before going quiet


class UnusableVideo(Exception):
    """A video that cannot give a clip: missing, undecodable, or too short."""


def read_csv_list(csv_path: str | os.PathLike) -> list[tuple[str, int, int]]:
    """Parse one CSV list into (absolute path, label, line number) tuples; malformed lines raise ValueError."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV list not found: {csv_path}")
    base = csv_path.resolve().parent
    samples = []
    with open(csv_path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{csv_path}:{lineno}: expected '<path> <integer label>', got {line!r}")
            path, label_str = parts
            try:
                label = int(label_str)
            except ValueError:
                raise ValueError(f"{csv_path}:{lineno}: label {label_str!r} is not an integer in {line!r}") from None
            full = Path(path) if os.path.isabs(path) else base / path
            samples.append((str(full), label, lineno))
    return samples


def clip_starts(num_frames: int, span: int, num_clips: int, gen: torch.Generator) -> list[int]:
    """Start frame of each clip: one uniform draw inside each of num_clips equal segments of [0, num_frames - span]."""
    room = num_frames - span + 1  # number of valid starts
    u = torch.rand(num_clips, generator=gen).tolist()
    return [min(room - 1, int((k + u[k]) * room / num_clips)) for k in range(num_clips)]


class VideoDataset:
    """Map-style dataset over one or more CSV lists; keys are (index, draw).

    Returns {"video": float [C, T, S, S] (or a list of num_clips of them), "label": int, "index": int}.
    """

    def __init__(
        self,
        *,
        csv_paths: Sequence[str | os.PathLike],
        frames_per_clip: int = 16,
        frame_step: int = 4,
        num_clips: int = 1,
        transform: Transform | None = None,
        max_bad_fraction: float = 0.05,
        seed: int = 0,
        min_attempts: int = 20,
    ) -> None:
        """transform(frames uint8 [T, H, W, C], gen) -> float [C, T, S, S]; None gives the ImageNet-normalised
        clip at its decoded size. min_attempts: loads attempted before max_bad_fraction is enforced."""
        if isinstance(csv_paths, (str, os.PathLike)):
            raise TypeError("csv_paths must be a sequence of paths, not a single path")
        if frames_per_clip < 1 or frame_step < 1 or num_clips < 1:
            raise ValueError(
                f"need frames_per_clip, frame_step, num_clips >= 1, got {frames_per_clip}, {frame_step}, {num_clips}"
            )
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.csv_paths = [str(p) for p in csv_paths]
        self.samples: list[tuple[str, int]] = []
        self.origins: list[tuple[str, int]] = []  # (csv path, line number) of each sample
        self.source_ranges: list[range] = []  # sample indices of each CSV, for weighted mixing
        for csv_path in self.csv_paths:
            rows = read_csv_list(csv_path)
            start = len(self.samples)
            self.samples.extend((path, label) for path, label, _ in rows)
            self.origins.extend((csv_path, lineno) for _, _, lineno in rows)
            self.source_ranges.append(range(start, len(self.samples)))
        if not self.samples:
            raise ValueError(f"no samples in {self.csv_paths}")
        self.frames_per_clip = frames_per_clip
        self.frame_step = frame_step
        self.num_clips = num_clips
        self.span = (frames_per_clip - 1) * frame_step + 1
        self.transform = transform
        self.max_bad_fraction = max_bad_fraction
        self.min_attempts = min_attempts
        self.seed = seed
        # Per-process counters (each DataLoader worker holds its own copy).
        self.num_attempts = 0
        self.num_bad = 0
        self.bad_files: dict[str, str] = {}  # path -> reason, in the order found

    def __len__(self) -> int:
        return len(self.samples)

    def _load_frames(self, path: str, gen: torch.Generator) -> list[torch.Tensor]:
        """Decode the clips of one video: list of num_clips uint8 [T, H, W, C]; raises UnusableVideo."""
        import decord  # imported here: decord is only needed when real videos are read

        if not os.path.isfile(path):
            raise UnusableVideo("file not found")
        try:
            vr = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))
            num_frames = len(vr)
            if num_frames < self.span:
                raise UnusableVideo(
                    f"too short: {num_frames} frames, a clip of {self.frames_per_clip} frames at step "
                    f"{self.frame_step} needs {self.span}"
                )
            starts = clip_starts(num_frames, self.span, self.num_clips, gen)
            offsets = torch.arange(self.frames_per_clip) * self.frame_step
            indices = torch.cat([s + offsets for s in starts])  # [num_clips * T]
            frames = torch.from_numpy(vr.get_batch(indices.tolist()).asnumpy())  # [num_clips * T, H, W, C]
        except (RuntimeError, OSError, ValueError, decord.DECORDError) as err:
            raise UnusableVideo(f"decoding failed: {type(err).__name__}: {str(err).strip()[:200]}") from err
        expected = self.num_clips * self.frames_per_clip
        if frames.dim() != 4 or frames.shape[0] != expected or frames.shape[-1] != 3:
            raise UnusableVideo(f"decoder returned shape {tuple(frames.shape)}, expected [{expected}, H, W, 3]")
        return list(frames.split(self.frames_per_clip))

    def _record_bad(self, index: int, reason: str) -> None:
        path = self.samples[index][0]
        self.num_bad += 1
        if path not in self.bad_files:
            self.bad_files[path] = reason
            if len(self.bad_files) <= MAX_NAMED_WARNINGS:
                csv_path, lineno = self.origins[index]
                more = " (further bad files are counted silently)" if len(self.bad_files) == MAX_NAMED_WARNINGS else ""
                warnings.warn(f"skipping video {path} ({csv_path}:{lineno}): {reason}{more}", stacklevel=3)
        if self.num_attempts >= self.min_attempts and self.num_bad > self.max_bad_fraction * self.num_attempts:
            raise RuntimeError(self._bad_summary("too many unusable videos"))

    def _bad_summary(self, what: str) -> str:
        listed = "\n".join(f"  {p}: {r}" for p, r in list(self.bad_files.items())[:20])
        extra = len(self.bad_files) - 20
        tail = f"\n  ... and {extra} more" if extra > 0 else ""
        return (
            f"{what}: {self.num_bad} of {self.num_attempts} load attempts failed in this process "
            f"(max_bad_fraction={self.max_bad_fraction}); files:\n{listed}{tail}"
        )

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, draw = key
        n = len(self.samples)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} videos")
        for offset in range(n):
            i = (index + offset) % n
            path, label = self.samples[i]
            self.num_attempts += 1
            if path in self.bad_files:
                self._record_bad(i, self.bad_files[path])
                continue
            gen = make_generator("sample", self.seed, i, draw)
            try:
                clips = self._load_frames(path, gen)
            except UnusableVideo as err:
                self._record_bad(i, str(err))
                continue
            if self.transform is None:
                videos = [normalize_clip(c, IMAGENET_MEAN, IMAGENET_STD) for c in clips]  # [C, T, H, W] each
            else:
                videos = [self.transform(c, gen) for c in clips]  # [C, T, S, S] each
            return {"video": videos[0] if self.num_clips == 1 else videos, "label": label, "index": i}
        raise RuntimeError(self._bad_summary(f"no usable video in the whole dataset (tried from index {index})"))
