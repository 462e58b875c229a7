"""The V-JEPA 2.1 objective (arXiv 2603.14482): dense context loss, its schedule and distance weights, deep
supervision (encoder taps, per-chunk target norm, predictor MLP and 4 D heads), the loss guard, a tiny end-to-end
run (train, checkpoint, resume, export) and the shipped config. Oracles: hand-computed values and loops.

Shapes: B batch, N tokens, Kc context / Kt target tokens, D encoder width, L levels, P predictor width.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from conftest import losses, tiny_cfg
from torch import nn
from torch.distributed.checkpoint import FileSystemReader

import vjepa.train.dense as dense_module
import vjepa.train.step as step_module
from vjepa.config import ConfigError, load_config
from vjepa.embed import Embedder
from vjepa.exports import export, read_export
from vjepa.masks.collator import FamilyMasks
from vjepa.masks.ops import gather_tokens, idx_to_coords
from vjepa.models.build import build_models
from vjepa.models.encoder import VisionTransformer, level_taps
from vjepa.models.init import init_weights
from vjepa.models.predictor import Predictor
from vjepa.objectives.base import AuxObjective, ObjectiveOutput
from vjepa.objectives.registry import Planned
from vjepa.pretrained import load_pretrained
from vjepa.train.checkpoint import latest_checkpoint
from vjepa.train.dense import context_distance, dense_lambda, dense_loss, distance_weights
from vjepa.train.ema import ema_pairs
from vjepa.train.loop import objective_dims, train
from vjepa.train.loss_guard import GuardOptions, LossGuard, LossSpikeError
from vjepa.train.optim import build_optimizer
from vjepa.train.schedules import hyper
from vjepa.train.step import Objective, compute_targets, forward_loss, grid_of, train_step

ROOT = Path(__file__).resolve().parents[1]
GRID = (4, 2, 2)  # 8 frames, 32 px, tubelet 2, patch 16
D = 64  # the tiny model's width (test_train.TINY_MODEL)
DEEP = ["model.levels=4", "model.depth=4"]


def coords(i: int, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    _, gh, gw = grid
    return (i // (gh * gw), i // gw % gh, i % gw)


# ----------------------------------------------------------------------------------------------- dense loss


def test_context_distance_by_hand(monkeypatch):
    grid = (2, 3, 3)
    ctx = torch.tensor([[1, 4, 9, 13], [0, 8, 10, 17]])
    tgt = torch.tensor([[0, 17, 3], [4, 5, 4]])
    tgt_valid = torch.tensor([[True, True, False], [True, True, False]])  # the padded slots must not count
    d = context_distance(ctx, tgt, grid, tgt_valid)
    want = torch.zeros(2, 4)
    for b in range(2):
        for i in range(4):
            near = [math.dist(coords(int(ctx[b, i]), grid), coords(int(tgt[b, j]), grid)) for j in range(2)]
            want[b, i] = min(near)
    torch.testing.assert_close(d, want)
    # hand values: token 1 (0,0,1) is next to target 0 (0,0,0); token 9 (1,0,0) lies one step in time from 0;
    # token 13 (1,1,1) is sqrt(3) from 0 and sqrt(2) from 17 (1,2,2); the padded target 3 (0,1,0) is ignored
    assert d[0].tolist() == pytest.approx([1.0, math.sqrt(2), 1.0, math.sqrt(2)])
    torch.testing.assert_close(distance_weights(d), 1.0 / want.sqrt())
    monkeypatch.setattr(dense_module, "DISTANCE_TABLE_ENTRIES", 1)  # one sample at a time: the same distances
    assert torch.equal(context_distance(ctx, tgt, grid, tgt_valid), d)
    none = context_distance(ctx[:1], tgt[:1], grid, torch.zeros(1, 3, dtype=torch.bool))
    assert torch.isinf(none).all() and (distance_weights(none) == 0).all()


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_dense_loss_matches_a_token_loop(p):
    g = torch.Generator().manual_seed(0)
    b, kc, c = 3, 5, 6
    pred, target = torch.randn(b, kc, c, generator=g), torch.randn(b, kc, c, generator=g)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)  # last: empty
    weights = torch.rand(b, kc, generator=g)
    for w in (None, weights):
        per_sample = []
        for i in range(b):
            terms = [
                (1.0 if w is None else float(w[i, k]))
                * sum(abs(float(pred[i, k, j] - target[i, k, j])) ** p for j in range(c))
                / c
                for k in range(kc)
                if valid[i, k]
            ]
            per_sample.append(sum(terms) / len(terms) if terms else 0.0)  # an empty sample counts 0
        want = sum(per_sample) / b / p
        assert dense_loss(pred, target, p, valid, w).item() == pytest.approx(want, rel=1e-5)
    # no padding: the official single mean over [B, K, C] of the weighted errors (not renormalised by the weights)
    official = ((pred - target).abs().pow(p) * weights[..., None]).mean() / p
    assert dense_loss(pred, target, p, None, weights).item() == pytest.approx(official.item(), rel=1e-5)


def test_dense_weight_schedule():
    values = {s: dense_lambda(0.5, 15_000, 30_000, s) for s in (0, 14_999, 15_000, 22_500, 29_999, 30_000, 90_000)}
    assert values == {
        0: 0.0,
        14_999: 0.0,
        15_000: 0.0,
        22_500: 0.25,
        29_999: pytest.approx(0.5 * 14_999 / 15_000),
        30_000: 0.5,
        90_000: 0.5,
    }
    assert [dense_lambda(0.5, 0, 0, s) for s in (0, 7, 10**6)] == [0.5, 0.5, 0.5]
    assert Objective(dense_weight=0.5, dense_warmup_start=10, dense_warmup_end=20).dense_lambda(15) == 0.25
    with pytest.raises(ConfigError, match="dense_warmup_start"):
        load_config(None, ["data.source=synthetic", "optim.dense_warmup_start=5", "optim.dense_warmup_end=5"])


class _Recorder(AuxObjective):
    """Keeps the step state it sees (and adds nothing)."""

    name = "recorder"

    def forward(self, state):
        self.seen = state
        return ObjectiveOutput(torch.zeros(()))


def _hand_masks() -> list[FamilyMasks]:
    """Two families on the (4, 2, 2) grid of 2 clips, with padded context and target slots."""
    ctx = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 0], [8, 9, 10, 11, 12, 13, 14, 15]])
    ctx_valid = torch.tensor([[True] * 6 + [False] * 2, [True] * 8])
    tgt = torch.tensor([[6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [0, 1, 2, 3, 4, 5, 6, 7, 0, 0]])
    tgt_valid = torch.tensor([[True] * 10, [True] * 8 + [False] * 2])
    late = FamilyMasks(
        ctx_idx=torch.tensor([[12, 13, 14, 15], [0, 5, 10, 15]]), tgt_idx=torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    )
    return [FamilyMasks(ctx_idx=ctx, tgt_idx=tgt, ctx_valid=ctx_valid, tgt_valid=tgt_valid), late]


def test_forward_loss_adds_the_weighted_dense_term_per_family():
    cfg = tiny_cfg("unused", "optim.dense_weight=0.5", "optim.dense_warmup_start=2", "optim.dense_warmup_end=6")
    torch.manual_seed(0)
    encoder, predictor = build_models(cfg)
    assert predictor.proj_context is not None and build_models(tiny_cfg("unused"))[1].proj_context is None
    target = copy.deepcopy(encoder)
    for p in list(encoder.parameters()) + list(predictor.parameters()):
        p.data.add_(0.05 * torch.randn_like(p))
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    masks, grid = _hand_masks(), grid_of(video, 2, 16)
    on = Objective.from_config(cfg.optim)
    off, weighted = Objective(), dataclasses.replace(on, dense_distance_weighting=True)
    plain, fam, _, _ = forward_loss(encoder, target, predictor, video, masks, grid, off, step=3)
    h = compute_targets(target, video)
    for objective in (on, weighted):
        recorder = _Recorder()
        aux = [Planned("recorder", 1.0, 1.0, 1.0, recorder)]
        loss, fam_on, _, metrics = forward_loss(
            encoder, target, predictor, video, masks, grid, objective, aux=aux, step=4
        )
        assert [f.item() for f in fam_on] == [f.item() for f in fam]  # the prediction loss is unchanged
        terms = []
        for f, m in enumerate(masks):
            z = encoder(video, [m.ctx_idx], [m.ctx_valid])[0]
            _, ctx_pred = predictor(z, m.ctx_idx, m.tgt_idx, grid, f, m.ctx_valid, m.tgt_valid, return_context=True)
            torch.testing.assert_close(recorder.seen.families[f].ctx_pred, ctx_pred)  # handed to the objectives
            per_sample = []
            for b in range(2):
                errs = []
                for k in range(m.ctx_idx.shape[1]):
                    if m.ctx_valid is not None and not m.ctx_valid[b, k]:
                        continue
                    i = int(m.ctx_idx[b, k])
                    err = (ctx_pred[b, k] - h[b, i]).abs().mean()
                    if objective.dense_distance_weighting:
                        kt = range(m.tgt_idx.shape[1])
                        valid = [j for j in kt if m.tgt_valid is None or m.tgt_valid[b, j]]
                        dist = min(math.dist(coords(i, grid), coords(int(m.tgt_idx[b, j]), grid)) for j in valid)
                        err = err / math.sqrt(dist)
                    errs.append(err)
                per_sample.append(torch.stack(errs).mean())
            terms.append(torch.stack(per_sample).mean())
        dense = torch.stack(terms).mean()
        torch.testing.assert_close(metrics["dense"], dense.detach())
        torch.testing.assert_close(loss, plain + 0.25 * dense)  # lambda at step 4 of the 2 -> 6 ramp: 0.5 * 2 / 4


# ---------------------------------------------------------------------------------------------- deep supervision


def test_level_taps_official_table_and_rule():
    assert [level_taps(d, 4) for d in (12, 24, 40, 48)] == [
        (2, 5, 8, 11),
        (5, 11, 17, 23),
        (9, 19, 29, 39),
        (11, 23, 37, 47),
    ]
    assert [level_taps(d, 4) for d in (4, 8, 32)] == [(0, 1, 2, 3), (1, 3, 5, 7), (7, 15, 23, 31)]
    assert level_taps(24, 1) == (23,)
    with pytest.raises(ValueError, match="levels"):
        level_taps(12, 2)
    with pytest.raises(ValueError, match="depth 3"):
        level_taps(3, 4)
    with pytest.raises(ConfigError, match="model.levels"):
        load_config(None, ["data.source=synthetic", "model.levels=2"])


def _randomise(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_encoder_levels_are_the_normed_taps_concatenated(pos_embed):
    enc = VisionTransformer(
        img_size=32, num_frames=8, embed_dim=32, depth=8, num_heads=2, pos_embed=pos_embed, levels=4
    )
    init_weights(enc)
    _randomise(enc)  # the level norms' affine parameters are no longer 1 / 0
    assert enc.level_taps == (1, 3, 5, 7) and not hasattr(enc, "norm")
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([[0, 3, 5, 9, 14], [1, 2, 8, 11, 15]])
    tokens, grid = enc.embed(video)
    x = gather_tokens(tokens, idx)  # [B, K, D]
    rope = enc.rope(idx_to_coords(idx, grid)) if enc.rope is not None else None
    by_hand = []
    for i, blk in enumerate(enc.blocks):
        x = blk(x, rope=rope)
        if i in (1, 3, 5, 7):
            by_hand.append(
                F.layer_norm(x, (32,), enc.level_norms[len(by_hand)].weight, enc.level_norms[len(by_hand)].bias, 1e-6)
            )
    got = enc.forward_tokens(tokens, grid, idx, all_levels=True)
    assert got.shape == (2, 5, 4 * 32)
    torch.testing.assert_close(got, torch.cat(by_hand, dim=-1))
    torch.testing.assert_close(enc(video, idx), by_hand[-1])  # what evaluations see: the last level, [B, K, D]


def test_levels_1_keeps_the_parameter_names():
    torch.manual_seed(0)
    plain, plain_pred = build_models(tiny_cfg("unused"))
    names = list(plain.state_dict())
    assert "backbone.norm.weight" in names and not any("level_norms" in n for n in names)
    assert isinstance(plain_pred.embed, nn.Linear) and "proj_context.weight" not in plain_pred.state_dict()
    deep, deep_pred = build_models(tiny_cfg("unused", *DEEP))
    assert [n for n in deep.state_dict() if "norm" in n and "blocks" not in n] == [
        f"backbone.level_norms.{k}.{t}" for k in range(4) for t in ("weight", "bias")
    ]
    assert (
        objective_dims(tiny_cfg("unused", *DEEP)).dim == 4 * D and objective_dims(tiny_cfg("unused", *DEEP)).levels == 4
    )


def test_targets_are_layer_normed_per_chunk():
    torch.manual_seed(0)
    encoder, _ = build_models(tiny_cfg("unused", *DEEP))
    _randomise(encoder)
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    h = compute_targets(encoder, video, levels=4)
    raw = encoder(video)  # [B, N, 4 D]: the context/target encoder's concatenated levels
    assert h.shape == raw.shape == (2, 16, 4 * D)
    for k in range(4):
        chunk = h[..., k * D : (k + 1) * D]
        torch.testing.assert_close(chunk.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
        torch.testing.assert_close(chunk.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3, rtol=0)
    assert not torch.allclose(h, F.layer_norm(raw, (4 * D,)), atol=1e-3)  # not one norm over 4 D


def test_predictor_input_mlp_and_4d_heads():
    pred = Predictor(
        embed_dim=16, pred_embed_dim=24, depth=2, num_heads=2, img_size=32, num_frames=8, levels=4, context_head=True
    )
    init_weights(pred)
    _randomise(pred)
    first, act, second = pred.embed
    assert (first.in_features, first.out_features, second.in_features, second.out_features) == (64, 16, 16, 24)
    assert isinstance(act, nn.GELU) and act.approximate == "none"
    assert pred.proj.out_features == 64 and pred.proj_context.out_features == 64
    z = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        pred.embed(z), F.linear(F.gelu(F.linear(z, first.weight, first.bias)), second.weight, second.bias)
    )
    ctx_idx, tgt_idx = torch.tensor([[0, 1, 2, 3, 4, 5]] * 2), torch.tensor([[6, 7, 8], [9, 12, 15]])
    normed = {}
    hook = pred.norm.register_forward_hook(lambda m, i, o: normed.update(y=o))
    p_t, p_c = pred(z, ctx_idx, tgt_idx, GRID, return_context=True)
    hook.remove()
    assert p_t.shape == (2, 3, 64) and p_c.shape == (2, 6, 64)
    torch.testing.assert_close(p_c, pred.proj_context(normed["y"][:, :6]))  # the context head after the final norm
    torch.testing.assert_close(p_t, pred.proj(normed["y"][:, 6:]))
    torch.testing.assert_close(pred(z, ctx_idx, tgt_idx, GRID), p_t)  # the same predictions without the head


# ----------------------------------------------------------------------------------------------- loss guard


def test_loss_guard_hand_values():
    guard = LossGuard(GuardOptions(k=1.0, window=4, min_step=3, max_skips=1))
    assert guard.admit(1.0, 0) and guard.admit(50.0, 1) and guard.admit(1.0, 2)  # before min_step: all kept
    guard = LossGuard(GuardOptions(k=1.0, window=4, min_step=0, max_skips=1))
    assert guard.admit(1.0, 0) and guard.admit(5.0, 1) and guard.admit(1.0, 2)  # 2 tracked: not more than 4 // 2
    mean, std = 7 / 3, math.sqrt((2 * (1 - 7 / 3) ** 2 + (5 - 7 / 3) ** 2) / 3)  # population std, about 1.886
    assert not guard.admit(100.0, 3) and guard.skips == 1 and guard.last_bound == pytest.approx(mean + std)
    assert guard.admit(4.0, 4) and list(guard.losses) == [1.0, 5.0, 1.0, 4.0]  # 4.0 < 4.219: kept
    assert guard.admit(float("nan"), 5) and len(guard.losses) == 4  # non-finite: neither tracked nor compared
    assert guard.admit(4.5, 6) and list(guard.losses) == [5.0, 1.0, 4.0, 4.5]  # bound 2.75 + 1.785: kept, oldest out
    assert not guard.exhausted
    assert not guard.admit(9.0, 7) and guard.exhausted  # a second skip: more than max_skips=1
    again = LossGuard(guard.options)
    again.load_state_dict(json.loads(json.dumps(guard.state_dict())))  # through meta.json
    assert list(again.losses) == list(guard.losses) and again.skips == 2
    again.load_state_dict(None)
    assert len(again.losses) == 0 and again.skips == 0


def test_a_vetoed_step_changes_only_the_ema_target():
    cfg = tiny_cfg("unused", "optim.warmup_steps=0")
    torch.manual_seed(0)
    encoder, predictor = build_models(cfg)
    target = copy.deepcopy(encoder).requires_grad_(False)
    optimizer = build_optimizer(cfg.optim, {"encoder": encoder, "predictor": predictor})
    ema_t, ema_s = ema_pairs(encoder, target)
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # a target different from the encoder, so that the EMA update shows
        for p in target.parameters():
            p.add_(0.1)
    before = [copy.deepcopy(m.state_dict()) for m in (encoder, predictor, target)]
    hp = hyper(cfg.optim, 0)
    kw = dict(encoder=encoder, target_encoder=target, predictor=predictor, optimizer=optimizer, ema_targets=ema_t)
    kw.update(ema_sources=ema_s, video=video, masks=_hand_masks(), grid=GRID, hp=hp, clip_grad=1.0)
    out = train_step(**kw, guard=lambda loss: False)
    assert out.skipped and out.grad_norm is None and not optimizer.state
    for module, saved in zip((encoder, predictor), before):
        assert all(torch.equal(v, saved[k]) for k, v in module.state_dict().items())
    for k, v in target.state_dict().items():  # m t + (1 - m) e with e unchanged
        torch.testing.assert_close(v, hp.momentum * before[2][k] + (1 - hp.momentum) * before[0][k])
    out = train_step(**kw, guard=lambda loss: True)
    assert not out.skipped and optimizer.state
    assert not all(torch.equal(v, before[0][k]) for k, v in encoder.state_dict().items())


def _tensors(ckpt: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The full tensors of one module of a DCP checkpoint, read in this process."""
    listing = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    wanted = {n: torch.empty(m.size, dtype=m.properties.dtype) for n, m in listing.items() if n.startswith(prefix)}
    with warnings.catch_warnings():  # DCP warns that it loads in one process: that is the intent
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(wanted, checkpoint_id=str(ckpt), no_dist=True)
    return wanted


def test_loss_guard_skips_a_spike_counts_and_stops(tmp_path, monkeypatch):
    real = step_module.forward_loss

    def spiking(*args, **kwargs):  # the loss x 100 from step 3 on (args[9] is the step)
        loss, fam, stats, metrics = real(*args, **kwargs)
        return (loss * 100 if args[9] >= 3 else loss), fam, stats, metrics

    monkeypatch.setattr(step_module, "forward_loss", spiking)
    run = tmp_path / "guard"
    guard = ["optim.loss_guard_k=50", "optim.loss_guard_window=2", "optim.loss_guard_min_step=0"]
    cfg = tiny_cfg(run, *guard, "optim.loss_guard_max_skips=1", "train.checkpoint_every=1", "optim.total_steps=6")
    with pytest.raises(LossSpikeError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message and "skipped 2 updates" in message and "loss_guard_max_skips=1" in message
    assert "step 5" in message and "last good checkpoint (step 4)" in message
    assert latest_checkpoint(run).name == "step_00000004"  # nothing written for the step that stopped the run
    kept, skipped = run / "checkpoints/step_00000003", run / "checkpoints/step_00000004"
    for prefix in ("models.encoder.", "models.predictor."):  # the skipped step 3 changed no trained weight...
        a, b = _tensors(kept, prefix), _tensors(skipped, prefix)
        assert all(torch.equal(a[k], b[k]) for k in a), prefix
    a, b = _tensors(kept, "models.target_encoder."), _tensors(skipped, "models.target_encoder.")
    assert not all(torch.equal(a[k], b[k]) for k in a)  # ...but the EMA update ran
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["skipped_updates"] for r in records] == [0, 0, 0, 1]
    meta = json.loads((skipped / "meta.json").read_text())
    assert meta["loss_guard"] == {"losses": [records[1]["loss"], records[2]["loss"]], "skips": 1}
    # resume without the spike: the guard's window and count continue from the checkpoint
    monkeypatch.setattr(step_module, "forward_loss", real)
    calm = [
        "optim.loss_guard_k=1000",
        "optim.loss_guard_max_skips=5",
        "train.checkpoint_every=1",
        "optim.total_steps=6",
    ]
    resumed = train(tiny_cfg(run, *guard, *calm))
    final = json.loads((latest_checkpoint(run) / "meta.json").read_text())["loss_guard"]
    assert final["skips"] == 1 and final["losses"] == [r["loss"] for r in resumed["history"]]


# ---------------------------------------------------------------------------------------------- end to end


def test_tiny_deep_dense_run_trains_resumes_and_exports(tmp_path):
    extra = [*DEEP, "model.pos_embed=rope", "optim.dense_weight=0.5", "optim.dense_distance_weighting=true"]
    extra += [
        "optim.dense_warmup_start=1",
        "optim.dense_warmup_end=3",
        "optim.total_steps=3",
        "train.checkpoint_every=2",
    ]
    full = train(tiny_cfg(tmp_path / "a", *extra))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["dense_loss"]) for r in full["history"])
    assert [r["dense_weight"] for r in full["history"]] == [0.0, 0.0, 0.25]
    first = losses(train(tiny_cfg(tmp_path / "b", *extra, "train.stop_after=2")))
    assert first == losses(full)[:2] and latest_checkpoint(tmp_path / "b").name == "step_00000002"
    assert losses(train(tiny_cfg(tmp_path / "b", *extra))) == losses(full)[2:]  # resumed exactly
    out = tmp_path / "b" / "enc.pt"
    export(tmp_path / "b", out, with_predictor=True)
    ex = read_export(out)
    assert ex.model.levels == 4 and ex.context_head and "proj_context.weight" in ex.predictor
    encoder = load_pretrained(out)
    video = torch.randn(1, 3, 8, 32, 32)
    assert encoder(video).shape == (1, 16, D)  # evaluations get the last level, D wide
    frames = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert Embedder(encoder).embed(frames, output="pooled").shape == (D,)  # feature extraction for evals
    with pytest.raises(ValueError, match=r"model.levels=4") as err:
        export(tmp_path / "b", None, hf_dir=tmp_path / "hf")
    assert "\n" not in str(err.value) and not (tmp_path / "hf").exists()


def test_vitl16_v21_config_carries_the_official_values():
    cfg = load_config(ROOT / "configs/pretrain/vitl16_v21.yaml")
    m, o, d = cfg.model, cfg.optim, cfg.data
    assert (m.preset, m.pos_embed, m.levels, m.pred_depth, m.pred_embed_dim, m.pred_num_heads) == (
        "large",
        "rope",
        4,
        24,
        384,
        12,
    )
    assert (o.dense_weight, o.dense_warmup_start, o.dense_warmup_end, o.dense_distance_weighting) == (
        0.5,
        15000,
        30000,
        True,
    )
    assert o.loss_guard_k == 0 and o.clip_grad == 0 and o.total_steps == 300_000 and o.warmup_steps == 12_000
    assert (o.start_lr, o.lr, o.final_lr, o.ema_momentum, o.weight_decay) == (1e-4, 6e-4, 6e-4, 0.99925, 0.04)
    assert (d.crop_size, d.frames_per_clip, d.fps, d.batch_size) == (256, 16, 4, 24)
    assert [s.weight for s in d.sources] == [0.335, 0.100, 0.565]
    assert "configs/train_2_1/vitl16/pretrain-256px-16f.yaml" in (ROOT / "configs/pretrain/vitl16_v21.yaml").read_text()


@pytest.mark.distributed
def test_two_processes_match_one_process_with_deep_supervision_and_the_dense_loss(tmp_path):
    from conftest import two_against_one

    # global batch 6 in groups of 4: padded mask rows on rank 1, so the per-sample means are exercised
    dense = ["optim.dense_weight=0.5", "optim.dense_distance_weighting=true", "mask.group_size=4", "train.seed=1"]
    one, _, r1 = two_against_one(tmp_path, 6, [*DEEP, *dense])
    assert any(r1["valid"]) and "pred.proj_context.weight" in one["grads"]
