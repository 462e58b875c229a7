"""Transformer building blocks: multi-head self-attention (three interchangeable kernels), MLP, pre-LN block.

Paper: V-JEPA Sec. 3.3 / Appendix B (standard ViT blocks: pre-LN, LayerNorm eps 1e-6, qkv bias, GELU MLP);
V-JEPA 2 adds 3D RoPE on queries and keys (see pos_embed.py).

Parameter names follow the official V-JEPA code (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`),
so official checkpoints load by stripping a prefix. The qkv projection is fused, rows ordered [q; k; v] and
within each, heads in order.

Attention kernels (`attn_impl`), all computing softmax(Q K^T / sqrt(hd)) V:
  - "sdpa": `F.scaled_dot_product_attention` (fast path, picks flash/efficient kernels on GPU).
  - "reference": the explicit formula, readable; the oracle in tests.
  - "flash": `flash_attn.flash_attn_func` (fp16/bf16 on CUDA only). Refused at construction when flash_attn is
    not importable or CUDA is absent; no key-padding masks (use "sdpa" with the "pad" mask policy).
Key-padding `valid` [B, N] bool: False keys are ignored by every query (their own outputs are computed but
meaningless). Every row needs at least one valid key, which the mask policies guarantee (never an empty
context). No dropout and no drop-path: the V-JEPA recipes use none.

Packed sequences: `segments` (a tuple of token counts summing to N) makes the N tokens of a row several
independent sequences laid end to end (block-diagonal attention): every per-token operation (norms, qkv, output
projection, MLP) runs once over all of them, one larger matrix product, and attention runs within each segment.
Training packs the mask families this way (vjepa/models/multimask.py, `Predictor.forward(families=...)`); the
result equals running each segment alone, to float rounding.

Shapes: B batch, N tokens, D width, H heads, hd = D / H head width.
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vjepa.models.pos_embed import apply_rope

ATTN_IMPLS = ("sdpa", "reference", "flash")

__all__ = ["ATTN_IMPLS", "Attention", "Block", "Mlp", "reference_attention"]


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) v for q, k, v [B, H, N, hd]; `valid` [B, N] bool masks keys -> [B, H, N, hd]."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, H, N, N]
    if valid is not None:
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))  # [B, H, N, N]
    weights = scores.float().softmax(dim=-1).to(v.dtype)  # [B, H, N, N]
    return weights @ v  # [B, H, N, hd]


def _check_flash_available() -> None:
    if importlib.util.find_spec("flash_attn") is None:
        raise RuntimeError("attn_impl='flash' needs the flash_attn package (pip install '.[gpu]'); use 'sdpa'")
    if not torch.cuda.is_available():
        raise RuntimeError("attn_impl='flash' needs a CUDA device; use 'sdpa' on CPU")


def _flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from flash_attn import flash_attn_func

    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError(f"attn_impl='flash' needs fp16/bf16 CUDA tensors, got {q.dtype} on {q.device}")
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, N, H, hd]
    return out.transpose(1, 2)  # [B, H, N, hd]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, optional RoPE and optional key-padding mask."""

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool = True, attn_impl: str = "sdpa") -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"Attention: dim {dim} is not divisible by num_heads {num_heads}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"Attention: unknown attn_impl {attn_impl!r}; valid: {ATTN_IMPLS}")
        if attn_impl == "flash":
            _check_flash_available()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_impl = attn_impl
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        valid: torch.Tensor | None = None,
        segments: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """x [B, N, D]; rope = (cos, sin) from `RoPE3D` or None; valid [B, N] bool or None; segments: token
        counts of packed sequences (module docstring) or None -> [B, N, D]."""
        q, k, v = rearrange(self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.num_heads)  # [B, H, N, hd]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # [B, H, N, hd]
        if segments is None or len(segments) == 1:
            out = self._attend(q, k, v, valid)  # [B, H, N, hd]
        else:
            parts = zip(q.split(segments, 2), k.split(segments, 2), v.split(segments, 2))
            masks = valid.split(segments, 1) if valid is not None else [None] * len(segments)
            out = torch.cat([self._attend(qs, ks, vs, m) for (qs, ks, vs), m in zip(parts, masks)], dim=2)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # [B, N, D]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """q, k, v [B, H, N, hd], valid [B, N] or None -> [B, H, N, hd] with the configured kernel."""
        if self.attn_impl == "sdpa":
            mask = None if valid is None else valid[:, None, None, :]  # [B, 1, 1, N]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, N, hd]
        if self.attn_impl == "reference":
            return reference_attention(q, k, v, valid)  # [B, H, N, hd]
        if valid is not None:
            raise ValueError("attn_impl='flash' does not take key-padding masks; use 'sdpa' with policy 'pad'")
        return _flash_attention(q, k, v)  # [B, H, N, hd]

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, attn_impl={self.attn_impl!r}"


class Mlp(nn.Module):
    """fc1 -> GELU (exact, erf) -> fc2; parameter names as the official code's (and timm's) Mlp."""

    def __init__(self, *, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> [..., D]."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); MLP hidden = int(dim * mlp_ratio)."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_impl=attn_impl)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        valid: torch.Tensor | None = None,
        segments: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """x [B, N, D] -> [B, N, D]; `segments`: packed sequences (module docstring)."""
        x = x + self.attn(self.norm1(x), rope=rope, valid=valid, segments=segments)
        return x + self.mlp(self.norm2(x))
