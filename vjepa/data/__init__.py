"""Video data: CSV video datasets, procedural synthetic clips, clip transforms, seeding helpers.

Both datasets are map-style with keys (index, draw); every random choice of a sample comes from a
torch.Generator seeded from (dataset seed, index, draw). Samples are {"video": float [C, T, H, W] (or a list of
clips), "label": int, "index": int}. Shape legend: C channels, T frames, H, W height and width.
The offline dataset tools (`vjepa data check|make-shards|convert`) are in vjepa.tools, which nothing here imports.
"""

from vjepa.data.synthetic import (
    MOTION_CLASSES,
    OPPOSITE_PAIRS,
    SyntheticVideoDataset,
    render_clip,
    write_synthetic,
)
from vjepa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoTransform,
    normalize_clip,
)
from vjepa.data.video import VideoDataset, read_csv_list

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOTION_CLASSES",
    "OPPOSITE_PAIRS",
    "SyntheticVideoDataset",
    "VideoDataset",
    "VideoTransform",
    "normalize_clip",
    "read_csv_list",
    "render_clip",
    "write_synthetic",
]
