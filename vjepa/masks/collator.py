"""Mask generation for a batch (all families) and the DataLoader collate function (paper Sec. 3.2, App. B).

`MaskGenerator` returns one `FamilyMasks` per `MaskSpec` (default: short-range 8 x 0.15 and long-range 2 x 0.7
multi-block families): context and target index tensors `[B, K]`, sorted ascending.

Groups. The equal-length cut (every row of a family keeps the same number of tokens) is taken over a *group*
of `group_size` consecutive clips of the global batch, not over the whole batch: global sample i = rank * b + j
(b the per-process batch) belongs to group g = i // group_size (the last group holds what is left). So the kept
token counts, and with them the objective, do not depend on the number of processes or the per-process batch.
`for_rows(step, lo, hi, batch_size)` draws only the groups overlapping a process's rows lo..hi-1, cuts each to
its own minimum, and stacks the rows; rows of groups with different kept counts are padded to the largest, with
`*_valid` False on the padded slots (as policy "pad" does), which the encoder, predictor and losses honour.
`__call__(step, batch_size, group)` is one group of `batch_size` clips.

Randomness is a pure function of (seed, step, family, group) and the sample's row in its group: the block size
comes from a `torch.Generator` seeded by (seed, step, family), so every group uses the same size; placements
(and the "random" subsampling) come from one seeded by (seed, step, family, group). The masks are therefore
identical whatever the number of data-loader workers or processes ("N processes x b" sees exactly the masks of
"1 process x N * b"), and resuming at a step replays nothing. Seeds are derived with blake2b (stable across
processes, unlike `hash`).

Motion-guided placement (`MaskSpec.placement="motion"`, multi-block and causal families; masks/motion.py) also
reads the clips: the callers pass the batch's clips (`video`), and the masks are a pure function of the above
and the clips of the group. The group's equal-length cut needs every clip of the group, so with this placement
each group must lie inside one process's rows (`mask.group_size` dividing the per-process batch, or one
process); `for_rows` refuses a group that straddles processes. Uniform placement never reads the clips and
draws exactly what it drew before the option existed.

Departures from the official code:
  - the official collator keeps a shared step counter incremented per call (so masks depend on worker
    scheduling); here the global step travels with the samples (`"step"` key) and seeds everything;
  - the official group is one GPU's batch (its collator cuts to the minimum over what it collates); here the
    group size is configured (`mask.group_size`, 24 as in the V-JEPA 1 recipes) and independent of the layout;
  - equal length: the official code cuts every sorted list to the group minimum, dropping the highest indices
    (policy "official", kept for parity); our default "random" subsamples uniformly; "pad" drops nothing and
    returns valid masks (see ops.mask_to_index);
  - no unbounded resampling loop for empty contexts (see multiblock.py).

Shapes: B batch, N tokens, Kc context tokens kept, Kt target tokens kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vjepa.masks.causal import causal_horizon, sample_causal
from vjepa.masks.motion import corner_probs, token_motion
from vjepa.masks.multiblock import BlockSize, context_horizon, sample_block_size, sample_multiblock
from vjepa.masks.ops import POLICIES, mask_to_index
from vjepa.masks.tube import sample_tube, tube_keep_count
from vjepa.seeding import derive_seed

if TYPE_CHECKING:
    from vjepa.config import MaskSpec

KINDS = ("multiblock", "tube", "causal")
PLACEMENTS = ("uniform", "motion")


@dataclass(frozen=True, kw_only=True)
class FamilyMasks:
    """Masks of one family for a batch. `*_valid` (False = padded slot) are None except for policy "pad" and for
    rows of mask groups with different kept counts (see `stack_rows`)."""

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
        """Samples lo..hi-1 of the batch."""
        return self._map(lambda t: t[lo:hi])

    def bucketed(self, growth: float) -> FamilyMasks:
        """These masks padded to bucket widths (`bucket_width`; padded slots invalid, valid masks always present),
        so compiled code sees a handful of shapes instead of a new one at every step."""
        kc, kt = (bucket_width(int(t.shape[1]), growth) for t in (self.ctx_idx, self.tgt_idx))
        ctx_idx, ctx_valid = _pad_index(self.ctx_idx, self.ctx_valid, kc)
        tgt_idx, tgt_valid = _pad_index(self.tgt_idx, self.tgt_valid, kt)
        return FamilyMasks(ctx_idx=ctx_idx, tgt_idx=tgt_idx, ctx_valid=ctx_valid, tgt_valid=tgt_valid)


def bucket_width(k: int, growth: float) -> int:
    """The smallest width >= k on the ladder 8, 16, ... whose steps grow by `growth` (each a multiple of 8): at
    most a fraction growth - 1 of padding (8 tokens below 64), a few buckets for counts that vary by 10-20%."""
    if growth <= 1.0:
        raise ValueError(f"bucket growth must be above 1, got {growth}")
    width = 8
    while width < k:
        width = max(width + 8, -(-int(width * growth) // 8) * 8)
    return width


def _pad_index(idx: torch.Tensor, valid: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """idx [B, K0] (valid [B, K0] or None) -> idx [B, k], valid [B, k]: padded slots repeat the last column (the
    row's last valid index, so the row stays sorted) and are marked invalid."""
    bsz, k0 = idx.shape
    valid = torch.ones(bsz, k0, dtype=torch.bool, device=idx.device) if valid is None else valid
    if k0 == k:
        return idx, valid
    last = idx[:, -1:] if k0 > 0 else idx.new_zeros(bsz, 1)  # [B, 1]
    pad_idx = last.expand(bsz, k - k0)  # [B, k - K0]
    return torch.cat([idx, pad_idx], dim=1), torch.cat([valid, valid.new_zeros(bsz, k - k0)], dim=1)


def stack_rows(parts: Sequence[FamilyMasks]) -> FamilyMasks:
    """Concatenate the rows of several FamilyMasks (of one family, e.g. one per group) along the batch.

    Parts with different kept counts are padded to the largest (`*_valid` False on the padded slots); when no
    padding is needed and no part has valid masks, the valid masks stay None."""
    if len(parts) == 1:
        return parts[0]
    fields = {}
    for name in ("ctx", "tgt"):
        idxs = [getattr(p, f"{name}_idx") for p in parts]
        valids = [getattr(p, f"{name}_valid") for p in parts]
        k = max(i.shape[1] for i in idxs)
        if all(v is None for v in valids) and all(i.shape[1] == k for i in idxs):
            fields[f"{name}_idx"], fields[f"{name}_valid"] = torch.cat(idxs), None
            continue
        padded = [_pad_index(i, v, k) for i, v in zip(idxs, valids)]
        fields[f"{name}_idx"] = torch.cat([i for i, _ in padded])  # [B, K]
        fields[f"{name}_valid"] = torch.cat([v for _, v in padded])  # [B, K]
    return FamilyMasks(**fields)


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
    if spec.placement not in PLACEMENTS:
        raise ValueError(f"{where}: unknown placement {spec.placement!r}; valid: {list(PLACEMENTS)}")
    if spec.placement == "motion":
        if spec.kind == "tube":
            raise ValueError(f"{where}: placement 'motion' needs kind multiblock or causal (tube places no blocks)")
        if not spec.motion_power >= 0.0:
            raise ValueError(f"{where}: motion_power must be >= 0, got {spec.motion_power}")
        if not 0.0 <= spec.motion_mix <= 1.0:
            raise ValueError(f"{where}: motion_mix must be in [0, 1], got {spec.motion_mix}")
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
    """Masks for every family of a batch, a pure function of (seed, step, group) and the row in the group."""

    def __init__(
        self,
        *,
        grid: tuple[int, int, int],
        specs: Sequence[MaskSpec],
        policy: str = "random",
        seed: int = 0,
        max_resample: int = 10,
        group_size: int = 24,
    ) -> None:
        """grid (T', H', W') token grid; specs one per family; policy "random" | "official" | "pad"; group_size
        clips per equal-length group (see `for_rows`)."""
        if len(grid) != 3 or min(grid) < 1 or grid[0] * grid[1] * grid[2] < 2:
            raise ValueError(f"grid must be 3 positive ints with at least 2 tokens, got {grid}")
        if policy not in POLICIES:
            raise ValueError(f"unknown mask policy {policy!r}; valid: {list(POLICIES)}")
        if len(specs) == 0:
            raise ValueError("at least one mask spec is required")
        if group_size < 1:
            raise ValueError(f"mask group_size must be >= 1, got {group_size}")
        for i, spec in enumerate(specs):
            check_spec(spec, tuple(grid), i)
        self.grid = (int(grid[0]), int(grid[1]), int(grid[2]))
        self.specs = tuple(specs)
        self.policy = policy
        self.seed = int(seed)
        self.max_resample = int(max_resample)
        self.group_size = int(group_size)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def needs_video(self) -> bool:
        """True when a family places its blocks by motion: the callers must pass the batch's clips."""
        return any(spec.placement == "motion" for spec in self.specs)

    def motion(self, video: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """Token motion [B, T', H', W'] of the clips [B, C, T, H, W] when a family needs it, else None."""
        if not self.needs_video:
            return None
        if video is None:
            fam = next(i for i, spec in enumerate(self.specs) if spec.placement == "motion")
            raise ValueError(f"mask family {fam} uses placement 'motion': pass the batch's clips (video)")
        if video.dim() != 5 or video.shape[0] != batch_size:
            raise ValueError(f"masks: expected the clips [{batch_size}, C, T, H, W], got {tuple(video.shape)}")
        return token_motion(video, self.grid)  # [B, T', H', W']

    def block_size(self, step: int, family: int) -> BlockSize | None:
        """The block size family `family` uses at `step` (same in every group); None for kind "tube"."""
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
        self, family: int, step: int, batch_size: int, group: int, motion: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
        """motion: token motion [B, T', H', W'] of the group's clips (used by placement "motion" only)."""
        spec = self.specs[family]
        gen = _generator(self.seed, step, family, group)
        if spec.kind == "tube":
            horizon = context_horizon(self.grid[0], spec.max_temporal_keep)
            ctx, tgt = sample_tube(
                grid=self.grid, ratio=spec.tube_ratio, batch_size=batch_size, horizon=horizon, generator=gen
            )
            return ctx, tgt, gen
        size = self.block_size(step, family)
        probs = None
        if spec.placement == "motion":
            probs = corner_probs(motion, size, spec.motion_power, spec.motion_mix)  # [B, O]
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
                corner_probs=probs,
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
            corner_probs=probs,
        )
        return ctx, tgt, gen

    def sample_masks(
        self, step: int, batch_size: int, group: int = 0, video: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Full boolean (context, target) masks [B, N] per family of one group, before the equal-length policy.
        video: the group's clips [B, C, T, H, W] (needed by placement "motion" only)."""
        motion = self.motion(video, batch_size)
        return [self._family(f, step, batch_size, group, motion)[:2] for f in range(len(self.specs))]

    def __call__(
        self, step: int, batch_size: int, group: int = 0, video: torch.Tensor | None = None
    ) -> list[FamilyMasks]:
        """The masks of ONE group of `batch_size` clips (seeded by `group`): one FamilyMasks per spec, index lists
        sorted ascending, equal length within the group per the policy. video: the group's clips [B, C, T, H, W]
        (needed by placement "motion" only)."""
        return self._group(step, batch_size, group, self.motion(video, batch_size))

    def _group(self, step: int, batch_size: int, group: int, motion: torch.Tensor | None) -> list[FamilyMasks]:
        out = []
        for family in range(len(self.specs)):
            ctx, tgt, gen = self._family(family, step, batch_size, group, motion)
            ctx_idx, ctx_valid = mask_to_index(ctx, self.policy, gen)  # [B, Kc]
            tgt_idx, tgt_valid = mask_to_index(tgt, self.policy, gen)  # [B, Kt]
            out.append(FamilyMasks(ctx_idx=ctx_idx, tgt_idx=tgt_idx, ctx_valid=ctx_valid, tgt_valid=tgt_valid))
        return out

    def for_rows(
        self, step: int, lo: int, hi: int, batch_size: int, video: torch.Tensor | None = None
    ) -> list[FamilyMasks]:
        """The masks of samples lo..hi-1 of a global batch of `batch_size` clips, cut per group of `group_size`.

        Draws only the groups overlapping lo..hi-1 (group g holds samples g * group_size onwards, the last group
        what is left of the batch); rows of groups with different kept counts are padded (see `stack_rows`).
        With group_size >= batch_size this is `self(step, batch_size, 0)` sliced to lo..hi-1. video: the clips
        of rows lo..hi-1 [hi - lo, C, T, H, W], needed by placement "motion" (then every group overlapping
        lo..hi-1 must lie inside it)."""
        if not 0 <= lo < hi <= batch_size:
            raise ValueError(f"for_rows: expected 0 <= lo < hi <= batch_size, got {lo}, {hi}, {batch_size}")
        gs = self.group_size
        motion = self.motion(video, hi - lo)  # [hi - lo, T', H', W'] or None
        parts = []  # per group overlapping lo..hi-1: list[FamilyMasks] of its rows in lo..hi-1
        for g in range(lo // gs, (hi - 1) // gs + 1):
            start = g * gs
            size = min(gs, batch_size - start)
            group_motion = None
            if motion is not None:
                if start < lo or start + size > hi:
                    raise ValueError(
                        f"placement 'motion' needs each mask group on one process: group {g} (samples {start}.."
                        f"{start + size - 1}) is not inside rows {lo}..{hi - 1}; make mask.group_size divide "
                        "data.batch_size"
                    )
                group_motion = motion[start - lo : start - lo + size]  # [size, T', H', W']
            masks = self._group(step, size, g, group_motion)
            parts.append([m.rows(max(lo, start) - start, min(hi, start + size) - start) for m in masks])
        return [stack_rows([p[f] for p in parts]) for f in range(len(self.specs))]
