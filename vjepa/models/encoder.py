"""Video Vision Transformer: the V-JEPA x-encoder (context encoder) and y-encoder (target encoder).

Paper: V-JEPA Sec. 3.3 and Appendix B: ViT on 2 x 16 x 16 tubelets, no [cls] token, masking by dropping tokens
at the encoder input; positions by a fixed 3D sin-cos table (V-JEPA 1, `pos_embed="sincos"`) or 3D RoPE in every
attention layer (V-JEPA 2, `pos_embed="rope"`).

Parameter names follow the official V-JEPA 1 encoder (`patch_embed.proj`, `pos_embed`, `blocks.{i}...`, `norm`).
`pos_embed` is a persistent, non-trainable buffer [1, N, D] holding the table for the construction grid (the
official code keeps a frozen parameter of that shape; a buffer keeps it out of the optimiser and the EMA) and is
interpolated trilinearly for another grid.

Split API, so a wrapper can embed once and encode several masks: `embed` (tubelets + sin-cos table),
`forward_tokens` (gather the kept tokens, blocks with RoPE positions of the kept tokens, final LayerNorm),
`forward` = both. Key-padding `valid` masks (mask policy "pad") are passed to every attention layer.
Weights are left at PyTorch defaults by the constructor: call `vjepa.models.init.init_weights` (the one
initialisation site). The model knows nothing of parallelism; FSDP is applied from outside per `blocks[i]`.

Shapes: B batch, C channels, T frames, H/W pixels, N tokens (T' * H' * W'), K kept tokens, D width,
grid = (T', H', W') = (T / tubelet, H / patch, W / patch).
"""

from __future__ import annotations

import torch
from torch import nn

from vjepa.masks.ops import gather_tokens, idx_to_coords
from vjepa.models.layers import Block
from vjepa.models.patch_embed import PatchEmbed3D
from vjepa.models.pos_embed import RoPE3D, grid_coords, interpolate_table, sincos_3d_table

POS_EMBEDS = ("sincos", "rope")


class VisionTransformer(nn.Module):
    """Video ViT. `forward(video [B, C, T, H, W], idx [B, K] | None, valid [B, K] | None) -> [B, K or N, D]`."""

    def __init__(
        self,
        *,
        img_size: int,
        num_frames: int,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        pos_embed: str = "sincos",
        uniform_power: bool = True,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"VisionTransformer: unknown pos_embed {pos_embed!r}; valid: {POS_EMBEDS}")
        if img_size % patch_size or num_frames % tubelet_size:
            raise ValueError(
                f"VisionTransformer: img_size {img_size} / num_frames {num_frames} not multiples of "
                f"patch_size {patch_size} / tubelet_size {tubelet_size}"
            )
        self.img_size, self.num_frames, self.in_chans = img_size, num_frames, in_chans
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.embed_dim, self.depth, self.num_heads, self.mlp_ratio = embed_dim, depth, num_heads, mlp_ratio
        self.qkv_bias, self.norm_eps, self.attn_impl = qkv_bias, norm_eps, attn_impl
        self.pos_embed_type, self.uniform_power = pos_embed, uniform_power
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)

        self.patch_embed = PatchEmbed3D(
            patch_size=patch_size, tubelet_size=tubelet_size, in_chans=in_chans, embed_dim=embed_dim
        )
        if pos_embed == "sincos":
            self.register_buffer("pos_embed", sincos_3d_table(self.grid, embed_dim, uniform_power)[None])  # [1, N, D]
            self.rope = None
        else:
            self.register_buffer("pos_embed", None)
            self.rope = RoPE3D(head_dim=embed_dim // num_heads)
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    norm_eps=norm_eps,
                    attn_impl=attn_impl,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    @torch.no_grad()
    def reset_pos_embed(self) -> None:
        """Refill the sin-cos buffer (after `to_empty` from the meta device); called by `init_weights`."""
        if self.pos_embed is not None:
            table = sincos_3d_table(self.grid, self.embed_dim, self.uniform_power)[None]  # [1, N, D]
            self.pos_embed.copy_(table.to(self.pos_embed.device, self.pos_embed.dtype))

    def pos_table(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Sin-cos table for `grid` -> [N, D] (the stored table, interpolated when the grid differs)."""
        return interpolate_table(self.pos_embed[0], self.grid, grid)  # [N, D]

    def embed(self, video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """video [B, C, T, H, W] -> (tokens [B, N, D] with the sin-cos table added if any, grid)."""
        x, grid = self.patch_embed(video)  # [B, N, D]
        if self.pos_embed is not None:
            x = x + self.pos_table(grid).to(x.dtype)  # [B, N, D]
        return x, grid

    def forward_tokens(
        self,
        tokens: torch.Tensor,
        grid: tuple[int, int, int],
        idx: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens [B, N, D] from `embed`; keep `idx` [B, K] (all if None); valid [B, K] bool -> [B, K, D]."""
        x = tokens if idx is None else gather_tokens(tokens, idx)  # [B, K, D]
        rope = None
        if self.rope is not None:
            coords = grid_coords(grid, x.device)[None] if idx is None else idx_to_coords(idx, grid)  # [B|1, K, 3]
            rope = self.rope(coords)  # cos, sin: [B|1, 1, K, 3c]
        for blk in self.blocks:
            x = blk(x, rope=rope, valid=valid)  # [B, K, D]
        return self.norm(x)

    def forward(
        self, video: torch.Tensor, idx: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """video [B, C, T, H, W] -> [B, K, D] at `idx` (or [B, N, D] for the whole clip)."""
        tokens, grid = self.embed(video)  # [B, N, D]
        return self.forward_tokens(tokens, grid, idx, valid)
