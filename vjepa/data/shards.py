"""WebDataset-style tar shards of videos: the on-disk format, and reading samples back.

Format (compatible with the `webdataset` library's conventions): a shard is an uncompressed POSIX tar file whose
members are grouped by key, the member name up to its first dot after the last slash. A sample is one key with
  - `<key>.mp4` (or another video extension in VIDEO_EXTENSIONS, or an image extension): the encoded media bytes;
  - `<key>.json`: UTF-8 JSON object with at least "label" (int); optional "path" (the original file), "frames",
    "fps", "duration";
  - or `<key>.cls`: the integer label as ASCII text (when there is no JSON).
Members of one key are stored next to each other. A shard set is named by a list file (one shard path per line,
relative to the list file), by a glob, or by a brace pattern `train-{000000..000127}.tar`.

Shape legend: none (bytes in, bytes out).
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


class ShardFormatError(ValueError):
    """A shard whose member layout is not a sample set (names the shard and the member)."""


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/abc.def.mp4' -> ('dir/abc', 'def.mp4'): key up to the first dot of the base name, then the extension."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        raise ShardFormatError(f"member {name!r} has no '<key>.<extension>' name")
    return (f"{head}/{stem}" if head else stem), ext


def iter_tar_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {extension: bytes}) for each sample of one shard, in stored order (streams the tar once)."""
    current_key, current = None, {}
    with tarfile.open(path, mode="r|") as tar:  # stream mode: no random access, one pass
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
    """Shard paths named by a list file (.txt), a brace pattern `a-{000..009}.tar`, a glob, or one path."""
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
        paths = [p if os.path.isabs(p) else str(base / p) for p in lines if p]
    elif any(c in spec for c in "*?["):
        paths = sorted(glob.glob(spec))
    else:
        paths = [spec]
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths:
        raise FileNotFoundError(f"no shards match {spec}")
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) of {spec} not found, first: {missing[0]}")
    return paths
