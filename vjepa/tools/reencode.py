"""Probing and re-encoding videos with PyAV for `vjepa data make-shards` (worker side; see make_shards.py).

probe_video measures frames, fps, size and duration of a path or bytes (decoding every frame, or reading packets
only); reencode_video resizes to a short side with swscale's bicubic filter and encodes libx264 yuv420p into
faststart mp4 with an optional fixed keyframe interval, one x264 thread and x264's macroblock tree off
(DETERMINISTIC_X264_PARAMS: with it on, the bytes depend on the process's earlier encodes). Decoders run one
thread: where decoding fails, and so the reason recorded, then does not depend on the thread count. Unusable
inputs raise BadVideo.

Shape legend: none (files in, files out).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction

from vjepa.data.media import DETERMINISTIC_X264_PARAMS


class BadVideo(Exception):
    """An input video that cannot be stored (the message is the reason written to skipped.txt)."""


def short_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip()[:200]}"


def target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side = short_side, aspect kept, both even; None only rounds down to even."""
    if short_side is None:
        return max(2, width - width % 2), max(2, height - height % 2)
    if height <= width:
        return max(2, round(width * short_side / height / 2) * 2), short_side
    return short_side, max(2, round(height * short_side / width / 2) * 2)


def _open_video(source: str | bytes):
    """(container, first video stream) with a one-thread decoder; BadVideo when it cannot be opened.

    One thread: where decoding fails, and so the reason recorded, depends on the thread count."""
    import av

    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise BadVideo(f"cannot open: {short_error(err)}") from None
    if not container.streams.video:
        container.close()
        raise BadVideo("no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    return container, stream


def _decoded_frames(container, stream) -> Iterator:
    """Every frame of the stream; BadVideo on a decoding error, no frame, or fewer frames than declared."""
    import av

    frames, count = container.decode(stream), 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except (av.FFmpegError, OSError, ValueError) as err:
            raise BadVideo(f"decoding failed after {count} frames: {short_error(err)}") from None
        count += 1
        yield frame
    _check_count(count, stream.frames)


def _check_count(count: int, declared: int) -> None:
    if count == 0:
        raise BadVideo("no frames")
    if declared and count < declared:
        raise BadVideo(f"truncated: {count} of the {declared} frames in the header")


def _frame_rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise BadVideo("unknown frame rate")
    return Fraction(rate)


def probe_video(source: str | bytes, *, verify: str = "decode") -> dict:
    """{"frames", "fps", "width", "height", "duration"} of the first video stream of a path or bytes.

    verify="decode" decodes every frame; "demux" reads the packets only (counts them, rejects corrupt ones).
    Raises BadVideo when the video is unusable."""
    import av

    container, stream = _open_video(source)
    with container:
        fps = _frame_rate(stream)
        if verify == "decode":
            frames = sum(1 for _ in _decoded_frames(container, stream))
        else:
            frames = 0
            try:
                for packet in container.demux(stream):
                    if packet.is_corrupt:
                        raise BadVideo(f"corrupt or truncated packet after {frames} frames")
                    frames += packet.size > 0
            except (av.FFmpegError, OSError, ValueError) as err:
                raise BadVideo(f"reading packets failed after {frames} frames: {short_error(err)}") from None
            _check_count(frames, stream.frames)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = float(frames / fps)
        width, height = stream.codec_context.width, stream.codec_context.height
    return {"frames": frames, "fps": float(fps), "width": width, "height": height, "duration": round(duration, 6)}


def reencode_video(src: str, dst: str, *, short_side: int | None, keyint: int | None, crf: int, preset: str) -> None:
    """Decode `src`, resize to short_side (None: keep, rounded to even), encode H.264 mp4 to `dst` (module docstring).

    Input problems raise BadVideo; encoder problems propagate."""
    import av

    container, stream = _open_video(src)
    with container:
        rate = _frame_rate(stream)
        width, height = target_size(stream.codec_context.width, stream.codec_context.height, short_side)
        x264 = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": DETERMINISTIC_X264_PARAMS}
        if keyint is not None:  # fixed GOP: no scene-cut keyframes, none closer than keyint
            x264.update(g=str(keyint), keyint_min=str(keyint), sc_threshold="0")
        with av.open(dst, mode="w", options={"fflags": "+bitexact", "movflags": "+faststart"}) as out:
            enc = out.add_stream("libx264", rate=rate)
            enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
            enc.options = x264
            enc.codec_context.flags |= av.codec.context.Flags.bitexact
            time_base = 1 / rate
            for count, frame in enumerate(_decoded_frames(container, stream)):
                small = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
                small.pts, small.time_base = count, time_base
                small.pict_type = av.video.frame.PictureType.NONE  # the source's keyframes would be forced ones
                out.mux(enc.encode(small))
            out.mux(enc.encode(None))
