"""Video and image decoding behind one API: torchcodec, decord or PyAV readers, frame-accurate, from a path or bytes.

open_video(src, backend=...) returns a VideoReader with num_frames, fps, height, width and get_frames(indices)
(uint8 RGB frames, indices in any order, repeats allowed); read_image decodes one image with Pillow. Every
failure to open or decode (missing, empty, garbage or truncated file, index out of range) is a DecodeError that
names the source (the path, or "<bytes>") and the reason. Backends are imported when first used, so the package
imports without them; a missing backend is an ImportError with the pip command. backend="auto" takes the first
of PREFERENCE that works here (resolve_backend): PyAV installs everywhere (its wheels bundle FFmpeg), decord has
wheels for x86-64 only, torchcodec needs FFmpeg's shared libraries (4 to 8) on the system.

Frame index = position in presentation order, as in decord (which indexes the sorted packet timestamps).
The PyAV reader seeks to the keyframe at or before the first wanted frame, decodes forward only as far as the last
wanted one, and maps each decoded frame to its index from its timestamp: index = round((pts - first_pts) *
time_base * fps), exact for constant-frame-rate video; when the frame count had to be found by demuxing (no count
in the header, e.g. mkv/webm) the sorted packet timestamps are kept and indexed exactly like decord does.
Unwanted frames before the last wanted one are not decoded when nothing depends on them: their packets go to the
decoder with FFmpeg's skip_frame = NONREF, which drops non-reference frames (most B-frames of H.264 / HEVC) and
decodes reference frames as usual. The wanted frames are bit for bit those of a full decode (tested against
decord); for clips of every 4th frame about a third less decoding happens (bench/data_loader.py). Wanted
frames further apart than SEEK_GAP frames get their own seek. A seek that lands after the wanted frame is retried
further back; frames without timestamps fall back to decoding from the start and counting. The torchcodec
reader uses torchcodec's "approximate" seek mode (index -> timestamp from the header's frame rate, no scan of the
file) when the header has a frame count, and its "exact" mode (one scan of the packet timestamps, decord's
indexing) when not.

Not in the official code, which decodes with decord from file paths only.

Shape legend: T requested frames, H, W frame height and width, 3 RGB channels.
"""

from __future__ import annotations

import bisect
import io
import os
import weakref
from collections.abc import Sequence
from fractions import Fraction

import torch

BACKENDS = ("torchcodec", "decord", "pyav")
PREFERENCE = ("pyav", "decord", "torchcodec")  # the order "auto" tries them in (fastest first: bench/data_loader.py)
SEEK_GAP = 64  # wanted frames further apart than this are reached by a new seek instead of decoding through
_PIP = {
    "torchcodec": "pip install torchcodec, and FFmpeg 4-8 shared libraries (apt install ffmpeg, conda install ffmpeg)",
    "decord": "pip install decord (wheels for x86-64 only)",
    "pyav": "pip install av",
    "pillow": "pip install Pillow",
}


class DecodeError(Exception):
    """A video or image that cannot be opened or decoded (names the source and the reason)."""


def _source_name(src: str | os.PathLike | bytes) -> str:
    return "<bytes>" if isinstance(src, bytes | bytearray | memoryview) else os.fspath(src)


def _check_source(src: str | os.PathLike | bytes) -> None:
    """Clear errors for the common cases before a backend gives a cryptic one."""
    if isinstance(src, bytes | bytearray | memoryview):
        if len(src) == 0:
            raise DecodeError("<bytes>: empty input (0 bytes)")
        return
    path = os.fspath(src)
    if not os.path.exists(path):
        raise DecodeError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise DecodeError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")


def _import_decord():
    try:
        import decord
    except ImportError as err:
        raise ImportError(f"the decord backend needs decord: {_PIP['decord']} ({err})") from None
    return decord


def _import_av():
    try:
        import av
    except ImportError as err:
        raise ImportError(f"the pyav backend needs PyAV: {_PIP['pyav']} ({err})") from None
    return av


def _import_torchcodec():
    try:
        from torchcodec._core import ops
        from torchcodec.decoders import VideoDecoder
    except ImportError as err:
        raise ImportError(f"the torchcodec backend needs {_PIP['torchcodec']} ({err})") from None
    if getattr(ops, "_FFMPEG_AVAILABLE", True) is False:  # torchcodec imports without FFmpeg, then cannot decode
        raise ImportError(f"torchcodec is installed but finds no FFmpeg libraries: {_PIP['torchcodec']}")
    return VideoDecoder


_IMPORTERS = {"torchcodec": _import_torchcodec, "decord": _import_decord, "pyav": _import_av}


def available_backends() -> list[str]:
    """The backends that work in this environment, in PREFERENCE order."""
    found = []
    for name in PREFERENCE:
        try:
            _IMPORTERS[name]()
        except ImportError:
            continue
        found.append(name)
    return found


def resolve_backend(backend: str) -> str:
    """A backend that works here: the one named (ImportError with the install command when it does not), or for
    "auto" the first available one of PREFERENCE."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"unknown video backend {backend!r}; valid: auto, {', '.join(BACKENDS)}")
        _IMPORTERS[backend]()
        return backend
    found = available_backends()
    if not found:
        raise ImportError(f"decoding video needs one of {', '.join(PREFERENCE)}: {_PIP['pyav']}")
    return found[0]


class VideoReader:
    """Random access to the frames of one video. Use open_video; subclasses implement one backend.

    Attributes: num_frames, fps (average frame rate), height, width. get_frames(indices) -> uint8 [T, H, W, 3].
    """

    num_frames: int
    fps: float
    height: int
    width: int

    def __init__(self, name: str) -> None:
        self.name = name

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 [T, H, W, 3] RGB frames at `indices` (any order, repeats allowed); DecodeError when out of range."""
        indices = [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < self.num_frames:
                raise DecodeError(f"{self.name}: frame index {i} out of range (num_frames={self.num_frames})")
        if not indices:
            return torch.empty(0, self.height, self.width, 3, dtype=torch.uint8)
        wanted = sorted(set(indices))
        frames = self._read_sorted(wanted)  # [len(wanted), H, W, 3]
        if wanted == indices:
            return frames
        position = {idx: k for k, idx in enumerate(wanted)}
        return frames[[position[i] for i in indices]]  # [T, H, W, 3]

    def _read_sorted(self, wanted: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, num_frames={self.num_frames}, fps={self.fps:.3f}, "
            f"size={self.width}x{self.height})"
        )


class DecordReader(VideoReader):
    """decord.VideoReader on the CPU; decord builds its frame index from all packet timestamps when opening."""

    def __init__(self, src: str | os.PathLike | bytes, *, num_threads: int = 1) -> None:
        super().__init__(_source_name(src))
        decord = _import_decord()
        self._errors = (RuntimeError, OSError, ValueError, IndexError, AssertionError, decord.DECORDError)
        target = io.BytesIO(bytes(src)) if self.name == "<bytes>" else self.name
        self._size: tuple[int, int] | None = None  # (H, W), known after the first decode
        try:
            self._vr = decord.VideoReader(target, num_threads=num_threads, ctx=decord.cpu(0))
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except self._errors as err:
            raise DecodeError(f"{self.name}: decord cannot open it: {_reason(err)}") from None
        if self.num_frames <= 0:
            raise DecodeError(f"{self.name}: no video frames")

    @property
    def height(self) -> int:
        return self._frame_size()[0]

    @property
    def width(self) -> int:
        return self._frame_size()[1]

    def _frame_size(self) -> tuple[int, int]:
        if self._size is None:  # decord does not report the size: decode the first frame
            self._read_sorted([0])
        return self._size

    def _read_sorted(self, wanted: list[int]) -> torch.Tensor:
        try:
            batch = self._vr.get_batch(wanted).asnumpy()  # [T, H, W, 3]
        except self._errors as err:
            raise DecodeError(f"{self.name}: decord cannot decode frames {_span(wanted)}: {_reason(err)}") from None
        self._size = (int(batch.shape[1]), int(batch.shape[2]))
        return torch.from_numpy(batch)

    def close(self) -> None:
        self._vr = None


class PyAVReader(VideoReader):
    """PyAV (FFmpeg) reader with keyframe seeks and timestamp-to-index mapping (see the module docstring)."""

    def __init__(self, src: str | os.PathLike | bytes, *, num_threads: int = 1) -> None:
        super().__init__(_source_name(src))
        self._av = _import_av()
        self._errors = (self._av.FFmpegError, RuntimeError, OSError, ValueError, EOFError)
        self._src = bytes(src) if self.name == "<bytes>" else self.name
        self._num_threads = num_threads
        self._container = None
        self._frames = None
        self._pts_table: list[int] | None = None  # sorted packet pts, only when the count came from demuxing
        try:
            self._open()
            stream = self._stream
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise DecodeError(f"{self.name}: the video stream has no frame rate")
            self._rate = Fraction(rate)
            self.fps = float(self._rate)
            self._time_base = Fraction(stream.time_base)
            scale = self._time_base * self._rate  # frames per pts unit
            self._scale_num, self._scale_den = scale.numerator, scale.denominator
            self.height, self.width = int(stream.codec_context.height), int(stream.codec_context.width)
            self._first_pts = stream.start_time
            self.num_frames = int(stream.frames or 0)
            if self.num_frames <= 0:
                self.num_frames, self._pts_table = self._demux_pts()
                if self._pts_table is None:  # packets without timestamps (raw streams): start_time is noise
                    self._first_pts = None
        except DecodeError:
            self.close()
            raise
        except self._errors as err:
            self.close()
            raise DecodeError(f"{self.name}: PyAV cannot open it: {_reason(err)}") from None
        if self.num_frames <= 0 or self.height <= 0 or self.width <= 0:
            self.close()
            raise DecodeError(f"{self.name}: no decodable video frames")

    def _open(self) -> None:
        self.close()
        self._frames, self._pos, self._counting = None, -1, False  # decoder position, see _advance
        self._need: set[int] = set()  # indices the current get_frames wants: the others up to the last may be skipped
        self._need_last = -1
        target = io.BytesIO(self._src) if isinstance(self._src, bytes) else self._src
        self._container = self._av.open(target, mode="r")
        if not self._container.streams.video:
            raise DecodeError(f"{self.name}: no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = self._num_threads
        self._stream.thread_type = "SLICE" if self._num_threads == 1 else "AUTO"

    def _demux_pts(self) -> tuple[int, list[int] | None]:
        """Count frames by demuxing (no decoding); also their sorted pts when every packet has one."""
        pts, missing = [], 0
        for packet in self._container.demux(self._stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            if packet.pts is None:
                missing += 1
            else:
                pts.append(packet.pts)
        self._open()  # rewind
        return len(pts) + missing, (None if missing else sorted(pts))

    # index <-> timestamp
    def _index_to_pts(self, index: int) -> int:
        if self._pts_table is not None:
            return self._pts_table[index]
        return (self._first_pts or 0) + round(index / (self._rate * self._time_base))

    def _pts_to_index(self, pts: int) -> int:
        table = self._pts_table
        if table is not None:
            k = bisect.bisect_left(table, pts)
            if k == len(table) or (k > 0 and pts - table[k - 1] < table[k] - pts):
                k -= 1
            return k
        # round((pts - first) * scale) in integers (Fraction arithmetic per packet costs ~1 ms per clip)
        q, r = divmod((pts - (self._first_pts or 0)) * self._scale_num, self._scale_den)
        return q + 1 if 2 * r > self._scale_den or (2 * r == self._scale_den and q % 2) else q

    def _decode(self):
        """Frames in presentation order from the current demuxer position (see _skipping_decode)."""
        return _skipping_decode(self._container, self._stream, weakref.ref(self))

    def _read_sorted(self, wanted: list[int]) -> torch.Tensor:
        found: dict[int, torch.Tensor] = {}
        self._need, self._need_last = set(wanted), wanted[-1]
        try:
            for run in _runs(wanted):
                if not self._decode_run(run, found):
                    self._decode_counting(run, found)
        except self._errors as err:
            raise DecodeError(f"{self.name}: PyAV cannot decode frames {_span(wanted)}: {_reason(err)}") from None
        missing = [i for i in wanted if i not in found]
        if missing:
            raise DecodeError(
                f"{self.name}: frame {missing[0]} (of {len(missing)} wanted frames) not decoded: the stream ends "
                f"early or is damaged (num_frames={self.num_frames})"
            )
        return torch.stack([found[i] for i in wanted])  # [T, H, W, 3]

    def _advance(self, need: set[int], last: int, found: dict[int, torch.Tensor], land_by: int | None = None):
        """Decode on from the current position up to index `last`, keeping the frames in `need`. Returns the first
        index decoded (None at the end of the stream); stops after that frame when it lies past `land_by`."""
        first = None
        for frame in self._frames:
            if self._counting:
                idx = self._pos + 1
            elif frame.pts is None:
                raise _NoTimestamps
            else:
                idx = self._pts_to_index(frame.pts)
            self._pos = idx
            if first is None:
                first = idx
                if land_by is not None and idx > land_by:
                    return first
            if idx in need and idx not in found:
                found[idx] = torch.from_numpy(frame.to_ndarray(format="rgb24", width=self.width, height=self.height))
            if idx >= last:
                return first
        self._frames = None  # end of stream
        return first

    def _can_continue(self, start: int, counting: bool) -> bool:
        """True when the open decoder sits a little before `start`: decoding on is cheaper than a seek."""
        return self._frames is not None and self._counting == counting and self._pos < start <= self._pos + SEEK_GAP

    def _decode_run(self, run: list[int], found: dict[int, torch.Tensor]) -> bool:
        """Frames of one run located by timestamps (seek or decode on); False when timestamps are unusable."""
        if self._first_pts is None and self._pts_table is None:
            return False
        need, last = set(run), run[-1]
        try:
            if self._can_continue(run[0], counting=False):
                self._advance(need, last, found)
                return True  # frames still missing (stream ended) are reported by the caller
            back = 0  # frames to aim before run[0]: grows when a seek lands after the wanted frame
            for _ in range(4):
                target = max(run[0] - back, 0)
                try:
                    pts = self._index_to_pts(target)
                    self._container.seek(pts, backward=True, any_frame=False, stream=self._stream)
                except self._errors:
                    return False  # not seekable (raw streams, pipes)
                self._frames, self._pos, self._counting = self._decode(), -1, False
                first = self._advance(need, last, found, land_by=run[0])
                if first is None:
                    return False  # nothing after the seek: let the fallback decide
                if first <= run[0]:
                    return True
                if target == 0:
                    return False
                back = max(2 * back, SEEK_GAP)
        except _NoTimestamps:
            pass
        return False

    def _decode_counting(self, run: list[int], found: dict[int, torch.Tensor]) -> None:
        """Reliable fallback: decode from the first frame (reopening the input) and count frames."""
        if not self._can_continue(run[0], counting=True):
            self._open()
            self._frames, self._pos, self._counting = self._decode(), -1, True
        self._advance(set(run), run[-1], found)

    def close(self) -> None:
        self._frames = None  # the decoding generator and the frame it holds
        if self._container is not None:
            self._container.close()
            self._container = None


class TorchCodecReader(VideoReader):
    """torchcodec.decoders.VideoDecoder on the CPU, frames as NHWC uint8 (see the module docstring for seeking)."""

    def __init__(self, src: str | os.PathLike | bytes, *, num_threads: int = 1) -> None:
        super().__init__(_source_name(src))
        video_decoder = _import_torchcodec()
        self._errors = (RuntimeError, OSError, ValueError, IndexError)
        target = bytes(src) if self.name == "<bytes>" else self.name
        try:
            self._dec = video_decoder(
                target, dimension_order="NHWC", num_ffmpeg_threads=num_threads, device="cpu", seek_mode="approximate"
            )
            meta = self._dec.metadata
            if not meta.num_frames_from_header:  # no count in the header (mkv, webm): scan for exact indices
                self._dec = video_decoder(
                    target, dimension_order="NHWC", num_ffmpeg_threads=num_threads, device="cpu", seek_mode="exact"
                )
                meta = self._dec.metadata
            self.num_frames = int(meta.num_frames or 0)
            self.fps = float(meta.average_fps_from_header or meta.average_fps or 0.0)
            self.height, self.width = int(meta.height or 0), int(meta.width or 0)
        except self._errors as err:
            raise DecodeError(f"{self.name}: torchcodec cannot open it: {_reason(err)}") from None
        if self.num_frames <= 0 or self.height <= 0 or self.width <= 0:
            raise DecodeError(f"{self.name}: no decodable video frames")

    def _read_sorted(self, wanted: list[int]) -> torch.Tensor:
        try:
            frames = self._dec.get_frames_at(wanted).data  # [T, H, W, 3]
        except self._errors as err:
            raise DecodeError(f"{self.name}: torchcodec cannot decode frames {_span(wanted)}: {_reason(err)}") from None
        return frames

    def close(self) -> None:
        self._dec = None


def _skipping_decode(container, stream, reader_ref):
    """Decode the packets of `stream`, unwanted ones before the last wanted frame with skip_frame = NONREF (module
    docstring). The reader is held weakly: a generator holding it would make a reference cycle, and a cycle of PyAV
    objects left to the garbage collector can be collected in a forked loader worker, where freeing FFmpeg's
    scaler threads of the parent hangs."""
    context = stream.codec_context
    for packet in container.demux(stream):
        reader = reader_ref()
        if reader is None:
            return
        skip = False
        if not reader._counting and packet.pts is not None:
            idx = reader._pts_to_index(packet.pts)
            # never past the last wanted frame: the decoder reads ahead, and a later call continuing from here
            # (_can_continue) may want those frames
            skip = idx < reader._need_last and idx not in reader._need
        del reader
        context.skip_frame = "NONREF" if skip else "DEFAULT"
        yield from packet.decode()


class _NoTimestamps(Exception):
    """A decoded frame without a timestamp: the PyAV reader falls back to counting frames."""


def _runs(wanted: list[int]) -> list[list[int]]:
    """Split sorted indices where consecutive ones are more than SEEK_GAP apart."""
    runs = [[wanted[0]]]
    for idx in wanted[1:]:
        if idx - runs[-1][-1] > SEEK_GAP:
            runs.append([])
        runs[-1].append(idx)
    return runs


def _reason(err: BaseException) -> str:
    text = str(err).strip() or "no message"
    return f"{type(err).__name__}: {text}"


def _span(indices: list[int]) -> str:
    return f"{indices[0]}..{indices[-1]}" if len(indices) > 1 else str(indices[0])


_READERS = {"torchcodec": TorchCodecReader, "decord": DecordReader, "pyav": PyAVReader}


def open_video(src: str | os.PathLike | bytes, *, backend: str = "auto", num_threads: int = 1) -> VideoReader:
    """Open a video file (path) or in-memory video (bytes) with a backend of BACKENDS or "auto"; DecodeError when
    it cannot."""
    backend = resolve_backend(backend)
    _check_source(src)
    return _READERS[backend](src, num_threads=num_threads)


def read_image(src: str | os.PathLike | bytes) -> torch.Tensor:
    """Decode one image (path or bytes) with Pillow into uint8 [H, W, 3] RGB; DecodeError when it cannot."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(f"reading images needs Pillow: {_PIP['pillow']} ({err})") from None
    _check_source(src)
    name = _source_name(src)
    try:
        with Image.open(io.BytesIO(bytes(src)) if name == "<bytes>" else name) as img:
            rgb = img.convert("RGB")  # decodes the whole image: truncated data fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DecodeError(f"{name}: Pillow cannot decode it: {_reason(err)}") from None
    import numpy as np

    return torch.from_numpy(np.array(rgb, dtype=np.uint8))  # [H, W, 3]
