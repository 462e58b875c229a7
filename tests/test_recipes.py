"""The shipped recipes against the official values, the giant presets, separate clipping, the cooldown horizon.

Official sources (values restated here as numbers, see docs/recipes.md): facebookresearch/jepa
configs/pretrain/vitl16.yaml and vith16.yaml; facebookresearch/vjepa2 configs/train/vitl16/pretrain-256px-16f.yaml
and cooldown-256px-64f.yaml. Shape legend: none.
"""

import copy
from pathlib import Path

import pytest
import torch
from conftest import tiny_cfg

from vjepa.config import ConfigError, load_config
from vjepa.data.loader import build_stream
from vjepa.data.video import ClipSampling
from vjepa.models.build import build_models
from vjepa.models.presets import ENCODER_PRESETS
from vjepa.train.ema import ema_pairs
from vjepa.train.optim import build_optimizer
from vjepa.train.schedules import Hyper, learning_rate
from vjepa.train.step import forward_loss, grid_of, train_step

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "configs" / "pretrain"


@pytest.mark.parametrize("preset", sorted(ENCODER_PRESETS))
def test_every_preset_builds_with_its_default_predictor(preset):
    cfg = load_config(None, [f"model.preset={preset}", "data.source=synthetic"])
    with torch.device("meta"):  # full size, no memory
        encoder, predictor = build_models(cfg)
    assert sum(p.numel() for p in encoder.parameters()) > 0
    assert cfg.model.pred_embed_dim % cfg.model.predictor_arch()["num_heads"] == 0
    assert sum(p.numel() for p in predictor.parameters()) > 0


def test_giant_presets_are_explicit():
    from vjepa.models.presets import PRESET_ALIASES

    v1, v2 = ENCODER_PRESETS["giant_v1"], ENCODER_PRESETS["giant_v2"]
    assert (v1["embed_dim"], v1["depth"], v1["num_heads"]) == (1408, 40, 16)  # V-JEPA 1 vit_giant
    assert (v2["embed_dim"], v2["depth"], v2["num_heads"]) == (1408, 40, 22)  # V-JEPA 2 vit_giant_xformers
    assert v1["mlp_ratio"] == v2["mlp_ratio"] == 48 / 11
    assert PRESET_ALIASES == {"giant": "giant_v2"} and ENCODER_PRESETS["giant"] == v2
    heads = {
        p: load_config(None, [f"model.preset={p}", "data.source=synthetic"]).model.predictor_arch()["num_heads"]
        for p in ("giant_v1", "giant_v2", "giant", "large")
    }
    assert heads == {"giant_v1": 16, "giant_v2": 12, "giant": 12, "large": 16}
    with pytest.raises(ConfigError, match="giant_v1 is V-JEPA 1's vit_giant"):
        load_config(None, ["model.preset=gaint", "data.source=synthetic"])
    with pytest.raises(
        ConfigError, match="model.pred_num_heads=22 must divide the predictor width model.pred_embed_dim=384"
    ):
        load_config(None, ["model.preset=giant", "model.pred_num_heads=22", "data.source=synthetic"])


def _step_setup(cfg):
    torch.manual_seed(0)
    encoder, predictor = build_models(cfg)
    target = copy.deepcopy(encoder).requires_grad_(False)
    batch = next(iter(build_stream(cfg, rank=0, world_size=1, start_step=0, end_step=1)))
    return encoder, predictor, target, batch


def _norm(module):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))


@pytest.mark.usefixtures("single_thread")
def test_separate_clipping_clips_encoder_and_predictor_each_like_clip_grad_norm_alone(tmp_path):
    cfg = tiny_cfg(tmp_path / "run")
    encoder, predictor, target, batch = _step_setup(cfg)
    ref_enc, ref_pred, ref_target = copy.deepcopy(encoder), copy.deepcopy(predictor), copy.deepcopy(target)
    video, masks = batch["video"], batch["masks"]
    grid = grid_of(video, cfg.model.tubelet_size, cfg.model.patch_size)

    # Reference by hand: backward, then clip_grad_norm_ on each module alone.
    loss, _, _, _ = forward_loss(ref_enc, ref_target, ref_pred, video, masks, grid)
    loss.backward()
    pre = [_norm(ref_enc), _norm(ref_pred)]
    clip = 0.5 * float(min(pre))  # below both modules' norms, so both are clipped
    assert float(max(pre)) > 2 * clip  # and unequal norms: one global factor could not bring both to clip
    for module in (ref_enc, ref_pred):
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)

    optimizer = build_optimizer(cfg.optim, {"encoder": encoder, "predictor": predictor})
    out = train_step(
        encoder=encoder,
        target_encoder=target,
        predictor=predictor,
        optimizer=optimizer,
        ema_targets=ema_pairs(encoder, target)[0],
        ema_sources=ema_pairs(encoder, target)[1],
        video=video,
        masks=masks,
        grid=grid,
        hp=Hyper(1e-3, 0.04, 0.998),
        clip_grad=clip,
        clip_grad_mode="separate",
    )
    for module, ref in ((encoder, ref_enc), (predictor, ref_pred)):
        assert float(_norm(module)) <= clip * (1 + 1e-4)
        assert float(_norm(module)) == pytest.approx(clip, rel=5e-3)  # clip_grad_norm_ divides by norm + 1e-6
        for (name, p), q in zip(module.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-9, msg=name)
    # The logged norm is the total over both modules before clipping.
    assert float(out.grad_norm) == pytest.approx(float(torch.linalg.vector_norm(torch.stack(pre))), rel=1e-4)
    # Global clipping would have scaled both by one factor: the total, not each module, would be at clip.
    assert float(torch.linalg.vector_norm(torch.stack([_norm(encoder), _norm(predictor)]))) > 1.4 * clip


def test_vjepa1_configs_clip_separately_at_10():
    for name in ("vitl16.yaml", "vith16.yaml"):
        cfg = load_config(PRETRAIN / name)
        assert (cfg.optim.clip_grad, cfg.optim.clip_grad_mode) == (10.0, "separate"), name
        assert cfg.data.frame_step == 4 and cfg.data.short_videos == "pad", name  # sampling_rate 4, no filter


def test_vjepa2_configs_sample_at_4_fps_from_the_official_mixture():
    for name in ("vitl16_v2.yaml", "vitl16_v2_cooldown.yaml"):
        cfg = load_config(PRETRAIN / name)
        assert (cfg.data.frame_step, cfg.data.fps) == (0, 4.0), name
        got = [(Path(s.path).stem, s.weight) for s in cfg.data.sources]
        assert got == [("k710", 0.335), ("ssv2", 0.100), ("howto100m", 0.565)], name
    main, cool = load_config(PRETRAIN / "vitl16_v2.yaml"), load_config(PRETRAIN / "vitl16_v2_cooldown.yaml")
    assert main.data.batch_size * 128 == cool.data.batch_size * 256 == 3072  # official 16 x 8 and 32 x 8 GPUs
    assert "256 GPUs" in (PRETRAIN / "vitl16_v2_cooldown.yaml").read_text()
    assert ClipSampling(frames_per_clip=16, frame_step=0, fps=4).step_for(29.97) == 7  # ceil(29.97) // 4


def test_cooldown_horizon_scale_hand_values():
    cool = load_config(PRETRAIN / "vitl16_v2_cooldown.yaml").optim
    lr, final = 5.25e-4, 1e-6
    assert learning_rate(cool, 239999) == pytest.approx(lr)  # last step of the main phase
    assert learning_rate(cool, 240000) == pytest.approx(lr)  # first cooldown step: 0 of 15000 along the line
    last = lr + (final - lr) * 11999 / 15000  # last cooldown step: 11999 of the 1.25 x 12000 = 15000-step line
    assert learning_rate(cool, 251999) == pytest.approx(last)
    assert learning_rate(cool, 252000) == pytest.approx(lr - (lr - final) / 1.25)  # ~1.058e-4 where it stops
    assert learning_rate(cool, 252000) == pytest.approx(1.0580e-4, rel=1e-3)
    plain = load_config(PRETRAIN / "vitl16_v2_cooldown.yaml", ["optim.cooldown_horizon_scale=1.0"]).optim
    assert learning_rate(plain, 252000) == pytest.approx(final)  # scale 1: the old behaviour, down to final_lr
    with pytest.raises(ConfigError, match="cooldown_horizon_scale"):
        load_config(PRETRAIN / "vitl16_v2_cooldown.yaml", ["optim.cooldown_horizon_scale=0.5"])
