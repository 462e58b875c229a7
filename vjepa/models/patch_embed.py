"""3D patch embedding: a clip is cut into tubelets of `tubelet_size` frames x `patch_size`^2 pixels.

Paper: V-JEPA Sec. 3.3 and Appendix B (tubelets of 2 x 16 x 16, "a 3D grid of L spatio-temporal patches").
Implemented as Conv3d with kernel = stride = (tubelet, p, p), like the official code (parameter `proj`).
Departure: a clip whose size is not a multiple of the tubelet/patch is rejected with a clear error (Conv3d
would silently drop the remainder).

Shapes: B batch, C channels, T frames, H height, W width, D width,
grid = (T', H', W') = (T / tubelet, H / patch, W / patch), N = T' * H' * W' tokens in (t, h, w) order.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed3D(nn.Module):
    """[B, C, T, H, W] -> ([B, N, D] tokens in (t, h, w) row-major order, grid (T', H', W'))."""

    def __init__(self, *, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        if video.dim() != 5:
            raise ValueError(f"PatchEmbed3D: expected video [B, C, T, H, W], got shape {tuple(video.shape)}")
        _, _, t, h, w = video.shape
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"PatchEmbed3D: clip of {t} frames x {h} x {w} px is not a multiple of "
                f"tubelet {self.tubelet_size} x patch {self.patch_size} x {self.patch_size}"
            )
        x = self.proj(video)  # [B, D, T', H', W']
        grid = (x.shape[2], x.shape[3], x.shape[4])
        return x.flatten(2).transpose(1, 2), grid  # [B, N, D]
