"""Atomic writes (vjepa.fileio): old or new content, never torn; temporaries removed on failure; the finished file
readable as a plain open() would make it (export files included, which safetensors writes 0600)."""

import os
import stat

import pytest
import torch

from vjepa.fileio import atomic_target, atomic_write, atomic_write_all, temporary_of


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_text_bytes_and_permissions(tmp_path, umask_022):
    path = tmp_path / "sub" / "a.txt"
    assert atomic_write(path, "one\n") == path and path.read_text() == "one\n"
    atomic_write(path, b"\x00two", durable=True)
    assert path.read_bytes() == b"\x00two" and _mode(path) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"v": 1}, path)
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_target(path) as tmp:
            assert tmp == temporary_of(path) and tmp.name == "state.pt.tmp"
            tmp.write_bytes(b"half a fil")
            raise RuntimeError("writer failed")
    assert torch.load(path) == {"v": 1} and not temporary_of(path).exists()


def test_atomic_write_all_changes_nothing_when_one_file_fails(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError):
        atomic_write_all({a: "new a", blocker / "c.txt": "c", b: "new b"})
    assert a.read_text() == "old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "blocker"]
    atomic_write_all({a: "new a", b: b"new b"})
    assert a.read_text() == "new a" and b.read_bytes() == b"new b"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_export_files_are_group_readable(tmp_path, umask_022, suffix):
    from vjepa.config import ModelConfig
    from vjepa.exports import Exported, write_export

    encoder = {"w": torch.zeros(2, 2)}
    ex = Exported(
        model=ModelConfig(preset="tiny"), frames_per_clip=8, crop_size=32, step=1, source="t", encoder=encoder
    )
    out = write_export(ex, tmp_path / f"enc{suffix}")
    assert _mode(out) == 0o644, oct(_mode(out))
