"""LiFT as an auxiliary objective: a Linearized-Feature-Trajectory head trained on the per-frame features of the step.

Bagad and Zisserman, "Chirality in Action: Time-Aware Video Representation Learning by Latent Straightening"
(LiFT), Sec. 2, Eq. 6 and Appendix B. The head is vjepa.evals.lift.LiFT (a pre-LN transformer over the frame features
with two learnable tokens giving z_s and z_d; decoder on z_t = z_s + (t / (T' - 1)) z_d, t = 0..T'-1); its loss is

    L = mean_(b, t, d) (x_hat_t - f_t)^2 + orth * mean_b |cos(z_s, z_d)|

on frame features f [B, T', D], one of (option `features`):
  - "target": the spatial mean of the targets h per time step (`state.frame_features()`): no extra forward, no
    gradient to any encoder (h is the EMA target). The default: with `stop_gradient` on (the default) it is an
    online probe of the features that are exported and evaluated.
  - "online": the spatial mean of the online encoder on the full clip (`state.online_full()`, one extra forward
    shared with any other objective that asks for it). LiFT reads every time step, so this is the faithful choice
    when the encoder is to be pushed towards straight trajectories (`stop_gradient: false`).
  - "context": per mask family, the mean of the visible context tokens at each time step (no extra forward); a
    time step with no visible token in a sample gets input 0 and is left out of the reconstruction mean; the loss
    is averaged over the families.
With `stop_gradient` (default true) the features are detached: the head learns, the encoder's gradient is exactly
the plain V-JEPA one. Without it the gradient of L reaches the online encoder ("online", "context"); "target" with
`stop_gradient: false` is refused (h has no gradient to give).

No published weight exists for LiFT as a pretraining term: the default 1.0 is for the probe (a term that reaches
only the head; Adam all but cancels the scale of its gradient); choose one when turning off `stop_gradient`. The
probe leaves the encoder's gradient exactly as it is, and its update too: gradient clipping (either mode) takes the
objectives' heads on a norm of their own (vjepa/train/step.py clip_gradients).

Departures: the head defaults to width 128, depth 4, 4 heads (the paper: 384, 4, 8; 8.7M parameters at D = 384)
to keep its cost small beside the encoder; the same departures as evals/lift.py (t / (T' - 1), mean not sum, |cos|);
no feature standardisation (vjepa.evals.lift.train_lift standardises with the training set's mean and std, which a
running objective does not have, and a running estimate would make the loss depend on the history; h is
layer-normed per token, so the root mean square of its frame means over channels is at most 1);
the two tokens are initialised trunc-normal(0.02) as in train_lift, everything else with PyTorch's defaults.

Shapes: B batch, T' time steps, H' W' spatial grid, D feature width, d head width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from vjepa.evals.lift import LiFT

from vjepa.objectives.base import AuxObjective, Dims, ObjectiveOutput, StepState, masked_mean
from vjepa.objectives.registry import register

FEATURES = ("target", "online", "context")


@dataclass(frozen=True, kw_only=True)
class LiftOptions:
    features: str = "target"  # "target" (h), "online" (online encoder, full clip) or "context" (visible Z)
    stop_gradient: bool = True  # detach the features: an online probe that leaves the encoder untouched
    width: int = 128  # head width d (paper 384)
    depth: int = 4  # transformer blocks (paper 4)
    num_heads: int = 4  # attention heads (paper 8)
    orth: float = 0.1  # weight of mean |cos(z_s, z_d)| (paper lambda 0.1)

    def check(self) -> str:
        if self.features not in FEATURES:
            return f"features={self.features!r} must be one of {list(FEATURES)}"
        if self.features == "target" and not self.stop_gradient:
            return "features='target' has no gradient to give (h is the EMA target): use 'online' or 'context'"
        if self.width < 2 or self.width % 2 or self.width % self.num_heads:
            return f"width={self.width} must be even and divisible by num_heads={self.num_heads}"
        if self.depth < 1 or self.num_heads < 1:
            return f"depth={self.depth} and num_heads={self.num_heads} must be >= 1"
        return "" if self.orth >= 0 else f"orth={self.orth} must be >= 0"


def visible_frame_means(z: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Z [B, T', H', W', D] (0 where not visible), V [B, T', H', W'] -> (mean of the visible tokens per time step
    [B, T', D] (0 where none), whether any token is visible [B, T'])."""
    count = v.flatten(2).sum(dim=2)  # [B, T']
    total = z.flatten(2, 3).sum(dim=2)  # [B, T', D]
    return total / count.clamp_min(1).unsqueeze(-1).to(total.dtype), count > 0


@register
class LiftObjective(AuxObjective):
    name = "lift"
    Options = LiftOptions
    default_weight = 1.0
    source = "Bagad & Zisserman, Chirality in Action (LiFT), Sec. 2 Eq. 6, App. B"
    summary = "LiFT head on per-frame features: straight-line reconstruction + 0.1 |cos(z_s, z_d)| (probe by default)"

    def __init__(self, options: LiftOptions | None = None, dims: Dims | None = None) -> None:
        super().__init__(options, dims)
        o = self.options
        if dims is None:
            raise ValueError("lift: needs the run's Dims (feature width and grid)")
        if dims.grid[0] < 2:
            raise ValueError(f"lift: needs at least 2 time steps, the grid has T'={dims.grid[0]}")
        self.head = LiFT(in_dim=dims.dim, width=o.width, depth=o.depth, num_heads=o.num_heads)
        nn.init.trunc_normal_(self.head.static_token, std=0.02, a=-2.0, b=2.0)
        nn.init.trunc_normal_(self.head.dynamic_token, std=0.02, a=-2.0, b=2.0)

    def lift_terms(self, f: torch.Tensor, frame_valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, orthogonality) for f [B, T', D]; frames with frame_valid False do not count."""
        recon, z_s, z_d = self.head(f)  # [B, T', D], [B, d], [B, d]
        err = (recon.float() - f).pow(2).mean(dim=-1)  # [B, T']
        mask = torch.ones_like(err, dtype=torch.bool) if frame_valid is None else frame_valid
        rec = masked_mean(err, mask)
        orth = F.cosine_similarity(z_s.float(), z_d.float(), dim=-1, eps=1e-8).abs().mean()
        return rec, orth

    def forward(self, state: StepState) -> ObjectiveOutput:
        o = self.options
        if o.features == "context":
            recs, orths = [], []
            for fam in range(len(state.families)):
                f, frame_valid = visible_frame_means(*state.scattered(fam))  # [B, T', D], [B, T']
                rec, orth = self.lift_terms(f.detach() if o.stop_gradient else f, frame_valid)
                recs.append(rec)
                orths.append(orth)
            rec, orth = torch.stack(recs).mean(), torch.stack(orths).mean()
        else:
            if o.features == "target":
                f = state.frame_features()  # [B, T', D], no gradient
            else:
                full = state.online_full()  # [B, N, D]
                f = full.reshape(state.batch, *state.grid, full.shape[-1]).mean(dim=(2, 3))  # [B, T', D]
            rec, orth = self.lift_terms(f.detach() if o.stop_gradient else f, None)
        return ObjectiveOutput(rec + o.orth * orth, {"rec": rec.detach(), "orth": orth.detach()})
