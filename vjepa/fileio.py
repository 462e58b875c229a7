"""Atomic file writes: a reader (or a run resumed after a kill) sees the old file or the new one, never a torn one.

    atomic_write(path, text_or_bytes)         write a temporary sibling, rename it onto path
    with atomic_target(path) as tmp: ...      any writer (torch.save, safetensors, a tar stream) fills `tmp`
    atomic_write_all({path: text, ...})       several files: all temporaries first, then every rename

The temporary is `<name>.tmp` in the same folder (a rename is atomic only within one file system), removed when
the write fails. `durable=True` also fsyncs the file before the rename (for records that must survive a power
loss: shard indexes, the checkpoint pointer). The finished file gets the permissions a plain `open()` would give
it (0666 less the umask): libraries that write through private temporary files (safetensors: 0600) would
otherwise leave files the group cannot read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PathLike = str | os.PathLike


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (os.umask can only be read by setting
    it, which for a moment would give files other threads create mode 0666)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_of(path: PathLike) -> Path:
    """The temporary sibling atomic writes of `path` use: `<name>.tmp`."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def publish_temporary(tmp: PathLike, path: PathLike, *, durable: bool = False) -> None:
    """Rename a finished temporary onto `path` (permissions and fsync as in the module docstring)."""
    os.chmod(tmp, 0o666 & ~_umask())
    if durable:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, path)


@contextmanager
def atomic_target(path: PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield the temporary sibling to write; on a clean exit rename it onto `path`, on an exception remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_of(path)
    try:
        yield tmp
        publish_temporary(tmp, path, durable=durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: PathLike, data: str | bytes, *, durable: bool = False) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns the path."""
    with atomic_target(path, durable=durable) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


def atomic_write_all(files: Mapping[PathLike, str | bytes], *, durable: bool = False) -> None:
    """Several files: every temporary is written before the first rename, so a failure while writing changes none
    of them; the temporaries are removed on failure."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_of(path)
            temps.append((tmp, path))
            if isinstance(data, str):
                tmp.write_text(data, encoding="utf-8")
            else:
                tmp.write_bytes(data)
        for tmp, path in temps:
            publish_temporary(tmp, path, durable=durable)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
