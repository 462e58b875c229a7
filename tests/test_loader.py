"""Tests of vjepa/data/loader.py: weighted mixing, repeated sampling, shard streams, determinism, resume, workers.

Oracles: hand-computed apportionments and a loop over all steps for the mixing bound; the world-size-1 stream
for the sliced streams of two ranks; the stream from step 0 for a resumed stream; labels that say which source a
clip came from (synthetic labels 0..11, list labels >= 100, shard labels >= 200).
Shape legend: b per-rank batch, C channels, T frames, S crop size.
"""

import dataclasses
import io
import json
import os
import shutil
import tarfile
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vjepa.config import load_config
from vjepa.data.loader import TrainStream, build_loader, build_stream, mix_counts
from vjepa.data.video import ClipSampling, UnusableVideo, read_csv_list, read_folder
from vjepa.masks.collator import MaskGenerator

pytestmark = pytest.mark.usefixtures("single_thread")


def cfg_with(*extra: str):
    return load_config(
        None,
        [
            "model.preset=tiny",
            "data.frames_per_clip=8",
            "data.frame_step=2",
            "data.crop_size=32",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.synthetic_videos=24",
            "data.source=synthetic",
            "optim.total_steps=40",
            "optim.warmup_steps=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def list_csv(synthetic_csv, tmp_path_factory) -> Path:
    """The 6 synthetic mp4 files with labels 100..105."""
    rows = read_csv_list(synthetic_csv)
    out = tmp_path_factory.mktemp("lists") / "list.csv"
    out.write_text("".join(f"{p} {100 + i}\n" for i, (p, _, _) in enumerate(rows)))
    return out


def write_shard(path: Path, items: list[tuple[str, bytes, int]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, data, label in items:
            for name, payload in ((f"{key}.mp4", data), (f"{key}.json", json.dumps({"label": label}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


@pytest.fixture(scope="module")
def shard_pattern(synthetic_csv, tmp_path_factory) -> str:
    """Three shards of two synthetic videos each, labels 200..205."""
    rows = read_csv_list(synthetic_csv)
    folder = tmp_path_factory.mktemp("shards")
    for s in range(3):
        items = [(f"{i:06d}", Path(rows[i][0]).read_bytes(), 200 + i) for i in (2 * s, 2 * s + 1)]
        write_shard(folder / f"train-{s:03d}.tar", items)
    return str(folder / "train-{000..002}.tar")


def with_workers(cfg, n):
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_workers=n))


def test_mix_counts_hand_values_and_bound():
    assert mix_counts([1, 1, 1], 1, 6).tolist() == [
        [0, 0, 0],
        [1, 0, 0],
        [1, 1, 0],
        [1, 1, 1],
        [2, 1, 1],
        [2, 2, 1],
        [2, 2, 2],
    ]
    assert mix_counts([3, 1], 2, 3).tolist() == [[0, 0], [2, 0], [3, 1], [5, 1]]  # targets 1.5/0.5, 3/1, 4.5/1.5
    weights, units = [0.5, 0.3, 0.2], 7
    cum = mix_counts(weights, units, 500)
    for s in range(501):  # loop oracle: every prefix within one unit of its target, rows sum to s * units
        assert int(cum[s].sum()) == s * units
        for j, w in enumerate(weights):
            assert abs(int(cum[s, j]) - s * units * w) < 1
    assert bool((cum[1:] >= cum[:-1]).all())
    with pytest.raises(ValueError, match="positive"):
        mix_counts([1, 0], 4, 3)


def test_stream_is_independent_of_workers_and_world_size(list_csv):
    cfg = cfg_with(f"data.sources=[{{kind: csv, path: {list_csv}, weight: 1}}, {{kind: synthetic, weight: 1}}]")
    one = list(build_loader(cfg, rank=0, world_size=1, start_step=0, end_step=5))
    two_workers = list(build_loader(with_workers(cfg, 2), rank=0, world_size=1, start_step=0, end_step=5))
    assert [b["step"] for b in two_workers] == list(range(5))
    small = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=2))
    r0 = list(build_loader(small, rank=0, world_size=2, start_step=0, end_step=5))
    r1 = list(build_loader(small, rank=1, world_size=2, start_step=0, end_step=5))
    for a, b, x, y in zip(one, two_workers, r0, r1):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"])
        assert torch.equal(a["video"], torch.cat([x["video"], y["video"]]))
        assert torch.equal(a["label"], torch.cat([x["label"], y["label"]]))
        for m, m0, m1 in zip(a["masks"], x["masks"], y["masks"]):
            assert torch.equal(m.ctx_idx, torch.cat([m0.ctx_idx, m1.ctx_idx]))
    labels = torch.cat([b["label"] for b in one])
    assert (labels >= 100).sum() == 10 and (labels < 100).sum() == 10  # weights 1:1 over 20 samples, exactly


def test_resumed_stream_continues_exactly(list_csv):
    cfg = cfg_with(f"data.sources=[{{kind: csv, path: {list_csv}, weight: 2}}, {{kind: synthetic, weight: 1}}]")
    full = list(build_loader(cfg, rank=0, world_size=1, start_step=0, end_step=8))
    tail = list(build_loader(cfg, rank=0, world_size=1, start_step=5, end_step=8))
    for a, b in zip(full[5:], tail):
        assert a["step"] == b["step"] and torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"])


def test_epochs_cover_every_list_video_once(list_csv):
    cfg = cfg_with(f"data.csv_paths=[{list_csv}]", "data.source=csv", "data.batch_size=3")
    labels = torch.cat([b["label"] for b in build_loader(cfg, rank=0, world_size=1, start_step=0, end_step=4)])
    assert sorted(labels[:6].tolist()) == list(range(100, 106)) and sorted(labels[6:].tolist()) == list(range(100, 106))


def test_per_step_mixing_when_clip_lengths_differ(list_csv):
    cfg = cfg_with(
        f"data.sources=[{{kind: csv, path: {list_csv}, weight: 1, frames_per_clip: 4}},"
        " {kind: synthetic, weight: 2, frames_per_clip: 8}]"
    )
    out = list(build_loader(cfg, rank=0, world_size=1, start_step=0, end_step=6))
    lengths = [b["video"].shape[2] for b in out]
    assert sorted(lengths) == [4, 4, 8, 8, 8, 8]  # 1:2 over six steps, whole steps
    for b in out:
        from_list = bool((b["label"] >= 100).all())
        assert from_list == (b["video"].shape[2] == 4) and (from_list or bool((b["label"] < 100).all()))
        grid_t = b["video"].shape[2] // 2
        assert int(b["masks"][0].tgt_idx.max()) < grid_t * 2 * 2  # masks drawn on this clip length's grid


def test_repeat_masks_and_clips(list_csv):
    masks = cfg_with(f"data.csv_paths=[{list_csv}]", "data.source=csv", "data.repeat=2", "data.repeat_mode=masks")
    b = next(iter(build_loader(masks, rank=0, world_size=1, start_step=0, end_step=1)))
    assert torch.equal(b["video"][0], b["video"][1]) and torch.equal(b["video"][2], b["video"][3])
    assert not torch.equal(b["video"][0], b["video"][2])
    m = b["masks"][0]
    assert not torch.equal(m.tgt_idx[0], m.tgt_idx[1])  # the same clip, its own masks per row
    clips = cfg_with(f"data.csv_paths=[{list_csv}]", "data.source=csv", "data.repeat=2", "data.repeat_mode=clips")
    stream = build_stream(clips, rank=0, world_size=1, start_step=0, end_step=3)
    out = list(DataLoader(stream, batch_size=None))
    ds = stream.sources[0].dataset
    assert ds.num_attempts == 3 * 2  # one decoder pass per two samples
    for b in out:
        assert b["label"][0] == b["label"][1] and b["label"][2] == b["label"][3]
        assert not torch.equal(b["video"][0], b["video"][1])  # two clips of one video, own positions and crops


def test_shard_stream_reads_labels_splits_and_skips_bad(shard_pattern, tmp_path):
    cfg = cfg_with(f"data.sources=[{{kind: shards, path: '{shard_pattern}'}}]", "data.shard_shuffle=2")
    out = list(build_loader(cfg, rank=0, world_size=1, start_step=0, end_step=6))
    labels = torch.cat([b["label"] for b in out])
    assert labels.numel() == 24 and set(labels.tolist()) <= set(range(200, 206)) and len(set(labels.tolist())) >= 4
    assert all(torch.isfinite(b["video"]).all() for b in out)
    # Two loader workers read disjoint shard sets (three shards, two streams: shard 0, 2 vs shard 1).
    two = list(build_loader(with_workers(cfg, 2), rank=0, world_size=1, start_step=0, end_step=6))
    even = {int(x) for b in two[0::2] for x in b["label"]}
    odd = {int(x) for b in two[1::2] for x in b["label"]}
    assert even <= {200, 201, 204, 205} and odd <= {202, 203}
    # A garbage sample and a corrupt shard are skipped and counted.
    good = tarfile.open(shard_pattern.replace("{000..002}", "000")).extractfile("000000.mp4").read()
    write_shard(tmp_path / "s-0.tar", [("a", b"not a video at all" * 50, 1), ("b", good, 2)])
    (tmp_path / "s-1.tar").write_bytes(b"\x00garbage" * 100)
    bad = cfg_with(f"data.sources=[{{kind: shards, path: '{tmp_path}/s-{{0..1}}.tar'}}]", "data.max_bad_fraction=1.0")
    stream = build_stream(bad, rank=0, world_size=1, start_step=0, end_step=2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        got = list(DataLoader(stream, batch_size=None))
    assert all(bool((b["label"] == 2).all()) for b in got)
    tracker = stream.sources[0].tracker
    assert tracker.num_bad >= 2 and any("::a" in k for k in tracker.bad_files)


@pytest.fixture()
def http_folder(shard_pattern):
    """The shard folder served over HTTP on 127.0.0.1 (a thread of this process); yields the base URL."""
    import functools
    import http.server
    import threading

    folder = Path(shard_pattern).parent

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _labels(cfg, steps: int) -> list[int]:
    return [int(x) for b in build_loader(cfg, rank=0, world_size=1, start_step=0, end_step=steps) for x in b["label"]]


@pytest.mark.skipif(shutil.which("curl") is None, reason="webdataset reads http:// shards through curl")
def test_shards_stream_over_http_and_from_a_pipe(shard_pattern, http_folder, tmp_path):
    """The same shards read as files, over HTTP (curl through webdataset's gopen) and from `pipe:cat`: the same
    samples in the same order; a shard list file may mix them; a missing URL is counted as a bad shard."""
    local = _labels(cfg_with(f"data.sources=[{{kind: shards, path: '{shard_pattern}'}}]", "data.shard_shuffle=2"), 4)
    name = Path(shard_pattern).name
    url = f"{http_folder}/{name}"
    over_http = _labels(cfg_with(f"data.sources=[{{kind: shards, path: '{url}'}}]", "data.shard_shuffle=2"), 4)
    assert over_http == local and len(local) == 16 and set(local) <= set(range(200, 206))
    folder = Path(shard_pattern).parent
    listed = tmp_path / "shards.txt"
    listed.write_text(f"{http_folder}/train-000.tar\npipe:cat {folder}/train-001.tar\n{folder}/train-002.tar\n")
    mixed = _labels(cfg_with(f"data.sources=[{{kind: shards, path: '{listed}'}}]", "data.shard_shuffle=2"), 4)
    assert mixed == local
    missing = tmp_path / "missing.txt"
    missing.write_text(f"{http_folder}/no-such-shard.tar\n{folder}/train-001.tar\n")
    cfg = cfg_with(f"data.sources=[{{kind: shards, path: '{missing}'}}]", "data.max_bad_fraction=1.0")
    stream = build_stream(cfg, rank=0, world_size=1, start_step=0, end_step=4)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        got = [int(x) for b in DataLoader(stream, batch_size=None) for x in b["label"]]
    assert set(got) <= {202, 203}
    tracker = stream.sources[0].tracker
    assert any("no-such-shard.tar" in k for k in tracker.bad_files), tracker.bad_files


def test_images_in_a_list_and_folder_source(tmp_path, list_csv):
    img = tmp_path / "still.png"
    Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()).save(img)
    csv = tmp_path / "imgs.csv"
    csv.write_text(f"{img}::7\n")
    assert read_csv_list(csv) == [(str(img), 7, 1)]
    cfg = cfg_with(f"data.csv_paths=[{csv}]", "data.source=csv", "data.batch_size=2")
    b = next(iter(build_loader(cfg, rank=0, world_size=1, start_step=0, end_step=1)))
    v = b["video"]  # [2, C, T, S, S]
    assert v.shape == (2, 3, 8, 32, 32) and torch.equal(v[:, :, :1].expand_as(v), v)  # every frame the same
    root = tmp_path / "folder"
    for cls in ("b_cls", "a_cls"):
        (root / cls).mkdir(parents=True)
    rows = read_csv_list(list_csv)
    os.symlink(rows[0][0], root / "a_cls" / "x.mp4")
    os.symlink(rows[1][0], root / "b_cls" / "y.mp4")
    found, classes = read_folder(root)
    assert classes == ["a_cls", "b_cls"] and [lab for _, lab, _ in found] == [0, 1]
    fcfg = cfg_with(f"data.sources=[{{kind: folder, path: {root}}}]", "data.batch_size=2")
    fb = next(iter(build_loader(fcfg, rank=0, world_size=1, start_step=0, end_step=1)))
    assert sorted(fb["label"].tolist()) == [0, 1]


def test_clip_sampling_rules():
    assert ClipSampling(frames_per_clip=16, frame_step=4).step_for(30.0) == 4
    fps = ClipSampling(frames_per_clip=16, frame_step=0, fps=7.5)
    assert fps.step_for(30.0) == 4 and fps.step_for(25.0) == 3 and fps.step_for(5.0) == 1
    dur = ClipSampling(frames_per_clip=16, frame_step=0, duration=2.0)
    assert dur.step_for(30.0) == 4 and dur.step_for(24.0) == 3 and dur.span(4) == 61
    with pytest.raises(UnusableVideo, match="frame rate"):
        fps.step_for(0.0)
    with pytest.raises(ValueError, match="exactly one"):
        ClipSampling(frames_per_clip=16, frame_step=4, fps=8)
    with pytest.raises(Exception, match="exactly one of frame_step, fps, duration"):
        cfg_with("data.fps=8")
    with pytest.raises(Exception, match="data.repeat=3"):
        cfg_with("data.repeat=3")


def test_fps_sampling_reads_the_right_frames(list_csv):
    # The synthetic mp4 files are 8 fps: fps 4 means step 2, the same clips as frame_step 2.
    a = cfg_with(f"data.csv_paths=[{list_csv}]", "data.source=csv")
    b = cfg_with(f"data.csv_paths=[{list_csv}]", "data.source=csv", "data.frame_step=0", "data.fps=4")
    x = next(iter(build_loader(a, rank=0, world_size=1, start_step=0, end_step=1)))
    y = next(iter(build_loader(b, rank=0, world_size=1, start_step=0, end_step=1)))
    assert torch.equal(x["video"], y["video"])


class _Dies:
    frames_per_clip = 8

    def unit(self, n, k, mode, ctx):
        os._exit(3)


def test_a_dead_loader_worker_fails_the_run_fast():
    grid_gen = MaskGenerator(grid=(4, 2, 2), specs=cfg_with().mask.families, seed=0)
    stream = TrainStream(
        sources=[_Dies()],
        weights=[1.0],
        batch_size=2,
        repeat=1,
        repeat_mode="clips",
        rank=0,
        world_size=1,
        seed=0,
        start_step=0,
        end_step=3,
        mask_generators={8: grid_gen},
    )
    t0 = time.time()
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        list(DataLoader(stream, batch_size=None, num_workers=1, timeout=60))
    assert time.time() - t0 < 30


def test_decord_failures_fall_back_to_pyav(tmp_path):
    """decord 0.6 cannot decode this valid 48-px video; the decord backend hands it to PyAV with the same draw."""
    from vjepa.data.decoders import DecodeError, open_video
    from vjepa.data.synthetic import render_clip, write_mp4
    from vjepa.data.video import load_clips

    path = str(tmp_path / "narrow.mp4")
    write_mp4(path, render_clip(0, 0, 20, 48))
    with pytest.raises(DecodeError):
        with open_video(path, backend="decord") as vr:
            vr.get_frames([0, 1])
    sampling = ClipSampling(frames_per_clip=8, frame_step=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = load_clips(path, name=path, sampling=sampling, num_clips=2, gen=torch.Generator().manual_seed(3),
                         backend="decord")  # fmt: skip
    want = load_clips(path, name=path, sampling=sampling, num_clips=2, gen=torch.Generator().manual_seed(3),
                      backend="pyav")  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert any("decoded it with PyAV" in str(w.message) for w in caught)


def test_worker_batches_are_built_in_shared_memory():
    """In a loader worker the batch is stacked straight into shared memory (one copy, as default_collate does);
    in the main process it is an ordinary tensor; the values are those of torch.stack either way."""
    from vjepa.data.loader import stack_for_transfer

    clips = [torch.full((3, 2, 4, 4), float(i)) for i in range(3)]

    class Batches(torch.utils.data.IterableDataset):
        def __iter__(self):
            out = stack_for_transfer(clips)
            yield out, out.is_shared()

    here = stack_for_transfer(clips)
    assert torch.equal(here, torch.stack(clips)) and not here.is_shared()
    ((video, shared),) = list(DataLoader(Batches(), batch_size=None, num_workers=1, timeout=60))
    assert shared and torch.equal(video, torch.stack(clips))


def test_an_abandoned_shard_stream_closes_its_file(tmp_path):
    """Training stops mid-shard: the stream's open shard is closed when the stream is dropped (before, the file
    stayed open until the garbage collector warned about it, inside whatever test or code ran then)."""
    import gc

    from vjepa.data.shards import sample_stream

    for i in range(2):
        with tarfile.open(tmp_path / f"s{i}.tar", "w") as tar:
            for k in range(5):
                for ext, data in (("json", b'{"label": 1}'), ("mp4", b"x" * 100)):
                    info = tarfile.TarInfo(f"{k:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    stream = sample_stream([str(tmp_path / "s0.tar"), str(tmp_path / "s1.tar")], seed=0, shuffle_buffer=1,
                           record_error=lambda *a: None)  # fmt: skip
    assert len([next(stream) for _ in range(3)]) == 3  # stopped mid-shard
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del stream
        gc.collect()
    ours = [
        str(w.message) for w in caught if issubclass(w.category, ResourceWarning) and str(tmp_path) in str(w.message)
    ]
    assert not ours, ours  # (files other code left open may be collected here too: only this test's shards count)


def test_a_finished_training_stream_has_closed_its_shards(shard_pattern):
    """When the stream's iteration ends (its last step, or the loader dropped early), the shard stream is ended at
    once: nothing is left open for the garbage collector to find later, whatever holds the stream object."""
    cfg = cfg_with(f"data.sources=[{{kind: shards, path: '{shard_pattern}'}}]", "data.shard_shuffle=2")
    stream = build_stream(cfg, rank=0, world_size=1, start_step=0, end_step=2)
    assert len(list(DataLoader(stream, batch_size=None))) == 2
    assert stream.sources[0]._samples is None
    batches = iter(DataLoader(stream, batch_size=None))
    next(batches)
    assert stream.sources[0]._samples is not None
    del batches  # dropped after one step: its generator is closed, so is the shard stream
    assert stream.sources[0]._samples is None
