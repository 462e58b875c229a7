"""The file kinds the data pipeline knows, by extension (lower-cased): one list for every reader and tool.

Video files are what the decoders read (PyAV / FFmpeg reads all of these; decord and torchcodec most); images are
read with Pillow and repeated to a clip. Folder sources, tar shards, `vjepa data check`, `make-shards` and the
dataset converters all use these lists, so a file one of them accepts is accepted by the others.
"""

from __future__ import annotations

import os

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".3gp", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


def is_image(name: str | os.PathLike) -> bool:
    """True when the name's extension is an image one (IMAGE_EXTENSIONS)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS
