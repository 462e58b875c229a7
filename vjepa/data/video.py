"""Video datasets over CSV lists and folders, clip sampling, decoding through a chosen backend, bad-file safety.

CSV format (official V-JEPA): one sample per line, `<path> <integer label>`, no header. The separator is either
whitespace (the line is split at its last whitespace run, so paths may contain spaces; the official pandas reader
cannot do that) or `::` (`<path>::<label>`, which the official V-JEPA 2 reader also accepts). Relative paths are
resolved against the folder of the CSV file (the official code resolves them against the working directory).
Blank lines are ignored; any other malformed line is a ValueError naming file:line. A path with an image
extension (.jpg, .png, ...) is a still image, repeated to a clip (V-JEPA 2 mixes images into pretraining).
A folder source lists the media files below it (sorted); the label is the index of the first-level subfolder
among the sorted subfolder names (class folders), 0 for files directly in the folder.

Clip sampling (`ClipSampling`): frames_per_clip frames at a frame step given in exactly one of three ways:
frame_step (frames), fps (target frame rate: step = ceil(video fps) // fps, the official V-JEPA 2 rule) or
duration (seconds covered by the clip: step = round(duration * video fps / frames_per_clip)); the step is at least
1. A clip's frame indices are start + k * step; it spans (frames_per_clip - 1) * step + 1 frames (the official code
needs frames_per_clip * step frames and spaces frames with linspace, so its step is slightly above frame_step).

Short videos (fewer frames than the span), `short_videos`: "pad" (default, as the official loaders with
filter_short_videos false) starts every clip at frame 0 and repeats the last frame: indices min(k * step, len - 1).
The official code instead spreads len // step indices over the whole video with linspace and then repeats the last
frame, so its frame spacing inside a padded clip differs from the step; ours keeps the step. "skip" raises
ShortVideo and the loader moves on, as for bad files, but a short video is counted apart (num_short_skipped), is
never counted toward max_bad_fraction, and is remembered so it is not decoded again. Padded clips are counted in
num_padded (decoded clips, before repeat_mode "masks" reuses one clip for several rows).

With num_clips = n > 1 the range of valid starts [0, len - span] is cut into n equal segments and each clip starts
uniformly at random inside its own segment (evenly spaced, random within; clips may overlap for short videos);
all n clips come from one decoder pass.
A file the chosen backend (decord or torchcodec) cannot decode is tried once more with PyAV (same clip draw; a
warning names the first few such files): decord 0.6 rejects some valid videos, e.g. ones narrower than 64 pixels.

Bad files (missing, zero-byte, unreadable, truncated, no frames): __getitem__ moves on to the next index (index + 1
mod len, same draw, seeded from the index actually used) and reports that index in "index". Each bad hit is
counted; the first few distinct files are named in warnings, and once at least `min_attempts` loads were attempted
and the bad fraction exceeds max_bad_fraction a RuntimeError names the files. A file found bad is remembered and
counts as bad again without being re-decoded. The official code retries a random other index and never gives up.
Counters (num_attempts, num_bad, bad_files) live in the object, so with DataLoader workers each worker process
counts its own share: the threshold is applied per worker (`BadFileTracker`, shared with the shard streams).

Shape legend: T = frames_per_clip, H, W decoded size, C = 3, S crop size of the transform.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vjepa.data.media import MEDIA_EXTENSIONS, is_image
from vjepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Transform, normalize_clip
from vjepa.seeding import make_generator

MAX_NAMED_WARNINGS = 5  # distinct bad files named in warnings before going quiet


SHORT_VIDEO_MODES = ("pad", "skip")


class UnusableVideo(Exception):
    """A video that cannot give a clip: missing, undecodable, or too short (ShortVideo)."""


class ShortVideo(UnusableVideo):
    """A readable video shorter than one clip's span, with short_videos="skip"."""


def split_list_line(line: str) -> list[str]:
    if "::" in line:
        return [part.strip() for part in line.rsplit("::", 1)]
    return line.rsplit(maxsplit=1)


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
            parts = split_list_line(line)
            if len(parts) != 2 or not parts[0]:
                raise ValueError(f"{csv_path}:{lineno}: expected '<path> <integer label>', got {line!r}")
            path, label_str = parts
            try:
                label = int(label_str)
            except ValueError:
                raise ValueError(f"{csv_path}:{lineno}: label {label_str!r} is not an integer in {line!r}") from None
            full = Path(path) if os.path.isabs(path) else base / path
            samples.append((str(full), label, lineno))
    return samples


def read_folder(folder: str | os.PathLike) -> tuple[list[tuple[str, int, int]], list[str]]:
    """Media files below a folder as (path, label, 0) rows, and the class names (sorted first-level subfolders)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    index = {name: i for i, name in enumerate(classes)}
    rows = []
    for p in files:
        parts = p.relative_to(root).parts
        rows.append((str(p.resolve()), index[parts[0]] if len(parts) > 1 else 0, 0))
    if not rows:
        raise ValueError(f"no media files ({', '.join(MEDIA_EXTENSIONS)}) under {root}")
    return rows, classes


@dataclass(frozen=True, kw_only=True)
class ClipSampling:
    """How a clip is cut: frames_per_clip frames at a step given by exactly one of frame_step, fps, duration."""

    frames_per_clip: int = 16
    frame_step: int = 4
    fps: float = 0.0
    duration: float = 0.0

    def __post_init__(self) -> None:
        if self.frames_per_clip < 1:
            raise ValueError(f"frames_per_clip must be >= 1, got {self.frames_per_clip}")
        given = [name for name in ("frame_step", "fps", "duration") if getattr(self, name) > 0]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of frame_step, fps, duration (> 0; set the others to 0), got {given or 'none'}"
            )

    def step_for(self, video_fps: float) -> int:
        """Frame step for a video of this frame rate."""
        if self.frame_step > 0:
            return self.frame_step
        if video_fps <= 0:
            raise UnusableVideo("unknown frame rate; use a fixed frame_step for this source")
        if self.fps > 0:  # as the official V-JEPA 2 loader: ceil(video fps) // fps (30 fps at 4 fps: step 7)
            return max(1, int(math.ceil(video_fps) // self.fps))
        return max(1, round(self.duration * video_fps / self.frames_per_clip))

    def span(self, step: int) -> int:
        return (self.frames_per_clip - 1) * step + 1


def clip_starts(num_frames: int, span: int, num_clips: int, gen: torch.Generator) -> list[int]:
    """Start frame of each clip: one uniform draw inside each of num_clips equal segments of [0, num_frames - span]."""
    room = num_frames - span + 1  # number of valid starts
    u = torch.rand(num_clips, generator=gen).tolist()
    return [min(room - 1, int((k + u[k]) * room / num_clips)) for k in range(num_clips)]


def load_clips(
    src: str | bytes,
    *,
    name: str,
    sampling: ClipSampling,
    num_clips: int,
    gen: torch.Generator,
    backend: str = "auto",
    short_videos: str = "pad",
) -> list[torch.Tensor]:
    """Decode num_clips clips of one video or image (path or bytes): list of uint8 [T, H, W, C] (decode_clips)."""
    return decode_clips(
        src, name=name, sampling=sampling, num_clips=num_clips, gen=gen, backend=backend, short_videos=short_videos
    )[0]


def decode_clips(
    src: str | bytes,
    *,
    name: str,
    sampling: ClipSampling,
    num_clips: int,
    gen: torch.Generator,
    backend: str = "auto",
    short_videos: str = "pad",
    threads: int = 1,
) -> tuple[list[torch.Tensor], bool]:
    """(num_clips clips uint8 [T, H, W, C] of one video or image (path or bytes), whether they were padded).

    name: the file name (its extension tells images from videos; used in messages). short_videos: pad | skip
    (module docstring). threads: decoder threads (data.decode_threads). Raises UnusableVideo (ShortVideo for a
    short video with "skip")."""
    from vjepa.data.decoders import DecodeError, available_backends, open_video, read_image, resolve_backend

    if short_videos not in SHORT_VIDEO_MODES:
        raise ValueError(f"short_videos must be one of {SHORT_VIDEO_MODES}, got {short_videos!r}")

    t = sampling.frames_per_clip
    if isinstance(src, str):
        if not os.path.isfile(src):
            raise UnusableVideo("file not found")
        if os.path.getsize(src) == 0:
            raise UnusableVideo("empty file (0 bytes)")
    elif len(src) == 0:
        raise UnusableVideo("empty file (0 bytes)")
    if is_image(name):
        try:
            image = read_image(src)  # [H, W, C]
        except DecodeError as err:
            raise UnusableVideo(f"image decoding failed: {err}") from err
        return [image.unsqueeze(0).expand(t, -1, -1, -1).contiguous() for _ in range(num_clips)], False  # [T, H, W, C]

    padded = False

    def decode(with_backend: str) -> torch.Tensor:
        nonlocal padded
        with open_video(src, backend=with_backend, num_threads=threads) as vr:
            step = sampling.step_for(vr.fps)
            span = sampling.span(step)
            n = vr.num_frames
            if n < 1:
                raise UnusableVideo("no frames")
            padded = n < span
            if padded and short_videos == "skip":
                raise ShortVideo(f"too short: {n} frames, a clip of {t} frames at step {step} needs {span}")
            starts = [0] * num_clips if padded else clip_starts(n, span, num_clips, gen)
            indices = [min(s + k * step, n - 1) for s in starts for k in range(t)]  # [num_clips * T]
            return vr.get_frames(indices)  # [num_clips * T, H, W, C]

    backend = resolve_backend(backend)
    state = gen.get_state()
    try:
        frames = decode(backend)
    except DecodeError as err:
        if backend == "pyav" or "pyav" not in available_backends():
            raise UnusableVideo(f"decoding failed: {err}") from err
        gen.set_state(state)  # decord cannot read some valid files (e.g. narrow ones): PyAV gets the same draw
        try:
            frames = decode("pyav")
        except DecodeError:
            raise UnusableVideo(f"decoding failed: {err}") from err
        _note_fallback(name, backend, err)
    expected = num_clips * t
    if frames.dim() != 4 or frames.shape[0] != expected or frames.shape[-1] != 3:
        raise UnusableVideo(f"decoder returned shape {tuple(frames.shape)}, expected [{expected}, H, W, 3]")
    return list(frames.split(t)), padded


_FALLBACKS: set[str] = set()


def _note_fallback(name: str, backend: str, err: Exception) -> None:
    """Warn (once per file, for the first few files of a process) that PyAV decoded what `backend` could not."""
    if name not in _FALLBACKS and len(_FALLBACKS) < MAX_NAMED_WARNINGS:
        warnings.warn(f"{backend} could not decode {name} ({err}); decoded it with PyAV instead", stacklevel=3)
    _FALLBACKS.add(name)


class BadFileTracker:
    """Counts load attempts, bad files and short videos of one process; warns for the first few; raises past the
    bad-file threshold. Short videos (padded or skipped) never count toward max_bad_fraction."""

    def __init__(self, *, max_bad_fraction: float, min_attempts: int = 20) -> None:
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.max_bad_fraction, self.min_attempts = max_bad_fraction, min_attempts
        self.num_attempts = 0
        self.num_bad = 0
        self.bad_files: dict[str, str] = {}  # name -> reason, in the order found
        self.num_padded = 0  # clips padded from short videos
        self.num_short_skipped = 0  # loads skipped because the video was short (short_videos="skip")
        self.short_files: dict[str, str] = {}  # short videos skipped: name -> reason

    def attempt(self) -> None:
        self.num_attempts += 1

    def known_bad(self, name: str) -> str | None:
        return self.bad_files.get(name)

    def counts(self) -> tuple[int, int, int]:
        """(clips padded, short videos skipped, bad files skipped) so far."""
        return self.num_padded, self.num_short_skipped, self.num_bad

    def record_short(self, name: str, reason: str, where: str = "") -> None:
        """A short video skipped (short_videos="skip"): counted apart from bad files, warned for the first few."""
        self.num_short_skipped += 1
        if name not in self.short_files:
            self.short_files[name] = reason
            if len(self.short_files) <= MAX_NAMED_WARNINGS:
                at = f" ({where})" if where else ""
                warnings.warn(f"skipping short video {name}{at}: {reason} (data.short_videos=skip)", stacklevel=3)

    def decode(
        self,
        src: str | bytes,
        *,
        name: str,
        label: str,
        where: str,
        sampling: ClipSampling,
        num_clips: int,
        gen: torch.Generator,
        backend: str,
        short_videos: str,
        threads: int = 1,
    ) -> list[torch.Tensor] | None:
        """decode_clips with the outcome counted: the clips (padded ones added to num_padded), or None after recording
        a short video (short_videos="skip") or an unusable one under `label` (the file or shard member)."""
        try:
            clips, padded = decode_clips(
                src,
                name=name,
                sampling=sampling,
                num_clips=num_clips,
                gen=gen,
                backend=backend,
                short_videos=short_videos,
                threads=threads,
            )
        except ShortVideo as err:
            self.record_short(label, str(err), where)
            return None
        except UnusableVideo as err:
            self.record(label, str(err), where)
            return None
        if padded:
            self.num_padded += len(clips)
        return clips

    def record(self, name: str, reason: str, where: str = "") -> None:
        self.num_bad += 1
        if name not in self.bad_files:
            self.bad_files[name] = reason
            if len(self.bad_files) <= MAX_NAMED_WARNINGS:
                more = " (further bad files are counted silently)" if len(self.bad_files) == MAX_NAMED_WARNINGS else ""
                at = f" ({where})" if where else ""
                warnings.warn(f"skipping video {name}{at}: {reason}{more}", stacklevel=3)
        if self.num_attempts >= self.min_attempts and self.num_bad > self.max_bad_fraction * self.num_attempts:
            raise RuntimeError(self.summary("too many unusable videos"))

    def summary(self, what: str) -> str:
        listed = "\n".join(f"  {p}: {r}" for p, r in list(self.bad_files.items())[:20])
        extra = len(self.bad_files) - 20
        tail = f"\n  ... and {extra} more" if extra > 0 else ""
        return (
            f"{what}: {self.num_bad} of {self.num_attempts} load attempts failed in this process "
            f"(max_bad_fraction={self.max_bad_fraction}); files:\n{listed}{tail}"
        )


class VideoDataset:
    """Map-style dataset over CSV lists and folders; keys are (index, draw).

    Returns {"video": float [C, T, S, S] (or a list of num_clips of them), "label": int, "index": int}.
    """

    def __init__(
        self,
        *,
        csv_paths: Sequence[str | os.PathLike] = (),
        folders: Sequence[str | os.PathLike] = (),
        frames_per_clip: int = 16,
        frame_step: int = 4,
        fps: float = 0.0,
        duration: float = 0.0,
        num_clips: int = 1,
        transform: Transform | None = None,
        backend: str = "auto",
        max_bad_fraction: float = 0.05,
        seed: int = 0,
        min_attempts: int = 20,
        short_videos: str = "pad",
        decode_threads: int = 1,
    ) -> None:
        """transform(frames uint8 [T, H, W, C], gen) -> float [C, T, S, S]; None gives the ImageNet-normalised
        clip at its decoded size. Exactly one of frame_step, fps, duration is > 0 (ClipSampling).
        min_attempts: loads attempted before max_bad_fraction is enforced. short_videos: pad | skip."""
        if short_videos not in SHORT_VIDEO_MODES:
            raise ValueError(f"short_videos must be one of {SHORT_VIDEO_MODES}, got {short_videos!r}")
        self.short_videos = short_videos
        for name, value in (("csv_paths", csv_paths), ("folders", folders)):
            if isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name} must be a sequence of paths, not a single path")
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        self.sampling = ClipSampling(frames_per_clip=frames_per_clip, frame_step=frame_step, fps=fps, duration=duration)
        self.tracker = BadFileTracker(max_bad_fraction=max_bad_fraction, min_attempts=min_attempts)
        self.samples: list[tuple[str, int]] = []
        self.origins: list[tuple[str, int]] = []  # (list file or folder, line number; 0 for folders) per sample
        self.source_ranges: list[range] = []  # sample indices of each list or folder
        self.classes: list[str] = []  # class names of a single folder source
        listings = [(str(p), read_csv_list(p)) for p in csv_paths]
        for folder in folders:
            rows, self.classes = read_folder(folder)
            listings.append((str(folder), rows))
        for origin, rows in listings:
            start = len(self.samples)
            self.samples.extend((path, label) for path, label, _ in rows)
            self.origins.extend((origin, lineno) for _, _, lineno in rows)
            self.source_ranges.append(range(start, len(self.samples)))
        if not self.samples:
            raise ValueError(f"no samples in {[o for o, _ in listings]}")
        self.frames_per_clip = frames_per_clip
        self.num_clips = num_clips
        self.transform = transform
        self.backend, self.decode_threads = backend, decode_threads
        self.seed = seed

    # Counters, kept as attributes of the dataset for callers and tests.
    num_attempts = property(lambda self: self.tracker.num_attempts)
    num_bad = property(lambda self: self.tracker.num_bad)
    bad_files = property(lambda self: self.tracker.bad_files)
    num_padded = property(lambda self: self.tracker.num_padded)
    num_short_skipped = property(lambda self: self.tracker.num_short_skipped)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, draw: int, num_clips: int) -> tuple[list[torch.Tensor], int, torch.Generator]:
        """(num_clips uint8 [T, H, W, C] clips, index actually used, its generator), skipping bad files."""
        n = len(self.samples)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} videos")
        for offset in range(n):
            i = (index + offset) % n
            path = self.samples[i][0]
            origin, lineno = self.origins[i]
            where = f"{origin}:{lineno}" if lineno else origin
            self.tracker.attempt()
            known = self.tracker.known_bad(path)
            if known is not None:
                self.tracker.record(path, known, where)
                continue
            if path in self.tracker.short_files:
                self.tracker.record_short(path, self.tracker.short_files[path], where)
                continue
            gen = make_generator("sample", self.seed, i, draw)
            clips = self.tracker.decode(
                path,
                name=path,
                label=path,
                where=where,
                sampling=self.sampling,
                num_clips=num_clips,
                gen=gen,
                backend=self.backend,
                short_videos=self.short_videos,
                threads=self.decode_threads,
            )
            if clips is not None:
                return clips, i, gen
        raise RuntimeError(self.tracker.summary(f"no usable video in the whole dataset (tried from index {index})"))

    def finish(self, clip: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [T, H, W, C] -> float [C, T, S, S] (the transform) or the normalised clip at its decoded size."""
        if self.transform is None:
            return normalize_clip(clip, IMAGENET_MEAN, IMAGENET_STD)  # [C, T, H, W]
        return self.transform(clip, gen)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, draw = key
        clips, i, gen = self.load(index, draw, self.num_clips)
        videos = [self.finish(c, gen) for c in clips]
        return {"video": videos[0] if self.num_clips == 1 else videos, "label": self.samples[i][1], "index": i}
