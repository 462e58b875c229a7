"""Mask generation for a batch (all families) and the DataLoader collate function (paper Sec. 3.2, App. B).

`MaskGenerator(step, batch_size, rank)` returns one `FamilyMasks` per `MaskSpec` (default: short-range 8 x 0.15
and long-range 2 x 0.7 multi-block families): context and target index tensors `[B, K]`, sorted ascending.

Randomness is a pure function of (seed, step, family, rank): the block size comes from a `torch.Generator`
seeded by (seed, step, family), so every rank uses the same size; placements (and the "random" subsampling)
come from one seeded by (seed, step, family, rank). The masks are therefore identical whatever the number of
data-loader workers, and resuming at a step replays nothing. Seeds are derived with blake2b (stable across
processes, unlike `hash`).

Departures from the official code:
  - the official collator keeps a shared step counter incremented per call (so masks depend on worker
    scheduling); here the global step travels with the samples (`"step"` key) and seeds everything;
  - equal length: the official code cuts every sorted list to the batch minimum, dropping the highest indices
    (policy "official", kept for parity); our default "random" subsamples uniformly; "pad" drops nothing and
    returns valid masks (see ops.mask_to_index);
  - no unbounded resampling loop for empty contexts (see multiblock.py).

Shapes: B batch, N tokens, Kc context tokens kept, Kt target tokens kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import default_collate

from vjepa.masks.causal import causal_horizon, sample_causal
from vjepa.masks.multiblock import BlockSize, context_horizon, sample_block_size, sample_multiblock
from vjepa.masks.ops import POLICIES, mask_to_index
from vjepa.masks.tube import sample_tube, tube_keep_count
from vjepa.seeding import derive_seed

if TYPE_CHECKING:
    from vjepa.config import MaskSpec

KINDS = ("multiblock", "tube", "causal")


@dataclass(frozen=True, kw_only=True)
class FamilyMasks:
    """Masks of one family for a batch. `*_valid` are None except for policy "pad" (False = padded slot)."""

    ctx_idx: torch.Tensor  # [B, Kc] long
    tgt_idx: torch.Tensor  # [B, Kt] long
    ctx_valid: torch.Tensor | None = None  # [B, Kc] bool
    tgt_valid: torch.Tensor | None = None  # [B, Kt] bool

    def _map(self, fn) -> FamilyMasks:
        """Apply `fn` to every tensor field (None stays None)."""
        return FamilyMasks(
            **{
                f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                for f in dataclasses.fields(self)
            }
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FamilyMasks:
        """Copy of these masks on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> FamilyMasks:
        """Pinned copy; called by the DataLoader when pin_memory=True."""
        return self._map(lambda t: t.pin_memory())

    def rows(self, lo: int, hi: int) -> FamilyMasks:
        """Samples lo..hi-1 of the batch (one rank's slice of masks drawn for the global batch)."""
        return self._map(lambda t: t[lo:hi])


def _generator(*parts: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(*parts))
    return gen


def _check_range(name: str, lo_hi: tuple[float, float], upper: float | None) -> None:
    lo, hi = lo_hi
    if not (0.0 < lo <= hi and (upper is None or hi <= upper)):
        bound = f"0 < lo <= hi <= {upper}" if upper is not None else "0 < lo <= hi"
        raise ValueError(f"{name}: expected {bound}, got {lo_hi}")


def check_spec(spec: MaskSpec, grid: tuple[int, int, int], family: int = 0) -> None:
    """Raise ValueError naming the family and field if `spec` cannot produce masks on `grid`."""
    where = f"mask family {family}"
    if spec.kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {spec.kind!r}; valid: {list(KINDS)}")
    context_horizon(grid[0], spec.max_temporal_keep)
    if spec.kind == "tube":
        tube_keep_count(grid[1] * grid[2], spec.tube_ratio)
        return
    if spec.num_blocks < 1:
        raise ValueError(f"{where}: num_blocks must be >= 1, got {spec.num_blocks}")
    _check_range(f"{where}: spatial_scale", spec.spatial_scale, 1.0)
    _check_range(f"{where}: temporal_scale", spec.temporal_scale, 1.0)
    _check_range(f"{where}: aspect_ratio", spec.aspect_ratio, None)
    if spec.kind == "causal":
        causal_horizon(grid[0], spec.causal_frames, spec.max_temporal_keep)


class MaskGenerator:
    """Masks for every family of a batch, a pure function of (seed, step, rank)."""

    def __init__(
        self,
        *,
        grid: tuple[int, int, int],
        specs: Sequence[MaskSpec],
        policy: str = "random",
        seed: int = 0,
        max_resample: int = 10,
    ) -> None:
        """grid (T', H', W') token grid; specs one per family; policy "random" | "official" | "pad"."""
        if len(grid) != 3 or min(grid) < 1 or grid[0] * grid[1] * grid[2] < 2:
            raise ValueError(f"grid must be 3 positive ints with at least 2 tokens, got {grid}")
        if policy not in POLICIES:
            raise ValueError(f"unknown mask policy {policy!r}; valid: {list(POLICIES)}")
        if len(specs) == 0:
            raise ValueError("at least one mask spec is required")
        for i, spec in enumerate(specs):
            check_spec(spec, tuple(grid), i)
        self.grid = (int(grid[0]), int(grid[1]), int(grid[2]))
        self.specs = tuple(specs)
        self.policy = policy
        self.seed = int(seed)
        self.max_resample = int(max_resample)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def block_size(self, step: int, family: int) -> BlockSize | None:
        """The block size family `family` uses at `step` (same on all ranks); None for kind "tube"."""
        spec = self.specs[family]
        if spec.kind == "tube":
            return None
        return sample_block_size(
            grid=self.grid,
            temporal_scale=spec.temporal_scale,
            spatial_scale=spec.spatial_scale,
            aspect_ratio=spec.aspect_ratio,
            generator=_generator(self.seed, step, family),
        )

    def _family(
        self, family: int, step: int, batch_size: int, rank: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
        spec = self.specs[family]
        gen = _generator(self.seed, step, family, rank)
        if spec.kind == "tube":
            horizon = context_horizon(self.grid[0], spec.max_temporal_keep)
            ctx, tgt = sample_tube(
                grid=self.grid, ratio=spec.tube_ratio, batch_size=batch_size, horizon=horizon, generator=gen
            )
            return ctx, tgt, gen
        size = self.block_size(step, family)
        if spec.kind == "causal":
            ctx, tgt = sample_causal(
                grid=self.grid,
                block_size=size,
                batch_size=batch_size,
                num_blocks=spec.num_blocks,
                causal_frames=spec.causal_frames,
                max_temporal_keep=spec.max_temporal_keep,
                generator=gen,
                max_resample=self.max_resample,
            )
            return ctx, tgt, gen
        ctx, tgt = sample_multiblock(
            grid=self.grid,
            block_size=size,
            batch_size=batch_size,
            num_blocks=spec.num_blocks,
            horizon=context_horizon(self.grid[0], spec.max_temporal_keep),
            generator=gen,
            max_resample=self.max_resample,
        )
        return ctx, tgt, gen

    def sample_masks(self, step: int, batch_size: int, rank: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Full boolean (context, target) masks [B, N] per family, before the equal-length policy."""
        return [self._family(f, step, batch_size, rank)[:2] for f in range(len(self.specs))]

    def __call__(self, step: int, batch_size: int, rank: int = 0) -> list[FamilyMasks]:
        """One FamilyMasks per spec; index lists sorted ascending, equal length per the policy."""
        out = []
        for family in range(len(self.specs)):
            ctx, tgt, gen = self._family(family, step, batch_size, rank)
            ctx_idx, ctx_valid = mask_to_index(ctx, self.policy, gen)  # [B, Kc]
            tgt_idx, tgt_valid = mask_to_index(tgt, self.policy, gen)  # [B, Kt]
            out.append(FamilyMasks(ctx_idx=ctx_idx, tgt_idx=tgt_idx, ctx_valid=ctx_valid, tgt_valid=tgt_valid))
        return out


class MaskCollator:
    """DataLoader collate_fn: stacks samples and attaches the masks of the batch's global step."""

    def __init__(self, generator: MaskGenerator, rank: int = 0) -> None:
        self.generator = generator
        self.rank = int(rank)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """samples: dicts with "video" [C, T, H, W], "label" int, "step" int (same for all), any other keys
        (e.g. "index") collated alongside -> {"video": [B, C, T, H, W], "label": [B], "step": int,
        "masks": list[FamilyMasks], ...}."""
        if len(samples) == 0:
            raise ValueError("MaskCollator: empty batch")
        for key in ("video", "label", "step"):
            if key not in samples[0]:
                raise KeyError(f"MaskCollator: sample has no {key!r} key; keys: {sorted(samples[0])}")
        steps = sorted({int(s["step"]) for s in samples})
        if len(steps) != 1:
            raise ValueError(f"MaskCollator: samples of one batch carry different steps {steps}")
        batch = default_collate([{k: v for k, v in s.items() if k != "step"} for s in samples])
        batch["step"] = steps[0]
        batch["masks"] = self.generator(steps[0], len(samples), self.rank)
        return batch
