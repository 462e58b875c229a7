"""Tests for vjepa.models: attention kernels, position embeddings, encoder/predictor semantics, init.

Oracles: the explicit reference attention; sin-cos and RoPE formulas written as loops over channels; the encoder
run on a cropped clip (RoPE positions); permutation equivariance; unpadded runs for the "pad" policy.

Shapes: B batch, N tokens, K kept tokens, D width, H heads, hd head width.
"""

from __future__ import annotations

import math

import pytest
import torch

from vjepa.models import (
    ENCODER_PRESETS,
    Attention,
    Block,
    PatchEmbed3D,
    Predictor,
    RoPE3D,
    VisionTransformer,
    apply_rope,
    init_weights,
    interpolate_table,
    sincos_3d_table,
)
from vjepa.models.pos_embed import grid_coords

GRID = (4, 4, 4)  # 8 frames / tubelet 2, 32 px / patch 8


def make_encoder(pos_embed: str, attn_impl: str = "sdpa", depth: int = 2) -> VisionTransformer:
    enc = VisionTransformer(
        img_size=32, num_frames=8, patch_size=8, embed_dim=64, depth=depth, num_heads=2, pos_embed=pos_embed,
        attn_impl=attn_impl,
    )  # fmt: skip
    init_weights(enc)
    return enc


def make_predictor(pos_embed: str, attn_impl: str = "sdpa") -> Predictor:
    pred = Predictor(
        embed_dim=64, pred_embed_dim=48, depth=2, num_heads=2, num_mask_tokens=2, pos_embed=pos_embed,
        img_size=32, num_frames=8, patch_size=8, attn_impl=attn_impl,
    )  # fmt: skip
    init_weights(pred)
    return pred


def randomise(*modules: torch.nn.Module, scale: float = 0.1) -> None:
    """Non-trivial values everywhere (zero mask tokens / unit norms would hide bugs)."""
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.add_(torch.randn_like(p) * scale)


def sorted_subsets(b: int, n: int, k: int) -> torch.Tensor:
    return torch.stack([torch.randperm(n)[:k].sort().values for _ in range(b)])  # [B, K]


# ------------------------------------------------------------------------------------------------ attention


@pytest.mark.parametrize("use_valid", [False, True])
@pytest.mark.parametrize("use_rope", [False, True])
def test_sdpa_matches_reference(use_valid: bool, use_rope: bool) -> None:
    torch.manual_seed(0)
    b, n, d, h = 3, 17, 64, 4
    fast = Attention(dim=d, num_heads=h, attn_impl="sdpa")
    ref = Attention(dim=d, num_heads=h, attn_impl="reference")
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(b, n, d)
    valid = torch.rand(b, n) > 0.3 if use_valid else None
    if valid is not None:
        valid[:, 0] = True  # every row keeps at least one key
    rope = RoPE3D(head_dim=d // h)(torch.randint(0, 5, (b, n, 3))) if use_rope else None
    torch.testing.assert_close(fast(x, rope=rope, valid=valid), ref(x, rope=rope, valid=valid), atol=1e-5, rtol=1e-5)


def test_reference_attention_ignores_invalid_keys() -> None:
    torch.manual_seed(1)
    attn = Attention(dim=32, num_heads=2, attn_impl="reference")
    x = torch.randn(2, 9, 32)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[:, 6:] = False
    y = x.clone()
    y[:, 6:] = torch.randn(2, 3, 32) * 10  # change only the padded tokens
    torch.testing.assert_close(attn(x, valid=valid)[:, :6], attn(y, valid=valid)[:, :6])
    torch.testing.assert_close(attn(x, valid=valid)[:, :6], attn(x[:, :6])[:, :6], atol=1e-6, rtol=1e-5)


def test_flash_refused_without_flash_attn_or_cuda() -> None:
    try:
        import flash_attn  # noqa: F401

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if available:
        pytest.skip("flash_attn and CUDA present")
    with pytest.raises(RuntimeError, match="flash"):
        Attention(dim=32, num_heads=2, attn_impl="flash")
    with pytest.raises(ValueError, match="attn_impl"):
        Attention(dim=32, num_heads=2, attn_impl="xformers")


# ----------------------------------------------------------------------------------------- position tables


def sincos_loop(grid: tuple[int, int, int], dim: int, uniform_power: bool) -> torch.Tensor:
    """The sin-cos formula, one value at a time: per axis [sin(p w_i)..., cos(p w_i)...], w_i = 10000^(-2i/d)."""
    dims = [2 * math.ceil(dim / 6)] * 3 if uniform_power else [dim // 2, dim // 4, dim // 4]
    rows = []
    for t in range(grid[0]):
        for h in range(grid[1]):
            for w in range(grid[2]):
                row = []
                for p, d in zip((t, h, w), dims):
                    row += [math.sin(p * 10000 ** (-2 * i / d)) for i in range(d // 2)]
                    row += [math.cos(p * 10000 ** (-2 * i / d)) for i in range(d // 2)]
                rows.append(row[:dim])
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("dim,uniform_power", [(64, True), (48, True), (40, False), (64, False)])
def test_sincos_table_matches_loop(dim: int, uniform_power: bool) -> None:
    grid = (3, 2, 4)
    table = sincos_3d_table(grid, dim, uniform_power)
    assert table.shape == (24, dim) and table.dtype == torch.float32
    torch.testing.assert_close(table, sincos_loop(grid, dim, uniform_power), atol=1e-6, rtol=0)


def test_interpolate_table() -> None:
    table = sincos_3d_table(GRID, 32)
    assert interpolate_table(table, GRID, GRID) is table
    const = torch.full((64, 8), 0.25)
    out = interpolate_table(const, GRID, (2, 6, 3))
    assert out.shape == (36, 8)
    torch.testing.assert_close(out, torch.full((36, 8), 0.25))
    # a table that is constant along t keeps its (h, w) pattern when only t is resized
    hw = torch.randn(1, 4, 4, 8).expand(4, -1, -1, -1).reshape(64, 8)
    out = interpolate_table(hw, GRID, (6, 4, 4)).reshape(6, 4, 4, 8)
    torch.testing.assert_close(out, hw.reshape(4, 4, 4, 8)[:1].expand(6, -1, -1, -1))


def rope_loop(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Released V-JEPA 2 layout, channel by channel: chunk c per axis; channel j of a chunk uses angle
    p * 10000^(-(j mod c/2) / (c/2)) and partner -x[j+1] (j even) or x[j-1] (j odd); the rest unchanged."""
    hd = x.shape[-1]
    c = 2 * ((hd // 3) // 2)
    half = c // 2
    out = x.clone()
    for j in range(3 * c):
        axis, jj = divmod(j, c)
        angle = coords[..., axis].double() * 10000.0 ** (-(jj % half) / half)  # [B, N]
        partner = -x[..., j + 1] if jj % 2 == 0 else x[..., j - 1]  # [B, H, N]
        out[..., j] = x[..., j] * angle.cos()[:, None].float() + partner * angle.sin()[:, None].float()
    return out


@pytest.mark.parametrize("head_dim", [24, 32, 20])
def test_rope_matches_channel_loop(head_dim: int) -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 11, head_dim)
    coords = torch.randint(0, 7, (2, 11, 3))
    cos, sin = RoPE3D(head_dim=head_dim)(coords)
    torch.testing.assert_close(apply_rope(x, cos, sin), rope_loop(x, coords), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- encoder semantics


def test_patch_embed_shapes_and_errors() -> None:
    pe = PatchEmbed3D(patch_size=8, tubelet_size=2, in_chans=3, embed_dim=16)
    x, grid = pe(torch.randn(2, 3, 6, 16, 24))
    assert x.shape == (2, 3 * 2 * 3, 16) and grid == (3, 2, 3)
    with pytest.raises(ValueError, match="multiple"):
        pe(torch.randn(1, 3, 5, 16, 16))


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_encoder_idx_permutation_equivariant(pos_embed: str) -> None:
    torch.manual_seed(3)
    enc = make_encoder(pos_embed)
    randomise(enc)
    video = torch.randn(2, 3, 8, 32, 32)
    perm = torch.stack([torch.randperm(64) for _ in range(2)])  # [B, N]
    full = enc(video)  # [B, N, D]
    torch.testing.assert_close(enc(video, perm), torch.gather(full, 1, perm[..., None].expand(-1, -1, 64)))


def test_encoder_sincos_idx_equals_gather_then_blocks() -> None:
    torch.manual_seed(4)
    enc = make_encoder("sincos")
    randomise(enc)
    video = torch.randn(2, 3, 8, 32, 32)
    idx = sorted_subsets(2, 64, 23)
    tokens = enc.patch_embed.proj(video).flatten(2).transpose(1, 2) + sincos_3d_table(GRID, 64)  # [B, N, D]
    x = torch.stack([tokens[b, idx[b]] for b in range(2)])  # [B, K, D]
    for blk in enc.blocks:
        x = blk(x)
    torch.testing.assert_close(enc(video, idx), enc.norm(x))


def test_encoder_rope_idx_equals_running_on_crop() -> None:
    """RoPE positions of kept tokens: keeping the first time steps / top-left patches of a clip must equal running
    the encoder on the correspondingly cut clip (non-square grid, so h and w are checked separately)."""
    torch.manual_seed(5)
    enc = make_encoder("rope")
    randomise(enc)
    video = torch.randn(2, 3, 8, 32, 48)  # grid (4, 4, 6)
    grid = (4, 4, 6)
    coords = grid_coords(grid)  # [N, 3]
    keep = (coords[:, 0] < 2) & (coords[:, 1] < 3) & (coords[:, 2] < 5)
    idx = keep.nonzero()[:, 0][None].expand(2, -1)  # [B, K]
    torch.testing.assert_close(enc(video, idx), enc(video[:, :, :4, :24, :40]), atol=1e-5, rtol=1e-5)


def test_encoder_sincos_other_grid_interpolates() -> None:
    enc = make_encoder("sincos")
    video = torch.randn(1, 3, 12, 32, 48)
    tokens, grid = enc.embed(video)
    assert grid == (6, 4, 6) and tokens.shape == (1, 144, 64)
    expected = enc.patch_embed(video)[0] + interpolate_table(sincos_3d_table(GRID, 64), GRID, grid)
    torch.testing.assert_close(tokens, expected)
    assert enc(video).shape == (1, 144, 64)


# -------------------------------------------------------------------------------------- predictor semantics


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_predictor_output_order_follows_tgt_idx(pos_embed: str) -> None:
    torch.manual_seed(6)
    pred = make_predictor(pos_embed)
    randomise(pred)
    ctx_idx, tgt_idx = sorted_subsets(2, 64, 20), sorted_subsets(2, 64, 9)
    ctx = torch.randn(2, 20, 64)
    out = pred(ctx, ctx_idx, tgt_idx, GRID, family=1)  # [B, Kt, D]
    perm = torch.randperm(9)
    torch.testing.assert_close(pred(ctx, ctx_idx, tgt_idx[:, perm], GRID, family=1), out[:, perm])
    cperm = torch.randperm(20)  # reordering the context (with its indices) changes nothing
    torch.testing.assert_close(pred(ctx[:, cperm], ctx_idx[:, cperm], tgt_idx, GRID, family=1), out)
    other = pred(ctx, ctx_idx, tgt_idx, GRID, family=0)
    assert not torch.allclose(other, out)  # families have their own mask token
    with pytest.raises(ValueError, match="family"):
        pred(ctx, ctx_idx, tgt_idx, GRID, family=2)


@pytest.mark.parametrize("attn_impl", ["sdpa", "reference"])
@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_pad_mode_matches_unpadded(pos_embed: str, attn_impl: str) -> None:
    torch.manual_seed(7)
    enc, pred = make_encoder(pos_embed, attn_impl), make_predictor(pos_embed, attn_impl)
    randomise(enc, pred)
    video = torch.randn(2, 3, 8, 32, 32)
    ctx_idx, tgt_idx = sorted_subsets(2, 64, 15), sorted_subsets(2, 64, 7)
    z = enc(video, ctx_idx)  # [B, Kc, D]
    p = pred(z, ctx_idx, tgt_idx, GRID, family=1)  # [B, Kt, D]

    pad_c, pad_t = torch.randint(0, 64, (2, 4)), torch.randint(0, 64, (2, 3))
    ctx_pad, tgt_pad = torch.cat([ctx_idx, pad_c], 1), torch.cat([tgt_idx, pad_t], 1)
    ctx_valid = torch.arange(19)[None].expand(2, -1) < 15
    tgt_valid = torch.arange(10)[None].expand(2, -1) < 7
    z_pad = enc(video, ctx_pad, ctx_valid)  # [B, Kc + 4, D]
    torch.testing.assert_close(z_pad[:, :15], z, atol=1e-5, rtol=1e-5)
    z_pad[:, 15:] = torch.randn(2, 4, 64) * 5  # whatever sits in the padded slots must not matter
    p_pad = pred(z_pad, ctx_pad, tgt_pad, GRID, family=1, ctx_valid=ctx_valid, tgt_valid=tgt_valid)
    torch.testing.assert_close(p_pad[:, :7], p, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_impl", ["sdpa", "reference"])
@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_packed_families_equal_one_call_per_family(pos_embed: str, attn_impl: str) -> None:
    """Two mask families of different lengths (one with padded slots) packed into one sequence through encoder
    and predictor give the per-family outputs and gradients, to float rounding; the context head too."""
    from vjepa.models.multimask import MultiMaskEncoder

    torch.manual_seed(11)
    enc = MultiMaskEncoder(make_encoder(pos_embed, attn_impl))
    pred = Predictor(
        embed_dim=64, pred_embed_dim=48, depth=2, num_heads=2, num_mask_tokens=2, pos_embed=pos_embed,
        img_size=32, num_frames=8, patch_size=8, attn_impl=attn_impl, context_head=True,
    )  # fmt: skip
    init_weights(pred)
    randomise(enc, pred)
    video = torch.randn(2, 3, 8, 32, 32)
    ctx = [sorted_subsets(2, 64, 13), sorted_subsets(2, 64, 21)]
    tgt = [sorted_subsets(2, 64, 9), sorted_subsets(2, 64, 5)]
    ctx_valid = [None, torch.arange(21)[None].expand(2, -1) < 17]  # family 1: 4 padded context slots
    tgt_valid = [None, torch.arange(5)[None].expand(2, -1) < 4]

    def run(packed: bool):
        enc.zero_grad(set_to_none=True)
        pred.zero_grad(set_to_none=True)
        zs = enc(video, ctx, ctx_valid, packed=packed)
        if packed:
            fams = [
                dict(ctx=z, ctx_idx=c, tgt_idx=t, ctx_valid=cv, tgt_valid=tv)
                for z, c, t, cv, tv in zip(zs, ctx, tgt, ctx_valid, tgt_valid)
            ]
            outs = pred(None, None, None, GRID, return_context=True, families=fams)
        else:
            outs = [
                pred(z, c, t, GRID, family=f, ctx_valid=cv, tgt_valid=tv, return_context=True)
                for f, (z, c, t, cv, tv) in enumerate(zip(zs, ctx, tgt, ctx_valid, tgt_valid))
            ]
        loss = sum(p[:, :4].square().mean() + q[:, :13].abs().mean() for p, q in outs)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in [*enc.named_parameters(), *pred.named_parameters()]}
        return zs, outs, grads

    zs_a, outs_a, grads_a = run(packed=False)
    zs_b, outs_b, grads_b = run(packed=True)
    tol = dict(atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(zs_b[0], zs_a[0], **tol)
    torch.testing.assert_close(zs_b[1][:, :17], zs_a[1][:, :17], **tol)  # padded slots: meaningless either way
    for (p_a, q_a), (p_b, q_b) in zip(outs_a, outs_b):
        torch.testing.assert_close(p_b[:, :4], p_a[:, :4], **tol)
        torch.testing.assert_close(q_b[:, :13], q_a[:, :13], **tol)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, atol=1e-4, rtol=1e-4, msg=name)
    # Not a tautology: packing without the segment boundaries (one joint attention) changes the outputs.
    blk = enc.backbone.blocks[0]
    x = torch.randn(2, 34, 64)
    split = torch.cat([blk(x[:, :13]), blk(x[:, 13:])], 1)
    torch.testing.assert_close(blk(x, segments=(13, 21)), split, **tol)
    assert (blk(x) - split).abs().max() > 1e-3


# -------------------------------------------------------------------------------------------- gradients, init


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_every_parameter_gets_a_gradient(pos_embed: str) -> None:
    torch.manual_seed(8)
    enc, pred = make_encoder(pos_embed), make_predictor(pos_embed)
    video = torch.randn(2, 3, 8, 32, 32)
    loss = 0.0
    for family in range(2):
        ctx_idx, tgt_idx = sorted_subsets(2, 64, 16), sorted_subsets(2, 64, 8)
        loss = loss + pred(enc(video, ctx_idx), ctx_idx, tgt_idx, GRID, family=family).square().mean()
    loss.backward()
    for name, p in list(enc.named_parameters()) + list(pred.named_parameters()):
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_init_weights() -> None:
    torch.manual_seed(9)
    pred = make_predictor("sincos")
    randomise(pred)
    torch.manual_seed(10)
    init_weights(pred, rescale=False)
    plain = {k: v.clone() for k, v in pred.state_dict().items()}
    torch.manual_seed(10)
    init_weights(pred, rescale=True)
    for token in pred.mask_tokens:
        assert torch.count_nonzero(token) == 0
    for name, value in pred.state_dict().items():
        if name.endswith("attn.proj.weight") or name.endswith("mlp.fc2.weight"):
            layer_id = int(name.split(".")[1]) + 1
            torch.testing.assert_close(value * math.sqrt(2 * layer_id), plain[name])
        else:
            torch.testing.assert_close(value, plain[name], atol=0, rtol=0)
        if name.endswith("bias"):
            assert torch.count_nonzero(value) == 0, name
        if "norm" in name and name.endswith("weight"):
            assert torch.all(value == 1), name
    w = plain["blocks.0.mlp.fc1.weight"]
    assert abs(w.std().item() - 0.02) < 0.003 and w.abs().max() < 2.0
    torch.testing.assert_close(pred.pos_embed[0], sincos_3d_table(GRID, 48))


def test_presets() -> None:
    assert ENCODER_PRESETS["large"] == dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0)
    assert [ENCODER_PRESETS[k]["embed_dim"] for k in ("tiny", "small", "base", "huge", "giant")] == [
        192, 384, 768, 1280, 1408,
    ]  # fmt: skip
    g = ENCODER_PRESETS["giant"]
    blk = Block(dim=g["embed_dim"], num_heads=g["num_heads"], mlp_ratio=g["mlp_ratio"])
    assert blk.mlp.fc1.out_features == 6144
