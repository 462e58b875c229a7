"""AdamW with the V-JEPA parameter groups (paper Appendix C; docs/recipes.md).

Weight decay applies to weight matrices only: biases, norm parameters (every 1-D tensor), position tables and
mask tokens are excluded. The official code decays mask tokens; we do not (a learned query should not shrink
towards zero). Learning rate and decay are written into the groups each step from the pure schedules.
"""

from __future__ import annotations

import torch
from torch import nn

from vjepa.config import OptimConfig


def no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or "pos_embed" in name or "mask_token" in name


def param_groups(modules: dict[str, nn.Module]) -> list[dict]:
    """Two groups (decay, no decay) over the named modules."""
    groups = {True: {"params": [], "apply_wd": True}, False: {"params": [], "apply_wd": False}}
    for module in modules.values():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            decay = not no_decay(name, p)
            groups[decay]["params"].append(p)
    out = []
    for decay in (True, False):
        g = groups[decay]
        if g["params"]:
            out.append({**g, "weight_decay": 0.0})
    return out


def build_optimizer(cfg: OptimConfig, modules: dict[str, nn.Module], device: torch.device) -> torch.optim.AdamW:
    kind = {"fused": True} if cfg.fused else {"foreach": True}
    return torch.optim.AdamW(param_groups(modules), lr=cfg.start_lr, betas=cfg.betas, eps=cfg.eps, **kind)


def set_hyper(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay if group["apply_wd"] else 0.0
