"""Multi-block 3D masks (paper Sec. 3.2 "Multi-block masking", Appendix B), vectorised over the batch.

One mask family draws ONE block size (t, h, w) per batch, then each sample places `num_blocks` blocks of that
size with uniformly random corners; the target is the union of the blocks, the context its complement:

    t = max(1, floor(T' * U(temporal_scale)))         (capped at T')
    area = floor(H' * W' * U(spatial_scale)), a = U(aspect_ratio)
    h = round(sqrt(area * a)), w = round(sqrt(area / a))  (clamped to [1, H'] and [1, W'])
    start_t ~ U{0..T'-t}, top ~ U{0..H'-h}, left ~ U{0..W'-w}   per sample, per block

`max_temporal_keep` follows the official code (its `max_context_frames_ratio`): the context may only use the
first `horizon = max(1, floor(T' * max_temporal_keep))` time steps; every token at t >= horizon joins the
target. With the default 1.0 nothing changes. (It does not limit the temporal extent of a block; that is
`temporal_scale`.) The causal multi-block[p] ablation is the same mechanism with horizon p (see causal.py).
Placement "motion" (FLD study, see motion.py) draws the corners with probabilities weighted by the motion inside
the block instead of uniformly; the block size and everything else stay as above.

Departures from the official code:
  - the masks of all samples are built at once by comparing coordinate ranges against block extents
    (broadcasting), with no Python loop over samples;
  - empty context: the official code redraws a sample's blocks in an unbounded `while` loop. We redraw the
    placements of the samples whose context is empty, for the whole batch at once, at most `max_resample`
    times; samples still empty after that (e.g. a block size that covers the grid) get ONE random token
    inside the context horizon moved from the target to the context. So the context is never empty and the
    target is never empty (N >= 2), and the run never stalls.
  - Python's `round` (half to even) is used for h and w, as in the official code.

Shapes: B batch, N = T' * H' * W' tokens, nb blocks per sample.
"""

from __future__ import annotations

import math

import torch

from vjepa.masks.motion import BlockSize, Grid, sample_guided_starts


def context_horizon(num_t: int, max_temporal_keep: float) -> int:
    """Number of leading token time steps the context may use: max(1, floor(T' * max_temporal_keep))."""
    if not 0.0 < max_temporal_keep <= 1.0:
        raise ValueError(f"max_temporal_keep must be in (0, 1], got {max_temporal_keep}")
    return max(1, int(num_t * max_temporal_keep))


def horizon_tokens(grid: Grid, horizon: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool [N]: True for tokens at time step t < horizon."""
    gt, gh, gw = grid
    return (torch.arange(gt, device=device) < horizon).repeat_interleave(gh * gw)  # [N]


def _uniform(lo_hi: tuple[float, float], generator: torch.Generator) -> float:
    lo, hi = lo_hi
    return lo + float(torch.rand(1, generator=generator)) * (hi - lo)


def sample_block_size(
    *,
    grid: Grid,
    temporal_scale: tuple[float, float],
    spatial_scale: tuple[float, float],
    aspect_ratio: tuple[float, float],
    generator: torch.Generator,
) -> BlockSize:
    """One block size (t, h, w) for the whole batch; three uniform draws in the order t, area, aspect."""
    gt, gh, gw = grid
    t = max(1, int(gt * _uniform(temporal_scale, generator)))
    area = int(gh * gw * _uniform(spatial_scale, generator))
    a = _uniform(aspect_ratio, generator)
    h = int(round(math.sqrt(area * a)))
    w = int(round(math.sqrt(area / a)))
    return min(t, gt), min(max(h, 1), gh), min(max(w, 1), gw)


def sample_block_starts(
    *, grid: Grid, block_size: BlockSize, batch_size: int, num_blocks: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniform block corners (start_t, top, left) -> long [B, nb, 3]; each block lies inside the grid."""
    cols = [
        torch.randint(0, g - s + 1, (batch_size, num_blocks), generator=generator)  # [B, nb]
        for g, s in zip(grid, block_size)
    ]
    return torch.stack(cols, dim=-1)  # [B, nb, 3]


def blocks_to_mask(*, grid: Grid, block_size: BlockSize, starts: torch.Tensor) -> torch.Tensor:
    """Union of blocks: starts [B, nb, 3] (t, h, w corners) -> bool [B, N], True inside any block."""
    bsz = starts.shape[0]
    inside = []
    for axis, (g, s) in enumerate(zip(grid, block_size)):
        ar = torch.arange(g, device=starts.device)  # [G]
        lo = starts[..., axis, None]  # [B, nb, 1]
        inside.append((ar >= lo) & (ar < lo + s))  # [B, nb, G]
    in_t, in_h, in_w = inside
    block = in_t[:, :, :, None, None] & in_h[:, :, None, :, None] & in_w[:, :, None, None, :]  # [B, nb, T', H', W']
    return block.any(dim=1).reshape(bsz, -1)  # [B, N]


def masks_from_starts(
    *, grid: Grid, block_size: BlockSize, starts: torch.Tensor, horizon: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, target) bool [B, N] from block corners: context = not in any block and t < horizon."""
    allowed = horizon_tokens(grid, horizon, starts.device)  # [N]
    ctx = ~blocks_to_mask(grid=grid, block_size=block_size, starts=starts) & allowed  # [B, N]
    return ctx, ~ctx


def keep_one_token(ctx: torch.Tensor, allowed: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For rows of ctx [B, N] with no True entry, set one uniformly random token of `allowed` [N] to True."""
    empty = ~ctx.any(dim=1)  # [B]
    if not bool(empty.any()):
        return ctx
    keys = torch.rand(ctx.shape, generator=generator, device=ctx.device)  # [B, N]
    keys = torch.where(allowed[None, :], keys, torch.full_like(keys, -1.0))
    pick = keys.argmax(dim=1, keepdim=True)  # [B, 1]
    chosen = torch.zeros_like(ctx).scatter(1, pick, torch.ones_like(pick, dtype=torch.bool))  # [B, N]
    return ctx | (chosen & empty[:, None])


def sample_multiblock(
    *,
    grid: Grid,
    block_size: BlockSize,
    batch_size: int,
    num_blocks: int,
    horizon: int,
    generator: torch.Generator,
    max_resample: int = 10,
    corner_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, target) bool [B, N], disjoint and covering all tokens; the context is never empty.

    Placements come from `generator` (per rank): uniform corners, or with `corner_probs` [B, O] (motion-guided
    placement, masks/motion.py) corners drawn from those probabilities. Rows with an empty context are redrawn
    (vectorised, whole batch drawn, only the empty rows replaced) up to `max_resample` times, then
    `keep_one_token` applies.
    """
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")

    def draw() -> torch.Tensor:
        if corner_probs is None:
            starts = sample_block_starts(
                grid=grid, block_size=block_size, batch_size=batch_size, num_blocks=num_blocks, generator=generator
            )  # [B, nb, 3]
        else:
            starts = sample_guided_starts(
                grid=grid, block_size=block_size, probs=corner_probs, num_blocks=num_blocks, generator=generator
            )  # [B, nb, 3]
        return masks_from_starts(grid=grid, block_size=block_size, starts=starts, horizon=horizon)[0]  # [B, N]

    ctx = draw()
    for _ in range(max_resample):
        empty = ~ctx.any(dim=1)  # [B]
        if not bool(empty.any()):
            break
        ctx = torch.where(empty[:, None], draw(), ctx)  # [B, N]
    ctx = keep_one_token(ctx, horizon_tokens(grid, horizon, ctx.device), generator)
    return ctx, ~ctx
