"""Token positions: the fixed 3D sin-cos table (V-JEPA 1) and 3D rotary embeddings (V-JEPA 2).

Paper: V-JEPA Sec. 3.3 / Appendix B ("mask tokens ... plus an absolute 3D sin-cos positional embedding");
V-JEPA 2 replaces the table by 3D RoPE in every attention layer.

Sin-cos table (`sincos_3d_table`): each axis gets a 1-D table [sin(p * w_i), cos(p * w_i)] (sin half first, then
cos half; not interleaved) with w_i = 10000^(-2i / d_axis). With `uniform_power` every axis gets
d_axis = 2 * ceil(D / 6) channels; otherwise t gets D / 2 and h, w get D / 4 each (the official default). The
three parts are concatenated [t, h, w] and cut to D. Computed in float64, returned as float32, like the
official numpy code. `interpolate_table` resizes a table to another grid with trilinear interpolation (the
official `interpolate_pos_encoding`; we pass the target size rather than a scale factor, which gives the same
sampling grid whenever the scale is exact).

RoPE (`RoPE3D`, `apply_rope`): each head's channels are split into three chunks of c = 2 * floor(floor(hd/3)/2)
channels rotated by the token's t, h and w coordinate; the last hd - 3c channels are left as they are. Within a
chunk the layout is the one of the released V-JEPA 2 checkpoints and of `transformers`' VJEPA2 model, which we
replicate exactly for compatibility: adjacent channels (2m, 2m+1) are paired (x -> [-x_{2m+1}, x_{2m}]), but the
angle of channel j is p * w_{j mod c/2} with w_k = 10000^(-k / (c/2)) (the sin/cos tables are tiled twice, not
repeated per pair). The official code comments that this "duplicates frequencies across the vector pair"; it is
not a per-pair rotation, but the checkpoints were trained with it. Departures: angles, cos and sin are computed in
float32 and the rotation is applied in float32 whatever the activation dtype (the reference code computes them in
the activation dtype, lossy in bf16); coordinates come from the actual input grid (`idx_to_coords`), so non-square
and resized grids get correct (t, h, w), where `transformers` derives them from the configured square crop.

Shapes: B batch, N tokens (T' * H' * W'), K kept tokens, D width, H heads, hd head width,
grid = (T', H', W') = (T / tubelet, H / patch, W / patch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Grid = tuple[int, int, int]


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """1-D table for positions `pos` [M] -> [M, dim]: [sin(p * w_i) for i < dim/2, cos(p * w_i) for i < dim/2]."""
    if dim % 2 != 0:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega  # [dim/2]
    angles = pos.to(torch.float64)[:, None] * omega[None, :]  # [M, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # [M, dim]


def axis_dims(dim: int, uniform_power: bool) -> tuple[int, int, int]:
    """Channels given to the (t, h, w) axes before the concatenated table is cut to `dim`."""
    if uniform_power:
        d = 2 * math.ceil(dim / 6)
        return d, d, d
    if dim % 8 != 0:
        raise ValueError(f"sin-cos table without uniform_power needs dim divisible by 8 (D/4 even), got {dim}")
    return dim // 2, dim // 4, dim // 4


def sincos_3d_table(grid: Grid, dim: int, uniform_power: bool = True) -> torch.Tensor:
    """Fixed 3D sin-cos position table for `grid` = (T', H', W') -> [N, dim] float32, rows in (t, h, w) order."""
    gt, gh, gw = grid
    t, h, w = torch.meshgrid(torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij")  # each [T', H', W']
    dt, dh, dw = axis_dims(dim, uniform_power)
    parts = [sincos_1d(dt, t.flatten()), sincos_1d(dh, h.flatten()), sincos_1d(dw, w.flatten())]  # [N, d_axis] each
    return torch.cat(parts, dim=1)[:, :dim].float()  # [N, D]


def interpolate_table(table: torch.Tensor, src_grid: Grid, dst_grid: Grid) -> torch.Tensor:
    """Resize a position table [N_src, D] laid out on `src_grid` to `dst_grid` (trilinear) -> [N_dst, D]."""
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if src_grid == dst_grid:
        return table
    n, d = table.shape
    if n != math.prod(src_grid):
        raise ValueError(f"interpolate_table: table has {n} rows but grid {src_grid} has {math.prod(src_grid)}")
    vol = table.reshape(1, *src_grid, d).permute(0, 4, 1, 2, 3)  # [1, D, T', H', W']
    vol = F.interpolate(vol.float(), size=dst_grid, mode="trilinear", align_corners=False)  # [1, D, t, h, w]
    return vol.permute(0, 2, 3, 4, 1).reshape(-1, d).to(table.dtype)  # [N_dst, D]


def grid_coords(grid: Grid, device: torch.device | None = None) -> torch.Tensor:
    """(t, h, w) integer coordinates of every token of `grid`, in token order -> [N, 3] long."""
    gt, gh, gw = grid
    t, h, w = torch.meshgrid(
        torch.arange(gt, device=device), torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij"
    )  # each [T', H', W']
    return torch.stack([t.flatten(), h.flatten(), w.flatten()], dim=-1)  # [N, 3]


class RoPE3D(nn.Module):
    """Cos/sin tables for 3D rotary embeddings of heads of width `head_dim` (no parameters).

    `forward(coords [B, K, 3])` -> (cos, sin), each [B, 1, K, 3c] float32, shared by all blocks of a forward pass;
    `apply_rope` rotates queries/keys with them.
    """

    def __init__(self, *, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.chunk = 2 * ((head_dim // 3) // 2)  # channels per axis, even
        if self.chunk == 0:
            raise ValueError(f"RoPE3D: head_dim {head_dim} is too small for three rotated chunks (needs >= 6)")

    def forward(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.chunk // 2
        omega = torch.arange(half, dtype=torch.float32, device=coords.device)
        omega /= half
        omega = 1.0 / self.theta**omega  # [c/2]
        angles = coords.to(torch.float32)[..., None] * omega  # [B, K, 3, c/2]
        angles = angles.repeat(1, 1, 1, 2)  # [B, K, 3, c]: tiled, channel j uses w_{j mod c/2} (released layout)
        angles = angles.flatten(2)[:, None]  # [B, 1, K, 3c]
        return angles.cos(), angles.sin()

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, chunk={self.chunk}, theta={self.theta}"


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, K, hd] with cos/sin [B or 1, 1, K, r] (r <= hd); channels past r are unchanged."""
    r = cos.shape[-1]
    xr = x[..., :r].float()  # [B, H, K, r]
    pairs = xr.unflatten(-1, (-1, 2))  # [B, H, K, r/2, 2]
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # [B, H, K, r]: (-x1, x0, -x3, x2...)
    out = (xr * cos + swapped * sin).to(x.dtype)  # [B, H, K, r]
    if r == x.shape[-1]:
        return out
    return torch.cat([out, x[..., r:]], dim=-1)  # [B, H, K, hd]
