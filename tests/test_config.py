"""Strict config merge: defaults <- YAML <- overrides; typos and wrong types name the key."""

import re
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
        if "eval" in f.parts or "sweeps" in f.parts:  # eval configs and sweep files: their own schemas and tests
            continue
        # an ablation file is an override on top of the demo config
        cfg = load_config([ROOT / "configs/debug/tiny_cpu.yaml", f] if "ablations" in f.parts else f)
        out = tmp_path / (f.stem + ".yaml")
        out.write_text(dump_config(cfg))
        assert load_config(out) == cfg, f
    v2 = load_config(ROOT / "configs/pretrain/vitl16_v2.yaml")
    assert v2.model.pos_embed == "rope" and v2.optim.schedule == "wsd" and v2.model.pred_num_heads == 12
    cool = load_config(ROOT / "configs/pretrain/vitl16_v2_cooldown.yaml")
    assert cool.data.frames_per_clip == 64 and cool.optim.cooldown_steps == 12000
    v21 = load_config(ROOT / "configs/pretrain/vitl16_v21.yaml")  # V-JEPA 2.1: deep supervision + dense loss
    assert v21.model.levels == 4 and v21.model.pred_depth == 24 and v21.optim.dense_weight == 0.5
    assert v21.optim.loss_guard_k == 0  # the loss guard ships off, as in every official config


BAD_VALUES = [
    ("train.log_every=0", "train.log_every"),
    ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.keep_last=0", "train.keep_last"),
    ("model.depth=0", "model.depth"),
    ("model.pred_depth=0", "model.pred_depth"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.lr=nan", "optim.lr"),
    ("optim.lr=.inf", "optim.lr"),
    ("optim.ema_momentum=1.5", "optim.ema_momentum"),
    ("optim.betas=[0.9, 1.0]", "optim.betas.1"),
    ("model.num_heads=5", "model.num_heads"),
    ("model.pred_num_heads=5", "model.pred_num_heads"),
    ("data.frames_per_clip=0", "data.frames_per_clip"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.batch_size=0", "data.batch_size"),
    ("mask.group_size=0", "mask.group_size"),
    ("optim.lr=[1,", "optim.lr"),  # malformed YAML in an override
    ("data.crop_size={a: 1", "data.crop_size"),
    ("train.loggers=[jsonl,wandbb]", "train.loggers.1"),
    ("train.loggers=[tensorboard]", "train.loggers"),  # jsonl is required
    ("train.loggers=jsonl", "train.loggers"),  # a list, not a name
]


@pytest.mark.parametrize("override,key", BAD_VALUES)
def test_bad_values_are_one_line_errors_naming_the_key(override, key, capsys):
    from vjepa.cli import main

    demo = ROOT / "configs/debug/tiny_cpu.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(demo, [override])
    message = str(err.value)
    assert key in message and "\n" not in message, message
    # the same error from the command line, also with --print-config, before anything is built
    assert main(["pretrain", "--config", str(demo), "--print-config", override]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and key in out.err, out.err


def test_every_bounded_key_exists_and_defaults_pass():
    from vjepa.config import Config
    from vjepa.config_checks import BOUNDS, check_bounds

    cfg = Config()
    for key in BOUNDS:
        section, name = key.split(".")
        assert hasattr(getattr(cfg, section), name), key
    check_bounds(cfg)


def test_enumerated_fields_are_literal_types_checked_by_the_merge():
    """Every enumerated field's allowed values are its Literal type: the merge rejects others, naming the key and
    the choices (validate() lists none of them), and the decoder names agree with the decoders module."""
    import dataclasses
    import typing

    from vjepa import config as config_module
    from vjepa.data.decoders import BACKENDS

    assert typing.get_args(config_module.VideoDecoder) == ("auto", *BACKENDS)
    literal_keys, literal_lists = [], []
    for section in dataclasses.fields(config_module.Config):
        cls = typing.get_type_hints(config_module.Config)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        for name, tp in typing.get_type_hints(cls).items():
            if typing.get_origin(tp) is typing.Literal:
                literal_keys.append((f"{section.name}.{name}", typing.get_args(tp)))
            elif typing.get_origin(tp) is tuple and typing.get_origin(typing.get_args(tp)[0]) is typing.Literal:
                literal_lists.append((f"{section.name}.{name}", typing.get_args(typing.get_args(tp)[0])))
    assert len(literal_keys) >= 14, literal_keys
    assert ("train.loggers", ("jsonl", "tensorboard", "wandb")) in literal_lists
    for key, valid in literal_lists:  # a list of enumerated values: each item is checked, its index named
        with pytest.raises(ConfigError, match=rf"^{key}\.1: 'nope' is not one of {re.escape(str(list(valid)))}$"):
            load_config(None, [f"{key}=[{valid[0]},nope]"])
    for key, valid in literal_keys:
        with pytest.raises(ConfigError, match=rf"^{key}: 'nope' is not one of \[{re.escape(repr(valid[0]))}"):
            load_config(None, [f"{key}=nope"])
        with pytest.raises(ConfigError, match=rf"^{key}: True is not one of"):
            load_config(None, [f"{key}=true"])
    with pytest.raises(ConfigError, match=r"^mask.families.1.kind: 'cube' is not one of"):
        load_config(None, ["mask.families=[{kind: tube}, {kind: cube}]"])
    with pytest.raises(ConfigError, match=r"^data.sources.0.kind: 'ftp' is not one of"):
        load_config(None, ["data.sources=[{kind: ftp, path: x}]"])
    source = (Path(config_module.__file__).parent / "config_checks.py").read_text()
    assert "is not one of" not in source and "_choice" not in source


def test_loggers_from_yaml_and_the_command_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  source: synthetic\ntrain:\n  loggers: [jsonl, tensorboard]\n")
    assert load_config(f).train.loggers == ("jsonl", "tensorboard")
    cfg = load_config(f, ["train.loggers=[jsonl,wandb]", "train.wandb_project=mine"])
    assert (cfg.train.loggers, cfg.train.wandb_project) == (("jsonl", "wandb"), "mine")
    assert load_config(None, ["data.source=synthetic"]).train.loggers == ("jsonl",)  # the default
    again = tmp_path / "dumped.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg
    f.write_text("data:\n  source: synthetic\ntrain:\n  loggers: [jsonl, tensorbord]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.loggers\.1: 'tensorbord' is not one of \['jsonl',"):
        load_config(f)
    with pytest.raises(
        ConfigError, match=r"^train\.loggers=\['wandb'\] must include jsonl: log\.jsonl is the run's record"
    ):
        load_config(None, ["data.source=synthetic", "train.loggers=[wandb]"])
    with pytest.raises(ConfigError, match=r"names a backend twice"):
        load_config(None, ["data.source=synthetic", "train.loggers=[jsonl,wandb,wandb]"])
    # train.tensorboard (before train.loggers; in every older run folder's config.yaml) still reads, with a warning
    for value, loggers in (("true", ("jsonl", "tensorboard")), ("false", ("jsonl",))):
        with pytest.warns(FutureWarning, match=r"train\.tensorboard is replaced by train\.loggers"):
            cfg = load_config(None, ["data.source=synthetic", f"train.tensorboard={value}"])
        assert cfg.train.loggers == loggers
    old = tmp_path / "old_run_config.yaml"
    old.write_text("data:\n  source: synthetic\ntrain:\n  tensorboard: true\n  loggers: [jsonl, wandb]\n")
    with pytest.warns(FutureWarning):
        assert load_config(old).train.loggers == ("jsonl", "wandb", "tensorboard")


def test_pred_mlp_ratio_is_a_field():
    """The predictor's MLP ratio: explicit model.pred_mlp_ratio, else 4 for both giants (the official code), else
    the encoder's ratio; the built predictor has that hidden width."""
    from vjepa.models.build import build_models

    syn = ["data.source=synthetic"]
    assert load_config(None, [*syn, "model.preset=giant_v1"]).model.predictor_arch()["mlp_ratio"] == 4.0
    assert (
        load_config(None, [*syn, "model.preset=tiny", "model.mlp_ratio=3"]).model.predictor_arch()["mlp_ratio"] == 3.0
    )
    cfg = load_config(
        None, [*syn, "model.preset=tiny", "model.pred_depth=1", "model.pred_embed_dim=96", "model.pred_mlp_ratio=2"]
    )
    _, predictor = build_models(cfg)
    assert predictor.blocks[0].mlp.fc1.out_features == 192
    with pytest.raises(ConfigError, match="model.pred_mlp_ratio=0.0 must be > 0"):
        load_config(None, [*syn, "model.pred_mlp_ratio=0"])
