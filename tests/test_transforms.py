"""Tests of vjepa/data/transforms.py: crop statistics, one crop for all frames, flip, determinism, eval path.

Oracle for crop + resize: torchvision.transforms.v2.functional.resized_crop applied to each frame separately.
Shape legend: T frames, H, W input size, C = 3, S crop size.
"""

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vjepa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoTransform,
    normalize_clip,
    sample_crop,
)
from vjepa.seeding import derive_seed, make_generator

pytestmark = pytest.mark.usefixtures("single_thread")

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)


def random_clip(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (t, h, w, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("height, width", [(64, 64), (48, 96), (90, 40), (17, 23)])
def test_crop_area_and_aspect_within_bounds(height, width):
    gen = torch.Generator().manual_seed(0)
    for _ in range(500):
        top, left, h, w = sample_crop(height, width, (0.3, 1.0), (0.75, 1.35), gen)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
        # Rounding h and w moves area and aspect by at most about one pixel per side.
        area = h * w / (height * width)
        assert 0.3 * (1 - 1.0 / h) * (1 - 1.0 / w) - 1e-9 <= area <= 1.0
        assert 0.75 * (1 - 1.0 / w) / (1 + 1.0 / h) <= w / h <= 1.35 * (1 + 1.0 / w) / (1 - 1.0 / h)


def test_crop_fallback_is_centred_with_clamped_aspect():
    gen = torch.Generator().manual_seed(0)
    # A 10x200 strip: no crop of area >= 0.3 * 2000 and aspect <= 1.35 fits in 10 rows, so all 10 tries fail.
    assert sample_crop(10, 200, (0.3, 1.0), (0.75, 1.35), gen) == (0, (200 - 14) // 2, 10, 14)
    assert sample_crop(200, 10, (0.3, 1.0), (0.75, 1.35), gen) == ((200 - 13) // 2, 0, 13, 10)


def test_crop_scale_uniform_and_aspect_log_uniform():
    """With small scales every try fits, so the draws show the sampling distributions directly."""
    gen = torch.Generator().manual_seed(1)
    areas, log_aspects = [], []
    for _ in range(3000):
        _, _, h, w = sample_crop(1000, 1000, (0.2, 0.4), (0.75, 1.35), gen)
        areas.append(h * w / 1e6)
        log_aspects.append(math.log(w / h))
    areas, log_aspects = torch.tensor(areas), torch.tensor(log_aspects)
    assert abs(areas.mean() - 0.3) < 0.005
    mid = 0.5 * (math.log(0.75) + math.log(1.35))
    # Log-uniform: half the draws below the log-midpoint; uniform in aspect would give ~0.43.
    assert abs((log_aspects < mid).float().mean() - 0.5) < 0.03


def test_matches_torchvision_per_frame_crop():
    clip = random_clip(5, 40, 56)
    tf = VideoTransform(crop_size=24, hflip=0.0)
    out = tf(clip, make_generator(7))
    assert out.shape == (3, 5, 24, 24) and out.dtype == torch.float32
    top, left, h, w = sample_crop(40, 56, (0.3, 1.0), (0.75, 1.35), make_generator(7))
    for t in range(5):
        frame = clip[t].permute(2, 0, 1)  # [C, H, W] uint8
        ref = TF.resized_crop(frame, top, left, h, w, [24, 24], antialias=True).float()  # [C, S, S]
        torch.testing.assert_close(out[:, t], (ref / 255 - MEAN[:, 0]) / STD[:, 0], atol=1e-5, rtol=1e-5)
        # Against float resizing: torch's uint8 path (fixed-point weights, rounding) is within one grey level.
        ref_f = TF.resized_crop(frame.float(), top, left, h, w, [24, 24], antialias=True)
        assert ((out[:, t] * STD[:, 0] + MEAN[:, 0]) * 255 - ref_f).abs().max() < 1.0


def test_same_crop_for_every_frame():
    """Frames differ by a per-frame constant; a shared crop keeps that difference constant over each frame
    (to one grey level: the uint8 resize rounds)."""
    base = torch.randint(0, 200, (1, 48, 64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    clip = base + torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1) * 7  # [T, H, W, 3]
    tf = VideoTransform(crop_size=32)
    for seed in range(5):
        out = tf(clip, make_generator(seed))  # [C, T, S, S]
        diff = out - out[:, :1]
        expected = (torch.arange(8).float() * 7 / 255).view(1, 8, 1, 1) / STD
        torch.testing.assert_close(diff, expected.expand_as(diff), atol=1.01 / 255 / 0.224, rtol=0)
        assert ((diff - expected).abs() > 1e-4).float().mean() < 0.01


def test_deterministic_per_generator():
    clip = random_clip(4, 50, 70)
    tf = VideoTransform(crop_size=32)
    a = tf(clip, make_generator(3))
    assert torch.equal(a, tf(clip, make_generator(3)))
    assert not torch.equal(a, tf(clip, make_generator(4)))


def test_flip_flips():
    clip = random_clip(3, 40, 40)
    for seed in range(4):
        plain = VideoTransform(crop_size=24, hflip=0.0)(clip, make_generator(seed))
        flipped = VideoTransform(crop_size=24, hflip=1.0)(clip, make_generator(seed))
        assert torch.equal(flipped, plain.flip(-1))
    # p = 0.5 flips about half of the draws.
    tf = VideoTransform(crop_size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.5)
    ref = VideoTransform(crop_size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)(clip, make_generator(0))
    flips = sum(not torch.equal(tf(clip, make_generator(s)), ref) for s in range(200))
    assert 70 < flips < 130


def test_eval_resizes_short_side_and_centre_crops():
    clip = random_clip(2, 60, 100)
    tf = VideoTransform(crop_size=30, train=False)
    out = tf(clip, make_generator(0))
    assert torch.equal(out, tf(clip, make_generator(1)))  # no randomness
    assert out.shape == (3, 2, 30, 30)
    for t in range(2):
        frame = clip[t].permute(2, 0, 1)  # [C, H, W] uint8
        ref = TF.center_crop(TF.resize(frame, [30, 50], antialias=True), [30, 30]).float()
        torch.testing.assert_close(out[:, t], (ref / 255 - MEAN[:, 0]) / STD[:, 0], atol=1e-5, rtol=1e-5)


def test_normalisation_of_constant_clip():
    clip = torch.full((2, 20, 20, 3), 128, dtype=torch.uint8)
    expected = ((128 / 255 - MEAN) / STD).expand(3, 2, 16, 16)
    torch.testing.assert_close(VideoTransform(crop_size=16)(clip, make_generator(0)), expected)
    torch.testing.assert_close(normalize_clip(clip), ((128 / 255 - MEAN) / STD).expand(3, 2, 20, 20))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="scale"):
        VideoTransform(crop_size=8, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="frames"):
        VideoTransform(crop_size=8)(torch.zeros(4, 8, 8, dtype=torch.uint8), make_generator(0))


def test_derive_seed_separates_keys():
    keys = [("sample", s, i, d) for s in range(3) for i in range(10) for d in range(3)]
    seeds = {derive_seed(*k) for k in keys}
    assert len(seeds) == len(keys) and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed("a", 1) != derive_seed("a1") and derive_seed(1, 2) != derive_seed(12)
    assert derive_seed("sample", 0, 1, 2) == derive_seed("sample", 0, 1, 2)
