"""The one weight-initialisation site for encoders and predictors.

Paper / official code (V-JEPA Appendix B; ViT practice): truncated normal std 0.02 (truncated at +-2 absolute,
as timm and the official code do) for Linear and Conv weights, zero biases, LayerNorm weight 1 / bias 0, mask
tokens zero; then, with `rescale`, the output projections of each residual branch (`attn.proj`, `mlp.fc2`) of
the l-th block (l from 1) are divided by sqrt(2 l), which keeps the residual stream's variance from growing
with depth. Departure: the official V-JEPA 1 code applies this rescale and then re-initialises the weights,
losing it; we keep it (switch off with `rescale=False`). The sin-cos position buffers are refilled too, so the
function also completes a model created on the meta device and materialised with `to_empty`.
Call it on unsharded modules (before FSDP is applied).

Shapes: none (parameters only).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vjepa.models.layers import Block


@torch.no_grad()
def init_weights(model: nn.Module, rescale: bool = True, std: float = 0.02) -> None:
    """Initialise every Linear/Conv/LayerNorm/mask token under `model` in place; see the module docstring."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            nn.init.trunc_normal_(module.weight, std=std, a=-2.0, b=2.0)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        mask_tokens = getattr(module, "mask_tokens", None)
        if isinstance(mask_tokens, nn.ParameterList):
            for token in mask_tokens:
                nn.init.zeros_(token)
        if hasattr(module, "reset_pos_embed"):
            module.reset_pos_embed()
    if rescale:
        seen: set[int] = set()  # a wrapper may expose its backbone's `blocks` too: rescale each list once
        for module in model.modules():
            blocks = getattr(module, "blocks", None)
            if not isinstance(blocks, nn.ModuleList) or id(blocks) in seen:
                continue
            seen.add(id(blocks))
            for layer_id, block in enumerate(blocks, start=1):
                if isinstance(block, Block):
                    block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
                    block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))
