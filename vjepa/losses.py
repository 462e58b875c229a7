"""The V-JEPA feature-prediction loss (paper Eq. 1-2), its optional regularisers and a collapse diagnostic.

loss_family = mean(|z - h|^p) / p over target tokens and channels, with p = 1 (L1) by default; the total is
the mean over mask families. `valid` (padded slots: policy "pad", or rows of mask groups with different kept counts)
excludes padded target slots: the loss is then the mean over samples of each sample's mean over its valid tokens,
so every clip weighs the same whatever its kept count, and per-process losses averaged over processes equal the
loss of one process holding all the samples (equal per-process batches).
The V-JEPA 1 variance hinge on predictions, mean(relu(1 - s)) with s the standard deviation of the predictions
across target tokens per sample and channel (sqrt(var + 1e-4)) averaged over the mask families (as the official
`reg_fn`: "predictor variance across patches"), is off by default (weight 0). It counters a partial collapse in
which all tokens of a clip carry the same feature.
Not in the official code: VICReg's variance and covariance terms (Bardes et al. 2022; added to JEPAs by C-JEPA,
Mo and Tong 2024) on the context encoder's output tokens, pooled over the batch: mean(relu(1 - std_c)) over
channels c, and the sum of squared off-diagonal covariances / D. They counter dimensional collapse (a few
directions carrying nearly all the variance), which EMA targets alone do not prevent on small data. Off by
default. The statistics are global: the token count and sums, then the centred second moments, are summed over
all processes with an autograd-aware all-reduce, so the terms are those of one process holding the whole batch.
The backward of that all-reduce sums the gradients of every process's (identical) term, and the data-parallel
gradient reduction divides by the number of processes, so the parameter gradients equal those of the
single-process objective.
The diagnostic, effective_rank, is exp(entropy) of the normalised covariance spectrum of a set of features: it
falls towards 1 under dimensional collapse (the training log's `rank`, the eval tables' token statistics). On
non-finite input it returns NaN instead of failing in the eigensolver (no host sync), so a diverging run reaches
the training loop's non-finite check.

Shapes: B batch, K target tokens, D width.
"""

from __future__ import annotations

import torch

from vjepa.distributed import all_reduce_sum_with_grad


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
    per_sample = (diff * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * diff.shape[-1]).clamp_min(1.0)  # [B]
    return per_sample.mean() / p


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


def token_vicreg(
    z: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-4, across_processes: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg variance and covariance terms over tokens: z [B, K, D] (valid [B, K] bool) -> (var_term, cov_term).

    All valid tokens of the batch (of every process when `across_processes` and a process group of several
    processes exists) are samples: x [N, D] centred, C = x^T x / (N - 1); var_term = mean_c relu(1 -
    sqrt(C_cc + eps)), cov_term = sum_{c != c'} C_cc'^2 / D; both 0 when N < 2. Two all-reduces (count and sums,
    then centred products), no host sync."""
    d = z.shape[-1]
    x = z.float().reshape(-1, d)  # [B*K, D]
    w = x.new_ones(x.shape[0], 1) if valid is None else valid.reshape(-1, 1).to(x.dtype)  # [B*K, 1]
    reduce = all_reduce_sum_with_grad if across_processes else (lambda t: t)
    count_sum = reduce(torch.cat([w.sum().reshape(1), (x * w).sum(dim=0)]))  # [1 + D]: N, sum x
    n, mean = count_sum[0].detach(), count_sum[1:] / count_sum[0].detach().clamp_min(1.0)  # scalar, [D]
    xc = (x - mean) * w  # [B*K, D], 0 on padded slots
    cov = reduce(xc.T @ xc) / (n - 1).clamp_min(1.0)  # [D, D]
    var = torch.diagonal(cov)
    var_term = torch.relu(1.0 - torch.sqrt(var + eps)).mean()
    cov_term = (cov.pow(2).sum() - var.pow(2).sum()) / d
    enough = n >= 2
    zero = z.sum() * 0.0
    return torch.where(enough, var_term, zero), torch.where(enough, cov_term, zero)


def covariance_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the covariance of x [N, D] (rows are samples), normalised to sum 1, descending: [D].

    All NaN when x (or its covariance) is not finite: the eigensolver then sees zeros instead of failing."""
    x = x.float()
    x = x - x.mean(dim=0)
    cov = x.T @ x  # [D, D]
    finite = torch.isfinite(cov).all()
    cov = torch.where(finite, cov, torch.zeros_like(cov))
    ev = torch.linalg.eigvalsh(cov).clamp_min(0.0).flip(0)  # [D]
    p = ev / ev.sum().clamp_min(1e-12)
    return torch.where(finite, p, torch.full_like(p, float("nan")))


def spectrum_rank(p: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of a normalised spectrum p [D] (as covariance_spectrum returns) -> scalar."""
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def effective_rank(x: torch.Tensor) -> torch.Tensor:
    """spectrum_rank(covariance_spectrum(x)) for x [N, D] -> scalar.

    Between 1 (all variance along one direction) and D (isotropic); k orthogonal directions of equal variance
    give k. A falling value is dimensional collapse, which spreads of the features can miss."""
    return spectrum_rank(covariance_spectrum(x))
