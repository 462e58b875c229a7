"""The file kinds the data pipeline knows, by extension (lower-cased): one list for every reader and tool.

Video files are what the decoders read (PyAV / FFmpeg reads all of these; decord and torchcodec most); images are
read with Pillow and repeated to a clip. Folder sources, tar shards, `vjepa data check`, `make-shards` and the
dataset converters all use these lists, so a file one of them accepts is accepted by the others.

DETERMINISTIC_X264_PARAMS is the x264 setting of every H.264 encoder here (write_mp4 of the synthetic videos,
`vjepa data make-shards` re-encoding), so that the bytes do not depend on what the process encoded before.
"""

from __future__ import annotations

import os

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".3gp", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS

# x264's macroblock-tree rate control gives bytes that depend on what earlier encodes left in memory (measured:
# one 64 px clip re-encoded 20 times in one process, other sizes encoded in between, gave 9 different files with a
# single x264 thread; with mbtree off, one). Its propagation step is also float SIMD chosen by CPU. So it is off.
DETERMINISTIC_X264_PARAMS = "mbtree=0"


def is_image(name: str | os.PathLike) -> bool:
    """True when the name's extension is an image one (IMAGE_EXTENSIONS)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS
