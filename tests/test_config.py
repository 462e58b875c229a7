"""Strict config merge: defaults <- YAML <- overrides; typos and wrong types name the key."""

from pathlib import Path

import pytest

from vjepa.config import Config, ConfigError, MaskSpec, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_vjepa1_recipe():
    cfg = Config()
    assert cfg.model.preset == "large" and cfg.model.patch_size == 16 and cfg.model.tubelet_size == 2
    assert [f.num_blocks for f in cfg.mask.families] == [8, 2]
    assert [f.spatial_scale for f in cfg.mask.families] == [(0.15, 0.15), (0.7, 0.7)]
    assert cfg.optim.lr == 6.25e-4 and cfg.optim.start_lr == 2e-4 and cfg.optim.final_lr == 1e-6
    assert cfg.optim.horizon_scale == 1.25 and cfg.optim.total_steps == 90_000
    assert (cfg.optim.weight_decay, cfg.optim.final_weight_decay) == (0.04, 0.4)
    assert (cfg.optim.ema_momentum, cfg.optim.final_ema_momentum) == (0.998, 1.0)


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  preset: tiny\ndata:\n  source: synthetic\n  batch_size: 3\n")
    cfg = load_config(f, ["data.batch_size=5", "optim.lr=1e-3", "mask.families=[{num_blocks: 3}]"])
    assert cfg.model.preset == "tiny" and cfg.data.batch_size == 5 and cfg.optim.lr == 1e-3
    assert cfg.mask.families == (MaskSpec(num_blocks=3),)
    assert cfg.model.resolved()["embed_dim"] == 192


def test_unknown_key_names_key_and_valid_ones(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate.*valid keys.*'lr'"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config(None, ["data.source=synthetic", "optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'modle'"):
        load_config(None, ["modle.preset=tiny"])


def test_wrong_types_are_errors():
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer"):
        load_config(None, ["data.source=synthetic", "data.batch_size=abc"])
    with pytest.raises(ConfigError, match=r"model\.compile: expected true/false"):
        load_config(None, ["data.source=synthetic", "model.compile=3"])
    with pytest.raises(ConfigError, match=r"spatial_scale: expected 2 values"):
        load_config(None, ["data.source=synthetic", "mask.families=[{spatial_scale: [0.1]}]"])
    with pytest.raises(ConfigError, match=r"model\.pos_embed"):
        load_config(None, ["data.source=synthetic", "model.pos_embed=learned"])
    with pytest.raises(ConfigError, match=r"model\.preset"):
        load_config(None, ["data.source=synthetic", "model.preset=enormous"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="csv_paths"):
        load_config(None, [])
    with pytest.raises(ConfigError, match="tubelet"):
        load_config(None, ["data.source=synthetic", "data.frames_per_clip=7"])


def test_shipped_configs_load_and_round_trip(tmp_path):
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        if "eval" in f.parts:
            continue
        cfg = load_config(f)
        out = tmp_path / (f.stem + ".yaml")
        out.write_text(dump_config(cfg))
        assert load_config(out) == cfg, f
    v2 = load_config(ROOT / "configs/pretrain/vitl16_v2.yaml")
    assert v2.model.pos_embed == "rope" and v2.optim.schedule == "wsd" and v2.model.pred_num_heads == 12
    cool = load_config(ROOT / "configs/pretrain/vitl16_v2_cooldown.yaml")
    assert cool.data.frames_per_clip == 64 and cool.optim.cooldown_steps == 12000
