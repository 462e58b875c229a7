"""Pack the videos of a CSV list into WebDataset-style tar shards, optionally re-encoded (resumable, parallel).

    vjepa data make-shards train.csv --out shards/train --workers 8
    vjepa data make-shards train.csv --out shards/train256 --short-side 256 --keyint 16 --shuffle-seed 0 --workers 8

Output: `shard-000000.tar`, `shard-000001.tar`, ... in the format of vjepa/data/shards.py, each at most
`--shard-size-mb` MiB (a larger sample gets a shard of its own) and `--max-per-shard` samples; at the end
`shards.txt` (shard names, for expand_shard_pattern) and `skipped.txt` (`line<TAB>path<TAB>reason` per bad row).
Sample key: the row's index in the list, 9 digits (`000000042`); members `<key>.<ext>` (the media) and `<key>.json`
{"label", "path", "line", "frames", "fps", "width", "height", "duration"}, measured on the stored bytes.
`--shuffle-seed` stores rows in the order of blake2b(seed, row) (the same in every Python/torch version); shards
are read sequentially, so this mixes the classes within a shard.

Stored as-is, a file keeps its bytes and (lower-cased) extension, which must be in VIDEO_EXTENSIONS. Re-encoding
(`--reencode`, implied by `--short-side`, `--keyint`, `--crf`) decodes with PyAV, resizes with swscale's bicubic
filter (antialiased when shrinking) to the shorter side `--short-side` (aspect kept, sides even), and encodes
libx264 yuv420p (crf 23 by default; with `--keyint`, a keyframe exactly every keyint frames and nowhere else)
into faststart mp4 at the source's average frame rate (frames renumbered: variable-rate sources become
constant-rate); audio, rotation and colour tags are dropped.

Shards are written with the `webdataset` library's TarWriter (the members of a sample in sorted extension order,
`.json` before `.mp4`). Determinism: tar members have fixed names, order, mtime, uid, gid and mode; workers decode
and encode (one thread each, x264 included, its macroblock tree off: see reencode.py) while the main process writes
samples in storage order; so the same list and options give the same bytes whatever `--workers` is and whatever ran
before, for one PyAV build (its FFmpeg and x264) on the CPUs we tested; another build gives other re-encoded bytes,
the same shard layout, keys and stored-as-is bytes, and frames equal to lossy-codec accuracy.

Resume: a shard is written as `<name>.tmp` and renamed when complete, then a line {"shard", "first", "last",
"count", "bytes", "sha256", "skipped"} is appended to `manifest.jsonl`, whose first line records the list's sha256,
row count and options. first/last are positions in storage order (row indices unless shuffled), bad rows inside
the range included. A re-run with the same list and options keeps the listed shards found with their recorded
size, deletes our other files (.tmp, unlisted shards) and continues after the last kept row; another list or
other options are an error naming the differences (`--overwrite` deletes our files and starts over).

Bad inputs (missing, empty, unreadable, undecodable, truncated: fewer frames than the header says or a corrupt
packet) are skipped, listed in skipped.txt, the first few named in warnings; more than `--max-bad-fraction` of
the rows bad is an error. `--verify demux` checks stored-as-is files by reading their packets (faster, misses
corrupt bitstreams) instead of decoding every frame.

Not in the official code, which reads raw files through CSV lists. Shape legend: none (files in, shards out).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import tarfile
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from vjepa.data.media import VIDEO_EXTENSIONS
from vjepa.data.shards import split_member_name
from vjepa.data.video import read_csv_list
from vjepa.fileio import atomic_write, publish_temporary, temporary_of
from vjepa.seeding import derive_seed
from vjepa.tools.reencode import BadVideo, probe_video, reencode_video, short_error

MANIFEST = "manifest.jsonl"
SHARD_LIST = "shards.txt"
SKIPPED = "skipped.txt"
FORMAT_VERSION = 1
KEY_DIGITS = 9
MAX_NAMED_WARNINGS = 5
DEFAULT_CRF = 23
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
VERIFY_MODES = ("decode", "demux")
_MIB = 1 << 20


class MakeShardsError(RuntimeError):
    """A run that cannot go on: option mismatch with an earlier run, too many bad videos, unusable output folder."""


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


@dataclass(frozen=True, kw_only=True)
class ShardOptions:
    """Everything that decides the shard bytes (see the module docstring); record() goes into the manifest header.

    Re-encoding happens when reencode is set or any of short_side, keyint, crf is (crf then defaults to 23)."""

    shard_size_mb: float = 1024.0
    max_per_shard: int | None = None
    shuffle_seed: int | None = None
    verify: str = "decode"  # or "demux"; for files stored as-is (re-encoding always decodes)
    reencode: bool = False
    short_side: int | None = None
    keyint: int | None = None
    crf: int | None = None
    preset: str = "medium"

    def __post_init__(self) -> None:
        checks = [
            (self.shard_size_mb > 0, "shard_size_mb must be > 0"),
            (self.max_per_shard is None or self.max_per_shard >= 1, "max_per_shard must be >= 1"),
            (self.verify in VERIFY_MODES, f"verify must be one of {VERIFY_MODES}"),
            (
                self.short_side is None or (self.short_side >= 2 and self.short_side % 2 == 0),
                "short_side must be even and >= 2",
            ),
            (self.keyint is None or self.keyint >= 1, "keyint must be >= 1"),
            (self.crf is None or 0 <= self.crf <= 51, "crf must be in [0, 51]"),
            (self.preset in X264_PRESETS, f"preset must be one of {X264_PRESETS}"),
        ]
        problems = [text for ok, text in checks if not ok]
        if problems:
            raise ValueError(f"bad ShardOptions ({'; '.join(problems)}): {self}")

    @property
    def reencodes(self) -> bool:
        return self.reencode or any(v is not None for v in (self.short_side, self.keyint, self.crf))

    def record(self) -> dict:
        """The options as they act: encoder fields None without re-encoding, verify "decode" with it."""
        if not self.reencodes:
            return {**asdict(self), "short_side": None, "keyint": None, "crf": None, "preset": None}
        crf = DEFAULT_CRF if self.crf is None else self.crf
        return {**asdict(self), "reencode": True, "verify": "decode", "crf": crf}


def storage_order(num_rows: int, shuffle_seed: int | None) -> list[int]:
    """Row indices in storage order: the list order, or sorted by blake2b(seed, row) (version-independent)."""
    if shuffle_seed is None:
        return list(range(num_rows))
    return sorted(range(num_rows), key=lambda i: derive_seed("make-shards", shuffle_seed, i))


@dataclass(frozen=True)
class _Task:
    pos: int  # position in storage order
    row: int  # index in the list (the sample key)
    path: str
    label: int
    line: int
    options: dict  # ShardOptions.record()


def _load(task: _Task) -> tuple[str, bytes, dict]:
    """(extension, media bytes, measured metadata) of one row; BadVideo when it cannot be stored."""
    path = task.path
    if not os.path.isfile(path):
        raise BadVideo("file not found")
    if os.path.getsize(path) == 0:
        raise BadVideo("empty file (0 bytes)")
    opts = task.options
    if opts["reencode"]:
        with tempfile.TemporaryDirectory(prefix="vjepa-make-shards-") as tmp:
            dst = os.path.join(tmp, "video.mp4")
            encoding = {k: opts[k] for k in ("short_side", "keyint", "crf", "preset")}
            reencode_video(path, dst, **encoding)
            data = Path(dst).read_bytes()
        return "mp4", data, probe_video(data, verify="demux")
    ext = Path(path).suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise BadVideo(f"extension {ext!r} is not one of {VIDEO_EXTENSIONS}; --reencode stores it as .mp4")
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise BadVideo(f"cannot read: {short_error(err)}") from None
    return ext[1:], data, probe_video(data, verify=opts["verify"])


def _process(task: _Task) -> tuple[_Task, str | None, str, bytes, bytes]:
    """Worker entry point: (task, None, extension, media, json) of a sample, or (task, reason skipped, "", b"", b"")."""
    try:
        ext, media, measured = _load(task)
    except BadVideo as err:
        return task, str(err), "", b"", b""
    meta = {"label": task.label, "path": task.path, "line": task.line, **measured}
    return task, None, ext, media, json.dumps(meta, sort_keys=True).encode()


@contextlib.contextmanager
def _results(tasks: Iterable[_Task], workers: int) -> Iterator[Iterator[tuple]]:
    """_process results in task order: in this process (workers <= 1) or in worker processes, 4 per worker queued.

    A worker that dies (e.g. a crash inside FFmpeg) is a MakeShardsError, not a hang."""
    if workers <= 1:
        yield map(_process, tasks)
        return

    def ordered(pool: ProcessPoolExecutor) -> Iterator[tuple]:
        pending = deque()
        for task in itertools.chain(tasks, [None]):
            if task is not None:
                pending.append(pool.submit(_process, task))
            while pending and (task is None or len(pending) >= 4 * workers):
                try:
                    yield pending.popleft().result()
                except BrokenProcessPool as err:
                    raise MakeShardsError(f"a worker process died ({err}); completed shards are kept, re-run") from None

    # fork where there is one: workers only run PyAV (not torch, whose thread pools fork does not copy), and a
    # spawned worker would re-import torch, seconds each
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    try:
        yield ordered(pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- tar shards and the manifest (main process)


class _ShardFile:
    """One shard being written as <name>.tmp; close() renames it and returns its manifest entry."""

    def __init__(self, path: Path, first: int) -> None:
        self.path, self.tmp, self.first = path, temporary_of(path), first
        import webdataset as wds

        self.file = open(self.tmp, "wb")  # closed in close() or discard()
        self.writer = wds.TarWriter(self.file, user="", group="", mode=0o644, mtime=0, encoder=False)
        self.tar = self.writer.tarstream
        self.count = 0

    def size_after(self, members: list[tuple[str, bytes]]) -> int:
        """Size of the closed tar file if these members were added (headers, padding, end blocks, record)."""
        add = sum(tarfile.BLOCKSIZE + -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE for _, data in members)
        end = self.tar.offset + add + 2 * tarfile.BLOCKSIZE
        return -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE

    def add(self, members: list[tuple[str, bytes]]) -> None:
        """One sample: members (f"{key}.{ext}", bytes) of one key."""
        names = [split_member_name(name) for name, _ in members]
        self.writer.write({"__key__": names[0][0], **{ext: data for (_, ext), (_, data) in zip(names, members)}})
        self.count += 1

    def close(self, last: int, skipped: list[list]) -> dict:
        self.writer.close()  # the tar stream; the file is ours
        self.file.close()
        publish_temporary(self.tmp, self.path, durable=True)
        return {
            "shard": self.path.name,
            "first": self.first,
            "last": last,
            "count": self.count,
            "bytes": self.path.stat().st_size,
            "sha256": _sha256(self.path),
            "skipped": skipped,
        }

    def discard(self) -> None:
        self.writer.close()
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _our_files(out: Path) -> list[Path]:
    names = [MANIFEST, SHARD_LIST, SKIPPED]
    found = [out / n for n in names] + [out / (n + ".tmp") for n in names]
    return [p for p in found if p.exists()] + sorted(out.glob("shard-*.tar")) + sorted(out.glob("shard-*.tar.tmp"))


def _header_diffs(old: dict, new: dict) -> list[str]:
    """'key=value now, value in the manifest' for each difference of list contents, format version or options."""

    def flat(h: dict) -> dict:
        return {k: h.get(k) for k in ("version", "input_sha256", "rows")} | h.get("options", {})

    before, now = flat(old), flat(new)
    return [
        f"{k}={v!r} now, {before.get(k, '<absent>')!r} in the manifest" for k, v in now.items() if before.get(k) != v
    ]


def _resume(out: Path, header: dict) -> list[dict]:
    """Manifest entries of the completed shards to keep (validated), after removing everything else of ours."""
    manifest = out / MANIFEST
    if not manifest.exists():
        stale = _our_files(out)
        if stale:
            raise MakeShardsError(
                f"{out} holds {stale[0].name} (and {len(stale) - 1} more of our files) but no {MANIFEST}; "
                "pass --overwrite to delete them and start over"
            )
        atomic_write(manifest, json.dumps({"header": header}, sort_keys=True) + "\n", durable=True)
        return []
    lines = manifest.read_text(encoding="utf-8").splitlines()
    try:
        old = json.loads(lines[0])["header"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise MakeShardsError(f"{manifest} has no header line; pass --overwrite to start over") from None
    diffs = _header_diffs(old, header)
    if diffs:
        raise MakeShardsError(
            f"{out} was made from {old.get('input')} with other contents or options: {'; '.join(diffs)}. Re-run "
            "with the same list and options to resume, or pass --overwrite to delete its shards and start over"
        )
    entries = []
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:  # a line torn by an interruption: the shard it names is redone
            break
        path = out / str(entry.get("shard"))
        if (
            entry.get("shard") != shard_name(len(entries))
            or not path.is_file()
            or path.stat().st_size != entry["bytes"]
        ):
            warnings.warn(f"{path} is missing or not the size in {MANIFEST}: redoing it and what follows", stacklevel=3)
            break
        entries.append(entry)
    if len(entries) != len(lines) - 1:
        atomic_write(
            manifest, "".join(json.dumps(r, sort_keys=True) + "\n" for r in [{"header": old}, *entries]), durable=True
        )
    keep = {out / e["shard"] for e in entries} | {manifest}
    for path in _our_files(out):
        if path not in keep:
            path.unlink()
    return entries


class _Progress:
    """One status line on stderr: rewritten in place on a terminal, a new line every 30 s otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.tty = sys.stderr.isatty()
        self.start = self.last = time.monotonic()

    def update(self, done: int, processed: int, num_bytes: int, skipped: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < (0.5 if self.tty else 30.0)):
            return
        self.last = now
        rate = processed / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 1e7 else "?"
        text = (
            f"make-shards: {done}/{self.total} videos, {rate:.1f} videos/s, {num_bytes / 1e6:.1f} MB written, "
            f"{skipped} skipped, ETA {eta_text}"
        )
        if self.tty:
            print("\r" + text, end="\n" if final else "", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ShardsResult:
    """What a make_shards run left in out_dir (counts cover kept shards from an earlier run too)."""

    out_dir: Path
    shards: list[str]
    num_rows: int
    num_samples: int
    num_skipped: int
    num_bytes: int
    kept_shards: int  # completed shards found and kept from an earlier run
    complete: bool  # False when stopped by stop_after_shards
    seconds: float
    skipped: list[list] = field(default_factory=list)  # [position, path, line, reason]


def make_shards(
    csv_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    options: ShardOptions | None = None,
    workers: int = 1,
    max_bad_fraction: float = 0.05,
    overwrite: bool = False,
    stop_after_shards: int | None = None,
    progress: bool = True,
) -> ShardsResult:
    """Pack the videos of a CSV list into tar shards in out_dir (see the module docstring), resuming an earlier run.

    stop_after_shards: stop once this many shards are completed in this run (complete=False; re-run to go on).
    Raises MakeShardsError (option mismatch, too many bad videos, no usable video), ValueError (bad options or
    list), OSError (no list, unwritable out_dir)."""
    t0 = time.monotonic()
    record = (options or ShardOptions()).record()
    if not 0 <= max_bad_fraction <= 1:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    if record["reencode"]:
        _require_libx264()
    csv_path, out = Path(csv_path), Path(out_dir)
    rows = read_csv_list(csv_path)
    if not rows:
        raise MakeShardsError(f"{csv_path} lists no videos")
    n = len(rows)
    order = storage_order(n, record["shuffle_seed"])
    header = {
        "tool": "vjepa data make-shards",
        "version": FORMAT_VERSION,
        "input": str(csv_path.resolve()),
        "input_sha256": _sha256(csv_path),
        "rows": n,
        "options": record,
    }
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for path in _our_files(out):
            path.unlink()
    entries = _resume(out, header)
    kept = len(entries)
    skipped = [list(s) for e in entries for s in e["skipped"]]
    start = entries[-1]["last"] + 1 if entries else 0
    tasks = (_Task(pos, order[pos], *rows[order[pos]], record) for pos in range(start, n))
    max_bytes = int(record["shard_size_mb"] * _MIB)
    max_count = record["max_per_shard"] or sys.maxsize
    written = sum(e["bytes"] for e in entries)
    bar = _Progress(n, progress)
    shard, first, pending = None, start, []  # open shard, first position of its range, its skipped rows

    def result(complete: bool) -> ShardsResult:
        shards, samples, size = [e["shard"] for e in entries], sum(e["count"] for e in entries), written
        return ShardsResult(out, shards, n, samples, len(skipped), size, kept, complete, time.monotonic() - t0, skipped)

    def finish(last: int) -> None:
        nonlocal shard, written, pending
        entry = shard.close(last, pending)
        _append_line(out / MANIFEST, entry)
        entries.append(entry)
        written += entry["bytes"]
        shard, pending = None, []

    try:
        with _results(tasks, workers) as results:
            for item, reason, ext, media, meta in results:
                if reason is not None:
                    bad = [item.pos, item.path, item.line, reason]
                    skipped.append(bad)
                    pending.append(bad)
                    if len(skipped) <= MAX_NAMED_WARNINGS:
                        more = " (further bad files are only counted)" if len(skipped) == MAX_NAMED_WARNINGS else ""
                        warnings.warn(f"skipping {item.path} ({csv_path}:{item.line}): {reason}{more}", stacklevel=2)
                    if len(skipped) > max_bad_fraction * n:
                        _write_skipped(out, skipped)
                        raise MakeShardsError(
                            f"too many bad videos: {len(skipped)} of {n} rows so far, above max_bad_fraction="
                            f"{max_bad_fraction}; see {out / SKIPPED}, first: {skipped[0][1]}: {skipped[0][3]}"
                        )
                else:
                    key = f"{item.row:0{KEY_DIGITS}d}"
                    members = [(f"{key}.{ext}", media), (f"{key}.json", meta)]
                    if shard is not None and (shard.count >= max_count or shard.size_after(members) > max_bytes):
                        finish(item.pos - 1)
                        if stop_after_shards is not None and len(entries) - kept >= stop_after_shards:
                            return result(complete=False)
                        first = item.pos
                    if shard is None:
                        shard = _ShardFile(out / shard_name(len(entries)), first)
                    shard.add(members)
                done = item.pos + 1
                bar.update(done, done - start, written + (shard.tar.offset if shard else 0), len(skipped))
            if shard is not None:
                finish(n - 1)
    finally:
        if shard is not None:
            shard.discard()
    if not entries:
        _write_skipped(out, skipped)
        raise MakeShardsError(f"no usable video in {csv_path}; see {out / SKIPPED}")
    bar.update(n, n - start, written, len(skipped), final=True)
    _write_skipped(out, skipped)
    atomic_write(out / SHARD_LIST, "".join(e["shard"] + "\n" for e in entries), durable=True)
    return result(complete=True)


def _write_skipped(out: Path, skipped: list[list]) -> None:
    lines = "".join(f"{line}\t{path}\t{reason}\n" for _, path, line, reason in skipped)
    atomic_write(out / SKIPPED, "# line\tpath\treason\n" + lines, durable=True)


def _require_libx264() -> None:
    import av

    try:
        av.codec.Codec("libx264", "w")
    except (av.FFmpegError, ValueError) as err:
        raise MakeShardsError(f"re-encoding needs the libx264 encoder, which this PyAV build lacks ({err})") from None


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vjepa data make-shards LIST.csv --out DIR`."""
    parser.add_argument("list", metavar="LIST.csv", help="CSV list: '<path> <integer label>' per line")
    parser.add_argument("--out", required=True, help="output folder for shard-*.tar, shards.txt, manifest.jsonl")
    parser.add_argument("--shard-size-mb", type=float, default=1024.0, help="target shard size in MiB (1024)")
    parser.add_argument("--max-per-shard", type=int, default=None, help="at most this many samples per shard")
    parser.add_argument("--shuffle-seed", type=int, default=None, help="store rows in a random order from this seed")
    parser.add_argument("--reencode", action="store_true", help="re-encode to H.264 mp4 (implied by the next three)")
    parser.add_argument("--short-side", type=int, default=None, help="resize so the shorter side is this (even)")
    parser.add_argument("--keyint", type=int, default=None, help="a keyframe exactly every this many frames")
    parser.add_argument("--crf", type=int, default=None, help=f"x264 constant rate factor ({DEFAULT_CRF})")
    parser.add_argument("--preset", choices=X264_PRESETS, default="medium", help="x264 preset (medium)")
    parser.add_argument(
        "--verify",
        choices=VERIFY_MODES,
        default="decode",
        help="check files stored as-is by decoding (default) or only reading their packets",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes that read and re-encode (1)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.05, help="stop when more rows are bad (0.05)")
    parser.add_argument("--overwrite", action="store_true", help="delete our files in --out and start over")
    parser.add_argument("--stop-after-shards", type=int, default=None, help="stop after completing this many shards")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    """Run make-shards from parsed arguments; 0 on success, 2 with a one-line error otherwise."""
    try:
        options = ShardOptions(**{f.name: getattr(args, f.name) for f in fields(ShardOptions)})
        result = make_shards(
            args.list,
            args.out,
            options=options,
            workers=args.workers,
            max_bad_fraction=args.max_bad_fraction,
            overwrite=args.overwrite,
            stop_after_shards=args.stop_after_shards,
            progress=not args.quiet,
        )
    except (MakeShardsError, OSError, ValueError) as err:
        print(f"make-shards: error: {err}", file=sys.stderr)
        return 2
    kept = f", {result.kept_shards} kept from an earlier run" if result.kept_shards else ""
    state = "" if result.complete else " (stopped early: re-run the same command to continue)"
    print(
        f"{result.num_samples} samples of {result.num_rows} rows in {len(result.shards)} shards{kept}, "
        f"{result.num_bytes / 1e6:.1f} MB, {result.num_skipped} skipped, {result.seconds:.1f} s -> {result.out_dir}"
        f"{state}"
    )
    return 0
