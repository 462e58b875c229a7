"""WebDataset-style tar shards of videos: the on-disk format, and reading samples back.

Format (compatible with the `webdataset` library's conventions): a shard is an uncompressed POSIX tar file whose
members are grouped by key, the member name up to its first dot after the last slash. A sample is one key with
  - `<key>.mp4` (or another video extension in VIDEO_EXTENSIONS, or an image extension): the encoded media bytes;
  - `<key>.json`: UTF-8 JSON object with at least "label" (int); optional "path" (the original file), "frames",
    "fps", "duration";
  - or `<key>.cls`: the integer label as ASCII text (when there is no JSON).
Members of one key are stored next to each other. A shard set is named by a list file (one shard path or URL per
line, paths relative to the list file), by a glob, or by a brace pattern `train-{000000..000127}.tar`; a shard may be
a local path, an `http(s)://` URL or a `pipe:` command (`pipe:aws s3 cp s3://bucket/train-000001.tar -`), opened
with the `webdataset` library's `gopen` (URLs through curl).

Reading for training (`sample_stream`) is a `webdataset` pipeline: `ResampledShards` (shards drawn with
replacement, seeded), the stages of `tarfile_to_samples` (stream each tar once, group members by key; each stream
closed once read, or when the pipeline ends) and `shuffle` (a sample buffer); errors go to a handler that counts
and names them instead of stopping the run. `iter_tar_samples` reads
one shard strictly (member names without a key, repeated extensions and damage are errors), for `vjepa data check`.

Shape legend: none (bytes in, bytes out).
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from vjepa.data.media import MEDIA_EXTENSIONS


class ShardFormatError(ValueError):
    """A shard whose member layout is not a sample set (names the shard and the member)."""


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/abc.def.mp4' -> ('dir/abc', 'def.mp4'): key up to the first dot of the base name, then the extension."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        raise ShardFormatError(f"member {name!r} has no '<key>.<extension>' name")
    return (f"{head}/{stem}" if head else stem), ext


def is_remote(url: str) -> bool:
    """A shard read through a URL scheme or a pipe, not a local file."""
    return url.startswith("pipe:") or "://" in url


def iter_tar_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {extension: bytes}) for each sample of one shard (path, URL or pipe:), in stored order (streams
    the tar once)."""
    from webdataset.gopen import gopen

    current_key, current = None, {}
    with gopen(os.fspath(path), "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:  # one pass
        for member in tar:
            if not member.isfile():
                continue
            key, ext = split_member_name(member.name)
            f = tar.extractfile(member)
            data = f.read() if f is not None else b""
            if key != current_key:
                if current_key is not None:
                    yield current_key, current
                current_key, current = key, {}
            if ext in current:
                raise ShardFormatError(f"{path}: member {member.name!r} repeats extension {ext!r} of key {key!r}")
            current[ext] = data
    if current_key is not None:
        yield current_key, current


def sample_media(key: str, parts: dict[str, bytes], shard: str = "?") -> tuple[str, bytes]:
    """(extension, bytes) of the one media member of a sample; ShardFormatError when there is none."""
    for ext, data in parts.items():
        if "." + ext.rsplit(".", 1)[-1].lower() in MEDIA_EXTENSIONS:
            return ext, data
    raise ShardFormatError(f"{shard}: sample {key!r} has no media member (got {sorted(parts)})")


def sample_label(key: str, parts: dict[str, bytes], shard: str = "?") -> int:
    """Integer label of a sample from its .json ("label") or .cls member."""
    if "json" in parts:
        try:
            meta = json.loads(parts["json"].decode("utf-8"))
            return int(meta["label"])
        except (ValueError, KeyError, TypeError) as err:
            raise ShardFormatError(f"{shard}: sample {key!r}: bad .json member ({err})") from None
    if "cls" in parts:
        try:
            return int(parts["cls"].decode("ascii").strip())
        except ValueError:
            raise ShardFormatError(f"{shard}: sample {key!r}: .cls member is not an integer") from None
    raise ShardFormatError(f"{shard}: sample {key!r} has neither a .json nor a .cls member")


_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shard_pattern(spec: str | os.PathLike) -> list[str]:
    """Shards (paths or URLs) named by a list file (.txt), a brace pattern `a-{000..009}.tar`, a glob, or one path
    or URL. Local shards must exist (FileNotFoundError naming the first missing one); remote ones are not checked."""
    spec = str(spec)
    m = _BRACE.search(spec)
    if m:
        lo, hi = m.group(1), m.group(2)
        width = len(lo)
        paths = [spec[: m.start()] + str(i).zfill(width) + spec[m.end() :] for i in range(int(lo), int(hi) + 1)]
    elif spec.endswith(".txt"):
        base = Path(spec).resolve().parent
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"shard list not found: {spec}")
        lines = [ln.strip() for ln in Path(spec).read_text(encoding="utf-8").splitlines()]
        paths = [p if os.path.isabs(p) or is_remote(p) else str(base / p) for p in lines if p]
    elif any(c in spec for c in "*?[") and not is_remote(spec):
        paths = sorted(glob.glob(spec))
    else:
        paths = [spec]
    missing = [p for p in paths if not is_remote(p) and not os.path.isfile(p)]
    if not paths:
        raise FileNotFoundError(f"no shards match {spec}")
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) of {spec} not found, first: {missing[0]}")
    return paths


class NoReadableShard(RuntimeError):
    """A sample stream met only errors: more than its limit in a row, without a sample between them."""


class _Failures:
    """The webdataset error handler of one sample stream: records each error (shard and reason) through `record`
    and keeps going; raises once `limit` errors came in a row without a sample between them."""

    def __init__(self, urls: list[str], record: Callable[[str, str], None], limit: int) -> None:
        self.urls, self.record, self.limit, self.in_a_row = set(urls), record, limit, 0

    def __call__(self, exn: Exception) -> bool:
        url = next((a for a in reversed(exn.args) if isinstance(a, str) and a in self.urls), "?")
        reason = str(exn.args[0]) if exn.args else ""
        self.record(url, f"unreadable shard: {type(exn).__name__}: {reason}")
        self.in_a_row += 1
        if self.in_a_row > self.limit:
            raise NoReadableShard(f"{self.in_a_row} errors in a row, the last in {url}") from exn
        return True  # go on with the next shard

    def reset(self, samples: Iterator[dict]) -> Iterator[dict]:
        for sample in samples:
            self.in_a_row = 0
            yield sample


def _closing(sources: Iterator[dict]) -> Iterator[dict]:
    """webdataset's opened shards, each stream closed when the next shard is asked for, and the last one when the
    pipeline is closed or collected (a stream that stops mid-shard at the end of training would otherwise leave
    its file, pipe or connection open until the garbage collector finds it)."""
    current = None
    try:
        for source in sources:
            _close_quietly(current)
            current = source.get("stream")
            yield source
    finally:
        _close_quietly(current)


def _close_quietly(stream) -> None:
    """Close a shard stream; a failed pipe or URL raises again on close, but its failure was already reported
    through the handler when reading it."""
    if stream is None:
        return
    try:
        stream.close()
    except (OSError, ValueError):
        pass


def _tar_samples(shards: Iterator[dict], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """webdataset's tarfile_to_samples (open each shard, expand its members, group them by key), with _closing."""
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    members = tar_file_expander(_closing(url_opener(shards, handler=handler)), handler=handler)
    return group_by_keys(members, handler=handler)


def sample_stream(
    urls: list[str], *, seed: int, shuffle_buffer: int, record_error: Callable[[str, str], None]
) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """(shard, key, {extension: bytes}) forever: shards of `urls` drawn with replacement, samples
    through a shuffle buffer of `shuffle_buffer`, everything seeded by `seed`. Unreadable shards (missing,
    truncated, corrupt, a failing pipe or URL) are passed to record_error(shard, reason) and skipped; when more than
    4 x len(urls) errors come in a row the stream raises NoReadableShard."""
    import webdataset as wds

    failures = _Failures(urls, record_error, limit=4 * len(urls))
    pipeline = wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, worker_seed=lambda: 0, deterministic=True),  # seed carries rank, worker
        lambda shards: _tar_samples(shards, failures),
        failures.reset,
        wds.shuffle(bufsize=max(1, shuffle_buffer), initial=max(1, shuffle_buffer), rng=random.Random(seed)),
    )
    for sample in pipeline:
        yield sample["__url__"], sample["__key__"], {k: v for k, v in sample.items() if not k.startswith("__")}
