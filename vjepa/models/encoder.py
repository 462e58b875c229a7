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

Deep supervision (V-JEPA 2.1, arXiv 2603.14482; github.com/facebookresearch/vjepa2
`app/vjepa_2_1/models/vision_transformer.py`), `levels=4`: the outputs of 4 blocks (`level_taps`, 0-indexed:
depth 12 -> 2, 5, 8, 11; 24 -> 5, 11, 17, 23; 40 -> 9, 19, 29, 39; 48 -> 11, 23, 37, 47, the official table;
any other depth: block (k + 1) * depth // 4 - 1 for k = 0..3, which reproduces the official 12/24/40 rows) each go
through a learnable LayerNorm of their own (`level_norms.{k}`, the official `norms_block`) and are concatenated:
`forward_tokens(..., all_levels=True)` -> [B, K, 4 D], what training uses (context and target encoder alike).
There is no final `norm` then: as in the official encoder, plain `forward` (what evaluations call) returns the last
block through the last level's norm, [B, K, D] (the last D channels of the concatenation). With `levels=1` the
module is exactly the single-output encoder (same parameters, names and numerics).

Shapes: B batch, C channels, T frames, H/W pixels, N tokens (T' * H' * W'), K kept tokens, D width, L levels,
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
LEVELS = (1, 4)
# Official V-JEPA 2.1 tap blocks by encoder depth (app/vjepa_2_1/models/vision_transformer.py). The 48-block row
# is not evenly spaced (37 where the rule gives 35); it is kept as published, for checkpoint compatibility.
OFFICIAL_TAPS = {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 40: (9, 19, 29, 39), 48: (11, 23, 37, 47)}


def level_taps(depth: int, levels: int) -> tuple[int, ...]:
    """The 0-indexed blocks whose outputs form the levels: the official table for 4 levels at depths 12/24/40/48,
    else evenly spaced, (k + 1) * depth // levels - 1; always ending at the last block."""
    if levels not in LEVELS:
        raise ValueError(f"levels must be one of {LEVELS}, got {levels}")
    if depth < levels:
        raise ValueError(f"levels={levels} needs at least {levels} blocks, got depth {depth}")
    if levels == 4 and depth in OFFICIAL_TAPS:
        return OFFICIAL_TAPS[depth]
    return tuple((k + 1) * depth // levels - 1 for k in range(levels))


class VisionTransformer(nn.Module):
    """Video ViT. `forward(video [B, C, T, H, W], idx [B, K] | None, valid [B, K] | None) -> [B, K or N, D]`;
    `forward_tokens(..., all_levels=True)` -> [B, K, L D] (L = `levels`)."""

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
        levels: int = 1,
    ) -> None:
        super().__init__()
        self.level_taps = level_taps(depth, levels)
        self.levels = levels
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
        if levels == 1:
            self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        else:
            self.level_norms = nn.ModuleList([nn.LayerNorm(embed_dim, eps=norm_eps) for _ in range(levels)])

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
        all_levels: bool = False,
        segments: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """tokens [B, N, D] from `embed`; keep `idx` [B, K] (all if None); valid [B, K] bool -> [B, K, D], or
        with `all_levels` and levels > 1 the concatenated normed levels [B, K, L D]. `segments`: the K kept
        tokens are independent sequences of these lengths laid end to end (packed mask families, layers.py)."""
        x = tokens if idx is None else gather_tokens(tokens, idx)  # [B, K, D]
        rope = None
        if self.rope is not None:
            coords = grid_coords(grid, x.device)[None] if idx is None else idx_to_coords(idx, grid)  # [B|1, K, 3]
            rope = self.rope(coords)  # cos, sin: [B|1, 1, K, 3c]
        if self.levels == 1:
            for blk in self.blocks:
                x = blk(x, rope=rope, valid=valid, segments=segments)  # [B, K, D]
            return self.norm(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope=rope, valid=valid, segments=segments)  # [B, K, D]
            if all_levels and i in self.level_taps:
                outs.append(self.level_norms[self.level_taps.index(i)](x))  # [B, K, D]
        return torch.cat(outs, dim=-1) if all_levels else self.level_norms[-1](x)  # [B, K, L D] or [B, K, D]

    def forward(
        self, video: torch.Tensor, idx: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """video [B, C, T, H, W] -> [B, K, D] at `idx` (or [B, N, D] for the whole clip)."""
        tokens, grid = self.embed(video)  # [B, N, D]
        return self.forward_tokens(tokens, grid, idx, valid)
