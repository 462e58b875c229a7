"""Clip transforms for training and evaluation.

VideoTransform (train): one RandomResizedCrop for all frames of a clip (area scale U(0.3, 1), aspect log-uniform
in [0.75, 1.35], torchvision's 10 attempts then a centre-crop fallback), bilinear antialiased resize of the whole
clip in one F.interpolate call on uint8 (torch's fast integer path; rounds like torchvision on uint8 tensors),
horizontal flip with p = 0.5, ImageNet mean/std. Eval (train=False): resize the
short side to crop_size (aspect kept), centre crop (`eval_resize_crop`). All randomness comes from the
torch.Generator passed in, so a sample is a pure function of its key (seed, index, draw), whatever the number of
workers.

The eval resize and normalise used everywhere else live here too: `short_side_size`, `resize_frames` (uint8,
channels-last, the same resize VideoTransform uses), `eval_resize_crop`, and `normalize_frames` (x / 255, then
mean / std), the one normalisation of decoded frames that `normalize_clip`, vjepa/embed.py, evals/extract.py
and evals/pca.py call. (VideoTransform normalises in its own fused form, (x - 255 mean) / (255 std), which rounds
differently in the last bit.)

Departures from the official V-JEPA code: the official pipeline converts frames to PIL-style tensors and crops per
clip with module-level RNG (numpy / random), so its augmentation depends on worker seeding; ours does not.
The official eval resize uses short side = crop * 256 / 224; ours resizes the short side to crop_size.

Shape legend: T frames, H, W input size, C = 3 channels, S = crop_size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# A clip transform: (frames uint8 [T, H, W, C], generator) -> float [C, T, S, S].
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def normalize_frames(
    frames: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 [T, C, H, W] (e.g. from `resize_frames`) -> float [C, T, H, W], x / 255 normalised by mean / std.
    The result keeps the input's memory layout (channels-last frames stay channels-last: no copy but the cast)."""
    x = frames.transpose(0, 1).float().div_(255.0)  # [C, T, H, W]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    return x.sub_(m).div_(s)


def normalize_clip(
    frames: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 [T, H, W, C] -> contiguous float [C, T, H, W], x / 255 normalised by mean / std (`normalize_frames`)."""
    return normalize_frames(frames.permute(3, 0, 1, 2).contiguous().transpose(0, 1), mean, std)  # [C, T, H, W]


def short_side_size(height: int, width: int, short: int, multiple: int = 1) -> tuple[int, int]:
    """(h, w) with the short side `short`, the aspect ratio kept, each rounded to a multiple of `multiple`."""
    s = min(height, width)
    h = max(multiple, round(height * short / s / multiple) * multiple)
    w = max(multiple, round(width * short / s / multiple) * multiple)
    return h, w


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [T, H, W, C] -> uint8 [T, C, size] (channels-last memory), bilinear with antialias, one call for the
    whole clip. Resizing uint8 in channels-last layout takes torch's fast integer path (about 8x faster on CPU than
    float); the result is rounded to integers, as torchvision does for uint8 tensors."""
    x = frames.permute(0, 3, 1, 2)  # [T, C, H, W] view, channels-last strides
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def eval_resize_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [T, H, W, C] -> uint8 [T, C, S, S] (a view of channels-last memory): the eval resize, short side to S
    (aspect kept, `resize_frames`), then the centre S x S crop."""
    h, w = short_side_size(frames.shape[1], frames.shape[2], size)
    x = resize_frames(frames, (h, w))  # [T, C, h, w]
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, :, top : top + size, left : left + size]  # [T, C, S, S]


def sample_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
) -> tuple[int, int, int, int]:
    """RandomResizedCrop box (top, left, h, w): 10 tries of area ~ U(scale) * H * W and aspect (w / h)
    log-uniform in ratio; then the whole image cut to the nearest allowed aspect, centred."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2, generator=gen).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(height - h + 1, (), generator=gen))
            left = int(torch.randint(width - w + 1, (), generator=gen))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


class VideoTransform:
    """uint8 [T, H, W, C] clip + torch.Generator -> float [C, T, S, S] (S = crop_size), normalised."""

    def __init__(
        self,
        *,
        crop_size: int,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (0.75, 1.35),
        hflip: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        train: bool = True,
    ) -> None:
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
        if not 0 <= hflip <= 1:
            raise ValueError(f"hflip is a probability, got {hflip}")
        self.crop_size = crop_size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.hflip = hflip
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.train = train

    def __repr__(self) -> str:
        return (
            f"VideoTransform(crop_size={self.crop_size}, scale={self.scale}, ratio={self.ratio}, "
            f"hflip={self.hflip}, train={self.train})"
        )

    def __call__(self, frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if frames.dim() != 4 or frames.shape[-1] != len(self.mean):
            raise ValueError(f"expected frames [T, H, W, {len(self.mean)}], got {tuple(frames.shape)}")
        _, height, width, _ = frames.shape
        s = self.crop_size
        if self.train:
            top, left, h, w = sample_crop(height, width, self.scale, self.ratio, gen)
            x = resize_frames(frames[:, top : top + h, left : left + w], (s, s))  # [T, C, S, S]
            if float(torch.rand((), generator=gen)) < self.hflip:  # drawn even when hflip = 0: stable streams
                x = x.flip(-1)
        else:
            x = eval_resize_crop(frames, s)  # [T, C, S, S]
        # layout change and cast in one pass (copy_); broadcasting per-channel constants over an innermost
        # channel dim would be slow.
        x = torch.empty(x.shape[1], x.shape[0], *x.shape[2:], dtype=torch.float32).copy_(x.permute(1, 0, 2, 3))
        m = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1, 1) * 255.0
        sd = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1, 1) * 255.0
        return x.sub_(m).div_(sd)
