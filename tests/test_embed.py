"""Embedder (vjepa/embed.py): whole videos of any length and resolution against a loop-based reference.

Oracles: a per-window loop that pads the video by hand and calls the encoder once per window; the encoder's own
forward pass on a clip at its training size; the decoded frames of a file (path input == tensor input); the
means over tokens computed directly. A constant-colour video shows that the sin-cos table is interpolated to a
non-square grid (its tokens differ only through their positions).

Shapes: L frames of a video, C channels, F frames per window, h/w resized frame size, T'' token steps, N tokens,
D width.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vjepa.data.decoders import available_backends, open_video
from vjepa.data.synthetic import render_clip, write_mp4
from vjepa.data.transforms import normalize_clip, short_side_size
from vjepa.embed import Embedder
from vjepa.models.encoder import VisionTransformer
from vjepa.models.init import init_weights

FPC, S, P, TUB, D = 8, 32, 16, 2, 64


def tiny_encoder(pos_embed: str) -> VisionTransformer:
    torch.manual_seed(0)
    enc = VisionTransformer(
        img_size=S, num_frames=FPC, patch_size=P, tubelet_size=TUB, embed_dim=D, depth=2, num_heads=4,
        pos_embed=pos_embed,
    )  # fmt: skip
    init_weights(enc)
    return enc.eval()


def reference_tokens(encoder: VisionTransformer, frames: torch.Tensor) -> torch.Tensor:
    """Loop reference: uint8 [L, H, W, 3] -> tokens [T'' * H' * W', D], one encoder call per padded window."""
    length, height, width, _ = frames.shape
    h, w = short_side_size(height, width, S, P)
    x = F.interpolate(frames.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", antialias=True)  # [L, 3, h, w]
    video = normalize_clip(x.permute(0, 2, 3, 1))  # [C, L, h, w]
    steps = []
    for start in range(0, length, FPC):
        idx = [min(i, length - 1) for i in range(start, start + FPC)]  # the last window repeats the last frame
        with torch.no_grad():
            tokens = encoder(video[:, idx][None])[0]  # [N, D]
        steps.append(tokens.reshape(FPC // TUB, -1, D))  # [T', H' * W', D]
    return torch.cat(steps)[: math.ceil(length / TUB)].flatten(0, 1)  # [T'' * H' * W', D]


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
@pytest.mark.parametrize("length", [5, 16, 21])  # shorter than a window, exactly 2, 3 with padding
def test_any_length_and_size_matches_loop_reference(pos_embed: str, length: int) -> None:
    encoder = tiny_encoder(pos_embed)
    frames = torch.randint(0, 256, (length, 48, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    emb = Embedder(encoder, batch_size=2)  # 2 windows per forward: batching and the loop must agree
    tokens, grid = emb.embed(frames, output="tokens", return_grid=True)
    steps = math.ceil(length / TUB)
    assert grid == (steps, 2, 3)  # short side 48 -> 32, long side 80 -> 53.3 -> 48 (multiple of 16)
    assert tokens.shape == (steps * 2 * 3, D)
    torch.testing.assert_close(tokens, reference_tokens(encoder, frames), atol=2e-5, rtol=1e-5)
    per_step = emb.embed(frames, output="frames")
    pooled = emb.embed(frames, output="pooled")
    assert per_step.shape == (steps, D) and pooled.shape == (D,)
    torch.testing.assert_close(per_step, tokens.reshape(steps, 6, D).mean(1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(pooled, tokens.mean(0), atol=1e-6, rtol=1e-6)


def test_clip_helpers() -> None:
    encoder = tiny_encoder("sincos")
    emb = Embedder(encoder, batch_size=3)
    video = torch.randn(5, 3, FPC, S, 48)  # [B, C, T, H, W], non-square clip
    tokens = emb.clip_tokens(video)  # 3 + 2 clips per forward
    grid = emb.grid(video.shape)
    assert grid == (4, 2, 3) and tokens.shape == (5, 24, D)
    with torch.no_grad():
        torch.testing.assert_close(tokens, encoder(video), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.frames(tokens, grid), tokens.reshape(5, 4, 6, D).mean(2))
    torch.testing.assert_close(emb.pooled(tokens), tokens.mean(1))
    with pytest.raises(ValueError, match="multiples"):
        emb.clip_tokens(torch.randn(1, 3, FPC, S, 40))


def test_training_size_float_input_equals_encoder_forward() -> None:
    encoder = tiny_encoder("rope")
    frames = torch.randint(0, 256, (FPC, S, S, 3), dtype=torch.uint8)
    video = normalize_clip(frames)  # [C, T, S, S]: no resize, one window
    emb = Embedder(encoder)
    with torch.no_grad():
        direct = encoder(video[None])[0]  # [N, D]
    assert torch.equal(emb.embed(video, output="tokens"), direct)
    torch.testing.assert_close(emb.embed(frames, output="tokens"), direct, atol=1e-5, rtol=1e-5)


def test_sincos_table_is_interpolated_to_other_grids() -> None:
    encoder = tiny_encoder("sincos")
    flat = torch.full((FPC, 40, 72, 3), 120, dtype=torch.uint8)  # constant: tokens differ only by position
    tokens, grid = Embedder(encoder).embed(flat, output="tokens", return_grid=True)
    assert grid == (4, 2, 4)  # 40 x 72 -> 32 x 57.6 -> 32 x 64
    spread = tokens.reshape(-1, D).std(0).mean()
    assert torch.isfinite(tokens).all() and spread > 1e-3
    rope_tokens = Embedder(tiny_encoder("rope")).embed(flat, output="tokens")  # RoPE: no position in the values
    assert rope_tokens.reshape(-1, D).std(0).mean() < 1e-4


@pytest.mark.skipif(not available_backends(), reason="no video decoder installed")
def test_path_input_equals_decoded_frames(tmp_path) -> None:
    path = tmp_path / "clip.mp4"
    write_mp4(path, render_clip(3, seed=5, num_frames=11, size=64)[:, 8:56].contiguous(), fps=8)  # 11 x 48 x 64
    emb = Embedder(tiny_encoder("sincos"), batch_size=1)
    with open_video(path, backend=available_backends()[0]) as reader:
        frames = reader.get_frames(range(reader.num_frames))  # [11, 48, 64, 3]
    for output in ("tokens", "frames", "pooled"):
        assert torch.equal(emb.embed(path, output=output), emb.embed(frames, output=output)), output
    assert emb.embed(str(path), output="frames").shape == (6, D)


def test_bad_inputs() -> None:
    emb = Embedder(tiny_encoder("rope"))
    with pytest.raises(ValueError, match="output must be"):
        emb.embed(torch.zeros(FPC, S, S, 3, dtype=torch.uint8), output="cls")
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        emb.embed(torch.zeros(FPC, S, S, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="normalised"):
        emb.embed(torch.zeros(4, FPC, S, S))
