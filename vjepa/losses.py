"""The V-JEPA feature-prediction loss (paper Eq. 1-2) and its optional regulariser.

loss_family = mean(|z - h|^p) / p over target tokens and channels, with p = 1 (L1) by default; the total is
the mean over mask families. `valid` (policy "pad") excludes padded target slots from the mean.
The V-JEPA 1 variance hinge on predictions, mean(relu(1 - s)) with s the standard deviation of the predictions
across target tokens per sample and channel (sqrt(var + 1e-4)) averaged over the mask families (as the official
`reg_fn`: "predictor variance across patches"), is off by default (weight 0). It counters a partial collapse in
which all tokens of a clip carry the same feature.

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


def prediction_std(pred: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Standard deviation of the predictions across target tokens, per sample and channel: pred [B, K, D] -> [B, D].

    Unbiased variance (as torch.var); `valid` [B, K] bool excludes padded slots."""
    pred = pred.float()
    if valid is None:
        return torch.sqrt(pred.var(dim=1) + eps)
    w = valid.to(pred.dtype).unsqueeze(-1)  # [B, K, 1]
    n = w.sum(dim=1)  # [B, 1]
    mean = (pred * w).sum(dim=1) / n.clamp_min(1.0)  # [B, D]
    var = (((pred - mean.unsqueeze(1)) ** 2) * w).sum(dim=1) / (n - 1).clamp_min(1.0)
    return torch.sqrt(var + eps)


def variance_hinge(stds: list[torch.Tensor]) -> torch.Tensor:
    """V-JEPA 1 regulariser: mean(relu(1 - s)) with s the per-family prediction_std [B, D] averaged over families."""
    return torch.relu(1.0 - torch.stack(stds).mean(dim=0)).mean()
