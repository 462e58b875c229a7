"""The V-JEPA feature-prediction loss (paper Eq. 1-2) and its optional regulariser.

loss_family = mean(|z - h|^p) / p over target tokens and channels, with p = 1 (L1) by default; the total is
the mean over mask families. `valid` (policy "pad") excludes padded target slots from the mean.
The V-JEPA 1 variance hinge mean(relu(1 - std(z over batch))) on predictions is off by default (weight 0).

Shapes: B batch, K target tokens, D width.
"""

from __future__ import annotations

import torch


def jepa_loss(
    pred: torch.Tensor, target: torch.Tensor, p: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """pred, target [B, K, D]; valid [B, K] bool or None -> scalar."""
    diff = (pred - target).abs()
    if p != 1.0:
        diff = diff.pow(p)
    if valid is None:
        return diff.mean() / p
    w = valid.to(diff.dtype).unsqueeze(-1)  # [B, K, 1]
    return (diff * w).sum() / (w.sum() * diff.shape[-1]).clamp_min(1.0) / p


def variance_hinge(pred: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean over tokens and channels of relu(1 - std over the batch); pred [B, K, D] -> scalar."""
    std = torch.sqrt(pred.float().var(dim=0) + eps)  # [K, D]
    return torch.relu(1.0 - std).mean()
