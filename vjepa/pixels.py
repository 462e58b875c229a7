"""Pixel targets (`optim.target=pixels`): the V-JEPA paper's pixel-prediction ablation (Bardes et al. 2024, arXiv
2404.08471, Sec. 4.1 and Table 1), with normalised pixels as VideoMAE (Tong et al. 2022).

The target of token (t, h, w) is its tubelet's pixels: the C x tubelet x patch x patch values of frames
t * tubelet .. (t + 1) * tubelet - 1 and the patch's pixels, flattened in the order (frame, row, column, channel),
the channel fastest (VideoMAE's `b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2 c)`). Each channel is normalised
over the tubelet x patch x patch pixels of its token: (x - mean) / (std + 1e-6), std with Bessel's correction, as
VideoMAE's `normlize_target` (MCG-NJU/VideoMAE, engine_for_pretraining.py). The loss per valid target token is the
mean over its C t p p values of the squared error ("l2", VideoMAE and the paper's "mean-squared error loss with
the normalized pixel values") or of the absolute error ("l1"); per sample the mean over its valid tokens, then the
mean over samples (an empty sample counts 0), as the feature loss.

Departure: VideoMAE first undoes the ImageNet mean/std normalisation of its input; here the normalised clip is
used as it comes. Per-patch, per-channel normalisation removes any per-channel affine map, so the targets are the
same except for the 1e-6: it is added to a std measured on the normalised clip, about 4.4 times the std on [0, 1]
pixels (ImageNet stds are about 0.23), so it weighs about 4 times less.

Shapes: B batch, C channels, T frames, N = T' * H' * W' tokens, K target tokens, P = C * tubelet * patch^2.
"""

from __future__ import annotations

import torch

EPS = 1e-6
LOSSES = ("l2", "l1")


def pixel_dim(channels: int, tubelet: int, patch: int) -> int:
    """Width P of one token's pixel target."""
    return channels * tubelet * patch * patch


def patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Clips [B, C, T, H, W] -> [B, N, tubelet * patch * patch, C]: each token's pixels, (frame, row, column)
    row-major, channels last; tokens in (t, h, w) row-major order."""
    b, c, t, h, w = video.shape
    if t % tubelet or h % patch or w % patch:
        raise ValueError(f"patchify: clips {tuple(video.shape)} do not tile into {tubelet} x {patch} x {patch}")
    gt, gh, gw = t // tubelet, h // patch, w // patch
    x = video.reshape(b, c, gt, tubelet, gh, patch, gw, patch)  # [B, C, T', t, H', p, W', p]
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B, T', H', W', t, p, p, C]
    return x.reshape(b, gt * gh * gw, tubelet * patch * patch, c)  # [B, N, t p p, C]


def normalise_patches(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """[B, N, S, C] (S pixels per token) -> the same, each channel of each token normalised over its S pixels."""
    mean = x.mean(dim=-2, keepdim=True)  # [B, N, 1, C]
    std = x.var(dim=-2, unbiased=True, keepdim=True).sqrt()  # [B, N, 1, C]
    return (x - mean) / (std + eps)


@torch.no_grad()
def pixel_targets(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Clips [B, C, T, H, W] -> normalised pixel targets [B, N, P] in fp32 (order and normalisation: module
    docstring)."""
    x = normalise_patches(patchify(video.float(), tubelet, patch))  # [B, N, t p p, C]
    return x.flatten(2)  # [B, N, P]


def pixel_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "l2", valid: torch.Tensor | None = None
) -> torch.Tensor:
    """pred, target [B, K, P]; valid [B, K] bool or None -> scalar: per token the mean squared ("l2") or absolute
    ("l1") error over P, per sample the mean over valid tokens, then the mean over samples."""
    if kind not in LOSSES:
        raise ValueError(f"pixel_loss: unknown kind {kind!r}; valid: {list(LOSSES)}")
    diff = pred.float() - target.float()
    per_token = (diff.square() if kind == "l2" else diff.abs()).mean(dim=-1)  # [B, K]
    if valid is None:
        return per_token.mean()
    w = valid.to(per_token.dtype)  # [B, K]
    per_sample = (per_token * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # [B]
    return per_sample.mean()
