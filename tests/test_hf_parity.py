"""Parity with Hugging Face `transformers.VJEPA2Model` (the V-JEPA 2 architecture, RoPE), both directions.

Oracle: another implementation. A tiny random VJEPA2Model (eager attention: explicit softmax) is converted into
our encoder + predictor and must give the same encoder outputs and the same predictions for the same
context/target index sets; and ours -> HF likewise. Encoder head width 32 leaves 2 channels unrotated (32 = 3 * 10
+ 2), predictor head width 24 rotates all, so both RoPE cases are covered.

Shapes: B batch, N tokens, Kc/Kt context/target tokens, D encoder width, P predictor width.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vjepa.interop.hf import config_from_models, from_hf_state_dict, to_hf_state_dict  # noqa: E402
from vjepa.models import Predictor, VisionTransformer, init_weights  # noqa: E402
from vjepa.models.build import CheckpointMismatchError  # noqa: E402

B, N, D, P, GRID = 2, 64, 64, 48, (4, 4, 4)


def tiny_hf_config():
    config = transformers.VJEPA2Config(
        crop_size=32, patch_size=8, frames_per_clip=8, tubelet_size=2, hidden_size=D, num_attention_heads=2,
        num_hidden_layers=2, mlp_ratio=4.0, pred_hidden_size=P, pred_num_attention_heads=2, pred_num_hidden_layers=2,
        pred_num_mask_tokens=3, pred_mlp_ratio=2.0,
    )  # fmt: skip
    config._attn_implementation = "eager"
    return config


def ours(attn_impl: str = "sdpa") -> tuple[VisionTransformer, Predictor]:
    enc = VisionTransformer(
        img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=D, depth=2, num_heads=2,
        pos_embed="rope", attn_impl=attn_impl,
    )  # fmt: skip
    pred = Predictor(
        embed_dim=D, pred_embed_dim=P, depth=2, num_heads=2, mlp_ratio=2.0, num_mask_tokens=3, pos_embed="rope",
        img_size=32, num_frames=8, patch_size=8, tubelet_size=2, attn_impl=attn_impl,
    )  # fmt: skip
    init_weights(enc)
    init_weights(pred)
    return enc.eval(), pred.eval()


def randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    ctx_idx = torch.stack([torch.randperm(N)[:24].sort().values for _ in range(B)])  # [B, Kc]
    tgt_idx = torch.stack([torch.randperm(N)[:10] for _ in range(B)])  # [B, Kt], unsorted on purpose
    return ctx_idx, tgt_idx


def compare(hf, enc: VisionTransformer, pred: Predictor) -> None:
    video = torch.randn(B, 3, 8, 32, 32)  # ours [B, C, T, H, W]; HF takes [B, T, C, H, W]
    ctx_idx, tgt_idx = masks()
    with torch.no_grad():
        out = hf(video.permute(0, 2, 1, 3, 4), context_mask=[ctx_idx], target_mask=[tgt_idx])
        z = enc(video)  # [B, N, D]
        ctx = torch.gather(z, 1, ctx_idx[..., None].expand(-1, -1, D))  # [B, Kc, D]
        p = pred(ctx, ctx_idx, tgt_idx, GRID, family=1)  # HF always uses mask token 1  # [B, Kt, D]
    assert z.abs().mean() > 0.1 and p.abs().mean() > 0.1  # non-trivial outputs
    torch.testing.assert_close(z, out.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p, out.predictor_output.last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_impl", ["sdpa", "reference"])
def test_hf_to_ours(attn_impl: str) -> None:
    torch.manual_seed(0)
    hf = transformers.VJEPA2Model(tiny_hf_config()).eval()
    randomise(hf)
    enc, pred = ours(attn_impl)
    from_hf_state_dict(hf.state_dict(), enc, pred)
    compare(hf, enc, pred)


def test_ours_to_hf() -> None:
    torch.manual_seed(1)
    enc, pred = ours()
    randomise(enc)
    randomise(pred)
    config = config_from_models(enc, pred)
    config._attn_implementation = "eager"
    hf = transformers.VJEPA2Model(config).eval()
    hf.load_state_dict(to_hf_state_dict(enc, pred), strict=True)
    compare(hf, enc, pred)
    # the round trip ours -> HF -> ours is exact
    enc2, pred2 = ours()
    from_hf_state_dict(hf.state_dict(), enc2, pred2)
    for a, b in ((enc, enc2), (pred, pred2)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name


def test_hf_mismatch_names_tensors() -> None:
    hf = transformers.VJEPA2Model(tiny_hf_config())
    sd = dict(hf.state_dict())
    del sd["encoder.layer.1.attention.key.bias"]
    sd["predictor.proj.weight"] = torch.zeros(D, P + 1)
    enc, pred = ours()
    with pytest.raises(CheckpointMismatchError) as err:
        from_hf_state_dict(sd, enc, pred)
    assert "encoder.layer.1.attention.key.bias" in str(err.value)
    assert "predictor.proj.weight: checkpoint (64, 49) vs model (64, 48)" in str(err.value)
    sincos = VisionTransformer(img_size=32, num_frames=8, patch_size=8, embed_dim=D, depth=2, num_heads=2)
    with pytest.raises(ValueError, match="pos_embed='rope'"):
        config_from_models(sincos, pred)
