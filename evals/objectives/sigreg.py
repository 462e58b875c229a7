"""SIGReg (LeJEPA): push the context tokens towards an isotropic standard Gaussian, one random slice at a time.

Balestriero and LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics", arXiv
2511.08544 (Sketched Isotropic Gaussian Regularisation); code github.com/rbalestr-lab/lejepa,
lejepa/univariate/epps_pulley.py (the statistic) and lejepa/multivariate/slicing.py (the slices).

Per mask family the valid context tokens x [N, D] of the whole global batch are the samples (raw, as LeJEPA applies
it to the raw embeddings: no standardisation). They are projected on M unit directions a_m (Gaussian columns,
normalised), and each slice y = x a_m is scored by the Epps-Pulley statistic against N(0, 1):

    EP(y) = N * integral_R |phi_N(t) - exp(-t^2 / 2)|^2 exp(-t^2 / 2) dt,   phi_N(t) = mean_n exp(i t y_n)

computed on t >= 0 and doubled (the integrand is even), by the trapezoid rule on [0, t_max] with `knots` knots
(3.0 and 17 as LeJEPA). For samples of N(0, 1) its expectation is sum_k w_k (1 - exp(-t_k^2)) ~ 1.05 at any N;
for a fixed other distribution it grows like N. The loss is the mean over slices, averaged over the families.

Processes: phi_N is the global empirical characteristic function: the sums of cos(t y) and sin(t y) over the valid
tokens and their count N are summed over processes (vjepa.distributed.all_reduce_sum_with_grad), so every process
holds the one-process value of the whole global batch. LeJEPA averages the per-process means and multiplies by the
local N times the world size (the same when every process holds as many samples; ours is exact with padded slots).
Directions: LeJEPA seeds a generator with a call counter max-reduced over processes (one host sync per call); here
the seed is derive_seed("sigreg", seed, global step), so every process draws the same directions with no
communication, and a resumed run draws what the uninterrupted one would. The draw is on the CPU (identical on every
device) and reused by the families of the step.

Weight: LeJEPA mixes lambda SIGReg + (1 - lambda) L_pred with lambda 0.02-0.05; `convex: true` does that (the JEPA
loss is scaled by 1 - weight); by default SIGReg is added to the plain loss (as the FLD study adds it, with weight
1.0). Default weight 0.05, LeJEPA's upper value. The statistic scales with the token count N (a V-JEPA batch has far
more context tokens than LeJEPA has images), so the weight may need lowering at large batch.

Cost: N * M * knots cos and sin (and their autograd buffers) per family: 32 clips x 600 tokens x 256 slices x 17
knots is 84M entries, about 1 GB in fp32 with the saved tensors; lower `slices` on small memory.

Shapes: B batch, Kc context tokens, N valid tokens of the global batch, D width, M slices, K knots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vjepa.distributed import all_reduce_sum_with_grad
from vjepa.objectives.base import AuxObjective, Dims, ObjectiveOutput, StepState
from vjepa.objectives.registry import register
from vjepa.seeding import make_generator


@dataclass(frozen=True, kw_only=True)
class SIGRegOptions:
    slices: int = 256  # M random directions (LeJEPA: 256-1024)
    seed: int = 0  # with the global step, seeds the directions
    knots: int = 17  # trapezoid knots on [0, t_max]
    t_max: float = 3.0
    convex: bool = False  # weight w: w SIGReg + (1 - w) L_pred (LeJEPA) instead of L_pred + w SIGReg

    def check(self) -> str:
        if self.slices < 1:
            return f"slices={self.slices} must be >= 1"
        if self.knots < 2:
            return f"knots={self.knots} must be >= 2"
        return "" if self.t_max > 0 else f"t_max={self.t_max} must be > 0"


def slice_directions(dim: int, slices: int, seed: int, step: int) -> torch.Tensor:
    """[D, M] unit columns, a pure function of (seed, step): Gaussian draws normalised per column (CPU, fp32)."""
    a = torch.randn(dim, slices, generator=make_generator("sigreg", seed, step))  # [D, M]
    return a / a.norm(dim=0, keepdim=True)


def epps_pulley_knots(knots: int, t_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t [K], weights [K]): knots on [0, t_max] and the trapezoid weights times exp(-t^2 / 2), doubled for t < 0."""
    t = torch.linspace(0.0, t_max, knots, dtype=torch.float64)  # [K]
    step = t_max / (knots - 1)
    trap = torch.full((knots,), step, dtype=torch.float64)
    trap[0] = trap[-1] = step / 2
    return t.float(), (2.0 * trap * torch.exp(-0.5 * t**2)).float()


def sliced_epps_pulley(
    x: torch.Tensor,
    valid: torch.Tensor | None,
    directions: torch.Tensor,
    t: torch.Tensor,
    weights: torch.Tensor,
    across_processes: bool = True,
) -> torch.Tensor:
    """Epps-Pulley statistic of every slice: x [..., D] (valid [...] bool or None), directions [D, M] -> [M].

    The valid entries of x (of every process when `across_processes`) are the samples; 0 for every slice when
    there is none."""
    d = x.shape[-1]
    xf = x.float().reshape(-1, d)  # [N, D]
    w = xf.new_ones(xf.shape[0]) if valid is None else valid.reshape(-1).to(xf.dtype)  # [N]
    phase = (xf @ directions).unsqueeze(-1) * t  # [N, M, K]
    cos_sum = torch.einsum("n,nmk->mk", w, torch.cos(phase))  # [M, K]
    sin_sum = torch.einsum("n,nmk->mk", w, torch.sin(phase))  # [M, K]
    m, k = cos_sum.shape
    packed = torch.cat([cos_sum.reshape(-1), sin_sum.reshape(-1), w.sum().reshape(1)])  # [2 M K + 1]
    if across_processes:
        packed = all_reduce_sum_with_grad(packed)
    n = packed[-1]
    cos_mean = packed[: m * k].reshape(m, k) / n.clamp_min(1.0)  # [M, K] real part of phi_N
    sin_mean = packed[m * k : 2 * m * k].reshape(m, k) / n.clamp_min(1.0)  # [M, K] imaginary part
    err = (cos_mean - torch.exp(-0.5 * t**2)).pow(2) + sin_mean.pow(2)  # [M, K]
    return n * (err @ weights)  # [M]


@register
class SIGReg(AuxObjective):
    name = "sigreg"
    Options = SIGRegOptions
    default_weight = 0.05
    source = "Balestriero & LeCun 2025, LeJEPA (arXiv 2511.08544), SIGReg; github.com/rbalestr-lab/lejepa"
    summary = "sliced Epps-Pulley test of the context tokens against N(0, I), global over processes"

    def __init__(self, options: SIGRegOptions | None = None, dims: Dims | None = None) -> None:
        super().__init__(options, dims)
        t, weights = epps_pulley_knots(self.options.knots, self.options.t_max)
        self.register_buffer("t", t, persistent=False)  # [K]
        self.register_buffer("weights", weights, persistent=False)  # [K]
        self._directions: tuple[tuple, torch.Tensor] | None = None

    def directions(self, step: int, dim: int, device: torch.device) -> torch.Tensor:
        """[D, M] on `device` for this step (drawn once per step)."""
        key = (step, dim, device)
        if self._directions is None or self._directions[0] != key:
            a = slice_directions(dim, self.options.slices, self.options.seed, step)
            self._directions = (key, a.to(device))
        return self._directions[1]

    def jepa_scale(self, weight: float) -> float:
        if not self.options.convex:
            return 1.0
        if weight > 1.0:
            raise ValueError(f"sigreg: convex mixing needs a weight <= 1, got {weight}")
        return 1.0 - weight

    def forward(self, state: StepState) -> ObjectiveOutput:
        dev = state.h.device
        a = self.directions(state.step, state.dim, dev)
        t, w = self.t.to(dev), self.weights.to(dev)
        stats = torch.stack([sliced_epps_pulley(f.z, f.ctx_valid, a, t, w) for f in state.families])
        return ObjectiveOutput(stats.mean(), {"max_slice": stats.amax(dim=1).mean().detach()})  # stats [F, M]
