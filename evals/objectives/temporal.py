"""Temporal auxiliary objectives of the FLD study: kinematic, spectral, temporal contrast (LTC) and velocity gating.

Source: "Factorized Latent Dynamics for Video JEPA: An Empirical Study of Auxiliary Objectives" (arXiv 2605.17165),
code github.com/santoshpremi/Factorized-Latent-Dynamics-for-Video-JEPA-An-Empirical-Study-of-Auxiliary-Objectives,
`vjepa2/app/vjepa_2_1/train.py` (the `kinematic_*`, `spectral_coeff`, `ltc_*` and `velgate_*` branches) and its
`configs/` (the weights below are the ones its arms ran). Temporal straightening lives in `straighten.py`.

    kinematic   mean |d x| (l1), Huber(d x) (huber) or mean |d^2 x| (acceleration), x = LN(encoder(full clip))
    spectral    mean |w_f (rfft_t Z - rfft_t h)| over fully visible columns, w linear 0.1 -> 1 over frequency
    ltc         mean over visible Z_t (t < T'-1) of max(0, margin - cos(Z_t, h_t) + cos(Z_t, h_{t+1}))
    velgate     mean_P 1[||d h||_2 <= q] mean_d |d Z|, q the median of ||d h||_2 over the H'W' positions

`d` is the difference between consecutive time steps, `Z`/`V` the context tokens of a mask family scattered to
the grid and their visibility, `P = V[:, :-1] & V[:, 1:]`. Each term is taken per mask family and averaged over
the families; means are per sample first (a sample with nothing to count gives 0), then over all samples, so the
value does not depend on how the global batch is split over processes (none of these needs a cross-process sum).

Departures from the FLD code:
  - its means pool all tokens of the (per-process) batch; ours are per-sample means, then over samples;
  - kinematic anneals over steps (state.step / state.total_steps) where FLD anneals over epochs;
  - spectral is computed for any T' (FLD skips it below T' = 4);
  - ltc counts every visible Z_t with t < T'-1 (h_{t+1} is a target, always there); FLD counts only positions
    visible at t and t+1 (its `valid_pairs`); `require_next_visible: true` restores that;
  - velgate's threshold is torch.median (the lower median for an even count), FLD's torch.quantile(0.5)
    interpolates; with the gate `speed <= q` both keep the same positions (up to rounding), since no speed lies
    strictly between the two middle values.

Shapes: B batch, N tokens (T' H' W'), D width, grid = (T', H', W'), F = T' // 2 + 1 rfft frequencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vjepa.objectives.base import AuxObjective, Dims, ObjectiveOutput, StepState, masked_mean
from vjepa.objectives.registry import register

FLD = (
    "FLD (arXiv 2605.17165), github.com/santoshpremi/Factorized-Latent-Dynamics-for-Video-JEPA-An-Empirical-Study-of-"
    "Auxiliary-Objectives, vjepa2/app/vjepa_2_1/train.py"
)
EPS = 1e-8  # floor on vector norms in the cosines


def need_times(name: str, grid: tuple[int, int, int], least: int) -> None:
    """Raise when the grid has fewer than `least` time steps (a static shape check, no host sync)."""
    if grid[0] < least:
        raise ValueError(f"objective {name!r} needs at least {least} time steps (T'), the grid is {tuple(grid)}")


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos over the last dim, each norm floored at EPS (a zero vector gives 0): [..., D] -> [...]."""
    na = torch.linalg.vector_norm(a, dim=-1).clamp_min(EPS)
    nb = torch.linalg.vector_norm(b, dim=-1).clamp_min(EPS)
    return (a * b).sum(dim=-1) / (na * nb)


def per_family(state: StepState, term) -> torch.Tensor:
    """The mean over mask families of term(Z, V), (Z, V) = state.scattered(family)."""
    return torch.stack([term(*state.scattered(f)) for f in range(len(state.families))]).mean()


# --- kinematic ------------------------------------------------------------------------------------------------

KINEMATIC_MODES = ("l1", "huber", "acceleration")
HUBER_DELTA = 0.1


@dataclass(frozen=True, kw_only=True)
class KinematicOptions:
    mode: str = "l1"  # l1 | huber | acceleration
    split: bool = False  # regularise only the first `ratio` x D channels
    ratio: float = 0.5
    anneal: bool = False  # cosine-anneal the term to 0 over the run (a factor on the returned loss)
    normalise: bool = True  # layer norm (no affine) over the width first, as the targets (FLD's target path)

    def check(self) -> str:
        if self.mode not in KINEMATIC_MODES:
            return f"mode={self.mode!r} must be one of {list(KINEMATIC_MODES)}"
        if not 0.0 < self.ratio <= 1.0:
            return f"ratio={self.ratio} must be in (0, 1]"
        return ""


def anneal_factor(step: int, total_steps: int) -> float:
    """0.5 (1 + cos(pi s)), s = step / total_steps clipped to [0, 1]: 1 at the start, 1/2 halfway, 0 at the end."""
    s = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * s))


def kinematic_term(x: torch.Tensor, mode: str) -> torch.Tensor:
    """x [B, T', H', W', D] -> the mean over samples of the per-sample mean of the kinematic penalty."""
    d1 = x[:, 1:] - x[:, :-1]  # [B, T'-1, H', W', D]
    if mode == "acceleration" and x.shape[1] >= 3:
        v = (d1[:, 1:] - d1[:, :-1]).abs()  # [B, T'-2, H', W', D]  |x_{t+2} - 2 x_{t+1} + x_t|
    elif mode == "huber":
        v = F.huber_loss(d1, torch.zeros_like(d1), reduction="none", delta=HUBER_DELTA)
    else:  # l1, and acceleration with T' < 3 (as FLD)
        v = d1.abs()
    return v.flatten(1).mean(dim=1).mean()


@register
class Kinematic(AuxObjective):
    """Temporal-difference sparsity on the online encoder's features of the full clip (with gradient).

    FLD runs every kinematic arm with the EMA disabled (`disable_ema: true`: its "target" is then the online
    encoder on the full clip, layer-normed, with gradient); here the EMA target stays as configured and the term
    reads `state.online_full()` (one extra encoder forward): on the stop-gradient EMA target it would do nothing.
    Huber is torch's `huber_loss` with delta 0.1 as FLD calls it (0.5 x^2 below 0.1, 0.1 (|x| - 0.05) above; this
    is 0.1 x smooth-L1 with beta 0.1). With `split`, the layer norm still runs over the full width and only the
    first `ratio` x D channels are penalised (FLD slices after its layer norm). Weight 0.1 (FLD's huber, accel,
    split and anneal arms; it also ran l1 at 1.0)."""

    name = "kinematic"
    Options = KinematicOptions
    default_weight = 0.1
    source = FLD + " (kinematic_type, kinematic_split_ratio, kinematic_anneal)"
    summary = "mean |dx|, Huber(dx) or |d2x| over time of the online encoder's full-clip features"

    def __init__(self, options: KinematicOptions | None = None, dims: Dims | None = None) -> None:
        super().__init__(options, dims)
        if dims is not None:
            need_times(self.name, dims.grid, 2)

    def forward(self, state: StepState) -> ObjectiveOutput:
        o = self.options
        need_times(self.name, state.grid, 2)
        x = state.online_full()  # [B, N, D] fp32, with gradient
        d = x.shape[-1]
        if o.normalise:
            x = F.layer_norm(x, (d,))
        if o.split:
            x = x[..., : max(1, int(o.ratio * d))]  # [B, N, D_k]
        x = x.reshape(x.shape[0], *state.grid, x.shape[-1])  # [B, T', H', W', D_k]
        raw = kinematic_term(x, o.mode)
        if not o.anneal:
            return ObjectiveOutput(raw)
        factor = anneal_factor(state.step, state.total_steps)
        return ObjectiveOutput(factor * raw, {"unannealed": raw.detach(), "factor": raw.new_tensor(factor)})


# --- spectral -------------------------------------------------------------------------------------------------


def spectral_term(z: torch.Tensor, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """z, h [B, T', H', W', D], v [B, T', H', W'] -> mean over samples of the per-sample mean over its fully
    visible columns (and frequencies, channels) of |w_f (rfft_t z - rfft_t h)|."""
    fz = torch.fft.rfft(z, dim=1)  # [B, F, H', W', D] complex
    fh = torch.fft.rfft(h, dim=1)  # [B, F, H', W', D]
    w = torch.linspace(0.1, 1.0, fz.shape[1], device=z.device, dtype=z.dtype)  # [F]
    err = (w.view(1, -1, 1, 1, 1) * (fz - fh)).abs().mean(dim=(1, 4))  # [B, H', W'] complex modulus
    return masked_mean(err, v.all(dim=1))


@register
class Spectral(AuxObjective):
    """Context tokens matched to the targets in the temporal frequency domain, higher frequencies weighted more.

    Only spatial positions visible at every time step (a full column of T' tokens) can be transformed; the others
    are ignored. The modulus is that of the complex difference (FLD: `abs(fft_z * w - fft_h * w)`, the same)."""

    name = "spectral"
    default_weight = 1.0
    source = FLD + " (spectral_coeff; arm train_mixed_4gpu_spectral)"
    summary = "frequency-weighted |rfft_t Z - rfft_t h| on fully visible columns of the context"

    def forward(self, state: StepState) -> ObjectiveOutput:
        h = state.h_grid()  # [B, T', H', W', D]
        return ObjectiveOutput(per_family(state, lambda z, v: spectral_term(z, v, h)))


# --- LTC, temporal contrast -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LTCOptions:
    margin: float = 0.5
    require_next_visible: bool = False  # count Z_t only where Z_{t+1} is visible too (FLD's valid_pairs)


def ltc_term(z: torch.Tensor, v: torch.Tensor, h: torch.Tensor, margin: float, pairs: bool) -> torch.Tensor:
    """z, h [B, T', H', W', D], v [B, T', H', W'] -> mean_{visible Z_t, t < T'-1} of
    max(0, margin - cos(Z_t, h_t) + cos(Z_t, h_{t+1}))."""
    zt = z[:, :-1]  # [B, T'-1, H', W', D]
    hinge = torch.relu(margin - cosine(zt, h[:, :-1]) + cosine(zt, h[:, 1:]))  # [B, T'-1, H', W']
    mask = v[:, :-1] & v[:, 1:] if pairs else v[:, :-1]  # [B, T'-1, H', W']
    return masked_mean(hinge, mask)


@register
class LTC(AuxObjective):
    """Temporal contrast: each context token closer (cosine) to its own target than to the next time step's, by a
    margin. Weight 0.5, margin 0.5 (FLD's ltc arm)."""

    name = "ltc"
    Options = LTCOptions
    default_weight = 0.5
    source = FLD + " (ltc_coeff, ltc_margin; arm train_mixed_4gpu_ltc)"
    summary = "hinge: cos(Z_t, h_t) above cos(Z_t, h_{t+1}) by a margin"

    def __init__(self, options: LTCOptions | None = None, dims: Dims | None = None) -> None:
        super().__init__(options, dims)
        if dims is not None:
            need_times(self.name, dims.grid, 2)

    def forward(self, state: StepState) -> ObjectiveOutput:
        o = self.options
        need_times(self.name, state.grid, 2)
        h = state.h_grid()  # [B, T', H', W', D]
        return ObjectiveOutput(per_family(state, lambda z, v: ltc_term(z, v, h, o.margin, o.require_next_visible)))


# --- VelGate --------------------------------------------------------------------------------------------------


def velocity_gate(h: torch.Tensor) -> torch.Tensor:
    """h [B, T', H', W', D] -> gate [B, T'-1, H', W'] bool: ||h_{t+1} - h_t||_2 <= its median over the H'W'
    positions of the same clip and time step (torch.median: the lower of the two middle values for an even
    count), i.e. the slower half of the positions."""
    speed = torch.linalg.vector_norm(h[:, 1:] - h[:, :-1], dim=-1)  # [B, T'-1, H', W']
    q = speed.flatten(2).median(dim=-1).values  # [B, T'-1]
    return speed <= q[..., None, None]


def velgate_term(z: torch.Tensor, v: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """z [B, T', H', W', D], v [B, T', H', W'], gate [B, T'-1, H', W'] -> mean_P gate * mean_d |d z| (gated-off
    pairs count 0 and stay in the denominator)."""
    dz = (z[:, 1:] - z[:, :-1]).abs().mean(dim=-1)  # [B, T'-1, H', W']
    return masked_mean(gate.to(dz.dtype) * dz, v[:, :-1] & v[:, 1:])


@register
class VelGate(AuxObjective):
    """Velocity-gated stillness: where the target moves slowly (the slower half of each frame's positions, by
    ||d h||_2), the context tokens are pushed to stay constant in time. Weight 1.0 (FLD's velgate arm, percentile
    0.5, the only one it ran)."""

    name = "velgate"
    default_weight = 1.0
    source = FLD + " (velgate_coeff, velgate_percentile 0.5; arm train_ucf101_4gpu_velgate)"
    summary = "mean_d |dZ| on visible pairs whose target speed ||dh|| is at most the frame's median"

    def __init__(self, options=None, dims: Dims | None = None) -> None:
        super().__init__(options, dims)
        if dims is not None:
            need_times(self.name, dims.grid, 2)

    def forward(self, state: StepState) -> ObjectiveOutput:
        need_times(self.name, state.grid, 2)
        gate = velocity_gate(state.h_grid())  # [B, T'-1, H', W']
        return ObjectiveOutput(per_family(state, lambda z, v: velgate_term(z, v, gate)))
