"""Encoder size presets (ViT widths, depths, heads, MLP ratios) used by V-JEPA 1 and 2, and predictor defaults.

Paper: V-JEPA Sec. 4 / Appendix B (ViT-L/16, ViT-H/16); tiny/small/base follow the usual ViT family. Two giants
share width 1408, depth 40 and MLP ratio 48/11 (MLP hidden width int(1408 * 48 / 11) = 6144) but not the heads:
`giant_v1` is V-JEPA 1's `vit_giant` (16 heads of 88 channels); `giant_v2` is V-JEPA 2's ViT-g, the official
`vit_giant_xformers` (22 heads of 64 channels). `giant` is an alias of `giant_v2` (what `giant` meant here before
both were offered). `ModelConfig.resolved()` starts from one of these and applies explicit overrides.

Predictor defaults: the official code gives the predictor the encoder's heads in V-JEPA 1 and 12 heads in V-JEPA 2,
and an MLP ratio of 4 in both. The default predictor width 384 is not divisible by 22, so `giant_v2` defaults to
12 predictor heads (as V-JEPA 2); every other preset keeps the encoder's heads. Both giants use MLP ratio 4 in the
predictor; the other presets use their encoder's ratio, which is 4 unless `model.mlp_ratio` overrides it.

Shapes: none.
"""

from __future__ import annotations

ENCODER_PRESETS: dict[str, dict[str, float | int]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "giant_v1": dict(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11),  # V-JEPA 1 vit_giant
    "giant_v2": dict(embed_dim=1408, depth=40, num_heads=22, mlp_ratio=48 / 11),  # V-JEPA 2 ViT-g
}
PRESET_ALIASES: dict[str, str] = {"giant": "giant_v2"}  # giant = V-JEPA 2's ViT-g (22 heads), not V1's vit_giant
ENCODER_PRESETS.update({alias: ENCODER_PRESETS[name] for alias, name in PRESET_ALIASES.items()})

# Predictor settings that differ from "the encoder's heads and MLP ratio", per preset (aliases resolved first).
PREDICTOR_DEFAULTS: dict[str, dict[str, float | int]] = {
    "giant_v1": dict(mlp_ratio=4.0),
    "giant_v2": dict(num_heads=12, mlp_ratio=4.0),
}


def canonical_preset(name: str) -> str:
    """The preset an alias stands for (`giant` -> `giant_v2`); other names unchanged."""
    return PRESET_ALIASES.get(name, name)


def describe_presets() -> str:
    """One-line list of the presets for error messages, aliases spelled out."""
    names = [n for n in ENCODER_PRESETS if n not in PRESET_ALIASES]
    aliases = [f"{alias} (= {name})" for alias, name in PRESET_ALIASES.items()]
    return ", ".join(names + aliases) + "; giant_v1 is V-JEPA 1's vit_giant (16 heads), giant_v2 V-JEPA 2's ViT-g (22)"
