"""The V-JEPA 2.1 dense (context) loss, its weight schedule and its distance weights; deep-supervision targets.

Paper: V-JEPA 2.1 (arXiv 2603.14482), dense predictive loss and deep self-supervision. Official code:
github.com/facebookresearch/vjepa2 `app/vjepa_2_1/train.py` (`loss_fn`, `forward_target`, the `predict_all` branch),
`app/vjepa_2_1/models/utils/masks_dist.py` (`compute_mask_distance`) and `app/vjepa_2_1/models/utils/modules.py`
(`Lambda_LinearWarmupHold`).

    L = L_jepa + lambda(step) * mean_f L_dense_f
    L_dense_f = mean_b ( mean over the valid context tokens i of sample b of w_i * mean_c |c_ic - h_ic|^p ) / p
    w_i = 1 / sqrt(d_i)   (distance weighting; else 1), d_i the Euclidean (t', h', w') grid distance from context
          token i to the nearest valid target token of the same sample
    lambda(step) = 0 before `start`, lambda * (step - start) / (end - start) up to `end`, lambda from then on
                   (start = end = 0: lambda at every step)

c: the predictor's context head at the context positions; h: the targets there. The weighted mean is not
renormalised by the weights (the official `torch.mean` of the weighted errors). The official code takes one mean
over the whole [B, K, D] tensor, which equals ours when every sample keeps the same number of tokens (its mask
policy); per sample first keeps padded slots out and makes 1 process = 2 processes for the same global batch.
Departure: d is clamped at 1 (the smallest distance between two different tokens), so a token that is both
context and target (no official mask does that) gets weight 1 instead of infinity. The official
`offset_context_loss` rescaling (off in every official config) is not implemented.

Deep-supervision targets (`chunk_layer_norm`): the target encoder's L concatenated levels [B, N, L D] are layer
normed without affine parameters per D-wide chunk, not over L D (the official `forward_target`).

Shapes: B batch, N tokens, Kc context tokens, Kt target tokens, D encoder width, L levels, C = L D target width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vjepa.masks.ops import idx_to_coords

DISTANCE_TABLE_ENTRIES = 1 << 26  # context_distance builds its distance table for this many entries at a time


def dense_lambda(weight: float, start: int, end: int, step: int) -> float:
    """The dense loss weight at `step` (0-based): 0 before start, linear up to `weight` at end, then held."""
    if start == 0 and end == 0:
        return weight
    if step < start:
        return 0.0
    if step >= end:
        return weight
    return weight * (step - start) / (end - start)


@torch.no_grad()
def context_distance(
    ctx_idx: torch.Tensor, tgt_idx: torch.Tensor, grid: tuple[int, int, int], tgt_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """d [B, Kc] fp32: the Euclidean grid distance from each context token to the nearest valid target token of the
    same sample (inf when the sample has none). Exact on integer coordinates (no matrix-product shortcut); the
    [b, Kc, Kt] distance table is built for a few samples at a time (DISTANCE_TABLE_ENTRIES at most, or one)."""
    c = idx_to_coords(ctx_idx, grid).float()  # [B, Kc, 3]
    t = idx_to_coords(tgt_idx, grid).float()  # [B, Kt, 3]
    b, kc, kt = c.shape[0], c.shape[1], t.shape[1]
    per = max(1, DISTANCE_TABLE_ENTRIES // max(1, kc * kt))
    out = []
    for i in range(0, b, per):
        d = torch.cdist(c[i : i + per], t[i : i + per], compute_mode="donot_use_mm_for_euclid_dist")  # [b, Kc, Kt]
        if tgt_valid is not None:
            d = d.masked_fill(~tgt_valid[i : i + per, None, :], float("inf"))  # [b, Kc, Kt]
        out.append(d.min(dim=-1).values)  # [b, Kc]
    return torch.cat(out)  # [B, Kc]


def distance_weights(d: torch.Tensor) -> torch.Tensor:
    """w = 1 / sqrt(max(d, 1)) [B, Kc] (0 where d is inf)."""
    return d.clamp_min(1.0).rsqrt()


def dense_loss(
    ctx_pred: torch.Tensor,
    target: torch.Tensor,
    p: float = 1.0,
    valid: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """ctx_pred, target [B, Kc, C]; valid [B, Kc] bool; weights [B, Kc] -> scalar (see the module docstring)."""
    diff = (ctx_pred.float() - target.float()).abs()  # [B, Kc, C]
    if p != 1.0:
        diff = diff.pow(p)
    err = diff.mean(dim=-1)  # [B, Kc]
    if weights is not None:
        err = err * weights
    w = torch.ones_like(err) if valid is None else valid.to(err.dtype)  # [B, Kc]
    per_sample = (err * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # [B]
    return per_sample.mean() / p


def chunk_layer_norm(h: torch.Tensor, levels: int) -> torch.Tensor:
    """h [B, N, L D] -> fp32, each of the L D-wide chunks layer normed without affine parameters."""
    h = h.float()
    if levels == 1:
        return F.layer_norm(h, (h.shape[-1],))
    b, n, c = h.shape
    chunks = h.reshape(b, n, levels, c // levels)  # [B, N, L, D]
    return F.layer_norm(chunks, (c // levels,)).reshape(b, n, c)  # [B, N, L D]
