"""Scan a CSV list, a folder of videos or tar shards: decode-check every file, report the bad ones, write a cleaned
list, and summarise frame counts, frame rates, durations and resolutions.

    vjepa data check train.csv --frames-per-clip 16 --frame-step 4 --workers 8 --report check.jsonl \\
        --out-clean train_clean.csv
    vjepa data check videos/ --full
    vjepa data check 'shards/shard-{000000..000127}.tar'

Input (`--type auto` guesses it): a CSV list (`<path> <label>` or `<path>::<label>` per line, parsed like
vjepa.data.video.read_csv_list: relative paths against the list's folder; a malformed line is a bad entry named
file:line and the scan goes on), a folder (media files below it, sorted, labels from the first-level class
subfolders as in vjepa.data.video.read_folder), or tar shards (vjepa.data.shards: a .tar path, a brace pattern, a
glob, or a .txt list of shards; auto picks shards for those and for a .txt file whose first line ends in .tar).

Status of each file: ok, image (a still image that decodes: fine), too_short (decodes, but fewer frames than
needed = max(--min-frames, (--frames-per-clip - 1) * --frame-step + 1)), unreadable (cannot be opened or decoded;
the reason says why; FFmpeg's own log lines from decord are silenced), empty (0 bytes), missing (no such file),
malformed (a list line or shard sample that names no usable file). A video is opened and its first and last frames
decoded (that catches truncated files: their index still promises the missing frames); `--full` decodes every
frame, 16 at a time, and is the only way to find damage between the two (decord's read-ahead thread sometimes
stumbles on it without --full, so without it such a file may come out either way).

Outputs: a summary on stdout (files per status, the first bad files, min / median / max of frames, fps, duration,
width, height and resolution over the readable videos, total hours of the ok ones), progress on stderr,
`--report PATH`: JSON lines, one per entry in input order, with keys source (file:line for lists, the path, or
shard::key), path, label, status, reason, frames, fps, duration (s), width, height, bytes, list_entry;
`--out-clean PATH`: the list_entry of every ok or image entry, in input order. For a list input that is the
original line unchanged (so relative paths stay relative to the original list's folder); for a folder
`<absolute path> <label>`; for shards `<shard path>::<key> <label>`, a keep-list of samples (it is not a CSV list
for the datasets: read_csv_list would split such a line at the `::`).
Exit code: 0 when every entry is ok or an image, 1 when some are bad (outputs are still written), 2 on a usage
error (missing input, nothing to check).

Parallelism: `--workers N` > 1 checks files in N forked processes (results in input order whatever N is). A file
that crashes its worker process (a decoder segfault) is retried alone in a fresh process and reported as
unreadable when that one dies too; with one worker, files are checked in this process.

Not in the official code, which has no data checking: bad files surface there only as retries during training.
Shape legend: none (files in, reports out).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tarfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from vjepa.data.decoders import BACKENDS, DecodeError, open_video, read_image, resolve_backend
from vjepa.data.media import is_image
from vjepa.data.shards import (
    ShardFormatError,
    expand_shard_pattern,
    iter_tar_samples,
    sample_label,
    sample_media,
)
from vjepa.data.video import read_folder, split_list_line

STATUSES = ("ok", "image", "too_short", "unreadable", "empty", "missing", "malformed")
GOOD_STATUSES = ("ok", "image")
INPUT_TYPES = ("auto", "list", "folder", "shards")
FULL_CHUNK = 16  # frames decoded per call with --full
MAX_NAMED_BAD = 10  # bad entries named in the summary


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One file to check. media: a path or the bytes of a shard member; None with a status known without decoding.
    image: decode as a still image (default: from the extension of path). list_entry: its line in a cleaned list."""

    source: str
    path: str | None
    label: int | None
    media: str | bytes | None
    image: bool | None = None
    list_entry: str | None = None
    status: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.image is None:
            object.__setattr__(self, "image", is_image(self.path or ""))

    @classmethod
    def bad(
        cls,
        source: str,
        status: str,
        reason: str,
        *,
        path: str | None = None,
        label: int | None = None,
        list_entry: str | None = None,
    ) -> Entry:
        """An entry whose status is known without decoding (malformed line, unreadable shard, crashed decoder)."""
        return cls(
            source=source,
            path=path,
            label=label,
            media=None,
            image=False,
            list_entry=list_entry,
            status=status,
            reason=reason,
        )


def check_media(
    media: str | os.PathLike | bytes,
    *,
    image: bool = False,
    needed_frames: int = 1,
    full: bool = False,
    backend: str = "auto",
) -> dict:
    """Check one video (or image, with image=True): {status, reason, frames, fps, duration, width, height, bytes}."""
    rec = {"status": "ok", "reason": None, "frames": None, "fps": None, "duration": None}
    rec.update({"width": None, "height": None, "bytes": None})
    if isinstance(media, bytes | bytearray):
        name, rec["bytes"] = "<bytes>", len(media)
    else:
        name = media = os.fspath(media)
        if not os.path.isfile(media):
            kind = "not a regular file" if os.path.exists(media) else "no such file"
            return {**rec, "status": "missing", "reason": f"{name}: {kind}"}
        rec["bytes"] = os.path.getsize(media)
    if rec["bytes"] == 0:
        return {**rec, "status": "empty", "reason": f"{name}: 0 bytes"}
    if image:
        try:
            pixels = read_image(media)  # [H, W, 3]
        except DecodeError as err:
            return {**rec, "status": "unreadable", "reason": str(err)}
        return {**rec, "status": "image", "height": int(pixels.shape[0]), "width": int(pixels.shape[1])}
    try:
        with open_video(media, backend=backend) as reader:
            n, fps = reader.num_frames, reader.fps
            rec.update(frames=n, fps=round(fps, 6), duration=round(n / fps, 6) if fps > 0 else None)
            if full:
                for start in range(0, n, FULL_CHUNK):
                    reader.get_frames(range(start, min(start + FULL_CHUNK, n)))
            else:
                reader.get_frames(sorted({0, n - 1}))
            rec.update(width=reader.width, height=reader.height)
    except DecodeError as err:
        return {**rec, "status": "unreadable", "reason": str(err)}
    if n < needed_frames:
        return {**rec, "status": "too_short", "reason": f"{name}: {n} frames, {needed_frames} needed"}
    return rec


def _check_entry(entry: Entry, needed_frames: int, full: bool, backend: str) -> dict:
    head = {"source": entry.source, "path": entry.path, "label": entry.label}
    if entry.status is not None:
        result = {"status": entry.status, "reason": entry.reason}
        result.update(dict.fromkeys(("frames", "fps", "duration", "width", "height", "bytes")))
    else:
        result = check_media(entry.media, image=entry.image, needed_frames=needed_frames, full=full, backend=backend)
        if isinstance(entry.media, bytes) and result["reason"]:  # name the shard sample, not "<bytes>"
            result["reason"] = result["reason"].replace("<bytes>", entry.source, 1)
    return {**head, **result, "list_entry": entry.list_entry}


# Inputs ----------------------------------------------------------------------------------------------------------


def list_entries(csv_path: str | os.PathLike) -> Iterator[Entry]:
    """Entries of a CSV list, one per non-blank line; malformed lines become malformed entries (file:line)."""
    csv_path = Path(csv_path)
    base = csv_path.resolve().parent
    with open(csv_path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            where, text = f"{csv_path}:{lineno}", raw.rstrip("\r\n")
            parts = split_list_line(line)
            if len(parts) != 2 or not parts[0]:
                reason = f"{where}: expected '<path> <integer label>', got {line!r}"
                yield Entry.bad(where, "malformed", reason, list_entry=text)
                continue
            try:
                label = int(parts[1])
            except ValueError:
                reason = f"{where}: label {parts[1]!r} is not an integer in {line!r}"
                yield Entry.bad(where, "malformed", reason, list_entry=text)
                continue
            full = parts[0] if os.path.isabs(parts[0]) else str(base / parts[0])
            yield Entry(source=where, path=full, label=label, media=full, list_entry=text)


def folder_entries(folder: str | os.PathLike) -> Iterator[Entry]:
    """Entries of the media files below a folder (vjepa.data.video.read_folder: sorted, class-folder labels)."""
    rows, _ = read_folder(folder)
    for path, label, _ in rows:
        yield Entry(source=path, path=path, label=label, media=path, list_entry=f"{path} {label}")


def shard_entries(shards: list[str]) -> Iterator[Entry]:
    """Entries of the samples of tar shards; a shard that cannot be read (further) adds one unreadable entry."""
    for shard in shards:
        try:
            for key, parts in iter_tar_samples(shard):
                where = f"{shard}::{key}"
                try:
                    ext, data = sample_media(key, parts, shard)
                    label = sample_label(key, parts, shard)
                except ShardFormatError as err:
                    yield Entry.bad(where, "malformed", str(err), path=where)
                    continue
                yield Entry(
                    source=where,
                    path=where,
                    label=label,
                    media=data,
                    image=is_image("x." + ext),
                    list_entry=f"{where} {label}",
                )
        except (tarfile.TarError, ShardFormatError, OSError, EOFError) as err:
            yield Entry.bad(shard, "unreadable", f"{shard}: {err}", path=shard)


def detect_input_type(spec: str) -> str:
    """'folder', 'shards' or 'list' for an input spec (see the module docstring); FileNotFoundError when absent."""
    if os.path.isdir(spec):
        return "folder"
    if os.path.isfile(spec):
        if spec.endswith(".tar"):
            return "shards"
        if spec.endswith(".txt"):
            with open(spec, encoding="utf-8") as f:
                first = next((ln.strip() for ln in f if ln.strip()), "")
            return "shards" if first.endswith(".tar") else "list"
        return "list"
    if any(c in spec for c in "*?[{"):
        return "shards"  # a glob or brace pattern; expand_shard_pattern names what is missing
    raise FileNotFoundError(f"input not found: {spec}")


def input_entries(spec: str, input_type: str = "auto") -> tuple[str, Iterator[Entry]]:
    """(input type, its entries); FileNotFoundError / ValueError (as usage errors) for a bad input."""
    if input_type not in INPUT_TYPES:
        raise ValueError(f"unknown input type {input_type!r}; valid: {', '.join(INPUT_TYPES)}")
    kind = detect_input_type(spec) if input_type == "auto" else input_type
    if kind == "folder":
        return kind, folder_entries(spec)
    if kind == "shards":
        return kind, shard_entries(expand_shard_pattern(spec))
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"CSV list not found: {spec}")
    return kind, list_entries(spec)


# Scanning --------------------------------------------------------------------------------------------------------


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _ordered_map(fn: Callable[[Entry], dict], entries: Iterable[Entry], workers: int) -> Iterator[dict]:
    """fn over entries in input order; with workers > 1 in forked processes, a bounded window of tasks in flight.
    When a worker dies, the tasks in flight are redone one by one in fresh processes."""
    if workers <= 1:
        yield from map(fn, entries)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    pending: deque[tuple[Entry, Future]] = deque()
    source = iter(entries)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
    try:
        while True:
            while len(pending) < 4 * workers and (entry := next(source, None)) is not None:
                pending.append((entry, pool.submit(fn, entry)))
            if not pending:
                return
            entry, future = pending[0]
            try:
                result = future.result()
            except BrokenProcessPool:
                pool.shutdown(cancel_futures=True)
                for entry, future in pending:  # the culprit is among the unfinished: redo each alone
                    finished = future.done() and not future.cancelled() and future.exception() is None
                    yield future.result() if finished else _run_isolated(fn, entry, ctx)
                pending.clear()
                pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
                continue
            pending.popleft()
            yield result
    finally:
        pool.shutdown(cancel_futures=True)


def _run_isolated(fn: Callable[[Entry], dict], entry: Entry, ctx) -> dict:
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker) as solo:
        try:
            return solo.submit(fn, entry).result()
        except BrokenProcessPool:
            reason = f"{entry.source}: the decoder crashed the checking process"
            crashed = Entry.bad(entry.source, "unreadable", reason, path=entry.path, label=entry.label)
            return fn(crashed)


class _Progress:
    def __init__(self, total: int | None, quiet: bool, every_s: float = 2.0) -> None:
        self.total, self.quiet, self.every_s = total, quiet, every_s
        self.done = self.bad = 0
        self.start = self.last = time.monotonic()

    def update(self, record: dict) -> None:
        self.done += 1
        self.bad += record["status"] not in GOOD_STATUSES
        now = time.monotonic()
        if not self.quiet and (now - self.last >= self.every_s or self.done == self.total):
            self.last = now
            of = f"/{self.total}" if self.total is not None else ""
            rate = self.done / max(now - self.start, 1e-9)
            print(f"check: {self.done}{of} files, {self.bad} bad, {rate:.1f} files/s", file=sys.stderr, flush=True)


def scan(
    spec: str | os.PathLike,
    *,
    input_type: str = "auto",
    needed_frames: int = 1,
    full: bool = False,
    backend: str = "auto",
    workers: int = 1,
    quiet: bool = True,
) -> list[dict]:
    """Check every entry of an input; one record per entry, in input order (see the module docstring)."""
    backend = resolve_backend(backend)
    kind, entries = input_entries(os.fspath(spec), input_type)
    if kind != "shards":  # cheap to enumerate first, which gives the progress a total; shards are streamed
        entries = list(entries)
    progress = _Progress(len(entries) if kind != "shards" else None, quiet)
    fn = _Checker(needed_frames, full, backend)
    records = []
    for record in _ordered_map(fn, entries, workers):
        progress.update(record)
        records.append(record)
    return records


@dataclass(frozen=True)
class _Checker:
    """_check_entry with fixed options (a picklable callable for the worker processes)."""

    needed_frames: int
    full: bool
    backend: str

    def __call__(self, entry: Entry) -> dict:
        return _check_entry(entry, self.needed_frames, self.full, self.backend)


# Reporting -------------------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if digits else str(int(value))


def summary_text(records: list[dict], *, needed_frames: int = 1) -> str:
    """The stdout summary: files per status, the first bad entries, statistics of the readable videos."""
    counts = {s: 0 for s in STATUSES}
    for r in records:
        counts[r["status"]] += 1
    bad = [r for r in records if r["status"] not in GOOD_STATUSES]
    lines = [f"checked {len(records)} entries (videos need >= {needed_frames} frames)", f"{'status':<12}{'files':>8}"]
    lines += [f"{s:<12}{counts[s]:>8}" for s in STATUSES]
    lines.append(f"{'bad':<12}{len(bad):>8}")
    if bad:
        lines.append(f"first bad entries ({min(len(bad), MAX_NAMED_BAD)} of {len(bad)}):")
        lines += [f"  {r['status']}: {r['reason'] or r['source']}" for r in bad[:MAX_NAMED_BAD]]
    videos = [r for r in records if r["status"] in ("ok", "too_short")]
    if videos:
        lines.append(f"over {len(videos)} readable videos:")
        lines.append(f"{'':<12}{'min':>12}{'median':>12}{'max':>12}")
        for key, digits in (("frames", 0), ("fps", 3), ("duration", 2), ("width", 0), ("height", 0)):
            values = sorted(r[key] for r in videos if r[key] is not None)
            if values:
                row = [_fmt(v, digits) for v in (values[0], statistics.median_low(values), values[-1])]
                name = "duration s" if key == "duration" else key
                lines.append(f"{name:<12}" + "".join(f"{v:>12}" for v in row))
        sizes = sorted((r["width"] * r["height"], f"{r['width']}x{r['height']}") for r in videos if r["width"])
        if sizes:
            row = [sizes[0][1], statistics.median_low(sizes)[1], sizes[-1][1]]
            lines.append(f"{'resolution':<12}" + "".join(f"{v:>12}" for v in row))
    hours = sum(r["duration"] or 0.0 for r in records if r["status"] == "ok") / 3600
    lines.append(f"total hours (ok videos): {hours:.4f}")
    return "\n".join(lines)


def write_report(records: list[dict], path: str | os.PathLike) -> None:
    """JSON lines, one record per entry."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def write_clean_list(records: list[dict], path: str | os.PathLike) -> int:
    """The list_entry of every good record, one per line; returns how many were written."""
    good = [r["list_entry"] for r in records if r["status"] in GOOD_STATUSES and r["list_entry"] is not None]
    Path(path).write_text("".join(f"{line}\n" for line in good), encoding="utf-8")
    return len(good)


# Command line ----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", help="CSV list, folder of videos, or tar shards (.tar, brace pattern, glob, .txt list)"
    )
    parser.add_argument("--type", choices=INPUT_TYPES, default="auto", help="input type (default: guess)")
    parser.add_argument(
        "--backend",
        choices=("auto", *BACKENDS),
        default="auto",
        help="video decoder (default: auto: the first that works)",
    )
    parser.add_argument("--min-frames", type=int, default=1, help="fewer frames than this is too_short (default: 1)")
    parser.add_argument("--frames-per-clip", type=int, default=None, help="with --frame-step: frames a clip needs")
    parser.add_argument("--frame-step", type=int, default=1, help="frame step of a clip (default: 1)")
    parser.add_argument("--full", action="store_true", help="decode every frame (default: the first and last)")
    parser.add_argument("--workers", type=int, default=1, help="processes checking files (default: 1)")
    parser.add_argument("--report", default=None, help="write a JSON-lines report of every entry here")
    parser.add_argument("--out-clean", default=None, help="write the good entries as a list here")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _quiet_ffmpeg_logs() -> None:
    """decord lets FFmpeg print a line per bad file to stderr; the report carries the reasons instead."""
    try:
        import decord
    except ImportError:
        return
    decord.logging.set_level(decord.logging.QUIET)


def needed_frames_of(min_frames: int, frames_per_clip: int | None, frame_step: int) -> int:
    """Frames a video needs: max(min_frames, (frames_per_clip - 1) * frame_step + 1)."""
    span = (frames_per_clip - 1) * frame_step + 1 if frames_per_clip is not None else 1
    return max(min_frames, span)


def run(args: argparse.Namespace) -> int:
    """`vjepa data check`: exit code 0 all good, 1 some bad, 2 usage error."""
    if args.min_frames < 1 or args.frame_step < 1 or args.workers < 1 or (args.frames_per_clip or 1) < 1:
        print(
            "vjepa data check: --min-frames, --frames-per-clip, --frame-step, --workers must be >= 1", file=sys.stderr
        )
        return 2
    try:
        args.backend = resolve_backend(args.backend)
    except ImportError as err:
        print(f"vjepa data check: backend {args.backend}: {err}", file=sys.stderr)
        return 2
    needed = needed_frames_of(args.min_frames, args.frames_per_clip, args.frame_step)
    _quiet_ffmpeg_logs()
    try:
        records = scan(
            args.input,
            input_type=args.type,
            needed_frames=needed,
            full=args.full,
            backend=args.backend,
            workers=args.workers,
            quiet=args.quiet,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"vjepa data check: {err}", file=sys.stderr)
        return 2
    if not records:
        print(f"vjepa data check: nothing to check in {args.input}", file=sys.stderr)
        return 2
    print(summary_text(records, needed_frames=needed))
    if args.report:
        write_report(records, args.report)
        print(f"report: {args.report}")
    if args.out_clean:
        kept = write_clean_list(records, args.out_clean)
        print(f"cleaned list: {args.out_clean} ({kept} of {len(records)} entries)")
    return 0 if all(r["status"] in GOOD_STATUSES for r in records) else 1
