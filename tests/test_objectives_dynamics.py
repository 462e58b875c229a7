"""The FLD objectives (evals/objectives/hard_regions.py, dynamics.py) against loop-based references and hand cases.

Unit tests build a StepState by hand: grid (4, 2, 2), width 8, a batch of 4, two mask families whose rows keep
different context counts (padded slots repeat the row's last valid index and are marked invalid, as the collator's
padding). Every objective is checked for: its loop reference (per sample over visible pairs, then samples, then
families), fp32 output from bf16 inputs, padded slots and invisible positions never counting (value unchanged,
gradient 0), no gradient into the targets, gradients into its head, and 2 processes = 1 process (gloo).
The LD gradient, also with HW on, is checked through the real training step on tiny models.

Shapes: B batch, N tokens, Kc / Kt context / target slots, D width, grid = (T', H', W').
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import dist_env, free_port, tiny_cfg
from vjepa.evals.objectives.dynamics import action_target, cross_covariance, tubelet_means
from vjepa.evals.objectives.hard_regions import hard_region_weights

from vjepa.data.loader import build_mask_generator
from vjepa.losses import jepa_loss
from vjepa.masks.ops import gather_tokens
from vjepa.models.build import build_models
from vjepa.objectives.base import Dims, FamilyState, StepState
from vjepa.objectives.registry import plan_objectives, resolve
from vjepa.train.loop import objective_dims, train
from vjepa.train.step import forward_loss, grid_of

GRID = (4, 2, 2)
N = 16
D = 8
TUB, PATCH = 2, 2
CTX_COUNTS = ([10, 7, 9, 12], [6, 9, 11, 8])  # context tokens per sample, one list per family
NAMES = ["hw", "delta", "ld", "fld", "fwm_static", "fwm_orth", "ac", "fac"]
PAIR_NAMES = ["delta", "ld", "fld", "fwm_static", "ac", "fac"]  # the ones reading Z on visible pairs
HEADS = ["ld", "fld", "ac", "fac"]


# ------------------------------------------------------------------------------------------------------------
# hand-built step states


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    k = max(len(r) for r in rows)
    idx = torch.stack([torch.cat([r, r[-1:].expand(k - len(r))]) for r in rows])  # [B, K]
    valid = torch.stack([torch.arange(k) < len(r) for r in rows])  # [B, K]
    return idx, valid


def _tensors(seed: int = 0, b: int = 4) -> dict:
    """Global tensors of a random step: index sets per family, z, pred, h, video."""
    g = torch.Generator().manual_seed(seed)
    fams = []
    for counts in CTX_COUNTS:
        perms = [torch.randperm(N, generator=g) for _ in range(b)]
        ctx_idx, ctx_valid = _pad([p[: counts[i]].sort().values for i, p in enumerate(perms)])
        tgt_idx, tgt_valid = _pad([p[counts[i] :].sort().values for i, p in enumerate(perms)])
        z = torch.randn(b, ctx_idx.shape[1], D, generator=g)
        pred = torch.randn(b, tgt_idx.shape[1], D, generator=g)
        fams.append(dict(ctx_idx=ctx_idx, ctx_valid=ctx_valid, tgt_idx=tgt_idx, tgt_valid=tgt_valid, z=z, pred=pred))
    h = torch.randn(b, N, D, generator=g)
    video = torch.randn(b, 3, GRID[0] * TUB, GRID[1] * PATCH, GRID[2] * PATCH, generator=g)
    return dict(fams=fams, h=h, video=video)


def _state(t: dict, lo: int = 0, hi: int | None = None, dtype=torch.float32, h_grad: bool = False):
    """A StepState of rows [lo, hi) of `t`, with fresh leaves z and pred (and h, when h_grad) requiring grad."""
    sl = slice(lo, hi)
    h = t["h"][sl].clone().requires_grad_(h_grad)
    fams, zs, preds = [], [], []
    for f in t["fams"]:
        z = f["z"][sl].clone().to(dtype).requires_grad_()
        pred = f["pred"][sl].clone().to(dtype).requires_grad_()
        target = gather_tokens(h, f["tgt_idx"][sl])  # [B, Kt, D], carries h's grad when h_grad
        fams.append(
            FamilyState(f["ctx_idx"][sl], f["tgt_idx"][sl], f["ctx_valid"][sl], f["tgt_valid"][sl], z, pred, target)
        )
        zs.append(z)
        preds.append(pred)
    state = StepState(video=t["video"][sl], grid=GRID, h=h, families=fams, tubelet=TUB, patch=PATCH)
    return state, dict(z=zs, pred=preds, h=h)


def _build(name: str, seed: int = 0, d: int = D):
    torch.manual_seed(seed)
    cls = resolve(name, ["vjepa.evals.objectives"])
    return cls(None, Dims(dim=d, grid=GRID, tubelet=TUB, patch=PATCH))


# ------------------------------------------------------------------------------------------------------------
# loop references


def _visible(fam: dict, b: int) -> dict[int, torch.Tensor]:
    """token index -> z (float64) of the valid context slots of sample b."""
    return {
        int(fam["ctx_idx"][b, k]): fam["z"][b, k].double()
        for k in range(fam["ctx_idx"].shape[1])
        if fam["ctx_valid"][b, k]
    }


def _pair_mean(t: dict, term) -> float:
    """mean over families of mean over samples of the mean over visible pairs (t, t+1) of term(z0, z1, b, n0, n1)."""
    tt, hh, ww = GRID
    b_count = t["h"].shape[0]
    out = []
    for fam in t["fams"]:
        per = []
        for b in range(b_count):
            vis, vals = _visible(fam, b), []
            for n0 in range((tt - 1) * hh * ww):
                n1 = n0 + hh * ww
                if n0 in vis and n1 in vis:
                    with torch.no_grad():
                        vals.append(float(term(vis[n0], vis[n1], b, n0, n1)))
            per.append(sum(vals) / len(vals) if vals else 0.0)
        out.append(sum(per) / b_count)
    return sum(out) / len(out)


def _loop_tubelet_mean(video: torch.Tensor, b: int, n: int) -> torch.Tensor:
    _, hh, ww = GRID
    t, i, j = n // (hh * ww), (n // ww) % hh, n % ww
    x = video[b, :, t * TUB : (t + 1) * TUB, i * PATCH : (i + 1) * PATCH, j * PATCH : (j + 1) * PATCH]
    return x.double().mean(dim=(1, 2, 3))  # [3]


def _reference(name: str, obj, t: dict) -> float:
    h = t["h"].double()
    half = D // 2
    if name == "delta":
        return _pair_mean(t, lambda z0, z1, b, n0, n1: ((z1 - z0) - (h[b, n1] - h[b, n0])).abs().mean())
    if name in ("ld", "fld"):
        head = copy.deepcopy(obj.head).double()
        cut = half if name == "fld" else 0
        return _pair_mean(t, lambda z0, z1, b, n0, n1: (head(z0[cut:]) - (h[b, n1] - h[b, n0])).abs().mean())
    if name in ("ac", "fac"):
        head = copy.deepcopy(obj.head).double()
        cut = half if name == "fac" else 0
        v = t["video"]
        act = lambda b, n0, n1: _loop_tubelet_mean(v, b, n1) - _loop_tubelet_mean(v, b, n0)  # noqa: E731
        return _pair_mean(t, lambda z0, z1, b, n0, n1: (head(z0[cut:]) - act(b, n0, n1)).abs().mean())
    if name == "fwm_static":
        return _pair_mean(t, lambda z0, z1, b, n0, n1: (z1[:half] - z0[:half]).abs().mean())
    if name == "fwm_orth":
        vals = []
        for fam in t["fams"]:
            x = fam["z"][fam["ctx_valid"]].double()  # [Nv, D] every valid token of the batch
            xc = x - x.mean(dim=0)
            cross = xc[:, :half].T @ xc[:, half:] / (x.shape[0] - 1)
            vals.append(float(cross.pow(2).mean()))
        return sum(vals) / len(vals)
    if name == "hw":
        return float(_loop_hw(t, tau=1.0, detach=True))
    raise KeyError(name)


def _loop_hw(t: dict, tau: float, detach: bool, preds: list | None = None) -> torch.Tensor:
    """HW by loops: per family and sample, w_k = K exp(e_k / tau) / sum_j exp(e_j / tau) over valid target slots
    (python floats when `detach`: constants for autograd); sum_k w_k e_k / K; mean over samples, then families."""
    total, fams = 0.0, t["fams"]
    b_count = t["h"].shape[0]
    for f, fam in enumerate(fams):
        pred = preds[f] if preds is not None else fam["pred"].double()
        target = gather_tokens(t["h"], fam["tgt_idx"]).to(pred.dtype)
        for b in range(b_count):
            ks = [k for k in range(fam["tgt_idx"].shape[1]) if fam["tgt_valid"][b, k]]
            errs = [(pred[b, k] - target[b, k]).abs().mean() for k in ks]
            big_k = len(ks)
            if big_k >= 2:
                if detach:
                    ex = [math.exp(float(e.detach()) / tau) for e in errs]
                    ws = [big_k * x / sum(ex) for x in ex]
                else:
                    ws = list(big_k * torch.softmax(torch.stack(errs) / tau, dim=0))
            else:
                ws = [1.0] * big_k
            total = total + sum(w * e for w, e in zip(ws, errs)) / max(big_k, 1) / b_count
    return total / len(fams)


# ------------------------------------------------------------------------------------------------------------
# every objective


@pytest.mark.parametrize("name", NAMES)
def test_matches_the_loop_reference(name):
    t = _tensors(0)
    obj = _build(name)
    state, _ = _state(t)
    got = obj(state).loss
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(_reference(name, obj, t), rel=1e-5, abs=1e-7)
    assert got.item() > 0


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs_give_a_finite_fp32_loss(name):
    t = _tensors(1)
    obj = _build(name)
    loss = obj(_state(t, dtype=torch.bfloat16)[0]).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(obj(_state(t)[0]).loss.item(), rel=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_padded_slots_count_nowhere(name):
    t = _tensors(2)
    assert all((~f["ctx_valid"]).any() and (~f["tgt_valid"]).any() for f in t["fams"])  # padding is exercised
    obj = _build(name)
    state, leaves = _state(t)
    loss = obj(state).loss
    loss.backward()
    for f, fam in enumerate(t["fams"]):
        for key, valid in (("z", fam["ctx_valid"]), ("pred", fam["tgt_valid"])):
            grad = leaves[key][f].grad
            assert grad is None or grad[~valid].abs().max() == 0, key
    moved = copy.deepcopy(t)
    for fam in moved["fams"]:
        fam["z"][~fam["ctx_valid"]] += 100.0
        fam["pred"][~fam["tgt_valid"]] -= 100.0
    assert torch.equal(obj(_state(moved)[0]).loss, loss.detach())


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_invisible_positions_count_nowhere(name):
    """Garbage in Z where V is False changes nothing and gets no gradient; neither do h nor the clip at a position
    no family sees."""
    t = _tensors(3)
    obj = _build(name)
    state, _ = _state(t)
    junk = []
    for f in range(len(state.families)):
        z, v = state.scattered(f)
        j = torch.randn_like(z).requires_grad_()
        junk.append(j)
        state._cache[("scattered", f)] = (z + j * (~v).unsqueeze(-1), v)  # [B, T', H', W', D]
    loss = obj(state).loss
    loss.backward()
    assert all(j.grad.abs().max() == 0 for j in junk)
    assert torch.equal(loss.detach(), obj(_state(t)[0]).loss)
    seen = torch.zeros(t["h"].shape[:2], dtype=torch.bool)  # [B, N]
    for fam in t["fams"]:
        for b in range(seen.shape[0]):
            seen[b, fam["ctx_idx"][b][fam["ctx_valid"][b]]] = True
    b, n = (~seen).nonzero()[0].tolist()
    moved = copy.deepcopy(t)
    moved["h"][b, n] += 10.0
    tt, i, j = n // 4, (n // 2) % 2, n % 2
    moved["video"][b, :, tt * TUB : (tt + 1) * TUB, i * PATCH : (i + 1) * PATCH, j * PATCH : (j + 1) * PATCH] += 10.0
    assert torch.equal(obj(_state(moved)[0]).loss, loss.detach())


@pytest.mark.parametrize("name", NAMES)
def test_no_gradient_reaches_the_targets_and_heads_get_one(name):
    t = _tensors(4)
    obj = _build(name)
    state, leaves = _state(t, h_grad=True)  # fam.target carries h's graph: an objective must not use it
    obj(state).loss.backward()
    assert leaves["h"].grad is None
    params = list(obj.named_parameters())
    assert bool(params) == (name in HEADS)
    for pname, p in params:
        assert p.grad is not None and p.grad.abs().max() > 0, pname
    if name in ("fld", "fac"):
        assert obj.head[0].in_features == D - D // 2


# ------------------------------------------------------------------------------------------------------------
# HW


def test_hw_weights_sum_to_the_valid_count_and_are_a_softmax():
    err = torch.tensor([[0.1, 0.5, 0.2, 9.0], [0.3, 0.3, 7.0, 7.0], [0.4, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    w = hard_region_weights(err, valid, tau=0.5)
    torch.testing.assert_close(w.sum(dim=-1), valid.sum(dim=-1).float())
    assert (w[~valid] == 0).all()
    ex = [math.exp(e / 0.5) for e in (0.1, 0.5, 0.2)]
    torch.testing.assert_close(w[0, :3], torch.tensor([3 * x / sum(ex) for x in ex]))
    torch.testing.assert_close(w[1, :2], torch.ones(2))  # equal errors: weight 1
    assert w[2, 0] == 1.0  # K = 1: skipped, weight 1
    torch.testing.assert_close(hard_region_weights(err, None, 1.0).sum(dim=-1), torch.full((4,), 4.0))
    big = hard_region_weights(torch.tensor([[1e4, 0.0]]), None, 1e-3)  # no overflow at a tiny temperature
    torch.testing.assert_close(big, torch.tensor([[2.0, 0.0]]))


def test_hw_equals_the_plain_loss_when_every_token_error_is_equal():
    t = _tensors(5)
    g = torch.Generator().manual_seed(0)
    for fam in t["fams"]:
        target = gather_tokens(t["h"], fam["tgt_idx"])
        sign = torch.randint(0, 2, target.shape, generator=g).float() * 2 - 1
        fam["pred"] = target + 0.25 * sign  # every token: mean_d |p - h| = 0.25
    state, _ = _state(t)
    plain = torch.stack([jepa_loss(f.pred, f.target, 1.0, f.tgt_valid) for f in state.families]).mean()
    torch.testing.assert_close(_build("hw")(state).loss, plain)
    state, _ = _state(_tensors(5))  # unequal errors: HW weighs the hard tokens up, above the plain loss
    plain = torch.stack([jepa_loss(f.pred, f.target, 1.0, f.tgt_valid) for f in state.families]).mean()
    assert _build("hw")(state).loss > plain * 1.01


def test_hw_has_no_gradient_through_its_weights():
    t = _tensors(6)
    state, leaves = _state(t)
    _build("hw")(state).loss.backward()
    got = [p.grad for p in leaves["pred"]]
    for detach in (True, False):
        preds = [f["pred"].clone().requires_grad_() for f in t["fams"]]
        _loop_hw(t, 1.0, detach=detach, preds=preds).backward()
        close = all(torch.allclose(g, p.grad, rtol=1e-4, atol=1e-7) for g, p in zip(got, preds))
        assert close == detach  # equal to the detached-weight gradient, and distinguishable from the other one


# ------------------------------------------------------------------------------------------------------------
# Delta, LD, FLD


def _one_family_state(z: torch.Tensor, h: torch.Tensor, grid=GRID, video=None) -> StepState:
    """Every token visible in one family: z, h [B, N, D]."""
    b, n, d = z.shape
    idx = torch.arange(n).expand(b, n)
    fam = FamilyState(idx, idx[:, :1], None, None, z, z[:, :1], h[:, :1])
    video = torch.zeros(b, 3, grid[0] * TUB, grid[1] * PATCH, grid[2] * PATCH) if video is None else video
    return StepState(video=video, grid=grid, h=h, families=[fam], tubelet=TUB, patch=PATCH)


def test_delta_hand_value_and_zero_for_a_constant_offset():
    z = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])  # [1, 2, 2]: grid (2, 1, 1), D 2
    h = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    # dZ = (2, 3), dh = (1, 1): mean(|1|, |2|) = 1.5
    assert _build("delta", d=2)(_one_family_state(z, h, grid=(2, 1, 1))).loss.item() == pytest.approx(1.5)
    t = _tensors(7)
    c = torch.randn(4, 1, 2, 2, D)  # per sample and position, constant in time
    zgrid = t["h"].reshape(4, *GRID, D) + c  # [B, T', H', W', D]
    for fam in t["fams"]:
        fam["z"] = gather_tokens(zgrid.reshape(4, N, D), fam["ctx_idx"])
    assert _build("delta")(_state(t)[0]).loss.item() == pytest.approx(0.0, abs=1e-6)
    assert _build("delta")(_state(_tensors(7))[0]).loss.item() > 0.1


def test_ld_target_is_zero_for_targets_constant_in_time():
    t = _tensors(8)
    t["h"] = t["h"].reshape(4, *GRID, D)[:, :1].expand(4, *GRID, D).reshape(4, N, D).clone()  # h_t = h_0
    ld = _build("ld")
    head = copy.deepcopy(ld.head).double()
    want = _pair_mean(t, lambda z0, z1, b, n0, n1: head(z0).abs().mean())  # |g(Z_t) - 0|
    assert ld(_state(t)[0]).loss.item() == pytest.approx(want, rel=1e-5)


def test_fld_ignores_the_appearance_channels():
    t = _tensors(9)
    fld = _build("fld")
    z = torch.randn(2, 5, D)
    moved = z.clone()
    moved[..., : D // 2] += torch.randn(2, 5, D // 2)
    torch.testing.assert_close(fld.predict(moved), fld.predict(z), rtol=0, atol=0)
    assert fld.predict(z).shape == (2, 5, D)  # full-width output
    state, leaves = _state(t)
    loss = fld(state).loss
    loss.backward()
    assert all(z.grad[..., : D // 2].abs().max() == 0 for z in leaves["z"])
    for fam in t["fams"]:
        fam["z"][..., : D // 2] = torch.randn_like(fam["z"][..., : D // 2])
    assert torch.equal(fld(_state(t)[0]).loss, loss.detach())
    ld = _build("ld")  # the unfactorized head does read them
    assert not torch.allclose(ld.predict(moved), ld.predict(z))


def test_ld_trains_its_head_and_the_encoder_also_with_hw():
    """Through the real training step on tiny models: LD's head gets a gradient, and LD's share of the encoder
    gradient is the same whether HW is on or not (the published code loses it exactly when HW is on)."""
    torch.manual_seed(0)
    cfg = tiny_cfg("unused", "objectives=[{name: hw}, {name: ld, options: {hidden: 32}}]")
    encoder, predictor = build_models(cfg)
    target = copy.deepcopy(encoder)
    for p in list(encoder.parameters()) + list(predictor.parameters()):
        p.data.add_(0.01 * torch.randn_like(p))
    aux = plan_objectives(cfg, objective_dims(cfg))
    assert [(p.key, p.weight) for p in aux] == [("hw", 0.3), ("ld", 1.0)]
    ld = aux[1].module
    video = torch.randn(4, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = build_mask_generator(cfg)(0, 4)
    grid = grid_of(video, 2, 16)

    def grads(planned):
        for m in (encoder, predictor, target, ld):
            m.zero_grad(set_to_none=True)
        loss, _, _, metrics = forward_loss(encoder, target, predictor, video, masks, grid, aux=planned)
        loss.backward()
        assert all(p.grad is None for p in target.parameters())  # the target encoder is not in the graph
        return {n: p.grad.clone() for n, p in encoder.named_parameters()}, [p.grad for p in ld.parameters()], metrics

    both, head, metrics = grads(aux)
    assert set(metrics) == {"hw", "hw.w_max", "ld"} and metrics["ld"] > 0
    assert all(g is not None and g.abs().max() > 0 for g in head)
    hw_only, _, _ = grads(aux[:1])
    ld_only, _, _ = grads(aux[1:])
    plain, _, _ = grads([])
    moved = sum((both[n] - hw_only[n]).abs().sum() for n in both)
    assert moved > 1e-3 * sum(g.abs().sum() for g in both.values())
    for n in both:  # gradients add: LD's part does not depend on HW being on
        torch.testing.assert_close(both[n] - hw_only[n], ld_only[n] - plain[n], rtol=1e-3, atol=1e-6, msg=n)


def test_a_run_trains_with_every_objective_at_its_default_weight(tmp_path):
    """All eight by name in the config: planned, heads sharded and checkpointed by the trainer, each logged, and
    the logged loss is the JEPA loss plus the default-weighted terms."""
    objectives = ", ".join(f"{{name: {n}}}" for n in NAMES)
    result = train(tiny_cfg(tmp_path / "run", "optim.total_steps=2", f"objectives=[{objectives}]"))
    last = json.loads((Path(result["run_dir"]) / "log.jsonl").read_text().splitlines()[-1])
    weights = {n: resolve(n).default_weight for n in NAMES}
    assert weights == {n: w for n, w in zip(NAMES, (0.3, 0.5, 1.0, 1.0, 0.05, 0.01, 1.0, 1.0))}
    assert all(math.isfinite(last[f"aux.{n}"]) and last[f"aux.{n}"] > 0 for n in NAMES)
    want = last["jepa_loss"] + sum(w * last[f"aux.{n}"] for n, w in weights.items())
    assert last["loss"] == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------------------------------------
# FWM


def test_fwm_static_is_zero_iff_the_appearance_channels_are_constant_in_time():
    z = torch.randn(2, *GRID, D)
    z[..., : D // 2] = z[:, :1, ..., : D // 2]  # appearance constant in time, dynamics varying
    h = torch.randn(2, N, D)
    obj = _build("fwm_static")
    assert obj(_one_family_state(z.reshape(2, N, D), h)).loss.item() == 0.0
    z[1, 2, 1, 0, 0] += 0.5  # one appearance entry changes at one time step
    # sample 1 has 12 pairs; the change enters two of them, |0.5| in one of 4 channels; sample 0 stays 0
    assert obj(_one_family_state(z.reshape(2, N, D), h)).loss.item() == pytest.approx((0 + 2 * (0.5 / 4) / 12) / 2)


def test_fwm_orth_zero_for_independent_or_constant_blocks_and_offset_invariant():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 20000, D, generator=g)
    obj = _build("fwm_orth")

    def orth(z: torch.Tensor) -> float:
        return obj(_one_family_state(z, torch.zeros_like(z), grid=(1, 1, z.shape[1]))).loss.item()

    assert orth(x) < 3e-4  # independent blocks: E[C_ij^2] = 1 / N = 5e-5
    dependent = x.clone()
    dependent[..., D // 2 :] = x[..., : D // 2] + 0.1 * dependent[..., D // 2 :]
    assert orth(dependent) > 0.2  # C = I: mean of squares 1 / (D / 2)
    const = x[:, :1000].clone()
    const[..., : D // 2] = torch.tensor([1.5, -0.25, 3.0, 0.0])
    assert orth(const) == 0.0
    const[..., : D // 2] = torch.tensor([0.3, -0.7, 1.1, 2.9])  # not dyadic: zero up to rounding
    assert orth(const) < 1e-12
    offsets = torch.randn(D, generator=g) * 5
    small = x[:, :500]
    assert orth(small + offsets) == pytest.approx(orth(small), rel=1e-4)
    cross, n = cross_covariance(torch.randn(3, 7, D), torch.zeros(3, 7, dtype=torch.bool), D // 2)
    assert n == 0 and torch.isfinite(cross).all()  # no valid token: no NaN


# ------------------------------------------------------------------------------------------------------------
# AC / FAC


def test_tubelet_means_by_hand_and_zero_action_for_a_frame_repeated_clip():
    # video[c, f, y, x] = (c + 1) * f + (2 y + x): tubelet t covers frames 2t, 2t + 1 and a 2x2 patch
    f = torch.arange(4.0).view(1, 4, 1, 1)
    pix = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    video = torch.stack([(c + 1) * f + pix for c in range(3)], dim=1)  # [1, 3, 4, 2, 2]
    m = tubelet_means(video, (2, 1, 1), TUB, PATCH)  # [1, 2, 1, 1, 3]
    want = torch.tensor([[(c + 1) * (2 * t + 0.5) + 1.5 for c in range(3)] for t in range(2)])
    torch.testing.assert_close(m[0, :, 0, 0], want)
    z, h = torch.randn(1, 2, D), torch.zeros(1, 2, D)
    a = action_target(_one_family_state(z, h, grid=(2, 1, 1), video=video))
    torch.testing.assert_close(a[0, 0, 0, 0], torch.tensor([2.0, 4.0, 6.0]))
    frame = torch.randn(2, 3, 1, GRID[1] * PATCH, GRID[2] * PATCH)
    still = frame.expand(2, 3, GRID[0] * TUB, GRID[1] * PATCH, GRID[2] * PATCH)
    state = _one_family_state(torch.randn(2, N, D), torch.randn(2, N, D), video=still)
    assert torch.equal(action_target(state), torch.zeros(2, GRID[0] - 1, GRID[1], GRID[2], 3))
    ac = _build("ac")
    head = copy.deepcopy(ac.head)
    zg = state.scattered(0)[0][:, :-1]
    assert ac(state).loss.item() == pytest.approx(head(zg).abs().mean().item(), rel=1e-6)  # |a(Z_t) - 0|


def test_fac_ignores_the_appearance_channels():
    t = _tensors(10)
    fac = _build("fac")
    loss = fac(_state(t)[0]).loss
    for fam in t["fams"]:
        fam["z"][..., : D // 2] = torch.randn_like(fam["z"][..., : D // 2])
    assert torch.equal(fac(_state(t)[0]).loss, loss)
    assert fac.predict(torch.randn(3, D)).shape == (3, 3)


# ------------------------------------------------------------------------------------------------------------
# 2 processes = 1 process


def _run_all(t: dict, lo: int, hi: int | None) -> dict:
    out = {}
    for name in NAMES:
        obj = _build(name)
        state, leaves = _state(t, lo, hi)
        loss = obj(state).loss
        loss.backward()
        out[name] = dict(
            loss=loss.detach(),
            z=[torch.zeros_like(z) if z.grad is None else z.grad for z in leaves["z"]],
            pred=[torch.zeros_like(p) if p.grad is None else p.grad for p in leaves["pred"]],
            head={n: p.grad for n, p in obj.named_parameters()},
        )
    return out


def _dist_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist_env(rank, world, port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    b = 4 // world
    torch.save(_run_all(_tensors(11), rank * b, (rank + 1) * b), os.path.join(out_dir, f"r{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_give_the_one_process_values(tmp_path):
    """Halves of one global batch on 2 gloo processes: the losses averaged over processes, the head gradients
    averaged (as the data-parallel reduction does) and each process's input gradients / 2 equal 1 process's."""
    mp.spawn(_dist_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    one = _run_all(_tensors(11), 0, None)
    ranks = [torch.load(tmp_path / f"r{r}.pt") for r in range(2)]
    for name in NAMES:
        want = one[name]
        got = [r[name] for r in ranks]
        assert ((got[0]["loss"] + got[1]["loss"]) / 2).item() == pytest.approx(want["loss"].item(), rel=1e-5), name
        for key in ("z", "pred"):
            for f in range(2):
                local = torch.cat([g[key][f] for g in got]) / 2  # [B, K, D]
                torch.testing.assert_close(local, want[key][f], rtol=1e-4, atol=1e-7, msg=f"{name} {key}")
        for pname, grad in want["head"].items():
            mean = (got[0]["head"][pname] + got[1]["head"][pname]) / 2
            torch.testing.assert_close(mean, grad, rtol=1e-4, atol=1e-7, msg=f"{name} {pname}")
