"""Motion-guided block placement (vjepa/masks/motion.py, MaskSpec.placement="motion") against loop references and
hand-built clips: a static clip gives uniform corners, one moving patch attracts every block, context and target
stay a partition, and the masks do not depend on workers or on how the batch is split over processes.

Shapes: B batch, C channels, T frames, N tokens, O block corners.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from conftest import tiny_cfg
from torch.utils.data import DataLoader

from vjepa.config import ConfigError, MaskSpec, load_config
from vjepa.masks import MaskGenerator, index_to_mask
from vjepa.masks.motion import SCORE_FLOOR, block_motion, corner_probs, sample_guided_starts, token_motion

GRID = (4, 4, 4)  # clips of 8 frames, 16 x 16 pixels, tubelet 2, patch 4
MOTION = dict(placement="motion", motion_mix=0.0, motion_power=50.0)


def _clip(b: int = 2, seed: int = 0) -> torch.Tensor:
    """A static clip: one random image repeated over 8 frames -> [B, 3, 8, 16, 16]."""
    image = torch.randn(b, 3, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    return image.expand(b, 3, 8, 16, 16).clone()


def _moving_patch(b: int, h0: int, w0: int) -> torch.Tensor:
    """A static clip except for the 4 x 4 patch of token column (h0, w0), which flickers every frame."""
    video = _clip(b)
    video[:, :, 1::2, 4 * h0 : 4 * h0 + 4, 4 * w0 : 4 * w0 + 4] += 1.0
    return video


def _tube(h0: int, w0: int) -> torch.Tensor:
    """Bool [N]: the tokens of spatial position (h0, w0) at every time step."""
    mask = torch.zeros(GRID, dtype=torch.bool)
    mask[:, h0, w0] = True
    return mask.flatten()


def _per_row(m) -> list[tuple[list[int], list[int]]]:
    """(context, target) index lists of each row, padded slots left out."""

    def rows(idx, valid):
        valid = torch.ones_like(idx, dtype=torch.bool) if valid is None else valid
        return [[int(i) for i, v in zip(r, vr) if v] for r, vr in zip(idx, valid)]

    return list(zip(rows(m.ctx_idx, m.ctx_valid), rows(m.tgt_idx, m.tgt_valid)))


# ------------------------------------------------------------------------------------------- motion and scores


def test_token_motion_matches_a_loop_reference():
    video = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    grid = (2, 2, 2)  # tubelet 2, patch 4
    got = token_motion(video, grid)
    x = video.double()
    for b, t, h, w in itertools.product(range(2), range(2), range(2), range(2)):
        values = []
        for f in range(2 * t, 2 * t + 2):
            prev, cur = (0, 1) if f == 0 else (f - 1, f)  # frame 0 borrows frame 1's difference
            for y in range(4 * h, 4 * h + 4):
                for xx in range(4 * w, 4 * w + 4):
                    values.append(sum(abs(float(x[b, c, cur, y, xx] - x[b, c, prev, y, xx])) for c in range(3)) / 3)
        assert float(got[b, t, h, w]) == pytest.approx(sum(values) / len(values), rel=1e-6)  # float32 sums
    assert token_motion(video[:, :, :1], (1, 2, 2)).abs().sum() == 0  # one frame: no motion


def test_block_motion_matches_a_loop_reference():
    motion = torch.rand(2, 4, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    size = (2, 2, 3)
    got = block_motion(motion, size)  # [B, O]
    corners = list(itertools.product(range(3), range(3), range(2)))  # (t, h, w) row-major
    assert got.shape == (2, len(corners))
    for b in range(2):
        for o, (t, h, w) in enumerate(corners):
            want = motion[b, t : t + 2, h : h + 2, w : w + 3].mean()
            assert float(got[b, o]) == pytest.approx(float(want), rel=1e-12)


def test_corner_probabilities_are_the_stated_mixture():
    # one time step, a 1 x 3 grid, blocks of one token: block means are the token motions 2, 1, 0
    motion = torch.tensor([[[[2.0, 1.0, 0.0]]]], dtype=torch.float64)  # [1, 1, 1, 3]
    s, r = 2.0, 0.1
    weights = torch.tensor([1.0, 0.5**s, SCORE_FLOOR**s], dtype=torch.float64)  # (m / max, floored)^s
    want = (1 - r) * weights / weights.sum() + r / 3
    got = corner_probs(motion, (1, 1, 1), s, r)[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(corner_probs(motion, (1, 1, 1), s, 1.0)[0], torch.full((3,), 1 / 3, dtype=torch.float64))


# ----------------------------------------------------------------------------------------- the three required


@pytest.mark.parametrize("power, mix", [(2.0, 0.1), (50.0, 0.0), (0.0, 0.5)])
def test_static_clip_gives_uniform_corners(power, mix):
    motion = token_motion(_clip(3), GRID)
    assert motion.abs().sum() == 0
    size = (4, 2, 1)
    probs = corner_probs(motion, size, power, mix)  # [B, O]
    num = 1 * 3 * 4
    torch.testing.assert_close(probs, torch.full((3, num), 1 / num, dtype=torch.float64), rtol=1e-12, atol=0)
    # the drawn corners: every corner about equally often (16000 draws, 1333 expected each, sd about 35)
    starts = sample_guided_starts(
        grid=GRID, block_size=size, probs=probs[:1], num_blocks=16_000, generator=torch.Generator().manual_seed(0)
    )[0]  # [nb, 3]
    assert bool((starts[:, 0] == 0).all())
    counts = torch.bincount(starts[:, 1] * 4 + starts[:, 2], minlength=num)
    assert counts.shape == (num,) and int((counts - 16_000 / num).abs().max()) < 180


def test_single_moving_patch_attracts_every_block():
    h0, w0 = 1, 2
    video = _moving_patch(4, h0, w0)
    tube = _tube(h0, w0)
    one = MaskSpec(num_blocks=3, spatial_scale=(0.05, 0.05), **MOTION)  # blocks of 4 x 1 x 1 tokens
    two = MaskSpec(num_blocks=2, spatial_scale=(0.25, 0.25), aspect_ratio=(1.0, 1.0), **MOTION)  # 4 x 2 x 2
    gen = MaskGenerator(grid=GRID, specs=[one, two], group_size=4)
    assert gen.block_size(0, 0) == (4, 1, 1) and gen.block_size(0, 1) == (4, 2, 2)
    near = torch.zeros(GRID, dtype=torch.bool)
    near[:, h0 - 1 : h0 + 2, w0 - 1 : w0 + 2] = True  # every 2 x 2 block holding (h0, w0) lies in here
    for step in range(20):
        (_, tgt1), (_, tgt2) = gen.sample_masks(step, 4, video=video)
        assert bool((tgt1 == tube).all())  # all three blocks on the moving patch
        assert bool(tgt2[:, tube].all()) and not bool(tgt2[:, ~near.flatten()].any())
    # the same families placed uniformly miss the patch (so the test above can fail)
    uniform = MaskGenerator(grid=GRID, specs=[dataclasses.replace(one, placement="uniform")], group_size=4)
    assert any(not bool((uniform.sample_masks(step, 4)[0][1] == tube).all()) for step in range(20))


@pytest.mark.parametrize("policy", ["random", "pad"])
def test_context_and_target_stay_complementary(policy):
    video = torch.randn(4, 3, 8, 16, 16, generator=torch.Generator().manual_seed(3))  # motion everywhere
    specs = [
        MaskSpec(num_blocks=8, spatial_scale=(0.15, 0.15), placement="motion"),
        MaskSpec(num_blocks=2, spatial_scale=(0.7, 0.7), placement="motion", motion_power=8.0),
        MaskSpec(kind="causal", causal_frames=2, num_blocks=2, spatial_scale=(0.3, 0.3), placement="motion"),
        MaskSpec(num_blocks=1, spatial_scale=(1.0, 1.0), placement="motion"),  # covers the grid: context resampled
    ]
    gen = MaskGenerator(grid=GRID, specs=specs, policy=policy, group_size=4)
    n = 64
    for step in range(10):
        for f, (ctx, tgt) in enumerate(gen.sample_masks(step, 4, video=video)):
            assert not bool((ctx & tgt).any()) and bool((ctx | tgt).all())  # disjoint and covering
            assert bool(ctx.any(dim=1).all()) and bool(tgt.any(dim=1).all())
            if f == 2:
                assert not bool(ctx.reshape(4, *GRID)[:, 2:].any())  # causal: context only at t < p
        if policy == "pad":  # nothing dropped: the index lists are the same partition
            for m in gen(step, 4, video=video):
                ctx = index_to_mask(m.ctx_idx, n, m.ctx_valid)
                tgt = index_to_mask(m.tgt_idx, n, m.tgt_valid)
                assert not bool((ctx & tgt).any()) and bool((ctx | tgt).all())


# ------------------------------------------------------------------------------- uniform path and determinism


def test_uniform_placement_never_reads_the_clips():
    specs = [MaskSpec(num_blocks=8, spatial_scale=(0.15, 0.15)), MaskSpec(num_blocks=2, spatial_scale=(0.7, 0.7))]
    gen = MaskGenerator(grid=GRID, specs=specs, group_size=2)
    assert not gen.needs_video
    video = _moving_patch(4, 0, 0)
    for step in range(3):
        a, b = gen.for_rows(step, 0, 4, 4), gen.for_rows(step, 0, 4, 4, video)
        for x, y in zip(a, b):
            assert torch.equal(x.ctx_idx, y.ctx_idx) and torch.equal(x.tgt_idx, y.tgt_idx)


def test_motion_masks_do_not_depend_on_the_process_split():
    spec = MaskSpec(num_blocks=2, spatial_scale=(0.25, 0.25), placement="motion")
    gen = MaskGenerator(grid=GRID, specs=[spec], group_size=2)
    video = torch.randn(4, 3, 8, 16, 16, generator=torch.Generator().manual_seed(4))
    for step in range(3):
        whole = _per_row(gen.for_rows(step, 0, 4, 4, video)[0])
        halves = [_per_row(gen.for_rows(step, lo, lo + 2, 4, video[lo : lo + 2])[0]) for lo in (0, 2)]
        assert whole == halves[0] + halves[1]
    with pytest.raises(ValueError, match="pass the batch's clips"):
        gen.for_rows(0, 0, 4, 4)
    with pytest.raises(ValueError, match="mask.group_size divide data.batch_size"):
        MaskGenerator(grid=GRID, specs=[spec], group_size=4).for_rows(0, 0, 2, 4, video[:2])


def test_training_stream_masks_do_not_depend_on_loader_workers(tmp_path):
    cfg = tiny_cfg(
        tmp_path / "run",
        "mask.families=[{num_blocks: 2, spatial_scale: [0.3, 0.3], placement: motion}]",
        "model.patch_size=8",
    )
    from vjepa.data.loader import build_stream

    stream = build_stream(cfg, rank=0, world_size=1, start_step=0, end_step=4)
    assert stream.mask_generators[8].needs_video
    runs = [list(DataLoader(stream, batch_size=None, num_workers=w)) for w in (0, 2)]
    for a, b in zip(*runs):
        assert a["step"] == b["step"] and torch.equal(a["video"], b["video"])
        assert torch.equal(a["masks"][0].tgt_idx, b["masks"][0].tgt_idx)
    with pytest.raises(ValueError, match="mask.group_size=24 must divide data.batch_size=4"):
        build_stream(cfg, rank=0, world_size=2, start_step=0, end_step=4)


def test_config_checks_the_placement():
    families = "mask.families=[{kind: tube, placement: motion}]"
    with pytest.raises(ConfigError, match=r"mask.families.0.placement=motion needs kind multiblock or causal"):
        load_config(None, ["data.source=synthetic", families])
    with pytest.raises(ConfigError, match=r"mask.families.0.placement"):
        load_config(None, ["data.source=synthetic", "mask.families=[{placement: motions}]"])
    with pytest.raises(ConfigError, match=r"mask.families.0.motion_mix"):
        load_config(None, ["data.source=synthetic", "mask.families=[{placement: motion, motion_mix: 1.5}]"])
    cfg = load_config(None, ["data.source=synthetic", "mask.families=[{placement: motion, motion_power: 4}]"])
    assert cfg.mask.families[0].motion_power == 4.0 and cfg.mask.families[0].motion_mix == 0.1
