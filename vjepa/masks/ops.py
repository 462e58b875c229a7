"""Index-tensor helpers for masks: gather kept tokens, flat index <-> (t, h, w) coordinates, bool mask <-> index.

Masks are applied as index tensors `[B, K]` of flat token indices in (t, h, w) row-major order (paper Sec. 3.2,
"we apply the video masks by simply dropping a subset of the tokens"), gathered by one helper.

`mask_to_index` turns a boolean `[B, N]` mask whose rows hold different numbers of True entries into an
equal-length index tensor, without a loop over samples. The "batch" here is one mask group (`mask.group_size`
clips; masks/collator.py stacks the groups). Policies:
  - "random"   keep a uniformly random subset of each row's True indices, of the batch-minimum size, sorted.
  - "official" keep each row's lowest batch-minimum True indices. This is what the official code does (it cuts
               every sorted list to the batch minimum); it always drops the highest indices (late time steps,
               bottom-right patches), a bias kept only for parity.
  - "pad"      keep everything, pad to the batch maximum; `valid` marks real entries. Padded slots repeat the
               row's last valid index (so the row stays sorted and indexable), or hold 0 for an empty row.

Shapes: B batch, N tokens (T' * H' * W'), K kept tokens, D width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

POLICIES = ("random", "official", "pad")


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B, N, D], idx [B, K] long -> [B, K, D] (x[b, idx[b, k]])."""
    if x.dim() != 3 or idx.dim() != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(
            f"gather_tokens: expected x [B, N, D] and idx [B, K], got {tuple(x.shape)}, {tuple(idx.shape)}"
        )
    index = idx.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # [B, K, D]
    return torch.gather(x, 1, index)  # [B, K, D]


def cat_valid(idx: Sequence[torch.Tensor], valid: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """Key-padding masks of index blocks laid end to end: [B, sum K_i] bool (all-True for a block whose mask is None),
    or None when no block has one."""
    if all(v is None for v in valid):
        return None
    return torch.cat([v if v is not None else i.new_ones(i.shape, dtype=torch.bool) for i, v in zip(idx, valid)], 1)


def idx_to_coords(idx: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Flat token indices [B, K] -> integer (t, h, w) coordinates [B, K, 3] (long), for grid (T', H', W')."""
    _, gh, gw = grid
    idx = idx.long()
    t = torch.div(idx, gh * gw, rounding_mode="floor")
    h = torch.div(idx, gw, rounding_mode="floor") % gh
    w = idx % gw
    return torch.stack((t, h, w), dim=-1)  # [B, K, 3]


def coords_to_idx(coords: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of `idx_to_coords`: [..., 3] (t, h, w) -> flat indices [...] (long)."""
    _, gh, gw = grid
    coords = coords.long()
    return (coords[..., 0] * gh + coords[..., 1]) * gw + coords[..., 2]


def index_to_mask(idx: torch.Tensor, num_tokens: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Index tensor [B, K] (+ optional valid [B, K]) -> boolean mask [B, N] with True at the (valid) indices."""
    mask = torch.zeros(idx.shape[0], num_tokens, dtype=torch.bool, device=idx.device)  # [B, N]
    src = torch.ones_like(idx, dtype=torch.bool) if valid is None else valid.bool()  # [B, K]
    # scatter_reduce "amax" so that a padded slot (valid False) repeating a real index cannot clear it
    return mask.scatter_reduce(1, idx.long(), src, reduce="amax")


def mask_to_index(
    mask: torch.Tensor, policy: str = "random", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Boolean mask [B, N] -> (idx [B, K] long sorted ascending per row, valid [B, K] bool or None).

    K is the batch minimum of the row counts ("random", "official") or the maximum ("pad"); `valid` is only
    returned for "pad". "random" draws one uniform key per token from `generator` and keeps the K smallest keys
    among each row's True entries, which is a uniformly random K-subset. No sort over N is needed: row ranks
    come from a cumulative sum and `nonzero` lists entries in ascending order.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown mask policy {policy!r}; valid: {list(POLICIES)}")
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask_to_index: expected a bool [B, N] mask, got {mask.dtype} {tuple(mask.shape)}")
    bsz, n = mask.shape
    counts = mask.sum(dim=1)  # [B]
    if policy == "random":
        k = int(counts.min())
        keys = torch.rand(bsz, n, generator=generator, device=mask.device)  # [B, N]
        keys = torch.where(mask, keys, torch.full_like(keys, 2.0))  # False entries are never among the K smallest
        chosen = torch.topk(keys, k, dim=1, largest=False, sorted=False).indices  # [B, K]
        keep = torch.zeros_like(mask).scatter(1, chosen, torch.ones_like(chosen, dtype=torch.bool))  # [B, N]
        return _rows_to_index(keep, k), None
    # pos[b, i] = rank of True entry i within its row (0, 1, ...); nonzero() lists entries row-major, ascending
    pos = mask.cumsum(dim=1) - 1  # [B, N]
    if policy == "official":
        k = int(counts.min())
        return _rows_to_index(mask & (pos < k), k), None
    k = int(counts.max())
    rows, cols = torch.nonzero(mask, as_tuple=True)  # [M], [M]
    idx = torch.zeros(bsz, k, dtype=torch.long, device=mask.device)  # [B, K]
    idx[rows, pos[rows, cols]] = cols
    valid = torch.arange(k, device=mask.device)[None, :] < counts[:, None]  # [B, K]
    if k == 0:
        return idx, valid
    last = idx.gather(1, (counts - 1).clamp(min=0)[:, None])  # [B, 1]; 0 for an empty row
    return torch.where(valid, idx, last), valid


def _rows_to_index(keep: torch.Tensor, k: int) -> torch.Tensor:
    """Bool [B, N] with exactly k True per row -> their indices [B, K], ascending (nonzero is row-major)."""
    return torch.nonzero(keep, as_tuple=True)[1].reshape(keep.shape[0], k)  # [B, K]
