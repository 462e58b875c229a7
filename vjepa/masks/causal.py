"""Causal multi-block[p] masks (paper Sec. 4.3, Table 4 and Figure 4 ablation "causal multi-block[p]").

Paper: "x is restricted to the first p frames of the 16-frame video, which are then masked with a random set
of spatio-temporal blocks"; y is the complement; Figure 4: "masking out the last few frames of the video clip,
as well as a random set of spatio-temporal blocks from the first few frames". So here:

    context = (not in any block) and t < p
    target  = everything else = the blocks inside the first p steps + ALL tokens at t >= p

i.e. the predictor must predict the future steps and the blocked-out part of the past. This is exactly the
official code's `max_temporal_keep` mechanism (the context horizon) with horizon p, and the masks stay a
partition of the tokens like every other family.

Decisions:
  - `causal_frames` (p) counts TOKEN time steps (T' = frames / tubelet), not video frames: the paper's
    causal multi-block[6] and [12] on 16 frames with tubelet 2 are p = 3 and p = 6 here. 1 <= p <= T' is
    required (p = T' is plain multi-block).
  - Blocks are placed on the full grid as in multi-block (and the official code); with the default
    temporal_scale (1, 1) every block spans all time steps, so the first p steps carry an ordinary spatial
    multi-block mask. If `max_temporal_keep` is also set, the tighter of the two horizons wins.
  - Empty context handling is that of multi-block (bounded resampling, then one token inside t < p kept).
  - Placement "motion" works as for multi-block: corners weighted by the motion inside the block, scored on
    the whole block (all of its time steps, also those past p).

Shapes: B batch, N = T' * H' * W' tokens.
"""

from __future__ import annotations

import torch

from vjepa.masks.multiblock import BlockSize, Grid, context_horizon, sample_multiblock


def causal_horizon(num_t: int, causal_frames: int, max_temporal_keep: float = 1.0) -> int:
    """Context horizon in token time steps: min(p, horizon from max_temporal_keep)."""
    if not 1 <= causal_frames <= num_t:
        raise ValueError(f"causal_frames must be in [1, {num_t}] (token time steps), got {causal_frames}")
    return min(causal_frames, context_horizon(num_t, max_temporal_keep))


def sample_causal(
    *,
    grid: Grid,
    block_size: BlockSize,
    batch_size: int,
    num_blocks: int,
    causal_frames: int,
    max_temporal_keep: float,
    generator: torch.Generator,
    max_resample: int = 10,
    corner_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, target) bool [B, N]; context only at t < p, never empty; target = complement. `corner_probs`
    [B, O]: motion-guided corners (masks/motion.py), as for multi-block."""
    horizon = causal_horizon(grid[0], causal_frames, max_temporal_keep)
    return sample_multiblock(
        grid=grid,
        block_size=block_size,
        batch_size=batch_size,
        num_blocks=num_blocks,
        horizon=horizon,
        generator=generator,
        max_resample=max_resample,
        corner_probs=corner_probs,
    )
