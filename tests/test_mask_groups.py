"""The equal-length mask cut per group of `mask.group_size` clips (masks/collator.py `for_rows`, the training stream).

- The masks of every sample, kept token counts included, are the same whatever the number of processes and the
  per-process batch (the stream's rank slices of one global batch), and the same whatever the global batch for
  the samples of full groups: the cut is taken per group, not over the global batch.
- With one group covering the batch, the masks are exactly those of the single-group draw (the old behaviour for
  one process, so the golden loss curve stands).
- A process holding rows of groups with different kept counts gets padded index lists with valid masks.

Shapes: B batch, N tokens, K kept tokens.
"""

from __future__ import annotations

import pytest
import torch

from vjepa.config import ConfigError, MaskSpec, load_config
from vjepa.data.loader import TrainStream, _WorkerContext
from vjepa.masks import FamilyMasks, MaskGenerator, index_to_mask

GRID = (4, 6, 6)
SPECS = [MaskSpec(num_blocks=8, spatial_scale=(0.15, 0.15)), MaskSpec(num_blocks=2, spatial_scale=(0.7, 0.7))]


class _Blank:
    """A list source of blank clips: only the masks matter here."""

    frames_per_clip = 8

    def unit(self, n, k, mode, ctx):
        return [(torch.zeros(3, 8, 4, 4), 0)] * k


def _per_sample(masks: list[FamilyMasks]) -> list[list[tuple[list[int], list[int]]]]:
    """Per family, per sample: (context, target) index lists, valid slots only."""

    def rows(idx, valid):
        if valid is None:
            return idx.tolist()
        return [r[v].tolist() for r, v in zip(idx, valid)]

    return [list(zip(rows(m.ctx_idx, m.ctx_valid), rows(m.tgt_idx, m.tgt_valid))) for m in masks]


def _stream_masks(gen: MaskGenerator, step: int, global_batch: int, world: int) -> list:
    """Per-sample masks of a global batch as `world` processes of the training stream produce them."""
    out = None
    for rank in range(world):
        stream = TrainStream(
            sources=[_Blank()],
            weights=[1.0],
            batch_size=global_batch // world,
            repeat=1,
            repeat_mode="clips",
            rank=rank,
            world_size=world,
            seed=0,
            start_step=0,
            end_step=step + 1,
            mask_generators={8: gen},
        )
        part = _per_sample(stream.batch(step, _WorkerContext(rank=rank, world_size=world, start_step=0))["masks"])
        out = part if out is None else [a + b for a, b in zip(out, part)]
    return out


@pytest.mark.parametrize("policy", ["random", "official", "pad"])
def test_masks_do_not_depend_on_world_size_or_per_process_batch(policy):
    # global batch 12 in groups of 8 (the last group holds 4): worlds 2 and 4 have a rank straddling the groups
    gen = MaskGenerator(grid=GRID, specs=SPECS, policy=policy, seed=3, group_size=8)
    for step in range(3):
        one = _stream_masks(gen, step, 12, 1)
        for world in (2, 3, 4, 6):
            assert _stream_masks(gen, step, 12, world) == one, (step, world)
        # sample i is row i - start of its own group's draw: the cut is per group, not over the 12 clips
        groups = _per_sample(gen(step, 8, 0)), _per_sample(gen(step, 4, 1))
        assert one == [g0 + g1 for g0, g1 in zip(*groups)]


def test_full_groups_do_not_depend_on_the_global_batch():
    gen = MaskGenerator(grid=GRID, specs=SPECS, seed=0, group_size=4)
    for step in range(4):
        small = _stream_masks(gen, step, 8, 2)
        large = _stream_masks(gen, step, 32, 4)
        assert [f[:8] for f in large] == small
        counts = {len(c) for f in large for c, _ in f}
        assert counts == {len(c) for f in _stream_masks(gen, step, 32, 8) for c, _ in f}


@pytest.mark.parametrize("policy", ["random", "official", "pad"])
def test_one_group_is_the_single_group_draw(policy):
    gen = MaskGenerator(grid=GRID, specs=SPECS, policy=policy, seed=1, group_size=24)
    for step in range(3):
        whole = gen(step, 8, 0)
        for lo, hi in ((0, 8), (2, 6), (7, 8)):
            got = gen.for_rows(step, lo, hi, 8)
            for g, w in zip(got, whole):
                want = w.rows(lo, hi)
                assert torch.equal(g.ctx_idx, want.ctx_idx) and torch.equal(g.tgt_idx, want.tgt_idx)
                assert (g.ctx_valid is None) == (want.ctx_valid is None)


def test_rows_of_groups_with_different_counts_are_padded():
    gen = MaskGenerator(grid=GRID, specs=SPECS, seed=0, group_size=4)
    n = GRID[0] * GRID[1] * GRID[2]
    seen = 0
    for step in range(6):
        got = gen.for_rows(step, 2, 6, 8)  # rows 2, 3 of group 0 and rows 0, 1 of group 1
        parts = [m.rows(2, 4) for m in gen(step, 4, 0)], [m.rows(0, 2) for m in gen(step, 4, 1)]
        for f, m in enumerate(got):
            for name in ("ctx", "tgt"):
                idx, valid = getattr(m, f"{name}_idx"), getattr(m, f"{name}_valid")
                k0, k1 = (getattr(p[f], f"{name}_idx").shape[1] for p in parts)
                if k0 == k1:
                    assert valid is None and idx.shape[1] == k0
                    continue
                seen += 1
                assert idx.shape == (4, max(k0, k1)) and valid.sum(1).tolist() == [k0, k0, k1, k1]
                assert bool((idx[:, 1:] >= idx[:, :-1]).all())  # padded slots repeat the last index: sorted
                want = torch.cat([index_to_mask(getattr(p[f], f"{name}_idx"), n) for p in parts])
                assert torch.equal(index_to_mask(idx, n, valid), want)
    assert seen > 0  # the case was exercised


def test_group_size_is_validated():
    with pytest.raises(ConfigError, match="mask.group_size"):
        load_config(None, ["mask.group_size=0"])
    with pytest.raises(ValueError, match="group_size"):
        MaskGenerator(grid=GRID, specs=SPECS, group_size=0)
    with pytest.raises(ValueError, match="for_rows"):
        MaskGenerator(grid=GRID, specs=SPECS).for_rows(0, 4, 9, 8)
