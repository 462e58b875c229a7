"""AdamW with the V-JEPA parameter groups (paper Appendix C; docs/recipes.md).

Weight decay applies to weight matrices only: biases, norm parameters (every 1-D tensor), position tables and
mask tokens are excluded. The official code decays mask tokens; we do not (a learned query should not shrink
towards zero). Learning rate and decay are written into the groups each step from the pure schedules, times the
group's `lr_scale` / `wd_scale` (1 for encoder and predictor; an auxiliary objective's head has its own, from its
config entry, in groups of its own after the encoder's and predictor's).
"""

from __future__ import annotations

import torch
from torch import nn

from vjepa.config import OptimConfig


def no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or "pos_embed" in name or "mask_token" in name


def param_groups(modules: dict[str, nn.Module], scales: dict[str, tuple[float, float]] | None = None) -> list[dict]:
    """Groups (decay, no decay) over the named modules: one pair for the modules without an entry in `scales`
    (lr_scale = wd_scale = 1), then one pair per module of `scales` (name -> (lr_scale, wd_scale))."""
    scales = scales or {}
    keyed: dict[tuple[float, float, bool], list] = {}
    for key in [(1.0, 1.0)] + [scales[n] for n in modules if n in scales]:
        for decay in (True, False):
            keyed.setdefault((*key, decay), [])
    for module_name, module in modules.items():
        lr_scale, wd_scale = scales.get(module_name, (1.0, 1.0))
        for name, p in module.named_parameters():
            if p.requires_grad:
                keyed[(lr_scale, wd_scale, not no_decay(name, p))].append(p)
    return [
        {"params": params, "apply_wd": decay, "weight_decay": 0.0, "lr_scale": lr_scale, "wd_scale": wd_scale}
        for (lr_scale, wd_scale, decay), params in keyed.items()
        if params
    ]


def build_optimizer(
    cfg: OptimConfig,
    modules: dict[str, nn.Module],
    scales: dict[str, tuple[float, float]] | None = None,
) -> torch.optim.AdamW:
    kind = {"fused": True} if cfg.fused else {"foreach": True}
    groups = param_groups(modules, scales)
    return torch.optim.AdamW(groups, lr=cfg.start_lr, betas=cfg.betas, eps=cfg.eps, **kind)


def set_hyper(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = weight_decay * group.get("wd_scale", 1.0) if group["apply_wd"] else 0.0
