"""Temporal straightening: per-frame features of a clip pushed onto a straight line in feature space.

Hénaff, Goris and Simoncelli, "Perceptual straightening of natural videos" (Nature Neuroscience 2019) measure the
curvature of a trajectory by the angle between successive displacement vectors; Bagad and Zisserman, "Chirality in
Action: Time-Aware Video Representation Learning by Latent Straightening" (LiFT) build time-aware video descriptors
on that idea. As a pretraining term (no published weight or recipe; 0.1 is a starting point, none published):

    v_t = f_{t+1} - f_t,   L = mean_t [1 - cos(v_t, v_{t+1})]      (eps in the norms)

per sample, then over samples: 0 for a straight line at any nonzero speed, 1 for a right-angle turn, 2 for a
back-and-forth path. 1 - cos stands in for Hénaff's angle arccos(cos): the same order, a smooth gradient at 0.

`f` must carry a gradient (the stop-gradient target's frame features would give none). Option `features`:
  - "context" (default): per mask family, f_t is the spatial mean of the context tokens Z visible at time t;
    times with no visible position are not usable, and a curvature term needs three consecutive usable times
    (t, t+1, t+2: the displacements must span one tubelet each for their angle to be a curvature); a sample
    with none counts 0; averaged over the families;
  - "online": the spatial mean of the online encoder on the full clip (`state.online_full()`, one extra encoder
    forward; shared with any other objective that asks for it).
A zero displacement (a frame identical to the next) has cosine 0 with anything, so a still clip scores 1.

Shapes: B batch, N tokens (T' H' W'), D width, grid = (T', H', W'), f [B, T', D].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vjepa.evals.objectives.temporal import cosine, need_times

from vjepa.objectives.base import AuxObjective, Dims, ObjectiveOutput, StepState, masked_mean
from vjepa.objectives.registry import register

FEATURES = ("context", "online")


@dataclass(frozen=True, kw_only=True)
class StraightenOptions:
    features: str = "context"  # context | online

    def check(self) -> str:
        return "" if self.features in FEATURES else f"features={self.features!r} must be one of {list(FEATURES)}"


def curvature(f: torch.Tensor, usable: torch.Tensor | None = None) -> torch.Tensor:
    """f [B, T', D], usable [B, T'] bool (None: all) -> mean over samples of the per-sample mean over the
    triples (t, t+1, t+2) of usable times of 1 - cos(f_{t+1} - f_t, f_{t+2} - f_{t+1})."""
    v = f[:, 1:] - f[:, :-1]  # [B, T'-1, D]
    bend = 1.0 - cosine(v[:, :-1], v[:, 1:])  # [B, T'-2]
    if usable is None:
        return masked_mean(bend, torch.ones_like(bend, dtype=torch.bool))
    return masked_mean(bend, usable[:, :-2] & usable[:, 1:-1] & usable[:, 2:])


def context_frames(z: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z [B, T', H', W', D] (0 where not visible), v [B, T', H', W'] -> (f [B, T', D] the mean over the visible
    positions of each time step, usable [B, T'] bool: the time has a visible position)."""
    count = v.sum(dim=(2, 3))  # [B, T']
    f = z.sum(dim=(2, 3)) / count.clamp_min(1).unsqueeze(-1).to(z.dtype)  # [B, T', D]
    return f, count > 0


@register
class Straighten(AuxObjective):
    """Curvature of the per-frame feature trajectory, 1 - cos between successive displacements."""

    name = "straighten"
    Options = StraightenOptions
    default_weight = 0.1
    source = (
        "Hénaff et al. 2019, Perceptual straightening of natural videos; Bagad & Zisserman, LiFT (Chirality in Action)"
    )
    summary = "mean_t 1 - cos(f_{t+1} - f_t, f_{t+2} - f_{t+1}) of per-frame context (or online) features"

    def __init__(self, options: StraightenOptions | None = None, dims: Dims | None = None) -> None:
        super().__init__(options, dims)
        if dims is not None:
            need_times(self.name, dims.grid, 3)

    def forward(self, state: StepState) -> ObjectiveOutput:
        need_times(self.name, state.grid, 3)
        if self.options.features == "online":
            x = state.online_full()  # [B, N, D] fp32, with gradient
            f = x.reshape(x.shape[0], state.grid[0], -1, x.shape[-1]).mean(dim=2)  # [B, T', D]
            return ObjectiveOutput(curvature(f))
        terms = [curvature(*context_frames(*state.scattered(i))) for i in range(len(state.families))]
        return ObjectiveOutput(torch.stack(terms).mean())
