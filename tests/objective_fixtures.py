"""A small auxiliary objective with a trainable head, for the protocol tests (named by import path in configs:
`objective_fixtures:ContextProbe`). It is not in the catalogue.

loss = mean over families of the masked per-sample mean of |head(z) - h| at the context positions, with `head`
a Linear D -> D: the encoder gets a gradient through z, the head through its weights, the target h none."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vjepa.objectives import AuxObjective, ObjectiveOutput, StepState, masked_mean


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    scale: float = 1.0
    bias: bool = True


class ContextProbe(AuxObjective):
    name = "context_probe"
    Options = ProbeOptions
    default_weight = 0.5
    source = "test fixture"
    summary = "a linear probe from context tokens to their targets"

    def __init__(self, options=None, dims=None) -> None:
        super().__init__(options, dims)
        self.head = nn.Linear(dims.dim, dims.dim, bias=self.options.bias)

    def forward(self, state: StepState) -> ObjectiveOutput:
        terms = []
        for fam in state.families:
            err = (self.head(fam.z.float()) - state.gather(state.h, fam.ctx_idx)).abs().mean(-1)  # [B, Kc]
            valid = fam.ctx_valid if fam.ctx_valid is not None else torch.ones_like(err, dtype=torch.bool)
            terms.append(masked_mean(err, valid))
        loss = self.options.scale * torch.stack(terms).mean()
        return ObjectiveOutput(loss, {"head_norm": self.head.weight.detach().norm()})
