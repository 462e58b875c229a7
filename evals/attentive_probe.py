"""The attentive probe's modules: one readable probe, and a grid of G probes trained in parallel with its optimizer.

Paper: V-JEPA (Bardes et al. 2024) Sec. 4.3 and Appendix D.1; V-JEPA 2 (Assran et al. 2025) frozen evaluation.
- "v1": one cross-attention block: a learnable query q attends over the frozen tokens (keys and values from
  LayerNorm(tokens), the query itself is not normalised), the output is added back to q (residual), then a
  pre-LN GELU MLP (ratio 4) with residual; then LayerNorm and a linear classifier.
- "v2": four blocks: three pre-LN self-attention blocks over the tokens (the query is not involved), then the
  cross-attention block above.
Width = feature width D; heads default to 16 for D >= 1024 else D // 64 (at least 1). All Linear weights and
the query are trunc-normal (std 0.02), biases 0, LayerNorms 1/0, and the output projections of block i
(1-based) are divided by sqrt(2 i), as in the official attentive pooler.

The grid: G heads of one architecture. `ProbeGrid` holds every parameter with a leading grid dimension and runs
all heads at once on each batch: batched matmuls; self-attention folds G into the SDPA batch; the single-query
cross-attention never projects the tokens to keys and values (the query is folded into the key weights and the
tokens are pooled before the value projection, see `_pooled_cross_attention`), which cuts its cost from
O(K D^2) to O(K D H) per sample and head. The heads share no parameters, so per-head losses summed before
backward give each head exactly its own gradient. The grid keeps its parameters in two flat [G, P] tensors (with
and without weight decay) and `GridAdamW` runs torch's fused AdamW on their rows, head i with lr_i and wd_i
(2 G tensors per step instead of G x 40). `AttentiveProbe` is the readable one-head module (direct key and
value projections, explicit softmax attention): the oracle in tests and what `vjepa.evals.attentive.load_probe`
returns. Measured on CPU (1 thread; N=96 x V=3 x K=64 x D=192, batch 64, 6 heads): v1 grid 0.29 s/epoch,
6 single heads one after another 0.57 s, the grid with direct key/value projections 2.0 s; v2 is compute-bound
(the self-attention blocks) and the grid is no faster than sequential heads on CPU (26 s/epoch either way).

The training and evaluation driver (data, lr schedule, epochs, checkpoints, CLI) is evals/attentive.py.

Departures from the official code: a LayerNorm precedes the linear classifier, as the paper describes.

Shapes: B batch, K tokens, D width, H attention heads, hd = D / H, G grid heads, C classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vjepa.models.layers import Mlp, reference_attention

VARIANTS = {"v1": 0, "v2": 3}  # self-attention blocks before the cross-attention block
LN_EPS = 1e-6
MLP_RATIO = 4


def default_num_heads(dim: int) -> int:
    return 16 if dim >= 1024 else max(1, dim // 64)


# ---------------------------------------------------------------------------------------------------------------
# One probe: the readable reference path.


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, d = x.shape
        q, kk, v = self.qkv(x).view(b, k, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(reference_attention(q, kk, v).transpose(1, 2).reshape(b, k, d))  # [B, K, D]


class _CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, k, d = x.shape
        h = self.num_heads
        q = self.q(query).view(1, 1, h, d // h).transpose(1, 2).expand(b, h, 1, d // h)  # [B, H, 1, hd]
        kk, v = self.kv(x).view(b, k, 2, h, d // h).permute(2, 0, 3, 1, 4)  # [B, H, K, hd] each
        return self.proj(reference_attention(q, kk, v).reshape(b, d))  # [B, D]


class _SelfBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = _SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(in_features=dim, hidden_features=MLP_RATIO * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _CrossBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = _CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(in_features=dim, hidden_features=MLP_RATIO * dim)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = query + self.attn(query, self.norm1(x))  # [B, D]
        return y + self.mlp(self.norm2(y))


class AttentiveProbe(nn.Module):
    """One attentive probe: tokens [B, K, D] -> logits [B, C]."""

    def __init__(self, *, dim: int, num_classes: int, num_heads: int | None = None, variant: str = "v1") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown attentive probe variant {variant!r}; valid: {sorted(VARIANTS)}")
        num_heads = num_heads or default_num_heads(dim)
        if dim % num_heads != 0:
            raise ValueError(f"attentive probe: width {dim} is not divisible by num_heads {num_heads}")
        self.variant, self.num_heads = variant, num_heads
        self.query = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(_SelfBlock(dim, num_heads) for _ in range(VARIANTS[variant]))
        self.cross = _CrossBlock(dim, num_heads)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """The official attentive-pooler init, drawn from `generator` (module order, so reproducible)."""
        for name, p in self.named_parameters():
            if name == "query" or (name.endswith(".weight") and p.ndim == 2):
                nn.init.trunc_normal_(p, std=0.02, generator=generator)
            else:
                p.fill_(1.0 if name.endswith(".weight") else 0.0)  # LayerNorm weight 1; every bias 0
        for i, block in enumerate([*self.blocks, self.cross], start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * i))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)  # [B, K, D]
        return self.head(self.norm(self.cross(self.query, x)))  # [B, C]


def linear_weight_names(probe: AttentiveProbe) -> set[str]:
    """Names of the probe's Linear weights (stored [out, in]; a ProbeGrid lays them out [G, in, out])."""
    return {f"{n}.weight" for n, m in probe.named_modules() if isinstance(m, nn.Linear)}


# ---------------------------------------------------------------------------------------------------------------
# G probes at once: parameters with a leading grid dimension.


def _ln(x: torch.Tensor, p: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """LayerNorm with per-head affine: x [M, D] (shared) or [G, M, D] -> [G, M, D]."""
    return torch.addcmul(
        p[f"{name}.bias"][:, None], F.layer_norm(x, x.shape[-1:], eps=LN_EPS), p[f"{name}.weight"][:, None]
    )


def _lin(x: torch.Tensor, p: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Per-head Linear: x [G, M, in] @ weight [G, in, out] + bias -> [G, M, out]."""
    return torch.baddbmm(p[f"{name}.bias"][:, None], x, p[f"{name}.weight"])


def _mlp(x: torch.Tensor, p: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return _lin(F.gelu(_lin(x, p, f"{name}.fc1")), p, f"{name}.fc2")


def _pooled_cross_attention(tokens: torch.Tensor, p: dict[str, torch.Tensor], h: int) -> torch.Tensor:
    """Cross-attention of each head's single query over LayerNorm(tokens), before the output projection.

    tokens: [B, K, D] (shared by all heads) or [G, B, K, D] -> [G, B, D]. With one query, keys and values need
    not be materialised: with LN(x) = xh * w + c and per-head slices Wk_h, Wv_h of the kv projection,
      score_h(x) = q_h . (LN(x) Wk_h + bk_h) / sqrt(hd) = xh . (w * (Wk_h q_h)) / sqrt(hd) + const,
      out_h = sum_k a_hk (LN(x_k) Wv_h + bv_h) = (sum_k a_hk xh_k) (w * Wv_h) + c Wv_h + bv_h,
    (the constant drops out of the softmax; the weights a_hk sum to 1). This costs O(K D H) per sample and head
    instead of the O(K D^2) of projecting every token; `AttentiveProbe` computes it the direct way.
    """
    g, d = p["query"].shape[0], p["query"].shape[-1]
    hd = d // h
    *_, b, k, _ = tokens.shape
    xh = F.layer_norm(tokens, (d,), eps=LN_EPS)  # [(G,) B, K, D]
    w, c = p["cross.norm1.weight"], p["cross.norm1.bias"]  # [G, D]
    wk, wv = p["cross.attn.kv.weight"].split(d, dim=2)  # [G, D, D] each
    bv = p["cross.attn.kv.bias"][:, d:]  # [G, D]
    q = _lin(p["query"], p, "cross.attn.q").view(g, h, hd)  # [G, H, hd]
    a = torch.einsum("gdhe,ghe->gdh", (w[:, :, None] * wk).view(g, d, h, hd), q) / math.sqrt(hd)  # [G, D, H]
    if tokens.ndim == 3:  # shared tokens: one GEMM for all heads
        scores = (xh.reshape(b * k, d) @ a.permute(1, 0, 2).reshape(d, g * h)).view(b, k, g, h)  # [B, K, G, H]
        attn = scores.permute(2, 0, 3, 1).softmax(dim=-1)  # [G, B, H, K]
        pooled = torch.einsum("gbhk,bkd->gbhd", attn, xh)  # [G, B, H, D]
    else:
        scores = torch.bmm(xh.reshape(g, b * k, d), a).view(g, b, k, h)  # [G, B, K, H]
        attn = scores.permute(0, 1, 3, 2).softmax(dim=-1)  # [G, B, H, K]
        pooled = torch.einsum("gbhk,gbkd->gbhd", attn, xh)  # [G, B, H, D]
    out = torch.einsum("gbhd,gdhe->gbhe", pooled, (w[:, :, None] * wv).view(g, d, h, hd))  # [G, B, H, hd]
    bias = torch.bmm(c[:, None], wv).squeeze(1) + bv  # [G, D]
    return out.reshape(g, b, d) + bias[:, None]  # [G, B, D]


class ProbeGrid:
    """G attentive probes of one architecture, their parameters in two flat leaf tensors [G, P] (with and without
    weight decay). `params` gives views name -> [G, ...] (Linear weights laid out [G, in, out]); gradients of the
    views land in the flat tensors, so the optimizer updates 2 G contiguous tensors (2 per head)."""

    KINDS = ("decay", "no_decay")

    def __init__(self, params: dict[str, torch.Tensor], *, variant: str, num_heads: int, linear: set[str]) -> None:
        self.variant, self.num_heads, self.linear = variant, num_heads, linear
        self.size, _, self.dim = params["query"].shape
        self.num_classes = params["head.bias"].shape[1]
        self.shapes = {n: tuple(p.shape[1:]) for n, p in params.items()}
        # as the official probes: no weight decay for biases and 1-D tensors (per head), i.e. LayerNorm weights
        self.names = {
            "decay": [n for n, p in params.items() if not n.endswith(".bias") and p.ndim > 2],
            "no_decay": [n for n, p in params.items() if n.endswith(".bias") or p.ndim <= 2],
        }
        self.flat = {
            kind: torch.cat([params[n].detach().reshape(self.size, -1) for n in names], dim=1).requires_grad_(True)
            for kind, names in self.names.items()
        }  # [G, P_kind] each

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """name -> [G, ...] views of the flat tensors (differentiable; in-place edits under no_grad persist)."""
        out = {}
        for kind, names in self.names.items():
            sizes = [math.prod(self.shapes[n]) for n in names]
            for n, t in zip(names, self.flat[kind].split(sizes, dim=1)):
                out[n] = t.view(self.size, *self.shapes[n])
        return out

    @classmethod
    def replicate(cls, probe: AttentiveProbe, size: int) -> ProbeGrid:
        """A grid of `size` copies of `probe`."""
        linear = linear_weight_names(probe)
        params = {}
        for name, p in probe.named_parameters():
            p = p.detach().T if name in linear else p.detach()
            params[name] = p.unsqueeze(0).repeat(size, *[1] * p.ndim)
        return cls(params, variant=probe.variant, num_heads=probe.num_heads, linear=linear)

    def probe(self, i: int) -> AttentiveProbe:
        """Head i as a stand-alone AttentiveProbe (a copy)."""
        probe = AttentiveProbe(
            dim=self.dim, num_classes=self.num_classes, num_heads=self.num_heads, variant=self.variant
        )
        state = {n: (p[i].T if n in self.linear else p[i]).detach().clone() for n, p in self.params.items()}
        probe.load_state_dict(state)
        return probe.eval()

    def zero_grad(self) -> None:
        for t in self.flat.values():
            t.grad = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, K, D] (shared by all heads) -> logits [G, B, C]."""
        p, g, h = self.params, self.size, self.num_heads
        b, k, d = x.shape
        tokens = x  # [B, K, D]; becomes [G, B, K, D] after the first self-attention block
        for i in range(VARIANTS[self.variant]):
            pre = f"blocks.{i}"
            qkv = _lin(_ln(tokens.reshape(-1, b * k, d), p, f"{pre}.norm1"), p, f"{pre}.attn.qkv")  # [G, B*K, 3D]
            q, kk, v = qkv.view(g * b, k, 3, h, d // h).permute(2, 0, 3, 1, 4)  # [G*B, H, K, hd] each
            a = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(g, b * k, d)  # [G, B*K, D]
            tokens = tokens + _lin(a, p, f"{pre}.attn.proj").view(g, b, k, d)  # [G, B, K, D]
            tokens = tokens + _mlp(_ln(tokens.view(g, b * k, d), p, f"{pre}.norm2"), p, f"{pre}.mlp").view(g, b, k, d)
        y = p["query"] + _lin(_pooled_cross_attention(tokens, p, h), p, "cross.attn.proj")  # [G, B, D]
        y = y + _mlp(_ln(y, p, "cross.norm2"), p, "cross.mlp")
        return _lin(_ln(y, p, "norm"), p, "head")  # [G, B, C]

    __call__ = forward


class GridAdamW:
    """torch.optim.AdamW over the rows of a grid's flat tensors: head i has two parameter groups, its row of the
    decay tensor (weight decay wd_i) and its row of the no-decay tensor, both with learning rate lr_i."""

    def __init__(self, grid: ProbeGrid, hypers: Sequence[tuple[float, float]], *, fused: bool = True) -> None:
        self.links: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (row view, flat tensor, head)
        groups = []
        for i, (lr, wd) in enumerate(hypers):
            for kind in grid.KINDS:
                row = grid.flat[kind].detach()[i].requires_grad_(True)  # shares storage with the flat tensor
                self.links.append((row, grid.flat[kind], i))
                groups.append(
                    {"params": [row], "lr": lr, "base_lr": lr, "weight_decay": wd if kind == "decay" else 0.0}
                )
        self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8, fused=fused)

    def step(self, lr_scale: float) -> None:
        """One AdamW update of every head with lr_i * lr_scale, from the grads of the flat tensors."""
        for row, flat, i in self.links:
            row.grad = flat.grad[i]
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
