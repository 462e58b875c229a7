"""Import of official V-JEPA 1 checkpoints (`load_vjepa1`).

A fake official checkpoint is synthesised from our own randomised sin-cos models, renamed here to the official
layout (`module.backbone.` prefix; predictor names `predictor_embed`, `mask_tokens.{k}`, `predictor_pos_embed`,
`predictor_blocks.{i}`, `predictor_norm`, `predictor_proj`), saved with torch.save and imported into fresh
models: outputs must be identical. A missing, mis-shaped or unexpected tensor must be named in the error.

Shapes: B batch, Kc/Kt context/target tokens, D width.
"""

from __future__ import annotations

import pytest
import torch

from vjepa.interop.official import load_vjepa1
from vjepa.models import Predictor, VisionTransformer, init_weights
from vjepa.models.build import CheckpointMismatchError

GRID = (4, 4, 4)
PREFIX = "module.backbone."
PREDICTOR_RENAME = {"embed": "predictor_embed", "pos_embed": "predictor_pos_embed", "blocks": "predictor_blocks"}
PREDICTOR_RENAME |= {"norm": "predictor_norm", "proj": "predictor_proj", "mask_tokens": "mask_tokens"}


def build() -> tuple[VisionTransformer, Predictor]:
    enc = VisionTransformer(img_size=32, num_frames=8, patch_size=8, embed_dim=64, depth=2, num_heads=4)
    pred = Predictor(
        embed_dim=64, pred_embed_dim=32, depth=2, num_heads=4, num_mask_tokens=2, img_size=32, num_frames=8,
        patch_size=8,
    )  # fmt: skip
    init_weights(enc)
    init_weights(pred)
    return enc, pred


def randomised(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return {k: v.clone() for k, v in module.state_dict().items()}


def official_predictor_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in sd.items():
        head, _, rest = name.partition(".")
        out[PREFIX + PREDICTOR_RENAME[head] + ("." + rest if rest else "")] = value
    return out


def fake_checkpoint() -> tuple[dict, VisionTransformer, VisionTransformer, Predictor]:
    enc, pred = build()
    target, _ = build()
    ckpt = {
        "encoder": {PREFIX + k: v for k, v in randomised(enc).items()},
        "target_encoder": {PREFIX + k: v for k, v in randomised(target).items()},
        "predictor": official_predictor_names(randomised(pred)),
        "opt": {"state": {}, "param_groups": []},
        "scaler": None,
        "epoch": 3,
        "loss": 0.5,
    }
    assert "module.backbone.predictor_blocks.1.attn.qkv.weight" in ckpt["predictor"]
    assert "module.backbone.mask_tokens.1" in ckpt["predictor"]
    assert ckpt["encoder"]["module.backbone.pos_embed"].shape == (1, 64, 64)
    return ckpt, enc, target, pred


def test_import_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    ckpt, enc, target, pred = fake_checkpoint()
    path = tmp_path / "vitl16.pth.tar"
    torch.save(ckpt, path)
    new_enc, new_pred = build()
    load_vjepa1(path, new_enc, new_pred, which="encoder")
    video = torch.randn(2, 3, 8, 32, 32)
    ctx_idx = torch.stack([torch.randperm(64)[:20].sort().values for _ in range(2)])
    tgt_idx = torch.stack([torch.randperm(64)[:9].sort().values for _ in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(new_enc(video, ctx_idx), enc(video, ctx_idx), atol=0, rtol=0)
        z = enc(video, ctx_idx)
        for family in range(2):
            expected = pred(z, ctx_idx, tgt_idx, GRID, family=family)
            torch.testing.assert_close(new_pred(z, ctx_idx, tgt_idx, GRID, family=family), expected, atol=0, rtol=0)
        load_vjepa1(ckpt, new_enc, which="target_encoder")  # dict input, default: the EMA encoder
        torch.testing.assert_close(new_enc(video), target(video), atol=0, rtol=0)


def test_mismatches_are_named() -> None:
    torch.manual_seed(1)
    ckpt, *_ = fake_checkpoint()
    del ckpt["target_encoder"]["module.backbone.blocks.1.mlp.fc2.weight"]
    ckpt["target_encoder"]["module.backbone.blocks.0.attn.qkv.weight"] = torch.zeros(96, 64)
    ckpt["target_encoder"]["module.backbone.cls_token"] = torch.zeros(1, 1, 64)
    enc, _ = build()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_vjepa1(ckpt, enc)
    msg = str(err.value)
    assert "missing (1): blocks.1.mlp.fc2.weight" in msg
    assert "blocks.0.attn.qkv.weight: checkpoint (96, 64) vs model (192, 64)" in msg
    assert "unexpected (1): cls_token" in msg
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())  # nothing half-loaded

    ckpt, *_ = fake_checkpoint()
    del ckpt["predictor"]["module.backbone.predictor_norm.bias"]
    enc, pred = build()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="predictor_norm.bias"):
        load_vjepa1(ckpt, enc, pred)
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())  # encoder untouched too
    with pytest.raises(KeyError, match="target_encoder"):
        load_vjepa1({"encoder": {}}, enc)
    with pytest.raises(ValueError, match="which"):
        load_vjepa1(ckpt, enc, which="ema")
    rope_enc = VisionTransformer(
        img_size=32, num_frames=8, patch_size=8, embed_dim=64, depth=2, num_heads=4, pos_embed="rope"
    )
    with pytest.raises(CheckpointMismatchError, match="unexpected .*pos_embed"):
        load_vjepa1(fake_checkpoint()[0], rope_enc)
