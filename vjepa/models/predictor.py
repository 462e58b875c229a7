"""The V-JEPA predictor: a narrow ViT that predicts target-token representations from context tokens.

Paper: V-JEPA Sec. 3.3 and Appendix B ("Predicting the target"): the context tokens from the x-encoder are
projected to the predictor width, concatenated with one learnable mask token per target position (carrying the
target's 3D position) and processed jointly by 12 blocks of width 384; the outputs at the mask tokens, after a
final LayerNorm and a projection back to the encoder width, are the predictions.

Positions: with `pos_embed="sincos"` the fixed 3D sin-cos table (predictor width) is added to the context tokens
and to the mask tokens at their indices (V-JEPA 1); with `pos_embed="rope"` nothing is added and every attention
layer rotates queries and keys by the (t, h, w) coordinates of the token's index (V-JEPA 2, the `transformers`
convention). One mask token per mask family (`family` selects it), zero-initialised.

Parameter names are the official V-JEPA 1 predictor names with the `predictor_` prefix removed
(`predictor_embed` -> `embed`, `mask_tokens.{k}`, `predictor_pos_embed` -> `pos_embed` (buffer),
`predictor_blocks` -> `blocks`, `predictor_norm` -> `norm`, `predictor_proj` -> `proj`).
V-JEPA 2.1 (arXiv 2603.14482; github.com/facebookresearch/vjepa2 `app/vjepa_2_1/models/predictor.py`):
  - `context_head=True` adds a second output projection `proj_context` (official `predictor_proj_context`) applied
    to the predictor's outputs at the context tokens after the final LayerNorm: `forward(..., return_context=True)`
    returns (predictions at the targets, predictions at the context tokens), for the dense (context) loss.
  - `levels=4` (deep supervision): the input is the encoder's 4 concatenated levels, so `embed` is an MLP
    Linear(4 D, D) -> GELU -> Linear(D, P) (`embed.0`, `embed.2`; the official `predictor_embed` Sequential; GELU
    since the official configs leave `use_pred_silu` off), and both heads project to 4 D.
  With the defaults (`levels=1`, no context head) parameters, names and numerics are the V-JEPA 1/2 predictor's.
Departures: the official V-JEPA 2 / `transformers` predictor sorts the joint sequence by position before the
blocks and unsorts afterwards; self-attention without a mask is permutation-equivariant and RoPE depends only on
each token's own index, so we skip the sort (outputs equal up to float summation order). A bad `family` is an
error here, not taken modulo the number of mask tokens. Key-padding masks (policy "pad") are supported.

Pixel targets (`pixel_dim` > 0, `optim.target=pixels`, vjepa/pixels.py): the output projection is a separate
Linear `pixel_proj` to the C * tubelet * patch^2 pixel values of each target token, in place of `proj` (which
is then absent); the feature predictor (`pixel_dim` 0) is unchanged, parameter for parameter. Pixel targets take
neither levels nor the context head.

Shapes: B batch, Kc context tokens, Kt target tokens, D encoder width, L levels, P predictor width, N tokens of
the grid, grid = (T', H', W'), X pixel target width.
"""

from __future__ import annotations

import torch
from torch import nn

from vjepa.masks.ops import cat_valid, gather_tokens, idx_to_coords
from vjepa.models.layers import Block
from vjepa.models.pos_embed import RoPE3D, interpolate_table, sincos_3d_table

POS_EMBEDS = ("sincos", "rope")


class Predictor(nn.Module):
    """`forward(ctx [B, Kc, L D], ctx_idx [B, Kc], tgt_idx [B, Kt], grid, family) -> [B, Kt, L D]` in tgt_idx
    order (L = `levels`, 1 by default; [B, Kt, X] with pixel_dim X > 0); with `return_context` also [B, Kc, L D]
    at the context tokens."""

    def __init__(
        self,
        *,
        embed_dim: int,
        pred_embed_dim: int = 384,
        depth: int = 12,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        num_mask_tokens: int = 2,
        pos_embed: str = "sincos",
        uniform_power: bool = True,
        img_size: int,
        num_frames: int,
        patch_size: int = 16,
        tubelet_size: int = 2,
        attn_impl: str = "sdpa",
        pixel_dim: int = 0,
        levels: int = 1,
        context_head: bool = False,
    ) -> None:
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"Predictor: unknown pos_embed {pos_embed!r}; valid: {POS_EMBEDS}")
        if levels < 1:
            raise ValueError(f"Predictor: levels must be >= 1, got {levels}")
        if num_mask_tokens < 1:
            raise ValueError(f"Predictor: num_mask_tokens must be >= 1, got {num_mask_tokens}")
        self.embed_dim, self.pred_embed_dim, self.depth = embed_dim, pred_embed_dim, depth
        self.num_heads, self.mlp_ratio, self.qkv_bias, self.norm_eps = num_heads, mlp_ratio, qkv_bias, norm_eps
        self.num_mask_tokens, self.pos_embed_type, self.uniform_power = num_mask_tokens, pos_embed, uniform_power
        self.img_size, self.num_frames, self.attn_impl = img_size, num_frames, attn_impl
        self.patch_size, self.tubelet_size, self.pixel_dim = patch_size, tubelet_size, pixel_dim
        self.levels, self.context_head = levels, context_head
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)

        if levels == 1:
            self.embed = nn.Linear(embed_dim, pred_embed_dim)
        else:
            self.embed = nn.Sequential(
                nn.Linear(levels * embed_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, pred_embed_dim)
            )
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, pred_embed_dim)) for _ in range(num_mask_tokens)]
        )
        if pos_embed == "sincos":
            table = sincos_3d_table(self.grid, pred_embed_dim, uniform_power)[None]  # [1, N, P]
            self.register_buffer("pos_embed", table)
            self.rope = None
        else:
            self.register_buffer("pos_embed", None)
            self.rope = RoPE3D(head_dim=pred_embed_dim // num_heads)
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim=pred_embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    norm_eps=norm_eps,
                    attn_impl=attn_impl,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(pred_embed_dim, eps=norm_eps)
        if pixel_dim > 0 and (levels != 1 or context_head):
            raise ValueError("Predictor: pixel targets (pixel_dim > 0) take neither levels > 1 nor the context head")
        if pixel_dim > 0:  # pixel targets: its own output Linear, no feature projection
            self.proj = None
            self.pixel_proj = nn.Linear(pred_embed_dim, pixel_dim)
        else:
            self.proj = nn.Linear(pred_embed_dim, levels * embed_dim)
            self.pixel_proj = None
        self.proj_context = nn.Linear(pred_embed_dim, levels * embed_dim) if context_head else None

    @torch.no_grad()
    def reset_pos_embed(self) -> None:
        """Refill the sin-cos buffer (after `to_empty` from the meta device); called by `init_weights`."""
        if self.pos_embed is not None:
            table = sincos_3d_table(self.grid, self.pred_embed_dim, self.uniform_power)[None]  # [1, N, P]
            self.pos_embed.copy_(table.to(self.pos_embed.device, self.pos_embed.dtype))

    def _sequence(
        self,
        ctx: torch.Tensor,
        ctx_idx: torch.Tensor,
        tgt_idx: torch.Tensor,
        grid: tuple[int, int, int],
        family: int,
        ctx_valid: torch.Tensor | None,
        tgt_valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The joint input of one family: (tokens [B, Kc + Kt, P], token indices [B, Kc + Kt], key-padding
        mask [B, Kc + Kt] or None)."""
        if not 0 <= family < self.num_mask_tokens:
            raise ValueError(f"Predictor: family {family} out of range; this predictor has {self.num_mask_tokens}")
        b, kt = ctx.shape[0], tgt_idx.shape[1]
        x = self.embed(ctx)  # [B, Kc, P] (from [B, Kc, L D])
        m = self.mask_tokens[family].to(x.dtype).expand(b, kt, -1)  # [B, Kt, P]
        if self.pos_embed is not None:
            table = interpolate_table(self.pos_embed[0], self.grid, grid).to(x.dtype)  # [N, P]
            table = table[None].expand(b, -1, -1)  # [B, N, P]
            x = x + gather_tokens(table, ctx_idx)  # [B, Kc, P]
            m = m + gather_tokens(table, tgt_idx)  # [B, Kt, P]
        valid = cat_valid([ctx_idx, tgt_idx], [ctx_valid, tgt_valid])  # [B, Kc + Kt] or None
        return torch.cat([x, m], dim=1), torch.cat([ctx_idx, tgt_idx], dim=1), valid

    def _blocks(
        self,
        x: torch.Tensor,
        idx: torch.Tensor,
        grid: tuple[int, int, int],
        valid: torch.Tensor | None,
        segments: tuple[int, ...] | None,
    ) -> torch.Tensor:
        """x [B, K, P] at token indices idx [B, K] through the blocks (RoPE from idx) -> [B, K, P]."""
        rope = self.rope(idx_to_coords(idx, grid)) if self.rope is not None else None  # cos, sin [B, 1, K, 3c]
        for blk in self.blocks:
            x = blk(x, rope=rope, valid=valid, segments=segments)  # [B, K, P]
        return x

    def _heads(
        self, x: torch.Tensor, kc: int, return_context: bool
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Block outputs of one family [B, Kc + Kt, P] -> predictions at the targets (and at the context)."""
        if return_context:
            x = self.norm(x)  # [B, Kc + Kt, P]
            return self.proj(x[:, kc:]), self.proj_context(x[:, :kc])  # [B, Kt, L D], [B, Kc, L D]
        x = self.norm(x[:, kc:])  # [B, Kt, P]
        if self.pixel_proj is not None:
            return self.pixel_proj(x)  # [B, Kt, X]
        return self.proj(x)  # [B, Kt, L D]

    def forward(
        self,
        ctx: torch.Tensor | None,
        ctx_idx: torch.Tensor | None,
        tgt_idx: torch.Tensor | None,
        grid: tuple[int, int, int],
        family: int = 0,
        ctx_valid: torch.Tensor | None = None,
        tgt_valid: torch.Tensor | None = None,
        return_context: bool = False,
        families: list[dict] | None = None,
    ):
        """Predict the encoder representation at `tgt_idx` from context tokens `ctx` at `ctx_idx` -> [B, Kt, L D]
        (the pixel targets [B, Kt, X] with pixel_dim X > 0); with `return_context` (needs the context head) ->
        (that, the context head's output [B, Kc, L D]). With `families` (ctx, ctx_idx and tgt_idx None) the
        predictions of several mask families at once, packed (`_forward_families`); through `forward` so that
        FSDP2's hooks gather the parameters."""
        if return_context and self.proj_context is None:
            raise ValueError("Predictor: return_context needs a predictor built with context_head=True")
        if families is not None:
            return self._forward_families(families, grid, return_context)
        x, idx, valid = self._sequence(ctx, ctx_idx, tgt_idx, grid, family, ctx_valid, tgt_valid)
        return self._heads(self._blocks(x, idx, grid, valid, None), ctx.shape[1], return_context)

    def _forward_families(
        self, families: list[dict], grid: tuple[int, int, int], return_context: bool
    ) -> list[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """`forward` for several mask families at once, packed into one sequence per clip (vjepa/models/layers.py):
        every per-token operation runs once over all families, attention within each. `families[f]` holds the
        keyword arguments of `forward` for family f (ctx, ctx_idx, tgt_idx, ctx_valid, tgt_valid; `family`
        defaults to f). Returns what `forward` returns, per family, equal to it to float rounding."""
        parts = [
            self._sequence(
                f["ctx"], f["ctx_idx"], f["tgt_idx"], grid, f.get("family", k), f.get("ctx_valid"), f.get("tgt_valid")
            )
            for k, f in enumerate(families)
        ]
        segments = tuple(int(x.shape[1]) for x, _, _ in parts)
        valid = cat_valid([i for _, i, _ in parts], [v for _, _, v in parts])  # [B, sum (Kc + Kt)] or None
        x = torch.cat([x for x, _, _ in parts], dim=1)  # [B, sum (Kc + Kt), P]
        idx = torch.cat([i for _, i, _ in parts], dim=1)
        out = self._blocks(x, idx, grid, valid, segments if len(parts) > 1 else None)
        kcs = [int(f["ctx"].shape[1]) for f in families]
        return [self._heads(y, kc, return_context) for y, kc in zip(out.split(segments, dim=1), kcs)]
