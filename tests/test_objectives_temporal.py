"""The temporal objectives (evals/objectives/temporal.py, straighten.py) against hand values and loop references.

Hand-built step states: grid (4, 2, 2), D 8, B 3, two mask families whose context rows have different kept counts
(padded as the collator pads: the row's last index repeated, marked invalid). Row 0 and 1 have one fully visible
column; the last row has no visible token at time 1 (no fully visible column, no three consecutive usable times).

Shapes: B batch, N tokens (T' H' W'), Kc context slots, D width.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import dist_env, free_port, tiny_cfg
from vjepa.evals.objectives.straighten import Straighten, StraightenOptions
from vjepa.evals.objectives.temporal import (
    LTC,
    Kinematic,
    KinematicOptions,
    LTCOptions,
    Spectral,
    VelGate,
    anneal_factor,
    velocity_gate,
)

from vjepa.objectives.base import FamilyState, StepState
from vjepa.objectives.registry import ObjectiveLookupError, Planned, catalogue, parse_options

GRID = (4, 2, 2)
T, S = GRID[0], GRID[1] * GRID[2]  # time steps, spatial positions
N, D = T * S, 8


@dataclass
class Raw:
    """The tensors of a hand-built step, before any gradient is attached."""

    h: torch.Tensor  # [B, N, D]
    online: torch.Tensor  # [B, N, D]
    fams: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (ctx_idx [B, Kc], ctx_valid [B, Kc], z [B, Kc, D])


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Index rows of different lengths -> idx [B, K], valid [B, K]: padded slots repeat the row's last index."""
    k = max(len(r) for r in rows)
    idx = torch.stack([torch.cat([r, r[-1:].expand(k - len(r))]) for r in rows])  # [B, K]
    valid = torch.stack([torch.arange(k) < len(r) for r in rows])  # [B, K]
    return idx, valid


def make_raw(b: int = 3, seed: int = 0, families: int = 2, grid=GRID) -> Raw:
    g = torch.Generator().manual_seed(seed)
    t, s = grid[0], grid[1] * grid[2]
    h = torch.randn(b, t * s, D, generator=g)
    online = torch.randn(b, t * s, D, generator=g)
    fams = []
    for f in range(families):
        vis = torch.rand(b, t, s, generator=g) < 0.5  # [B, T', H'W']
        for r in range(b - 1):
            vis[r, :, (r + f) % s] = True  # one fully visible column
        vis[-1, 1 % t] = False  # the last row: nothing visible at time 1
        rows = [vis[r].flatten().nonzero().squeeze(1) for r in range(b)]
        idx, valid = pad_rows(rows)
        fams.append((idx, valid, torch.randn(*idx.shape, D, generator=g)))
    return Raw(h, online, fams)


def make_state(
    raw: Raw, lo: int = 0, hi: int | None = None, dtype=torch.float32, step: int = 0, total: int = 1, grid=GRID
):
    """(StepState of rows lo:hi, its gradient leaves: [z of each family], online)."""
    rows = slice(lo, hi)
    zs = [z[rows].to(dtype).clone().requires_grad_(True) for _, _, z in raw.fams]
    online = raw.online[rows].to(dtype).clone().requires_grad_(True)
    fams = []
    for (idx, valid, _), z in zip(raw.fams, zs):
        tgt = torch.arange(grid[0] * grid[1] * grid[2]).expand(idx[rows].shape[0], -1)  # [B, N]
        target = raw.h[rows].float()
        fams.append(FamilyState(idx[rows], tgt, valid[rows], None, z, torch.zeros_like(target), target))
    state = StepState(
        video=torch.zeros(1),
        grid=grid,
        h=raw.h[rows].to(dtype),
        families=fams,
        step=step,
        total_steps=total,
        online_full=lambda: online,
    )
    return state, zs, online


def grid_z(raw: Raw, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Loop-built (Z [B, T', H'W', D], V [B, T', H'W']) of family f from the raw slots (independent of scattered)."""
    idx, valid, z = raw.fams[f]
    b = idx.shape[0]
    zz, vv = np.zeros((b, N, D)), np.zeros((b, N), dtype=bool)
    for r in range(b):
        for k in range(idx.shape[1]):
            if valid[r, k]:
                zz[r, idx[r, k]] = z[r, k].double().numpy()
                vv[r, idx[r, k]] = True
    return zz.reshape(b, T, S, D), vv.reshape(b, T, S)


ALL = {
    "kinematic": lambda: Kinematic(),
    "kinematic_huber_split": lambda: Kinematic(KinematicOptions(mode="huber", split=True)),
    "kinematic_accel_anneal": lambda: Kinematic(KinematicOptions(mode="acceleration", anneal=True)),
    "spectral": lambda: Spectral(),
    "ltc": lambda: LTC(),
    "ltc_pairs": lambda: LTC(LTCOptions(require_next_visible=True)),
    "velgate": lambda: VelGate(),
    "straighten": lambda: Straighten(),
    "straighten_online": lambda: Straighten(StraightenOptions(features="online")),
}
MASKED = ("spectral", "ltc", "ltc_pairs", "velgate", "straighten")  # the ones reading the context tokens


def loss_of(obj, state) -> torch.Tensor:
    return obj(state).loss


# --- catalogue and options ----------------------------------------------------------------------------------


def test_catalogue_names_and_default_weights():
    cat = catalogue(["vjepa.evals.objectives"])
    want = {"kinematic": 0.1, "spectral": 1.0, "ltc": 0.5, "velgate": 1.0, "straighten": 0.1}
    assert {n: cat[n].default_weight for n in want} == want
    assert all(cat[n].source and cat[n].summary for n in want)


def test_bad_options_name_the_key():
    for cls, opts in ((Kinematic, {"mode": "l2"}), (Kinematic, {"ratio": 0.0}), (Straighten, {"features": "h"})):
        with pytest.raises(ObjectiveLookupError, match=r"objectives\.3\.options"):
            parse_options(cls, opts, "objectives.3.options")
    with pytest.raises(ValueError, match="straighten.*3 time steps"):
        Straighten(StraightenOptions(), None)(make_state(make_raw(grid=(2, 2, 2)), grid=(2, 2, 2))[0])


# --- kinematic ----------------------------------------------------------------------------------------------


def online_state(x: torch.Tensor, grid=GRID, step: int = 0, total: int = 1) -> tuple[StepState, torch.Tensor]:
    """A state whose online_full is x [B, N, D] (a leaf with gradient)."""
    raw = make_raw(b=x.shape[0], grid=grid)
    raw.online = x
    state, _, online = make_state(raw, grid=grid, step=step, total=total)
    return state, online


def test_kinematic_acceleration_zero_for_linear_l1_zero_for_constant():
    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(2, 1, S, D, generator=g), torch.randn(2, 1, S, D, generator=g)
    line = (a + torch.arange(T).view(1, T, 1, 1) * v).reshape(2, N, D)  # exactly linear in t
    const = a.expand(2, T, S, D).reshape(2, N, D)
    raw_opts = dict(normalise=False)
    accel = Kinematic(KinematicOptions(mode="acceleration", **raw_opts))
    assert loss_of(accel, online_state(line)[0]).item() < 1e-6
    assert math.isclose(
        loss_of(Kinematic(KinematicOptions(**raw_opts)), online_state(line)[0]).item(),
        v.abs().mean().item(),
        rel_tol=1e-5,
    )  # l1 of a line: mean |v|
    for normalise in (False, True):
        assert loss_of(Kinematic(KinematicOptions(normalise=normalise)), online_state(const)[0]).item() == 0.0
    # T' = 2: acceleration falls back to l1
    two = torch.randn(2, 2 * S, D, generator=g)
    st = online_state(two, grid=(2, 2, 2))[0]
    assert loss_of(accel, st).item() == pytest.approx(loss_of(Kinematic(KinematicOptions(**raw_opts)), st).item())


def test_kinematic_huber_hand_value():
    # every channel and position follows 0, 0.05, 0.35, 0.35 in time: d = 0.05, 0.3, 0
    # Huber(delta 0.1): 0.5 * 0.05^2 = 0.00125; 0.1 * (0.3 - 0.05) = 0.025; 0  -> mean 0.00875
    x = torch.tensor([0.0, 0.05, 0.35, 0.35]).view(1, T, 1, 1).expand(2, T, S, D).reshape(2, N, D)
    got = loss_of(Kinematic(KinematicOptions(mode="huber", normalise=False)), online_state(x)[0])
    assert got.item() == pytest.approx((0.00125 + 0.025 + 0.0) / 3, rel=1e-5)


def test_kinematic_split_reads_only_the_first_channels():
    x = torch.randn(2, N, D, generator=torch.Generator().manual_seed(1))
    split = Kinematic(KinematicOptions(split=True, normalise=False))  # ratio 0.5: channels 0-3
    state, online = online_state(x)
    base = loss_of(split, state)
    base.backward()
    assert online.grad[..., D // 2 :].abs().max() == 0 and online.grad[..., : D // 2].abs().max() > 0
    y = x.clone()
    y[..., D // 2 :] += torch.randn(2, N, D // 2)
    assert loss_of(split, online_state(y)[0]).item() == base.item()
    want = (x.reshape(2, *GRID, D)[..., : D // 2].diff(dim=1)).abs().mean()
    assert base.item() == pytest.approx(want.item(), rel=1e-6)
    # with the layer norm (default): over the full width first, then the first half of the channels
    ln = F.layer_norm(x, (D,)).reshape(2, *GRID, D)[..., : D // 2]
    got = loss_of(Kinematic(KinematicOptions(split=True)), online_state(x)[0])
    assert got.item() == pytest.approx(ln.diff(dim=1).abs().mean().item(), rel=1e-6)


def test_kinematic_anneal_factor_start_half_end():
    assert [anneal_factor(s, 10) for s in (0, 5, 10, 12)] == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-12)
    x = torch.randn(2, N, D, generator=torch.Generator().manual_seed(2))
    plain = loss_of(Kinematic(), online_state(x)[0]).item()
    annealed = Kinematic(KinematicOptions(anneal=True))
    for step, factor in ((0, 1.0), (50, 0.5), (100, 0.0)):
        out = annealed(online_state(x, step=step, total=100)[0])
        assert out.loss.item() == pytest.approx(factor * plain, abs=1e-7)
        assert out.metrics["factor"].item() == pytest.approx(factor, abs=1e-7)


@pytest.mark.parametrize(
    "objective",
    [Kinematic(), Straighten(StraightenOptions(features="online")), Straighten()],
    ids=["kinematic", "straighten_online", "straighten_context"],
)
def test_gradient_reaches_the_encoder_through_the_real_step(objective):
    from vjepa.data.loader import build_mask_generator
    from vjepa.models.build import build_models
    from vjepa.train.step import forward_loss, grid_of

    torch.manual_seed(0)
    cfg = tiny_cfg("unused")
    encoder, predictor = build_models(cfg)
    target = copy.deepcopy(encoder)
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = build_mask_generator(cfg)(0, 2)
    grid = grid_of(video, 2, 16)
    aux = [Planned(objective.name, 1.0, 1.0, 1.0, objective)]
    grads = []
    for planned in ((), aux):
        for p in [*encoder.parameters(), *predictor.parameters()]:
            p.grad = None
        loss, _, _, metrics = forward_loss(encoder, target, predictor, video, masks, grid, aux=planned)
        loss.backward()
        grads.append(([p.grad.clone() for p in encoder.parameters()], [p.grad.clone() for p in predictor.parameters()]))
    (enc_plain, pred_plain), (enc_aux, pred_aux) = grads
    assert max((a - b).abs().max().item() for a, b in zip(enc_aux, enc_plain)) > 1e-6  # the term reaches the encoder
    for a, b in zip(pred_aux, pred_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)  # and not the predictor
    assert all(p.grad is None for p in target.parameters())
    if isinstance(objective, Kinematic):  # against the term applied by hand to the online encoder's features
        with torch.no_grad():
            x = encoder(video).float()
            x = F.layer_norm(x, (x.shape[-1],)).reshape(2, *grid, -1)
        assert metrics["kinematic"].item() == pytest.approx(x.diff(dim=1).abs().mean().item(), rel=1e-5)


# --- spectral -----------------------------------------------------------------------------------------------


def spectral_loop(raw: Raw) -> float:
    """numpy rfft per fully visible column and channel; per-sample mean over columns; mean over samples, families."""
    h = raw.h.double().numpy().reshape(-1, T, S, D)
    fams = []
    for f in range(len(raw.fams)):
        z, v = grid_z(raw, f)
        per_sample = []
        for r in range(z.shape[0]):
            cols = [s for s in range(S) if v[r, :, s].all()]
            errs = []
            for s in cols:
                for d in range(D):
                    diff = np.fft.rfft(z[r, :, s, d]) - np.fft.rfft(h[r, :, s, d])
                    w = np.linspace(0.1, 1.0, len(diff))
                    errs.append(np.mean(np.abs(w * diff)))
            per_sample.append(np.mean(errs) if errs else 0.0)
        fams.append(np.mean(per_sample))
    return float(np.mean(fams))


def visible_equal_to_h(raw: Raw) -> Raw:
    """A copy of raw whose context tokens equal h at their positions."""
    out = copy.deepcopy(raw)
    out.fams = [(idx, valid, torch.gather(raw.h, 1, idx.unsqueeze(-1).expand(-1, -1, D))) for idx, valid, _ in raw.fams]
    return out


def test_spectral_matches_loop_reference_and_ignores_partial_columns():
    raw = make_raw()
    got = loss_of(Spectral(), make_state(raw)[0])
    assert got.item() == pytest.approx(spectral_loop(raw), rel=1e-5)
    assert got.item() > 0
    # tokens of columns that are not fully visible, and h there, change nothing
    z, v = grid_z(raw, 0)
    idx, valid, zz = raw.fams[0]
    partial = torch.tensor([[not v[r, :, int(n) % S].all() for n in idx[r]] for r in range(idx.shape[0])])
    assert (partial & valid).any()
    moved = copy.deepcopy(raw)
    moved.fams[0] = (idx, valid, zz + 5.0 * partial.unsqueeze(-1))
    assert loss_of(Spectral(), make_state(moved)[0]).item() == pytest.approx(got.item(), rel=1e-6)
    full_cols = torch.tensor(v.all(axis=1))  # [B, S]
    h_moved = copy.deepcopy(raw)
    mask = ~(torch.tensor(grid_z(raw, 1)[1].all(axis=1)) | full_cols)  # columns partial in both families
    h_moved.h = raw.h + 3.0 * mask.unsqueeze(1).expand(-1, T, -1).reshape(-1, N, 1)
    assert mask.any()
    assert loss_of(Spectral(), make_state(h_moved)[0]).item() == pytest.approx(got.item(), rel=1e-6)


def test_spectral_zero_iff_z_equals_h_on_full_columns():
    same = visible_equal_to_h(make_raw())
    assert loss_of(Spectral(), make_state(same)[0]).item() < 1e-6
    idx, valid, z = same.fams[1]
    _, v = grid_z(same, 1)
    k = next(k for k in range(idx.shape[1]) if v[0, :, int(idx[0, k]) % S].all())  # a slot of a full column
    z = z.clone()
    z[0, k, 3] += 0.5
    same.fams[1] = (idx, valid, z)
    assert loss_of(Spectral(), make_state(same)[0]).item() > 1e-3


# --- LTC ----------------------------------------------------------------------------------------------------


def ltc_loop(raw: Raw, margin: float = 0.5, pairs: bool = False) -> float:
    h = raw.h.reshape(-1, T, S, D)
    fams = []
    for f in range(len(raw.fams)):
        z, v = grid_z(raw, f)
        z = torch.from_numpy(z).float()
        per_sample = []
        for r in range(z.shape[0]):
            terms = []
            for t in range(T - 1):
                for s in range(S):
                    if v[r, t, s] and (v[r, t + 1, s] or not pairs):
                        pos = F.cosine_similarity(z[r, t, s], h[r, t, s], dim=0)
                        neg = F.cosine_similarity(z[r, t, s], h[r, t + 1, s], dim=0)
                        terms.append(max(0.0, margin - pos.item() + neg.item()))
            per_sample.append(np.mean(terms) if terms else 0.0)
        fams.append(np.mean(per_sample))
    return float(np.mean(fams))


def test_ltc_loop_reference_and_hand_values():
    raw = make_raw()
    assert loss_of(LTC(), make_state(raw)[0]).item() == pytest.approx(ltc_loop(raw), rel=1e-5)
    pairs = LTC(LTCOptions(require_next_visible=True, margin=0.8))
    assert loss_of(pairs, make_state(raw)[0]).item() == pytest.approx(ltc_loop(raw, 0.8, True), rel=1e-5)
    # h_t = c e_t (orthogonal over time), Z_t = h_t: 0.5 - 1 + 0 < 0 -> 0
    scale = torch.rand(3, 1, S, 1, generator=torch.Generator().manual_seed(3)) + 0.5
    ortho = scale * torch.eye(D)[:T].view(1, T, 1, D)  # [B, T', H'W', D]
    raw.h = ortho.expand(3, T, S, D).reshape(3, N, D)
    same = visible_equal_to_h(raw)
    assert loss_of(LTC(), make_state(same)[0]).item() == 0.0
    # Z_t = h_{t+1}: 0.5 - 0 + 1 = 1.5 at every counted position
    nxt = copy.deepcopy(same)
    shifted = torch.roll(raw.h.reshape(3, T, S, D), -1, dims=1).reshape(3, N, D)
    nxt.fams = [(i, v, torch.gather(shifted, 1, i.unsqueeze(-1).expand(-1, -1, D))) for i, v, _ in raw.fams]
    # per family: rows 0, 1 have visible tokens at t < 3, the last row too (times 0, 2): all count 1.5
    assert loss_of(LTC(), make_state(nxt)[0]).item() == pytest.approx(1.5, rel=1e-6)


# --- VelGate ------------------------------------------------------------------------------------------------


def test_velocity_gate_lower_median():
    def gate_of(speeds_t: list[list[float]], grid):
        t, s = grid[0], grid[1] * grid[2]
        h = torch.zeros(1, t, s, D)
        for i, speeds in enumerate(speeds_t):
            h[0, i + 1] = h[0, i] + torch.tensor(speeds).unsqueeze(-1) * torch.eye(D)[i]
        return velocity_gate(h.reshape(1, *grid, D)).reshape(t - 1, s).tolist()

    # even count (4 positions): lower median 2 keeps {1, 2}; with ties (1, 2, 2, 5) it keeps the three <= 2
    assert gate_of([[3.0, 1.0, 4.0, 2.0], [1.0, 2.0, 2.0, 5.0]], (3, 2, 2)) == [
        [False, True, False, True],
        [True, True, True, False],
    ]
    # odd count (3 positions): the middle value 2
    assert gate_of([[3.0, 1.0, 2.0]], (2, 1, 3)) == [[False, True, True]]


def velgate_loop(raw: Raw) -> float:
    """FLD's threshold (torch.quantile 0.5, interpolating), loops over pairs."""
    h = raw.h.reshape(-1, T, S, D)
    fams = []
    for f in range(len(raw.fams)):
        z, v = grid_z(raw, f)
        per_sample = []
        for r in range(z.shape[0]):
            terms = []
            for t in range(T - 1):
                speed = (h[r, t + 1] - h[r, t]).norm(dim=-1)  # [S]
                q = torch.quantile(speed, 0.5)
                for s in range(S):
                    if v[r, t, s] and v[r, t + 1, s]:
                        dz = np.abs(z[r, t + 1, s] - z[r, t, s]).mean()
                        terms.append(dz if speed[s] <= q else 0.0)
            per_sample.append(np.mean(terms) if terms else 0.0)
        fams.append(np.mean(per_sample))
    return float(np.mean(fams))


def test_velgate_loop_reference_and_zero_for_time_constant_z():
    raw = make_raw()
    got = loss_of(VelGate(), make_state(raw)[0]).item()
    assert got == pytest.approx(velgate_loop(raw), rel=1e-5) and got > 0
    still = copy.deepcopy(raw)
    per_position = torch.randn(3, S, D, generator=torch.Generator().manual_seed(4))  # Z depends on space only
    still.fams = [
        (i, v, torch.gather(per_position, 1, (i % S).unsqueeze(-1).expand(-1, -1, D))) for i, v, _ in raw.fams
    ]
    assert loss_of(VelGate(), make_state(still)[0]).item() == 0.0


# --- straightening ------------------------------------------------------------------------------------------


def test_straighten_straight_line_zero_back_and_forth_two():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, 1, 1, D, generator=g), torch.randn(2, 1, 1, D, generator=g)
    spread = torch.randn(2, 1, S, D, generator=g)
    spread = spread - spread.mean(dim=2, keepdim=True)  # spatial offsets with mean 0
    for path, want in ((torch.arange(T).float(), 0.0), (torch.tensor([0.0, 1.0, 0.0, 1.0]), 2.0)):
        x = (a + path.view(1, T, 1, 1) * b + spread).reshape(2, N, D)
        st = online_state(x)[0]
        assert loss_of(Straighten(StraightenOptions(features="online")), st).item() == pytest.approx(want, abs=1e-5)
        # context: every visible token of a time carries the same feature a + path_t b
        raw = make_raw()
        frames = (a[:1] + path.view(1, T, 1, 1) * b[:1]).expand(3, T, S, D).reshape(3, N, D)
        raw.fams = [(i, v, torch.gather(frames, 1, i.unsqueeze(-1).expand(-1, -1, D))) for i, v, _ in raw.fams]
        # rows 0 and 1 hold the triples; the last row (time 1 empty) counts 0: mean over 3 samples
        assert loss_of(Straighten(), make_state(raw)[0]).item() == pytest.approx(want * 2 / 3, abs=1e-5)


def straighten_loop(raw: Raw) -> float:
    fams = []
    for f in range(len(raw.fams)):
        z, v = grid_z(raw, f)
        per_sample = []
        for r in range(z.shape[0]):
            frames = [z[r, t][v[r, t]].mean(axis=0) if v[r, t].any() else None for t in range(T)]
            terms = []
            for t in range(T - 2):
                if all(frames[u] is not None for u in (t, t + 1, t + 2)):
                    v0, v1 = frames[t + 1] - frames[t], frames[t + 2] - frames[t + 1]
                    terms.append(1 - v0 @ v1 / (np.linalg.norm(v0) * np.linalg.norm(v1)))
            per_sample.append(np.mean(terms) if terms else 0.0)
        fams.append(np.mean(per_sample))
    return float(np.mean(fams))


def test_straighten_context_loop_reference_and_gradient():
    raw = make_raw()
    state, zs, _ = make_state(raw)
    loss = loss_of(Straighten(), state)
    assert loss.item() == pytest.approx(straighten_loop(raw), rel=1e-5)
    loss.backward()
    for z in zs:
        assert z.grad[:2].abs().min(dim=-1).values.max() > 0  # rows 0 and 1 hold triples
        assert z.grad[-1].abs().max() == 0  # the last row has no three consecutive usable times


# --- conventions shared by all ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL))
def test_finite_fp32_for_bf16_inputs(name):
    state, _, _ = make_state(make_raw(), dtype=torch.bfloat16)
    loss = loss_of(ALL[name](), state)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("name", MASKED)
def test_padded_and_invisible_slots_count_nowhere(name):
    raw = make_raw()
    state, zs, _ = make_state(raw)
    base = loss_of(ALL[name](), state)
    base.backward()
    moved = copy.deepcopy(raw)
    for f, (idx, valid, z) in enumerate(raw.fams):
        assert (~valid).any()
        assert zs[f].grad[~valid].abs().max() == 0  # padded slots get no gradient
        _, v = grid_z(raw, f)
        hidden = torch.tensor([[int(np.flatnonzero(~v[r].reshape(-1))[0])] for r in range(idx.shape[0])])
        idx = torch.where(valid, idx, hidden)  # a padded slot now points at an invisible position
        moved.fams[f] = (idx, valid, torch.where(valid.unsqueeze(-1), z, z + 100.0))
    assert loss_of(ALL[name](), make_state(moved)[0]).item() == pytest.approx(base.item(), rel=1e-6)


def grads_of(leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]


def _halves_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist_env(rank, world, port)
    from vjepa.distributed import init_distributed, shutdown

    init_distributed("cpu")
    raw, half = make_raw(b=4, seed=7), 4 // world
    out = {}
    for name, build in ALL.items():
        state, zs, online = make_state(raw, rank * half, (rank + 1) * half, step=3, total=8)
        loss = loss_of(build(), state)
        loss.backward()
        mean = loss.detach().clone()
        torch.distributed.all_reduce(mean)
        grads = grads_of([*zs, online])
        out[name] = (mean.item() / world, [g / world for g in grads])  # d(mean over ranks)/d(own rows)
    torch.save(out, os.path.join(out_dir, f"halves_r{rank}.pt"))
    shutdown()


@pytest.mark.distributed
def test_two_processes_on_halves_match_one_process(tmp_path):
    mp.spawn(_halves_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "halves_r0.pt"), torch.load(tmp_path / "halves_r1.pt")
    raw = make_raw(b=4, seed=7)
    for name, build in ALL.items():
        state, zs, online = make_state(raw, step=3, total=8)
        loss = loss_of(build(), state)
        loss.backward()
        assert r0[name][0] == pytest.approx(loss.item(), rel=1e-5), name
        assert r1[name][0] == r0[name][0]
        grads = grads_of([*zs, online])
        for g, a, b in zip(grads, r0[name][1], r1[name][1]):
            torch.testing.assert_close(g, torch.cat([a, b]), rtol=1e-5, atol=1e-7, msg=name)
