"""Learning rate, weight decay and EMA momentum as pure functions of the global step.

Two recipes (docs/recipes.md):
- `cosine` (V-JEPA 1, paper Appendix C): linear warmup start_lr -> lr over warmup_steps, then cosine to
  final_lr; weight decay cosine from weight_decay to final_weight_decay; EMA momentum linear from ema_momentum to
  final_ema_momentum. All three span `horizon = total_steps * horizon_scale` (1.25), so training stops at 80% of
  the schedule, as in the paper.
- `wsd` (V-JEPA 2): linear warmup start_lr -> lr, constant, then a linear cooldown over the last cooldown_steps
  of total_steps, on the line from lr to final_lr that spans cooldown_steps * cooldown_horizon_scale steps: with
  scale 1 it ends at final_lr; the official cooldown uses 1.25 (its ipe_scale), so it stops at 80% of the line
  (lr 5.25e-4 -> about 1.06e-4 with final_lr 1e-6). Constant weight decay and EMA momentum.
  Step convention: the update at step s uses the value at s, so the first cooldown step trains at lr; the
  official schedulers are stepped before each update, i.e. they use the value at s + 1.

Being pure functions of the step, a resumed run recomputes them exactly; nothing is replayed. The official code
keeps these as stateful generators that resume must step through again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vjepa.config import OptimConfig


@dataclass(frozen=True)
class Hyper:
    lr: float
    weight_decay: float
    momentum: float


def horizon(cfg: OptimConfig) -> float:
    return cfg.total_steps * cfg.horizon_scale if cfg.schedule == "cosine" else float(cfg.total_steps)


def learning_rate(cfg: OptimConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.start_lr + (cfg.lr - cfg.start_lr) * step / cfg.warmup_steps
    if cfg.schedule == "cosine":
        span = max(1.0, horizon(cfg) - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.final_lr + (cfg.lr - cfg.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    cooldown_start = cfg.total_steps - cfg.cooldown_steps
    if cfg.cooldown_steps == 0 or step < cooldown_start:
        return cfg.lr
    progress = min(1.0, (step - cooldown_start) / (cfg.cooldown_steps * cfg.cooldown_horizon_scale))
    return cfg.lr + (cfg.final_lr - cfg.lr) * progress


def weight_decay(cfg: OptimConfig, step: int) -> float:
    if cfg.schedule != "cosine":
        return cfg.weight_decay
    progress = min(1.0, step / horizon(cfg))
    return cfg.final_weight_decay + (cfg.weight_decay - cfg.final_weight_decay) * 0.5 * (
        1.0 + math.cos(math.pi * progress)
    )


def ema_momentum(cfg: OptimConfig, step: int) -> float:
    if cfg.schedule != "cosine":
        return cfg.ema_momentum
    progress = min(1.0, step / horizon(cfg))
    return cfg.ema_momentum + (cfg.final_ema_momentum - cfg.ema_momentum) * progress


def hyper(cfg: OptimConfig, step: int) -> Hyper:
    """All step-dependent hyper-parameters used by the update at `step` (0-based)."""
    return Hyper(learning_rate(cfg, step), weight_decay(cfg, step), ema_momentum(cfg, step))
