"""Random-tube[r] masks (paper Sec. 4.3, Table 4 ablation "random-tube[r]"), vectorised over the batch.

A fraction r of the spatial positions (H' * W' tubes, each extended over all T' time steps) is masked; the
target is the masked tubes, the context the remaining tubes. Each sample draws its own random spatial subset
(uniform keys + topk, no loop over samples); the same subset is repeated at every time step.

Count: the context keeps `floor(H'W' * (1 - r))` spatial positions, as the official random-tube generator
does, with a 1e-6 tolerance against float error (e.g. 100 * (1 - 0.9) = 9.999...), clamped to [1, H'W' - 1]
so that neither context nor target is ever empty. Every sample has the same count, so the equal-length policy
in the collator never drops anything. `horizon` (from `max_temporal_keep`) restricts the context to the first
time steps exactly as for multi-block masks; by default it is T' and has no effect.

Shapes: B batch, N = T' * H' * W' tokens, S = H' * W' spatial positions.
"""

from __future__ import annotations

import torch

from vjepa.masks.multiblock import Grid, horizon_tokens


def tube_keep_count(num_spatial: int, ratio: float) -> int:
    """Number of spatial positions kept in the context for masking ratio `ratio`."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"tube_ratio must be in (0, 1), got {ratio}")
    if num_spatial < 2:
        raise ValueError(f"random-tube masks need at least 2 spatial positions, got {num_spatial}")
    keep = int(num_spatial * (1.0 - ratio) + 1e-6)
    return min(max(keep, 1), num_spatial - 1)


def sample_tube(
    *, grid: Grid, ratio: float, batch_size: int, horizon: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, target) bool [B, N]: random spatial context of size tube_keep_count, repeated over time."""
    gt, gh, gw = grid
    num_spatial = gh * gw
    keep = tube_keep_count(num_spatial, ratio)
    keys = torch.rand(batch_size, num_spatial, generator=generator)  # [B, S]
    kept = torch.topk(keys, keep, dim=1, largest=False).indices  # [B, keep]
    spatial = torch.zeros(batch_size, num_spatial, dtype=torch.bool).scatter(
        1, kept, torch.ones_like(kept, dtype=torch.bool)
    )  # [B, S]
    ctx = spatial[:, None, :].expand(batch_size, gt, num_spatial).reshape(batch_size, -1)  # [B, N]
    ctx = ctx & horizon_tokens(grid, horizon)
    return ctx, ~ctx
