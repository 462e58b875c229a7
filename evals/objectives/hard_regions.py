"""HW, hard-region weighting of the prediction loss (the FLD study's HW-JEPA), as an auxiliary objective.

Source: "Factorized Latent Dynamics for Video JEPA: An Empirical Study of Auxiliary Objectives" (arXiv 2605.17165);
code github.com/santoshpremi/Factorized-Latent-Dynamics-for-Video-JEPA-An-Empirical-Study-of-Auxiliary-Objectives,
vjepa2/app/vjepa_2_1/train.py (the `hw_coeff` block), built on V-JEPA 2.1's app/vjepa_2_1/train.py.

Per mask family, with p the predictions and h the targets at the K valid target tokens of a sample:

    e_k  = mean_d |p_k - h_k|                         per-token L1 error
    w    = K softmax(sg(e) / tau)                     over the sample's K valid tokens (mean weight 1)
    L_hw = mean_samples [ (1/K) sum_k w_k mean_d |p_k - h_k| ]

averaged over the families. The term is ADDED to the plain loss, which stays: L = L_jepa + weight * L_hw. The
weights carry no gradient (sg), so the gradient is that of a per-token-reweighted L1: the hardest tokens of each
clip are pushed harder. With all e_k equal, w = 1 and L_hw is the plain L1 loss.

Departures from the FLD code: a sample with fewer than 2 valid target tokens keeps w = 1 (it counts with its plain
error; the FLD code skips the whole family then); padded target slots (rows of mask groups with different kept
counts) get weight 0 and K is the valid count; the error is always L1 (the FLD code uses |p - h|^p / p with the
run's loss exponent, which is 1 in every FLD config). With HW on, the FLD code also reweights its LD error (a
softmax over the batch's visible pairs) and sums it under `torch.no_grad()`, which cuts LD's gradient; here HW
weights only the prediction loss and LD (evals/objectives/dynamics.py) is its own term with its own gradient.

Shapes: B batch, K target tokens, D target width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vjepa.objectives.base import AuxObjective, ObjectiveOutput, StepState, masked_mean
from vjepa.objectives.registry import register

FLD_SOURCE = (
    "arXiv 2605.17165 (FLD study); santoshpremi/Factorized-Latent-Dynamics-for-Video-JEPA-An-Empirical-Study-of-"
    "Auxiliary-Objectives, vjepa2/app/vjepa_2_1/train.py"
)


def hard_region_weights(err: torch.Tensor, valid: torch.Tensor | None, tau: float) -> torch.Tensor:
    """w = K softmax(err / tau) over each row's valid entries, 0 on invalid ones, 1 where K < 2; no gradient.

    err [B, K] (>= 0), valid [B, K] bool or None -> w [B, K] fp32; each row sums to its valid count K."""
    with torch.no_grad():
        err = err.detach().float()
        valid = torch.ones_like(err, dtype=torch.bool) if valid is None else valid
        k = valid.sum(dim=-1, keepdim=True).to(err.dtype)  # [B, 1]
        e = err.masked_fill(~valid, 0.0)  # errors are >= 0: the row max is the max over valid entries
        logits = (e - e.amax(dim=-1, keepdim=True)) / tau  # [B, K], <= 0 on valid entries (no overflow)
        logits = logits.masked_fill(~valid, torch.finfo(err.dtype).min)  # exp() gives exactly 0 there
        w = torch.softmax(logits, dim=-1) * k  # [B, K]
        w = torch.where(k >= 2, w, torch.ones_like(w))
        return w * valid.to(w.dtype)


@dataclass(frozen=True, kw_only=True)
class HWOptions:
    tau: float = 1.0  # softmax temperature on the per-token errors

    def check(self) -> str:
        return "" if self.tau > 0 else f"tau={self.tau} must be > 0"


@register
class HardRegionWeighting(AuxObjective):
    name = "hw"
    Options = HWOptions
    default_weight = 0.3
    source = FLD_SOURCE + " (hw_coeff 0.3 in its hw / ac_hw / combo arms, 1.0 in hw_ld / fwm_hw_ld)"
    summary = "prediction L1 reweighted per token by K softmax(sg(error) / tau) within each clip, added to L1"

    def forward(self, state: StepState) -> ObjectiveOutput:
        losses, w_max = [], []
        for fam in state.families:
            err = (fam.pred.float() - fam.target.detach().float()).abs().mean(dim=-1)  # [B, Kt]
            valid = torch.ones_like(err, dtype=torch.bool) if fam.tgt_valid is None else fam.tgt_valid
            w = hard_region_weights(err, valid, self.options.tau)  # [B, Kt]
            losses.append(masked_mean(w * err, valid))
            w_max.append(w.amax(dim=-1).mean())
        return ObjectiveOutput(torch.stack(losses).mean(), {"w_max": torch.stack(w_max).mean()})
