"""Encoder size presets (ViT widths, depths, heads, MLP ratios) used by V-JEPA 1 and 2.

Paper: V-JEPA Sec. 4 / Appendix B (ViT-L/16, ViT-H/16); V-JEPA 2 adds ViT-g (width 1408, MLP ratio 48/11, so the
MLP hidden width is int(1408 * 48 / 11) = 6144). tiny/small/base follow the usual ViT family.
`ModelConfig.resolved()` starts from one of these and applies explicit overrides.

Shapes: none.
"""

from __future__ import annotations

ENCODER_PRESETS: dict[str, dict[str, float | int]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "giant": dict(embed_dim=1408, depth=40, num_heads=22, mlp_ratio=48 / 11),
}
