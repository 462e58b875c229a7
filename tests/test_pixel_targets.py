"""Pixel targets (optim.target=pixels, vjepa/pixels.py) against loop references and hand-computed losses, and a
tiny pixel-target run end to end: finite losses, no target-encoder forward (counted with hooks) while the EMA
still moves it, and export of the run's target encoder.

Shapes: B batch, C channels, T frames, N tokens, K target tokens, P pixel target width.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_cfg

from vjepa.config import ConfigError
from vjepa.exports import export, read_checkpoint
from vjepa.models.build import build_models
from vjepa.models.predictor import Predictor
from vjepa.pixels import patchify, pixel_dim, pixel_loss, pixel_targets
from vjepa.pretrained import load_pretrained
from vjepa.train import loop
from vjepa.train.checkpoint import latest_checkpoint, read_meta

PIXELS = ["optim.target=pixels", "optim.total_steps=3"]


def _reference_targets(video: torch.Tensor, tub: int, p: int) -> torch.Tensor:
    """Plain loops: per token the values in (frame, row, column, channel) order, each channel normalised over the
    token's tub * p * p pixels with the unbiased std, eps 1e-6."""
    b, c, t, h, w = video.shape
    out = torch.zeros(b, (t // tub) * (h // p) * (w // p), c * tub * p * p, dtype=torch.float64)
    for i in range(b):
        n = 0
        for tt in range(t // tub):
            for hh in range(h // p):
                for ww in range(w // p):
                    per_channel = [[] for _ in range(c)]
                    for dt in range(tub):
                        for dy in range(p):
                            for dx in range(p):
                                for ch in range(c):
                                    v = float(video[i, ch, tt * tub + dt, hh * p + dy, ww * p + dx])
                                    per_channel[ch].append(v)
                    stats = []
                    for vals in per_channel:
                        mean = sum(vals) / len(vals)
                        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
                        stats.append((mean, std))
                    k = 0
                    for s in range(tub * p * p):
                        for ch in range(c):
                            mean, std = stats[ch]
                            out[i, n, k] = (per_channel[ch][s] - mean) / (std + 1e-6)
                            k += 1
                    n += 1
    return out


def test_patchify_and_normalisation_match_a_loop_reference():
    video = torch.randn(2, 3, 4, 6, 9, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    got = pixel_targets(video, 2, 3)  # grid (2, 2, 3), P = 3 * 2 * 3 * 3
    assert got.shape == (2, 12, pixel_dim(3, 2, 3)) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _reference_targets(video, 2, 3), rtol=1e-5, atol=1e-5)
    raw = patchify(video, 2, 3)  # [B, N, t p p, C]: token 5 = (t 0, h 1, w 2), pixel 4 = (frame 0, row 1, col 1)
    assert torch.equal(raw[1, 5, 4], video[1, :, 0, 3 + 1, 6 + 1])
    flat = pixel_targets(torch.ones(1, 3, 2, 3, 3), 2, 3)  # a flat patch: 0, not NaN
    assert torch.equal(flat, torch.zeros_like(flat))


def test_pixel_loss_by_hand():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 3.0], [1.0, -1.0]]])  # [B 2, K 2, P 2]
    target = torch.zeros(2, 2, 2)
    valid = torch.tensor([[True, False], [True, True]])
    # l2: sample 0 keeps token 0 only: (1 + 4) / 2 = 2.5; sample 1: ((9 + 9) / 2 + (1 + 1) / 2) / 2 = 5
    assert float(pixel_loss(pred, target, "l2", valid)) == pytest.approx((2.5 + 5.0) / 2)
    # l1: sample 0: 1.5; sample 1: (3 + 1) / 2 = 2
    assert float(pixel_loss(pred, target, "l1", valid)) == pytest.approx((1.5 + 2.0) / 2)
    assert float(pixel_loss(pred, target, "l1")) == pytest.approx((1.5 + 0 + 3 + 1) / 4)
    empty = torch.tensor([[False, False], [True, True]])  # an empty sample counts 0
    assert float(pixel_loss(pred, target, "l2", empty)) == pytest.approx(5.0 / 2)


def test_predictor_output_width():
    common = dict(embed_dim=16, pred_embed_dim=8, depth=1, num_heads=2, img_size=8, num_frames=4, patch_size=4)
    feat, pix = Predictor(**common), Predictor(**common, pixel_dim=pixel_dim(3, 2, 4))
    assert "proj.weight" in feat.state_dict() and not any("pixel_proj" in k for k in feat.state_dict())
    assert "pixel_proj.weight" in pix.state_dict() and not any(k.startswith("proj.") for k in pix.state_dict())
    ctx, ctx_idx, tgt_idx = torch.randn(2, 3, 16), torch.tensor([[0, 1, 2]] * 2), torch.tensor([[3, 4]] * 2)
    assert feat(ctx, ctx_idx, tgt_idx, (2, 2, 2)).shape == (2, 2, 16)
    assert pix(ctx, ctx_idx, tgt_idx, (2, 2, 2)).shape == (2, 2, 96)


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    """A 3-step pixel-target run; forward calls into the online and target encoders counted by hooks."""
    run_dir = tmp_path_factory.mktemp("pixels") / "run"
    cfg = tiny_cfg(run_dir, *PIXELS)
    calls = {"encoder": 0, "target_encoder": 0}
    build = loop.build_training

    def counting(*args, **kwargs):
        models, optimizer, aux = build(*args, **kwargs)
        for name in calls:
            for module in models[name].modules():  # any call into any part of it
                module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        return models, optimizer, aux

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_training", counting)
        result = loop.train(cfg)
    torch.manual_seed(cfg.train.seed)  # build_training's init draws
    initial = build_models(cfg)[0].backbone.state_dict()
    return {"cfg": cfg, "result": result, "calls": calls, "initial": initial, "run_dir": run_dir}


def test_pixel_run_trains_without_the_target_encoder(pixel_run):
    losses = [r["loss"] for r in pixel_run["result"]["history"]]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert pixel_run["calls"]["target_encoder"] == 0  # never run ...
    assert pixel_run["calls"]["encoder"] > 0  # ... while the hooks do count the online encoder's calls
    shapes = read_meta(latest_checkpoint(pixel_run["run_dir"]))["shapes"]
    assert list(shapes["predictor.pixel_proj.weight"]) == [3 * 2 * 16 * 16, 48]  # C t p p values per token
    assert "predictor.proj.weight" not in shapes


def test_pixel_run_exports_its_ema_target_encoder(pixel_run, tmp_path):
    run_dir = pixel_run["run_dir"]
    ex = read_checkpoint(run_dir)
    initial = pixel_run["initial"]
    assert set(ex.encoder) == set(initial)
    assert any(not torch.equal(ex.encoder[k], initial[k]) for k in initial)  # the EMA moved the target encoder
    export(run_dir, tmp_path / "enc.pt")
    encoder = load_pretrained(tmp_path / "enc.pt")
    out = encoder(torch.randn(1, 3, 8, 32, 32))
    assert out.shape == (1, 16, 64) and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="pixel-target run"):
        read_checkpoint(run_dir, with_predictor=True)


def test_config_checks_pixel_targets(tmp_path):
    run = tmp_path / "c"
    with pytest.raises(ConfigError, match=r"objectives.0.name='ld' cannot be combined with optim.target=pixels"):
        tiny_cfg(run, *PIXELS, "objectives=[{name: ld}]")
    with pytest.raises(ConfigError, match=r"optim.loss_exp"):
        tiny_cfg(run, *PIXELS, "optim.loss_exp=2")
    with pytest.raises(ConfigError, match=r"optim.target"):
        tiny_cfg(run, "optim.target=pixel")
    with pytest.raises(ConfigError, match=r"optim.pixel_loss"):
        tiny_cfg(run, *PIXELS, "optim.pixel_loss=l3")
    cfg = tiny_cfg(run, *PIXELS, "optim.pixel_loss=l1", "objectives=[{name: vicreg}]")  # context tokens only
    assert cfg.optim.target == "pixels" and cfg.optim.pixel_loss == "l1"
