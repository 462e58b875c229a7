"""Export and loading of backbones (vjepa/pretrained.py) against independent oracles.

- Oracle 1, the training code: a tiny RoPE run is trained for 2 steps; its checkpoint is loaded into freshly built
  training models with `vjepa.train.checkpoint.load_checkpoint` (the resume path). Every export (.pt, .safetensors,
  Hugging Face folder) and the run folder itself must load into an encoder with outputs identical to that target
  encoder, and different from the online encoder (the export picks the EMA encoder).
- Oracle 2, another implementation: `transformers.VJEPA2Model.from_pretrained(hf_dir)` gives the encoder features
  of our loaded encoder to float32 tolerance.
- Wrong inputs: probe checkpoints, feature files, random bytes and empty folders raise NotABackboneError saying
  what they are; a mis-shaped tensor is named; a sin-cos model is refused for the Hugging Face layout.

Shapes: B batch, C channels, T frames, S crop size, N tokens, D width.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_cfg
from safetensors import safe_open
from torch import nn

from vjepa.config import ModelConfig, load_config
from vjepa.exports import Exported, add_arguments, export, read_export, run, write_export
from vjepa.models.build import CheckpointMismatchError, NotABackboneError, build_models, build_pair
from vjepa.pretrained import load_pretrained, random_like
from vjepa.train.checkpoint import latest_checkpoint, load_checkpoint
from vjepa.train.loop import train

B, T, S = 2, 8, 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step RoPE run, its target and online encoders loaded by the training code, and the exports."""
    root = tmp_path_factory.mktemp("pretrained")
    run_dir = root / "run"
    cfg = tiny_cfg(run_dir, "optim.total_steps=2", "model.pos_embed=rope", "data.batch_size=2")
    train(cfg)
    encoder, predictor = build_models(cfg)
    models = nn.ModuleDict({"encoder": encoder, "predictor": predictor, "target_encoder": copy.deepcopy(encoder)})
    load_checkpoint(latest_checkpoint(run_dir), models, None)
    results = {
        "pt": export(run_dir, root / "enc.pt", with_predictor=True, hf_dir=root / "hf"),
        "safetensors": export(run_dir, root / "enc.safetensors"),
    }
    video = torch.randn(B, 3, T, S, S, generator=torch.Generator().manual_seed(0))  # [B, C, T, S, S]
    return dict(root=root, run_dir=run_dir, cfg=cfg, models=models.eval(), results=results, video=video)


def _features(encoder: nn.Module, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder(video)  # [B, N, D]


def test_every_export_loads_the_target_encoder(trained):
    video = trained["video"]
    target = _features(trained["models"]["target_encoder"], video)
    online = _features(trained["models"]["encoder"], video)
    assert not torch.equal(target, online)  # after 2 EMA steps the two differ: the test can tell them apart
    root = trained["root"]
    for path in (root / "enc.pt", root / "enc.safetensors", root / "hf", trained["run_dir"]):
        encoder = load_pretrained(path)
        assert not encoder.training and not any(p.requires_grad for p in encoder.parameters()), path
        assert (encoder.frames_per_clip, encoder.crop_size, encoder.patch_size, encoder.tubelet_size) == (8, 32, 16, 2)
        assert encoder.embed_dim == 64 and isinstance(encoder.source, str)
        torch.testing.assert_close(_features(encoder, video), target, atol=0, rtol=0, msg=str(path))
    ckpt = latest_checkpoint(trained["run_dir"])
    assert torch.equal(_features(load_pretrained(ckpt), video), target)  # a checkpoint folder too


def test_export_file_contents(trained):
    root, cfg = trained["root"], trained["cfg"]
    d = torch.load(root / "enc.pt", weights_only=True)
    assert d["format"] == "vjepa.encoder" and d["version"] == 1 and d["step"] == 2
    assert d["model"]["pos_embed"] == "rope" and d["model"]["embed_dim"] == 64
    assert d["data"] == {"frames_per_clip": 8, "crop_size": 32}
    assert d["source"].endswith("step_00000002")
    target_sd = trained["models"]["target_encoder"].backbone.state_dict()
    assert d["encoder"].keys() == target_sd.keys()
    for name, value in target_sd.items():
        assert torch.equal(d["encoder"][name], value), name
    pred_sd = trained["models"]["predictor"].state_dict()
    assert d["num_mask_tokens"] == len(cfg.mask.families)
    for name, value in pred_sd.items():
        assert torch.equal(d["predictor"][name], value), name
    with safe_open(str(root / "enc.safetensors"), framework="pt") as f:
        meta = f.metadata()
        names = set(f.keys())
    assert meta["format"] == "vjepa.encoder" and json.loads(meta["step"]) == 2
    assert json.loads(meta["model"]) == d["model"] and json.loads(meta["data"]) == d["data"]
    assert names == {f"encoder.{k}" for k in target_sd}  # no predictor unless asked
    assert trained["results"]["safetensors"]["encoder_params"] == sum(v.numel() for v in target_sd.values())
    assert read_export(root / "enc.pt").predictor is not None


def test_hf_folder_matches_transformers(trained):
    transformers = pytest.importorskip("transformers")
    hf_dir = trained["root"] / "hf"
    assert (hf_dir / "config.json").is_file() and (hf_dir / "model.safetensors").is_file()
    hf = transformers.VJEPA2Model.from_pretrained(str(hf_dir), attn_implementation="eager").eval()
    video = trained["video"]
    with torch.no_grad():
        theirs = hf.get_vision_features(video.permute(0, 2, 1, 3, 4))  # HF takes [B, T, C, H, W]
    ours = _features(load_pretrained(hf_dir), video)
    assert ours.abs().mean() > 0.1
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(theirs, _features(trained["models"]["target_encoder"], video), atol=1e-5, rtol=1e-5)


def _sincos_export(path, with_predictor: bool = True) -> Exported:
    model = ModelConfig(preset="tiny", embed_dim=64, depth=2, num_heads=2, pred_embed_dim=48, pred_depth=1)
    encoder, predictor = build_pair(model, frames_per_clip=T, crop_size=S)
    ex = Exported(model=model, frames_per_clip=T, crop_size=S, step=0, source="test", encoder=encoder.state_dict())
    if with_predictor:
        ex.predictor = predictor.state_dict()
    write_export(ex, path)
    return ex


def test_sincos_model_is_refused_for_hugging_face(tmp_path):
    _sincos_export(tmp_path / "sincos.pt")
    with pytest.raises(ValueError, match="sin-cos") as err:
        export(tmp_path / "sincos.pt", tmp_path / "copy.safetensors", hf_dir=tmp_path / "hf")
    assert "RoPE" in str(err.value) or "rotary" in str(err.value)
    assert not (tmp_path / "hf").exists() and not (tmp_path / "copy.safetensors").exists()  # nothing written
    # the same file converts to safetensors, and the sin-cos table survives
    export(tmp_path / "sincos.pt", tmp_path / "copy.safetensors")
    a, b = load_pretrained(tmp_path / "sincos.pt"), load_pretrained(tmp_path / "copy.safetensors")
    assert a.pos_embed_type == "sincos" and torch.equal(a.pos_embed, b.pos_embed)
    video = torch.randn(1, 3, T, S, S)
    assert torch.equal(_features(a, video), _features(b, video))


def test_not_a_backbone(tmp_path):
    probe = tmp_path / "probe.pt"
    torch.save({"format": "vjepa.probe", "head": {"weight": torch.zeros(3, 4)}}, probe)
    with pytest.raises(NotABackboneError, match="probe checkpoint"):
        load_pretrained(probe)
    feats = tmp_path / "feats.pt"
    torch.save({"format": "vjepa.features", "features": torch.zeros(2, 1, 4)}, feats)
    with pytest.raises(NotABackboneError, match="extracted features"):
        load_pretrained(feats)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(NotABackboneError, match="not a PyTorch checkpoint"):
        load_pretrained(junk)
    plain = tmp_path / "state.pt"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3)}, plain)
    with pytest.raises(NotABackboneError, match="no 'format'"):
        load_pretrained(plain)
    official = tmp_path / "official.pt"
    torch.save({"encoder": {}, "target_encoder": {}, "epoch": 3}, official)
    with pytest.raises(NotABackboneError, match="official V-JEPA"):
        load_pretrained(official)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(NotABackboneError, match="neither a pretraining run"):
        load_pretrained(tmp_path / "empty_dir")
    with pytest.raises(FileNotFoundError):
        load_pretrained(tmp_path / "missing.pt")


def test_mismatched_tensors_are_named(tmp_path):
    ex = _sincos_export(tmp_path / "ok.pt", with_predictor=False)
    sd = dict(ex.encoder)
    del sd["blocks.1.mlp.fc2.bias"]
    sd["norm.weight"] = torch.ones(65)
    write_export(dataclasses.replace(ex, encoder=sd), tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        load_pretrained(tmp_path / "bad.safetensors")
    message = str(err.value)
    assert "blocks.1.mlp.fc2.bias" in message and "norm.weight: checkpoint (65,) vs model (64,)" in message


def test_random_like():
    model = ModelConfig(preset="tiny", embed_dim=64, depth=2, num_heads=2, pos_embed="rope")
    encoder, _ = build_pair(model, frames_per_clip=T, crop_size=S)
    state = torch.get_rng_state()
    a, b, c = random_like(encoder, seed=1), random_like(encoder, seed=1), random_like(encoder, seed=2)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert a.state_dict().keys() == encoder.state_dict().keys() and a.pos_embed_type == "rope"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
    assert not a.training and a.frames_per_clip == T and "random init" in a.source


def test_export_command(trained, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "cli.safetensors"
    assert run(parser.parse_args([str(trained["run_dir"]), "--out", str(out), "--with-predictor"])) == 0
    assert "step 2" in capsys.readouterr().out
    assert read_export(out).predictor is not None
    assert run(parser.parse_args([str(trained["run_dir"])])) == 0  # default: RUN_DIR/encoder.pt
    assert (trained["run_dir"] / "encoder.pt").is_file()
    # a sin-cos model asked for the Hugging Face layout: exit code 2 and the reason on stderr
    _sincos_export(tmp_path / "sincos.pt")
    assert run(parser.parse_args([str(tmp_path / "sincos.pt"), "--hf", str(tmp_path / "hf")])) == 2
    assert "sin-cos" in capsys.readouterr().err
    assert run(parser.parse_args([str(tmp_path / "nothing")])) == 2
    assert load_config(trained["run_dir"] / "config.yaml") == trained["cfg"]


def test_torch_hub_entry_points(trained):
    """hubconf.py: torch.hub.load(repo, name, source="local", path=...) gives what vjepa's own loaders give."""
    repo = str(Path(__file__).resolve().parents[1])
    video, root = trained["video"], trained["root"]
    target = _features(trained["models"]["target_encoder"], video)
    for path in (root / "enc.safetensors", root / "hf"):
        encoder = torch.hub.load(repo, "vjepa_encoder", source="local", path=str(path))
        torch.testing.assert_close(_features(encoder, video), target, atol=0, rtol=0, msg=str(path))
    fresh = torch.hub.load(repo, "vjepa_random", source="local", path=str(root / "enc.pt"), seed=3)
    assert torch.equal(_features(fresh, video), _features(random_like(root / "enc.pt", 3), video))
    embedder = torch.hub.load(repo, "vjepa_embedder", source="local", path=str(root / "enc.pt"), batch_size=2)
    assert embedder.encoder.embed_dim == 64
