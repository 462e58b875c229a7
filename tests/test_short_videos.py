"""Short videos (fewer frames than frames_per_clip spans): padded by default, skipped on request, counted apart
from unreadable files in every source and in the run's log (vjepa/data/video.py, loader.py, train/counters.py).

The short files are real mp4s from the synthetic writer. Shape legend: T frames, H = W = 32, C = 3.
"""

import io
import json
import tarfile
import warnings

import pytest
import torch
from conftest import tiny_cfg

from vjepa.config import ConfigError
from vjepa.data.decoders import open_video
from vjepa.data.loader import build_stream
from vjepa.data.synthetic import render_clip, write_mp4
from vjepa.data.video import ClipSampling, VideoDataset
from vjepa.train.loop import train

pytestmark = pytest.mark.usefixtures("single_thread")

FPC, STEP, SHORT = 8, 2, 5  # a clip spans (8 - 1) * 2 + 1 = 15 frames; the short videos have 5


@pytest.fixture()
def videos(tmp_path):
    """A short video (5 frames), two full ones (24 frames), all 32 px at 8 fps, and an unreadable file."""
    paths = {"short": tmp_path / "short.mp4", "full0": tmp_path / "full0.mp4", "full1": tmp_path / "full1.mp4"}
    write_mp4(paths["short"], render_clip(0, 1, SHORT, 32), fps=8)
    write_mp4(paths["full0"], render_clip(2, 2, 24, 32), fps=8)
    write_mp4(paths["full1"], render_clip(4, 3, 24, 32), fps=8)
    paths["garbage"] = tmp_path / "garbage.mp4"
    paths["garbage"].write_bytes(bytes(range(256)) * 8)
    return paths


def write_csv(path, rows):
    path.write_text("".join(f"{p} {i}\n" for i, p in enumerate(rows)))
    return path


def test_padded_clip_repeats_the_last_decoded_frame(videos):
    from vjepa.data.video import ShortVideo, decode_clips

    with open_video(str(videos["short"]), backend="pyav") as vr:
        every = vr.get_frames(list(range(vr.num_frames)))  # [5, H, W, 3]
    assert every.shape[0] == SHORT
    for sampling in (
        ClipSampling(frames_per_clip=FPC, frame_step=STEP),
        ClipSampling(frames_per_clip=FPC, frame_step=0, fps=4),  # 8 fps video at 4 fps: step 2 as well
    ):
        clips, padded = decode_clips(
            str(videos["short"]),
            name="short.mp4",
            sampling=sampling,
            num_clips=2,
            gen=torch.Generator(),
            backend="pyav",
        )
        assert padded and len(clips) == 2 and clips[0].shape == (FPC, 32, 32, 3)
        for clip in clips:
            for k, index in enumerate([0, 2, 4, 4, 4, 4, 4, 4]):  # min(k * step, 5 - 1)
                assert torch.equal(clip[k], every[index]), k
            assert all(torch.equal(clip[k], every[-1]) for k in range(3, FPC))  # trailing frames: the last one
    _, padded = decode_clips(
        str(videos["full0"]), name="f.mp4", sampling=sampling, num_clips=1, gen=torch.Generator(), backend="pyav"
    )
    assert not padded
    with pytest.raises(ShortVideo, match="too short: 5 frames"):
        decode_clips(str(videos["short"]), name="s.mp4", sampling=sampling, num_clips=1, gen=torch.Generator(),
                     short_videos="skip")  # fmt: skip


def test_short_videos_are_padded_not_bad_and_skip_mode_still_skips(videos, tmp_path):
    csv = write_csv(tmp_path / "list.csv", [videos["short"], videos["full0"]])
    # max_bad_fraction 0 from the first load: a short video counted as bad (the old behaviour) would stop this.
    common = dict(csv_paths=[csv], frames_per_clip=FPC, frame_step=STEP, max_bad_fraction=0.0, min_attempts=1)
    ds = VideoDataset(**common)
    item = ds[(0, 0)]
    assert item["index"] == 0 and item["video"].shape == (3, FPC, 32, 32)
    assert (ds.num_padded, ds.num_short_skipped, ds.num_bad) == (1, 0, 0)
    skip = VideoDataset(**common, short_videos="skip")
    with pytest.warns(UserWarning, match="skipping short video"):
        assert skip[(0, 0)]["index"] == 1  # moved on to the full video, without tripping max_bad_fraction 0
    assert (skip.num_padded, skip.num_short_skipped, skip.num_bad) == (0, 1, 0)
    assert skip[(0, 1)]["index"] == 1 and skip.num_short_skipped == 2  # remembered: counted again, no warning
    with pytest.raises(ValueError, match="short_videos"):
        VideoDataset(**common, short_videos="drop")
    with pytest.raises(ConfigError, match="data.short_videos"):
        tiny_cfg(tmp_path / "x", "data.short_videos=drop")


def _shard(path, videos):
    with tarfile.open(path, "w") as tar:
        for i, name in enumerate(videos):
            for ext, data in (("mp4", name.read_bytes()), ("json", json.dumps({"label": i}).encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["csv", "folder", "shards"])
def test_every_source_pads_and_counts_per_batch(videos, tmp_path, kind):
    rows = [videos["short"], videos["garbage"], videos["full0"], videos["full1"]]
    if kind == "csv":
        path = write_csv(tmp_path / "list.csv", rows)
    elif kind == "folder":
        path = tmp_path
    else:
        path = _shard(tmp_path / "s.tar", rows)
    extra = ["data.shard_shuffle=1"] if kind == "shards" else []
    cfg = tiny_cfg(tmp_path / "run", f"data.sources=[{{kind: {kind}, path: '{path}'}}]", "data.frame_step=2",
                   "data.max_bad_fraction=0.5", *extra)  # fmt: skip
    stream = build_stream(cfg, rank=0, world_size=1, start_step=0, end_step=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(stream)  # in this process (no loader workers), so the stream's trackers saw it all
    totals = [sum(b[k] for b in batches) for k in ("short_clips", "short_skipped", "bad_skipped")]
    assert totals == stream.data_counts()  # the per-batch counts add up to what the sources counted
    short, skipped, bad = totals
    assert short >= 1 and skipped == 0 and bad >= 1  # the short video padded, the garbage skipped
    assert all(b["video"].shape == (4, 3, 8, 32, 32) for b in batches)


def test_run_logs_running_totals_and_ends_with_a_summary(videos, tmp_path, capsys):
    csv = write_csv(tmp_path / "list.csv", [videos["short"], videos["garbage"], videos["full0"], videos["full1"]])
    args = [f"data.csv_paths=[{csv}]", "data.source=csv", "data.frame_step=2", "data.max_bad_fraction=0.5"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(tiny_cfg(tmp_path / "run", *args, "optim.total_steps=4"))
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    # Deterministic for this seed (clip order is a function of (seed, step)): one short and one bad per step.
    assert [r["short_clips"] for r in records] == [1, 2, 3, 4]
    assert [r["bad_skipped"] for r in records] == [1, 2, 3, 4]
    assert result["data_counts"] == {"short_clips": 4, "short_skipped": 0, "bad_skipped": 4}
    assert "4 clips padded from short videos, 4 unreadable videos skipped" in capsys.readouterr().out

    # Stopped at step 2 and resumed (with loader workers this time): the totals continue from the checkpoint.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(tiny_cfg(tmp_path / "resumed", *args, "optim.total_steps=4", "train.stop_after=2"))
        again = train(tiny_cfg(tmp_path / "resumed", *args, "optim.total_steps=4", "data.num_workers=2"))
    assert again["data_counts"] == result["data_counts"]
    assert [r["short_clips"] for r in again["history"]] == [3, 4]


def _two_rank_worker(rank: int, port: int, run_dir: str, overrides: list) -> None:
    import os

    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from vjepa.distributed import shutdown

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(tiny_cfg(run_dir, *overrides))
    shutdown()


@pytest.mark.distributed
def test_totals_are_summed_over_ranks(videos, tmp_path):
    import socket

    import torch.multiprocessing as mp

    csv = write_csv(tmp_path / "list.csv", [videos["short"], videos["garbage"], videos["full0"], videos["full1"]])
    args = [f"data.csv_paths=[{csv}]", "data.source=csv", "data.frame_step=2", "data.max_bad_fraction=0.5"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = train(tiny_cfg(tmp_path / "one", *args, "optim.total_steps=4"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = [*args, "optim.total_steps=4", "data.batch_size=2"]  # 2 x 2 = the same global batch of 4
    mp.spawn(_two_rank_worker, args=(port, str(tmp_path / "two"), overrides), nprocs=2, join=True)
    records = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    keys = ("short_clips", "short_skipped", "bad_skipped")
    assert [[r[k] for k in keys] for r in records] == [[r[k] for k in keys] for r in one["history"]]
