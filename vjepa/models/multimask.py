"""Run an encoder once per mask family on one shared patch embedding.

`MultiMaskEncoder(backbone)(video, [idx_0, idx_1, ...])` embeds the clip once (Conv3d + positions) and runs the
transformer blocks on the kept tokens of each family; with no indices it encodes the full clip (the target
encoder). The official code re-embeds the clip for every family. With `packed=True` (forward's default) the families'
kept tokens go through the blocks as one packed sequence per clip (vjepa/models/layers.py): every norm, linear
layer and MLP runs once over all families, attention stays within each family; `packed=False` runs the blocks
once per family. Both give the same numbers to float rounding (tests/test_models.py).

Wrapping also gives FSDP2 one root module whose forward covers the embedding, the blocks and the final norm, and
the parameter names the `backbone.` prefix that official V-JEPA checkpoints use after `module.`. With deep
supervision (backbone `levels` > 1) it returns every level, concatenated ([..., L D]), as training needs for both
the context and the target encoder.

Shapes: B batch, C channels, T frames, N tokens, K kept tokens, D width (L D with L levels).
"""

from __future__ import annotations

import torch
from torch import nn

from vjepa.masks.ops import cat_valid


class MultiMaskEncoder(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    @property
    def blocks(self) -> nn.ModuleList:
        return self.backbone.blocks

    def forward(
        self,
        video: torch.Tensor,  # [B, C, T, H, W]
        idx: list[torch.Tensor] | None = None,  # per family [B, K_f]
        valid: list[torch.Tensor | None] | None = None,  # per family [B, K_f] bool or None
        packed: bool = True,
    ) -> torch.Tensor | list[torch.Tensor]:
        tokens, grid = self.backbone.embed(video)  # [B, N, D]
        if idx is None:
            return self.backbone.forward_tokens(tokens, grid, all_levels=True)  # [B, N, L D]
        valid = valid if valid is not None else [None] * len(idx)
        if not packed or len(idx) == 1:
            # [B, K_f, L D] each
            return [self.backbone.forward_tokens(tokens, grid, i, v, all_levels=True) for i, v in zip(idx, valid)]
        segments = tuple(int(i.shape[1]) for i in idx)
        out = self.backbone.forward_tokens(
            tokens, grid, torch.cat(idx, dim=1), cat_valid(idx, valid), all_levels=True, segments=segments
        )  # [B, sum K_f, L D]
        return list(out.split(segments, dim=1))  # [B, K_f, L D] each
