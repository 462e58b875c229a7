"""VICReg's variance and covariance terms on the context encoder's tokens, as an objective (built in).

Bardes, Ponce and LeCun, "VICReg", ICLR 2022; added to JEPAs by C-JEPA (Mo and Tong 2024). Per mask family the
valid context tokens of the whole global batch are the samples (vjepa.losses.token_vicreg: statistics summed over
processes); loss = var * v + cov * c averaged over the families, with v = mean_c relu(1 - sqrt(Var_c + 1e-4))
(gamma 1) and c = sum of squared off-diagonal covariances / D. VICReg's published ratio is 25 : 1.

`optim.enc_var_weight` and `optim.enc_cov_weight` (the README demo's setting) are this objective with weight 1 and
those two as `var` and `cov`; the numbers are the ones those keys always gave.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vjepa.losses import token_vicreg
from vjepa.objectives.base import AuxObjective, ObjectiveOutput, StepState
from vjepa.objectives.registry import register


@dataclass(frozen=True, kw_only=True)
class VICRegOptions:
    var: float = 25.0  # coefficient of the variance hinge
    cov: float = 1.0  # coefficient of the covariance term

    def check(self) -> str:
        return "" if self.var >= 0 and self.cov >= 0 else f"var={self.var} and cov={self.cov} must be >= 0"


@register
class VICReg(AuxObjective):
    name = "vicreg"
    Options = VICRegOptions
    default_weight = 1.0
    source = "Bardes et al. 2022 (VICReg), Sec. 3; on JEPA context tokens as C-JEPA (Mo and Tong 2024)"
    summary = "variance hinge + off-diagonal covariance of the context tokens over the global batch"

    def forward(self, state: StepState) -> ObjectiveOutput:
        o = self.options
        vs, cs = [], []
        for fam in state.families:
            v, c = token_vicreg(fam.z, fam.ctx_valid)
            vs.append(v)
            cs.append(c)
        v, c = torch.stack(vs).mean(), torch.stack(cs).mean()
        return ObjectiveOutput(o.var * v + o.cov * c, {"var": v.detach(), "cov": c.detach()})
