"""Frozen-encoder features for clips and whole videos: tokens, per-time-step features and pooled vectors.

`Embedder(encoder)` wraps a frozen encoder (e.g. from `vjepa.pretrained.load_pretrained`):
- `clip_tokens(video [B, C, T, H, W])` -> tokens [B, N, D] (run in chunks of batch_size, no grad), token order
  time-major (t, h, w), N = T/tubelet * H/patch * W/patch;
- `frames(tokens, grid)` -> [B, T', D], the mean over space of each tubelet step, and `pooled(tokens)` -> [B, D],
  the mean over all tokens;
- `embed(video, output="pooled" | "frames" | "tokens")` for ONE video of any length and resolution: a path (all
  frames decoded), a uint8 tensor [T, H, W, 3] or a normalised float tensor [C, T, H, W].

How `embed` handles any resolution: the short side is resized to the model's crop size S and the long side to
keep the aspect ratio, rounded to a multiple of the patch size (bilinear, antialiased; uint8 input is resized
before normalisation, with ImageNet mean/std, as the eval transform does: `short_side_size`, `resize_frames` and
`normalize_frames` of vjepa/data/transforms.py). The encoder takes the resulting grid:
the sin-cos table is interpolated trilinearly to it, RoPE positions are integer coordinates of any grid.
How it handles any length: the frames are cut into consecutive windows of frames_per_clip frames (the encoder's
training length); the last window is padded by repeating the last frame. Each window is encoded on its own; the
token steps of the windows are concatenated in time and the steps made only of padding frames are dropped, so
the video has T'' = ceil(L / tubelet) token steps for L frames ("tokens" [T'' * H' * W', D] in (t, h, w) order;
"frames" [T'', D], one vector per tubelet step, i.e. per `tubelet` frames; "pooled" [D] = the mean of the returned
tokens, every kept tubelet weighted equally). A padded window still attends over its padding frames, so the last
window's features see repeated frames; windows do not attend to each other. Long videos are decoded and encoded
`batch_size` windows at a time, so memory does not grow with the length beyond the output.

Not in the official code, whose evals take fixed-size clips only.

Shapes: B batch, C channels, T frames, H/W pixels, L frames of a whole video, N tokens of a clip, D width,
grid = (T', H', W') = (T / tubelet, H / patch, W / patch), S crop size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import ExitStack, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from vjepa.data.transforms import normalize_frames, resize_frames, short_side_size

OUTPUTS = ("pooled", "frames", "tokens")


def default_backend() -> str:
    """The first video decoder that works here (vjepa.data.decoders.PREFERENCE)."""
    from vjepa.data.decoders import resolve_backend

    return resolve_backend("auto")


class Embedder:
    """Features of a frozen encoder; see the module docstring for how whole videos are windowed and resized."""

    def __init__(
        self,
        encoder: nn.Module,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        *,
        dtype: torch.dtype | None = None,
        backend: str | None = None,
    ) -> None:
        """dtype: autocast dtype for the forward pass (e.g. torch.bfloat16 on GPU; None = the weights' dtype);
        features are returned as float32. backend: video decoder for paths (None: the first available)."""
        encoder = getattr(encoder, "backbone", encoder)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()  # moved and put in eval mode; gradients are never taken
        self.batch_size, self.dtype, self.backend = batch_size, dtype, backend
        self.frames_per_clip = int(getattr(encoder, "frames_per_clip", encoder.num_frames))
        self.crop_size = int(getattr(encoder, "crop_size", encoder.img_size))
        self.patch_size, self.tubelet_size = encoder.patch_size, encoder.tubelet_size
        self.embed_dim, self.in_chans = encoder.embed_dim, encoder.in_chans

    # ------------------------------------------------------------------------------------------------- clips

    def grid(self, video_shape: tuple[int, ...] | torch.Size) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a clip [..., C, T, H, W]."""
        t, h, w = video_shape[-3:]
        return t // self.tubelet_size, h // self.patch_size, w // self.patch_size

    @torch.no_grad()
    def clip_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """video float [B, C, T, H, W] (normalised; T, H, W multiples of tubelet / patch) -> tokens [B, N, D] on
        the embedder's device, float32, computed batch_size clips at a time."""
        if video.dim() != 5 or video.shape[1] != self.in_chans:
            raise ValueError(f"clip_tokens: expected [B, {self.in_chans}, T, H, W], got {tuple(video.shape)}")
        t, h, w = video.shape[-3:]
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"clip_tokens: T={t}, H={h}, W={w} must be multiples of tubelet {self.tubelet_size} and "
                f"patch {self.patch_size}"
            )
        amp = self.dtype is not None and self.dtype != torch.float32
        outs = []
        for chunk in video.split(self.batch_size):
            x = chunk.to(self.device, non_blocking=True).float()
            with torch.autocast(self.device.type, dtype=self.dtype) if amp else nullcontext():
                outs.append(self.encoder(x).float())  # [b, N, D]
        return torch.cat(outs)  # [B, N, D]

    @staticmethod
    def frames(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """tokens [..., N, D] in (t, h, w) order -> [..., T', D], the mean over space per tubelet step."""
        t, h, w = grid
        if tokens.shape[-2] != t * h * w:
            raise ValueError(f"frames: {tokens.shape[-2]} tokens do not fill the grid {grid}")
        return tokens.unflatten(-2, (t, h * w)).mean(-2)  # [..., T', D]

    @staticmethod
    def pooled(tokens: torch.Tensor) -> torch.Tensor:
        """tokens [..., N, D] -> [..., D], the mean over all tokens."""
        return tokens.mean(-2)

    # ---------------------------------------------------------------------------------------- whole videos

    def _reader(
        self, video: str | os.PathLike | torch.Tensor, stack: ExitStack
    ) -> tuple[int, Callable[[int, int], torch.Tensor], bool]:
        """(number of frames L, fetch(a, b) -> frames a..b-1 in the input's layout, input is uint8). A path is
        opened once (closed by `stack`) and decoded window batch by window batch."""
        if isinstance(video, (str, os.PathLike)):
            from vjepa.data.decoders import open_video

            reader = stack.enter_context(open_video(video, backend=self.backend or default_backend()))
            return reader.num_frames, lambda a, b: reader.get_frames(range(a, b)), True  # [t, H, W, 3]
        if not isinstance(video, torch.Tensor) or video.dim() != 4:
            got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"embed: expected a path, uint8 [T, H, W, 3] or float [C, T, H, W], got {got}")
        if video.dtype == torch.uint8:
            if video.shape[-1] != 3:
                raise ValueError(f"embed: a uint8 video must be [T, H, W, 3], got {tuple(video.shape)}")
            return video.shape[0], lambda a, b: video[a:b], True
        if not video.is_floating_point() or video.shape[0] != self.in_chans:
            raise ValueError(f"embed: a float video must be normalised [C, T, H, W], got {tuple(video.shape)}")
        return video.shape[1], lambda a, b: video[:, a:b], False

    def _prepare(self, raw: torch.Tensor, is_uint8: bool) -> torch.Tensor:
        """Frames in the input layout -> float [C, t, h, w], short side = crop size, sides multiples of patch."""
        if is_uint8:
            size = short_side_size(raw.shape[1], raw.shape[2], self.crop_size, self.patch_size)
            return normalize_frames(resize_frames(raw, size))  # [C, t, h, w]
        size = short_side_size(raw.shape[2], raw.shape[3], self.crop_size, self.patch_size)
        if tuple(raw.shape[-2:]) == size:
            return raw.float()
        x = raw.float().transpose(0, 1)  # [t, C, H, W]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x.transpose(0, 1)  # [C, t, h, w]

    def embed(
        self,
        video: str | os.PathLike | torch.Tensor,
        output: str = "pooled",
        *,
        return_grid: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[int, int, int]]:
        """Features of one whole video (path, uint8 [L, H, W, 3] or normalised float [C, L, H, W]):
        "tokens" [T'' * H' * W', D], "frames" [T'', D] or "pooled" [D], T'' = ceil(L / tubelet).
        With return_grid, also the grid (T'', H', W') of the returned tokens."""
        if output not in OUTPUTS:
            raise ValueError(f"embed: output must be one of {OUTPUTS}, got {output!r}")
        fpc = self.frames_per_clip
        steps = []  # per batch of windows: [b * T', H' * W', D]
        grid = (0, 0, 0)
        with ExitStack() as stack:
            length, fetch, is_uint8 = self._reader(video, stack)
            if length < 1:
                raise ValueError("embed: the video has no frames")
            num_windows = math.ceil(length / fpc)
            for k0 in range(0, num_windows, self.batch_size):
                k1 = min(num_windows, k0 + self.batch_size)
                x = self._prepare(fetch(k0 * fpc, min(length, k1 * fpc)), is_uint8)  # [C, t, h, w]
                pad = (k1 - k0) * fpc - x.shape[1]
                if pad:
                    x = torch.cat([x, x[:, -1:].expand(-1, pad, -1, -1)], dim=1)  # repeat the last frame
                windows = x.unflatten(1, (k1 - k0, fpc)).transpose(0, 1)  # [b, C, F, h, w]
                grid = self.grid(windows.shape)
                tokens = self.clip_tokens(windows)  # [b, N, D]
                steps.append(tokens.reshape(-1, grid[1] * grid[2], self.embed_dim))  # [b * T', H' * W', D]
        kept = math.ceil(length / self.tubelet_size)
        tokens = torch.cat(steps)[:kept]  # [T'', H' * W', D], steps of padding only dropped
        grid = (kept, grid[1], grid[2])
        if output == "tokens":
            out = tokens.flatten(0, 1)  # [T'' * H' * W', D]
        elif output == "frames":
            out = tokens.mean(1)  # [T'', D]
        else:
            out = tokens.mean((0, 1))  # [D]
        return (out, grid) if return_grid else out
