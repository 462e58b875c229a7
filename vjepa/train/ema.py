"""EMA update of the target encoder (paper Sec. 3.1): target <- m * target + (1 - m) * encoder.

With FSDP2 both encoders are sharded identically, so each rank updates its own local shards with one
`torch._foreach_lerp_` call and no communication: lerp(t, e, 1 - m) = t + (1 - m)(e - t) = m t + (1 - m) e.
The target stays in fp32 whatever the compute dtype.
"""

from __future__ import annotations

import torch
from torch import nn


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP2 (DTensor) parameter; a plain tensor as it is."""
    return t.to_local() if hasattr(t, "to_local") else t


def ema_pairs(encoder: nn.Module, target_encoder: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Matching local shards (target, online), checked by name once; reuse the lists every step."""
    online = dict(encoder.named_parameters())
    targets, sources = [], []
    for name, p_t in target_encoder.named_parameters():
        if name not in online:
            raise KeyError(f"target encoder parameter {name!r} has no match in the encoder")
        t, s = local_shard(p_t.data), local_shard(online[name].data)
        if t.shape != s.shape:
            raise ValueError(f"EMA shard shapes differ for {name!r}: {tuple(t.shape)} vs {tuple(s.shape)}")
        targets.append(t)
        sources.append(s)
    return targets, sources


@torch.no_grad()
def ema_update(targets: list[torch.Tensor], sources: list[torch.Tensor], momentum: float) -> None:
    if momentum >= 1.0:
        return
    if sources and sources[0].dtype != targets[0].dtype:
        sources = [s.to(t.dtype) for s, t in zip(sources, targets)]
    torch._foreach_lerp_(targets, sources, 1.0 - momentum)
