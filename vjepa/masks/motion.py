"""Motion-guided block placement (FLD study, arXiv 2605.17165: "Motion-Guided Masking").

Placement "motion" of a multi-block or causal family draws each block corner (start_t, top, left) with probability

    p(o) = (1 - r) * m(o)^s / sum_o' m(o')^s + r / O

instead of uniformly: m(o) is the mean token motion inside the block placed at o, s = `motion_power`, r =
`motion_mix` (the chance of a uniform corner), O the number of corners that keep the block inside the grid. The
block size is the family's (same draw as uniform placement); only the corners change.

Token motion. d_f = mean over channels of |x_f - x_{f-1}| per pixel, for frames f = 1..T-1 of the clip the model
sees (after the crop, flip and normalisation); frame 0 borrows d_1 (it has no predecessor), so every frame has a
difference. The motion of token (t, h, w) is the mean of d_f over its tubelet cell: the `tubelet` frames of step t
and the patch x patch pixels of (h, w). With tubelet 2 this averages the difference entering the cell from the
previous step's last frame and the one inside the cell, so tubelet 1 works too. A one-frame clip has no motion.

Scores. Block means come from a stride-1 average pool (one pass, all corners). They are divided by the clip's
largest block mean and floored at 1e-6, as the FLD code does, so a block with no motion in a moving clip keeps a
tiny chance; the weights are formed as softmax(s * log(score)), so a large s never underflows to 0 / 0. A static
clip (all zero) gives equal scores, i.e. exactly the uniform vector whatever s and r.

Determinism. Corners come from inverse-CDF draws (one uniform number per block from the family's seeded
generator, `searchsorted` on the cumulative probabilities), so the masks are a pure function of (seed, step,
family, group, row) and the clips. Frame differences are summed per patch in float32 (the clip's dtype; one
pass over the clip, about 8 ms per 16 x 224 x 224 clip on one core), everything after that in float64.

Departures from the FLD code (vjepa2/src/masks/multiseq_multiblock3d.py in the study's repository):
  - there the per-pixel motion is resampled to the token grid by trilinear interpolation, which reads a few
    pixels near each cell centre (a downsampling of 2 x 16 x 16 to one value with `align_corners=False` is a
    sample, not a mean); here it is the mean over the cell;
  - there the uniform-or-motion choice and the multinomial draw use torch's global generator (not the seeded
    mask generator), so masks depend on the process's RNG state; here everything comes from the seeded one;
  - there corners are scored in a Python loop over all corners, per block and per sample; here one pooling for
    the batch, and one probability vector per sample shared by its blocks;
  - the mixture is taken on the probabilities (equal in distribution to choosing uniform with probability r per
    block).

Shapes: B batch, C channels, T frames, N = T' * H' * W' tokens, O block corners, nb blocks per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Grid = tuple[int, int, int]  # (T', H', W'), as in multiblock.py (which imports this module)
BlockSize = tuple[int, int, int]  # (t, h, w)
SCORE_FLOOR = 1e-6  # block scores relative to the clip's largest, floored (as the FLD code)


def token_motion(video: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Clips [B, C, T, H, W] -> float64 motion per token [B, T', H', W'] (see the module docstring)."""
    if video.dim() != 5:
        raise ValueError(f"token_motion: expected clips [B, C, T, H, W], got {tuple(video.shape)}")
    b, c, t, h, w = video.shape
    gt, gh, gw = grid
    if t % gt or h % gh or w % gw:
        raise ValueError(f"token_motion: clips {tuple(video.shape)} do not tile the token grid {tuple(grid)}")
    tub, ph, pw = t // gt, h // gh, w // gw
    if t < 2:
        return torch.zeros(b, gt, gh, gw, dtype=torch.float64, device=video.device)
    x = video.float()
    diff = torch.sub(x[:, :, 1:], x[:, :, :-1]).abs_().sum(dim=1)  # [B, T - 1, H, W], summed over channels
    per_patch = diff.reshape(b, t - 1, gh, ph, gw, pw).sum(dim=(3, 5)).double()  # [B, T - 1, H', W']
    per_patch = torch.cat([per_patch[:, :1], per_patch], dim=1)  # [B, T, H', W']; frame 0 borrows frame 1's
    cells = per_patch.reshape(b, gt, tub, gh, gw).mean(dim=2)  # [B, T', H', W']
    return cells / (c * ph * pw)


def block_motion(motion: torch.Tensor, block_size: BlockSize) -> torch.Tensor:
    """Token motion [B, T', H', W'] -> mean motion of the block at every corner [B, O], corners in (t, h, w)
    row-major order (O = (T' - t + 1)(H' - h + 1)(W' - w + 1))."""
    pooled = F.avg_pool3d(motion[:, None], kernel_size=tuple(block_size), stride=1)  # [B, 1, T'-t+1, H'-h+1, W'-w+1]
    return pooled.flatten(1)  # [B, O]


def corner_probs(motion: torch.Tensor, block_size: BlockSize, power: float, mix: float) -> torch.Tensor:
    """Token motion [B, T', H', W'] -> float64 corner probabilities [B, O] (rows sum to 1)."""
    score = block_motion(motion, block_size)  # [B, O]
    top = score.amax(dim=1, keepdim=True)  # [B, 1]
    rel = torch.where(top > 0, score / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(score))
    logits = power * rel.clamp_min(SCORE_FLOOR).log()  # [B, O]
    guided = torch.softmax(logits, dim=1)  # [B, O]; equal scores give exactly 1 / O
    if mix == 0.0:
        return guided
    return (1.0 - mix) * guided + mix / score.shape[1]


def sample_guided_starts(
    *, grid: Grid, block_size: BlockSize, probs: torch.Tensor, num_blocks: int, generator: torch.Generator
) -> torch.Tensor:
    """Block corners drawn from `probs` [B, O] (as corner_probs returns) -> long [B, nb, 3] (start_t, top, left)."""
    bsz, num = probs.shape
    _, oh, ow = (g - s + 1 for g, s in zip(grid, block_size))
    cdf = probs.cumsum(dim=1)  # [B, O]
    u = torch.rand(bsz, num_blocks, generator=generator, dtype=torch.float64) * cdf[:, -1:]  # [B, nb]
    o = torch.searchsorted(cdf, u, right=True).clamp_max(num - 1)  # [B, nb]
    return torch.stack([o // (oh * ow), (o // ow) % oh, o % ow], dim=-1)  # [B, nb, 3]
