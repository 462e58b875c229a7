"""Temporal-dynamics objectives of the FLD study on the context encoder's tokens: Delta, LD, factorized LD, the
factorized world model's static and orthogonality terms (FWM), and action-conditioned AC / FAC.

Source: "Factorized Latent Dynamics for Video JEPA: An Empirical Study of Auxiliary Objectives" (arXiv 2605.17165);
code github.com/santoshpremi/Factorized-Latent-Dynamics-for-Video-JEPA-An-Empirical-Study-of-Auxiliary-Objectives,
vjepa2/app/vjepa_2_1/train.py (built on V-JEPA 2.1's app/vjepa_2_1/train.py). Z are a family's context tokens put
back on the grid, V their visibility, P = V[:, :-1] & V[:, 1:] the positions visible at two consecutive times, h the
(stop-gradient) targets, d the difference between consecutive times, z_app / z_dyn the first / second half of the
channels (D_app = D // 2; with V-JEPA 2.1's 4 concatenated levels: levels 1-2 appearance, 3-4 dynamics):

    delta       mean_P |dZ - sg(dh)|
    ld          mean_P |g(Z_t) - sg(h_{t+1} - h_t)|        g: D -> hidden -> D (Linear, GELU, Linear)
    fld         mean_P |g(z_dyn,t) - sg(h_{t+1} - h_t)|    g: D - D_app -> hidden -> D (reads dynamics only)
    fwm_static  mean_P |z_app(t+1) - z_app(t)|
    fwm_orth    mean of the squared entries of Cov(z_app, z_dyn) over all visible tokens of the global batch
    ac          mean_P |a(Z_t) - (m_{t+1} - m_t)|          a: D -> hidden -> 3, m the tubelet-mean RGB per token
    fac         as ac, a reading z_dyn only

A mean over P (and the channels) is taken per sample, then over all samples (a sample with no pair counts 0), per
family, then averaged over the families. fwm_orth pools the valid tokens of every process: count and sums, then
the centred cross products, are summed over processes (vjepa.distributed.all_reduce_sum_with_grad), in fp32.

Departures from the FLD code:
  - LD's gradient with HW on. The FLD code, when HW is on, reweights the LD error by a softmax over its pairs and
    sums that under `torch.no_grad()`: its hw_ld and fwm_hw_ld arms (the headline FWM-HW-LD included) add a
    constant and never train g nor push the encoder through LD. Here LD is never reweighted and always has its
    gradient; HW (evals/objectives/hard_regions.py) weights the prediction loss only.
  - Factorized variants are their own names (fld, fac) instead of being switched on implicitly by a nonzero FWM
    coefficient.
  - Means are per sample first (the FLD code pools the pairs of the local batch), padded slots never count, and
    fwm_orth's statistics are global over processes (the FLD code uses each process's local batch).

Shapes: B batch, N tokens, T' H' W' the token grid, D target width, C colour channels (3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from vjepa.evals.objectives.hard_regions import FLD_SOURCE

from vjepa.distributed import all_reduce_sum_with_grad
from vjepa.objectives.base import AuxObjective, Dims, ObjectiveOutput, StepState, masked_mean
from vjepa.objectives.registry import register

RGB = 3


def time_diff(x: torch.Tensor) -> torch.Tensor:
    """x [B, T', ...] -> x[:, 1:] - x[:, :-1]  [B, T'-1, ...]."""
    return x[:, 1:] - x[:, :-1]


def appearance_width(dim: int) -> int:
    """D_app: the first D // 2 channels are appearance, the rest dynamics."""
    return dim // 2


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Linear -> GELU -> Linear (PyTorch's default initialisation, as the FLD heads)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def tubelet_means(video: torch.Tensor, grid: tuple[int, int, int], tubelet: int, patch: int) -> torch.Tensor:
    """The mean colour of each token's tubelet: video [B, C, T, H, W] -> [B, T', H', W', C] fp32."""
    b, c = video.shape[:2]
    t, hh, ww = grid
    x = video[:, :, : t * tubelet, : hh * patch, : ww * patch].float()
    x = x.reshape(b, c, t, tubelet, hh, patch, ww, patch).mean(dim=(3, 5, 7))  # [B, C, T', H', W']
    return x.permute(0, 2, 3, 4, 1)  # [B, T', H', W', C]


def action_target(state: StepState) -> torch.Tensor:
    """a_t = m_{t+1} - m_t, m the tubelet-mean colour of the normalised clip: [B, T'-1, H', W', C], no grad."""
    with torch.no_grad():
        return time_diff(tubelet_means(state.video, state.grid, state.tubelet, state.patch))


def cross_covariance(z: torch.Tensor, valid: torch.Tensor | None, split: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-covariance of the channels [:split] and [split:] of the valid tokens of z [B, K, D] over every process.

    -> (C [split, D - split] fp32, token count N, detached). Two all-reduces (count and sums, then centred cross
    products), no host sync; C uses N - 1 (unbiased, as vjepa.losses.token_vicreg) and is meaningless when N < 2."""
    d = z.shape[-1]
    x = z.float().reshape(-1, d)  # [B*K, D]
    w = x.new_ones(x.shape[0], 1) if valid is None else valid.reshape(-1, 1).to(x.dtype)  # [B*K, 1]
    count_sum = all_reduce_sum_with_grad(torch.cat([w.sum().reshape(1), (x * w).sum(dim=0)]))  # [1 + D]
    n = count_sum[0].detach()
    mean = count_sum[1:] / n.clamp_min(1.0)  # [D]
    xc = (x - mean) * w  # [B*K, D], 0 on padded slots
    cross = all_reduce_sum_with_grad(xc[:, :split].T @ xc[:, split:]) / (n - 1).clamp_min(1.0)  # [split, D - split]
    return cross, n


def _needs_dims(name: str, dims: Dims | None) -> Dims:
    if dims is None:
        raise ValueError(f"objective {name!r}: needs the run's Dims to size its head")
    return dims


@dataclass(frozen=True, kw_only=True)
class HeadOptions:
    hidden: int = 256  # width of the head's hidden layer

    def check(self) -> str:
        return "" if self.hidden >= 1 else f"hidden={self.hidden} must be >= 1"


Head = Callable[[torch.Tensor], torch.Tensor]


def next_step_l1(state: StepState, predict: Head, target: torch.Tensor) -> torch.Tensor:
    """Mean over mask families of the L1 error of `predict(Z_t)` against `target` [B, T'-1, H', W', C] on the
    positions visible at t and t + 1 (per sample, then over samples)."""
    losses = []
    for f in range(len(state.families)):
        z, _ = state.scattered(f)  # [B, T', H', W', D]
        err = (predict(z[:, :-1]) - target).abs().mean(dim=-1)  # [B, T'-1, H', W']
        losses.append(masked_mean(err, state.pairs(f)))
    return torch.stack(losses).mean()


@register
class Delta(AuxObjective):
    name = "delta"
    default_weight = 0.5
    source = FLD_SOURCE + " (delta_coeff)"
    summary = "temporal differences of the context tokens match those of the targets: mean_P |dZ - sg(dh)|"

    def forward(self, state: StepState) -> ObjectiveOutput:
        dh = time_diff(state.h_grid())  # [B, T'-1, H', W', D]
        losses = []
        for f in range(len(state.families)):
            z, _ = state.scattered(f)  # [B, T', H', W', D]
            err = (time_diff(z) - dh).abs().mean(dim=-1)  # [B, T'-1, H', W']
            losses.append(masked_mean(err, state.pairs(f)))
        return ObjectiveOutput(torch.stack(losses).mean())


@register
class LatentDynamics(AuxObjective):
    """LD: a head g predicts the targets' next-step change from the context token. `factorized` (the `fld`
    subclass): g reads only the dynamics channels; its output and target stay full width."""

    name = "ld"
    Options = HeadOptions
    default_weight = 1.0
    factorized: ClassVar[bool] = False
    source = FLD_SOURCE + " (ld_coeff, dyn_head)"
    summary = "head g: D -> 256 -> D on the context token predicts sg(h_{t+1} - h_t): mean_P |g(Z_t) - sg(dh)|"

    def __init__(self, options: HeadOptions | None = None, dims: Dims | None = None) -> None:
        super().__init__(options, dims)
        d = _needs_dims(self.name, dims).dim
        self.split = appearance_width(d) if self.factorized else 0  # g reads channels [split:]
        self.head = mlp(d - self.split, self.options.hidden, d)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """g on the channels it reads: z [..., D] -> [..., D]."""
        return self.head(z[..., self.split :])

    def forward(self, state: StepState) -> ObjectiveOutput:
        return ObjectiveOutput(next_step_l1(state, self.predict, time_diff(state.h_grid())))  # dh: no grad


@register
class FactorizedLatentDynamics(LatentDynamics):
    name = "fld"
    factorized = True
    source = FLD_SOURCE + " (ld_coeff with an FWM term on: dyn_head reads Z_dyn)"
    summary = "LD with g reading only the dynamics channels Z[..., D//2:]; output and target stay full width"


@register
class FWMStatic(AuxObjective):
    name = "fwm_static"
    default_weight = 0.05
    source = FLD_SOURCE + " (fwm_static_coeff)"
    summary = "appearance channels (first D//2) constant in time: mean_P |z_app(t+1) - z_app(t)|"

    def forward(self, state: StepState) -> ObjectiveOutput:
        split = appearance_width(state.dim)
        losses = []
        for f in range(len(state.families)):
            z, _ = state.scattered(f)  # [B, T', H', W', D]
            err = time_diff(z[..., :split]).abs().mean(dim=-1)  # [B, T'-1, H', W']
            losses.append(masked_mean(err, state.pairs(f)))
        return ObjectiveOutput(torch.stack(losses).mean())


@register
class FWMOrthogonality(AuxObjective):
    name = "fwm_orth"
    default_weight = 0.01
    source = FLD_SOURCE + " (fwm_orth_coeff)"
    summary = "mean squared cross-covariance of appearance and dynamics channels over the global batch's tokens"

    def forward(self, state: StepState) -> ObjectiveOutput:
        split = appearance_width(state.dim)
        losses = []
        for fam in state.families:
            cross, n = cross_covariance(fam.z, fam.ctx_valid, split)  # [D_app, D - D_app]
            losses.append(torch.where(n >= 2, cross.pow(2).mean(), cross.sum() * 0.0))
        return ObjectiveOutput(torch.stack(losses).mean())


@register
class ActionConditioned(AuxObjective):
    """AC: a head predicts the change of each token's mean colour to the next time step from the context token.
    `factorized` (the `fac` subclass): the head reads only the dynamics channels."""

    name = "ac"
    Options = HeadOptions
    default_weight = 1.0
    factorized: ClassVar[bool] = False
    source = FLD_SOURCE + " (ac_coeff, action_head)"
    summary = "head D -> 256 -> 3 on the context token predicts the tubelet-mean RGB change to t+1 (L1 over P)"

    def __init__(self, options: HeadOptions | None = None, dims: Dims | None = None) -> None:
        super().__init__(options, dims)
        d = _needs_dims(self.name, dims).dim
        self.split = appearance_width(d) if self.factorized else 0
        self.head = mlp(d - self.split, self.options.hidden, RGB)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """The head on the channels it reads: z [..., D] -> [..., 3]."""
        return self.head(z[..., self.split :])

    def forward(self, state: StepState) -> ObjectiveOutput:
        if state.video.shape[1] != RGB:
            raise ValueError(f"objective {self.name!r}: needs an RGB clip, got {state.video.shape[1]} channels")
        return ObjectiveOutput(next_step_l1(state, self.predict, action_target(state)))  # [B, T'-1, H', W', 3]


@register
class FactorizedActionConditioned(ActionConditioned):
    name = "fac"
    factorized = True
    source = FLD_SOURCE + " (ac_coeff with an FWM term on: action_head reads Z_dyn)"
    summary = "AC with the head reading only the dynamics channels Z[..., D//2:]"
