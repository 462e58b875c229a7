"""SIGReg (evals/objectives/sigreg.py) against independent oracles: a loop over knots with complex characteristic
functions, a fine numerical integral, the closed-form expectation under N(0, 1), collapsed batches, the convex mix
of LeJEPA, and 2 gloo processes (same directions, the statistic of the whole batch from its halves).

Shapes: N samples, D width, M slices, K knots.
"""

from __future__ import annotations

import cmath
import math
import os
import socket
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from objective_inputs import build_state, make_inputs
from vjepa.evals.objectives.sigreg import SIGReg, SIGRegOptions, epps_pulley_knots, slice_directions, sliced_epps_pulley

from vjepa.objectives.registry import ObjectiveLookupError, Planned, parse_options
from vjepa.train.step import add_objectives

pytestmark = pytest.mark.usefixtures("single_thread")


def stat(x: torch.Tensor, slices: int = 256, seed: int = 0, valid: torch.Tensor | None = None) -> torch.Tensor:
    t, w = epps_pulley_knots(17, 3.0)
    return sliced_epps_pulley(x, valid, slice_directions(x.shape[-1], slices, seed, 0), t, w)  # [M]


def loop_statistic(y: list[float], knots: int = 17, t_max: float = 3.0) -> float:
    """N * 2 * trapezoid on [0, t_max] of |phi_N(t) - exp(-t^2/2)|^2 exp(-t^2/2), phi_N with complex exponentials."""
    n, dt, total = len(y), t_max / (knots - 1), 0.0
    for k in range(knots):
        t = k * dt
        phi = sum(cmath.exp(1j * t * v) for v in y) / n
        value = abs(phi - math.exp(-t * t / 2)) ** 2 * math.exp(-t * t / 2)
        total += value * (dt / 2 if k in (0, knots - 1) else dt)
    return n * 2 * total


def test_statistic_matches_a_loop_over_knots_per_slice():
    g = torch.Generator().manual_seed(0)
    x = 1.3 * torch.randn(40, 5, generator=g) + 0.2
    a = slice_directions(5, 6, seed=3, step=7)
    t, w = epps_pulley_knots(17, 3.0)
    got = sliced_epps_pulley(x, None, a, t, w)  # [6]
    for m in range(6):
        y = (x.double() @ a[:, m].double()).tolist()
        assert got[m].item() == pytest.approx(loop_statistic(y), rel=1e-5)


def test_trapezoid_against_a_fine_integral_for_a_two_point_distribution():
    """Samples +-a in equal numbers: phi_N(t) = cos(a t) exactly. The 17-knot rule is within 0.5% of a 200001-knot
    integral here (measured 0.04%), and equals the loop rule to float precision."""
    a, n = 0.7, 64
    x = torch.tensor([a, -a] * (n // 2)).unsqueeze(-1)  # [N, 1]
    t, w = epps_pulley_knots(17, 3.0)
    got = float(sliced_epps_pulley(x, None, torch.ones(1, 1), t, w))
    tt = torch.linspace(0, 3, 200001, dtype=torch.float64)
    fine = n * 2 * torch.trapezoid((torch.cos(a * tt) - torch.exp(-(tt**2) / 2)) ** 2 * torch.exp(-(tt**2) / 2), tt)
    assert got == pytest.approx(float(fine), rel=5e-3)
    assert got == pytest.approx(loop_statistic([a, -a] * (n // 2)), rel=1e-5)


def test_knot_weights_are_the_doubled_trapezoid_times_the_window():
    t, w = epps_pulley_knots(5, 2.0)
    torch.testing.assert_close(t, torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0]))
    want = [2 * 0.5 * (0.5 if k in (0, 4) else 1.0) * math.exp(-((0.5 * k) ** 2) / 2) for k in range(5)]
    torch.testing.assert_close(w, torch.tensor(want))


@pytest.mark.parametrize("n", [256, 4096])
def test_about_one_per_slice_for_standard_normal_samples(n):
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(n))
    mean = stat(x).mean().item()
    assert 0.5 <= mean <= 1.6, mean


def test_mean_under_the_normal_is_the_closed_form_at_any_n():
    """E[N |phi_N(t) - phi(t)|^2] = 1 - exp(-t^2) for N(0, 1) samples, so E[statistic] = sum_k w_k (1 - e^(-t_k^2))
    (1.0525 with 17 knots on [0, 3]) whatever N: checked at N = 8 and 128 over 100 draws of 8 slices."""
    t, w = epps_pulley_knots(17, 3.0)
    want = float((w * (1 - torch.exp(-(t**2)))).sum())
    assert want == pytest.approx(1.0525, abs=1e-3)
    g = torch.Generator().manual_seed(0)
    for n in (8, 128):
        draws = torch.stack([stat(torch.randn(n, 8, generator=g), slices=8, seed=i) for i in range(100)])
        assert draws.mean().item() == pytest.approx(want, rel=0.1), n


def test_grows_with_n_for_a_collapsed_batch():
    g = torch.Generator().manual_seed(1)
    point = torch.randn(1, 16, generator=g)
    small, large = stat(point.expand(64, 16)), stat(point.expand(512, 16))
    torch.testing.assert_close(large, 8 * small, rtol=1e-5, atol=0)  # all tokens equal: exactly linear in N
    assert small.mean() > 5
    u = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    rank1 = lambda n: torch.randn(n, 1, generator=g) * u  # noqa: E731  [n, 16] on one line
    s256, s4096 = stat(rank1(256)).mean(), stat(rank1(4096)).mean()
    assert s256 > 5 and s4096 > 8 * s256, (s256, s4096)


def test_padded_entries_are_not_samples():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, 4, generator=g)  # [B, K, D]
    valid = torch.rand(3, 7, generator=g) > 0.4
    torch.testing.assert_close(stat(x, 16, valid=valid), stat(x[valid], 16), rtol=1e-6, atol=1e-6)
    assert torch.equal(stat(x[:0], 16), torch.zeros(16))  # no sample: 0


def test_directions_are_unit_columns_from_seed_and_step():
    a = slice_directions(12, 32, seed=0, step=5)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(32))
    assert torch.equal(a, slice_directions(12, 32, seed=0, step=5))
    assert not torch.equal(a, slice_directions(12, 32, seed=0, step=6))
    assert not torch.equal(a, slice_directions(12, 32, seed=1, step=5))
    obj = SIGReg(SIGRegOptions(slices=32), None)
    assert torch.equal(obj.directions(5, 12, torch.device("cpu")), a)


def test_objective_is_the_mean_over_slices_and_families_and_convex_mixes_the_jepa_loss():
    state, _ = build_state(make_inputs(0))
    obj = SIGReg(SIGRegOptions(slices=16), None)
    out = obj(state)
    a = slice_directions(state.dim, 16, 0, state.step)
    want = torch.stack([stat_with(f.z, f.ctx_valid, a).mean() for f in state.families]).mean()
    torch.testing.assert_close(out.loss, want)
    plain = torch.tensor(2.0)
    added, _ = add_objectives(plain, [Planned("sigreg", 0.05, 1.0, 1.0, obj)], state)
    torch.testing.assert_close(added, 2.0 + 0.05 * want)
    convex = SIGReg(SIGRegOptions(slices=16, convex=True), None)
    mixed, _ = add_objectives(plain, [Planned("sigreg", 0.05, 1.0, 1.0, convex)], state)
    torch.testing.assert_close(mixed, 0.95 * 2.0 + 0.05 * want)
    with pytest.raises(ValueError, match=r"sigreg: convex mixing needs a weight <= 1, got 1.5"):
        convex.jepa_scale(1.5)
    with pytest.raises(ObjectiveLookupError, match=r"objectives.0.options: knots=1 must be >= 2"):
        parse_options(SIGReg, {"knots": 1}, "objectives.0.options")


def stat_with(z: torch.Tensor, valid: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor:
    t, w = epps_pulley_knots(17, 3.0)
    return sliced_epps_pulley(z, valid, a, t, w)


# --- 2 processes ---------------------------------------------------------------------------------------------------


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, 8, generator=g) * 0.8 + 0.1  # [B, K, D]
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[3, 2:] = False  # the second half has fewer valid tokens than the first
    return x, valid


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, valid = _data()
        rows = slice(2 * rank, 2 * rank + 2)
        local = x[rows].clone().requires_grad_(True)
        obj = SIGReg(SIGRegOptions(slices=32), None)
        a = obj.directions(11, 8, torch.device("cpu"))
        s = stat_with(local, valid[rows], a)
        s.mean().backward()
        torch.save({"a": a, "stat": s.detach(), "grad": local.grad}, os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_draw_the_same_directions_and_give_the_whole_batch_statistic():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, port, tmp), nprocs=2, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f"r{r}.pt")) for r in range(2))
    assert torch.equal(r0["a"], r1["a"])
    x, valid = _data()
    whole = x.clone().requires_grad_(True)
    s = stat_with(whole, valid, SIGReg(SIGRegOptions(slices=32), None).directions(11, 8, torch.device("cpu")))
    s.mean().backward()
    torch.testing.assert_close(r0["stat"], s.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r1["stat"], s.detach(), rtol=1e-5, atol=1e-6)
    # Each process holds the global value, so its backward sums the gradient of both: the trainer's average over
    # processes (FSDP's reduce-scatter) then gives the one-process gradient.
    torch.testing.assert_close(torch.cat([r0["grad"], r1["grad"]]) / 2, whole.grad, rtol=1e-5, atol=1e-7)
    assert torch.all(r1["grad"][1, 2:] == 0)  # padded tokens get no gradient
