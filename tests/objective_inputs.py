"""Inputs of the objective tests: one hand-built random step state (grid (4, 2, 2), D 16, B 4, two mask families
with padded context and target slots, a fixed online full-clip tensor with gradient, a [4, 3, 8, 32, 32] clip),
shared by test_objectives_common.py and test_sigreg.py.

Shapes: B batch, N tokens (T' H' W' = 16), Kc context slots, Kt target slots, D width.
"""

from __future__ import annotations

import torch

from vjepa.masks.ops import gather_tokens
from vjepa.objectives.base import Dims, FamilyState, StepState

GRID = (4, 2, 2)
N, D, B, KC, KT = 16, 16, 4, 10, 8
DIMS = Dims(dim=D, grid=GRID, tubelet=2, patch=16, num_families=2, levels=1, total_steps=10)
STEP = 3


def _family_indices(g: torch.Generator, tube: bool) -> tuple[torch.Tensor, ...]:
    """ctx_idx [B, KC], tgt_idx [B, KT], ctx_valid, tgt_valid: rows 0, 1 have 10 context tokens and 6 targets (2
    padded target slots); rows 2, 3 have 8 context tokens (2 padded slots) and 8 targets. A padded slot repeats the
    row's last real index (as the collator pads). `tube`: the first 8 context tokens are 2 whole spatial columns
    (visible at every time step), else a random permutation."""
    ctx, tgt, cv, tv = [], [], [], []
    for b in range(B):
        kc = 10 if b < 2 else 8
        if tube:
            cols = torch.randperm(4, generator=g)[:2]
            in_cols = torch.isin(torch.arange(N) % 4, cols)
            rest = torch.arange(N)[~in_cols][torch.randperm(8, generator=g)]
            order = torch.cat([torch.arange(N)[in_cols], rest])
        else:
            order = torch.randperm(N, generator=g)
        c, t = order[:kc], order[kc:]
        ctx.append(torch.cat([c, c[-1:].expand(KC - kc)]))
        tgt.append(torch.cat([t, t[-1:].expand(KT - (N - kc))]))
        cv.append(torch.arange(KC) < kc)
        tv.append(torch.arange(KT) < N - kc)
    return torch.stack(ctx), torch.stack(tgt), torch.stack(cv), torch.stack(tv)


def make_inputs(seed: int = 0) -> dict:
    """The raw tensors of one step (fp32): video, h, online, and per family indices, valid masks, z and pred."""
    g = torch.Generator().manual_seed(seed)
    h = torch.nn.functional.layer_norm(torch.randn(B, N, D, generator=g), (D,))
    out = {
        "video": torch.randn(B, 3, 8, 32, 32, generator=g),
        "h": h,
        "online": h + 0.3 * torch.randn(B, N, D, generator=g),
        "families": [],
    }
    for tube in (True, False):
        ctx_idx, tgt_idx, ctx_valid, tgt_valid = _family_indices(g, tube)
        z = gather_tokens(h, ctx_idx) + 0.3 * torch.randn(B, KC, D, generator=g)  # [B, KC, D]
        pred = gather_tokens(h, tgt_idx) + 0.3 * torch.randn(B, KT, D, generator=g)  # [B, KT, D]
        out["families"].append(
            {
                "ctx_idx": ctx_idx,
                "tgt_idx": tgt_idx,
                "ctx_valid": ctx_valid,
                "tgt_valid": tgt_valid,
                "z": z,
                "pred": pred,
            }
        )
    return out


def build_state(inputs: dict, rows: slice = slice(None), dtype: torch.dtype = torch.float32) -> tuple[StepState, dict]:
    """A StepState of inputs[rows] whose z, pred and online tensors are leaves of `dtype` with gradient, and h a
    leaf with gradient too (the state must detach it). Returns (state, the leaves by name)."""
    leaves = {"h": inputs["h"][rows].clone().requires_grad_(True)}
    leaves["online"] = inputs["online"][rows].to(dtype).requires_grad_(True)
    families = []
    for f, fam in enumerate(inputs["families"]):
        z = fam["z"][rows].to(dtype).requires_grad_(True)
        pred = fam["pred"][rows].to(dtype).requires_grad_(True)
        leaves[f"z{f}"], leaves[f"pred{f}"] = z, pred
        target = gather_tokens(leaves["h"].detach(), fam["tgt_idx"][rows])  # [b, KT, D] no grad, as the step's
        families.append(
            FamilyState(
                fam["ctx_idx"][rows],
                fam["tgt_idx"][rows],
                fam["ctx_valid"][rows],
                fam["tgt_valid"][rows],
                z,
                pred,
                target,
            )
        )
    state = StepState(
        video=inputs["video"][rows],
        grid=GRID,
        h=leaves["h"],
        families=families,
        step=STEP,
        total_steps=DIMS.total_steps,
        tubelet=2,
        patch=16,
        online_full=lambda: leaves["online"],
    )
    return state, leaves
