"""V-JEPA models: video ViT encoder, predictor, their layers, position embeddings and the one init site.

Shapes: B batch, N tokens, K kept tokens, D width (see each module's legend).
"""

from vjepa.models.encoder import VisionTransformer
from vjepa.models.init import init_weights
from vjepa.models.layers import Attention, Block, Mlp
from vjepa.models.patch_embed import PatchEmbed3D
from vjepa.models.pos_embed import RoPE3D, apply_rope, interpolate_table, sincos_3d_table
from vjepa.models.predictor import Predictor
from vjepa.models.presets import ENCODER_PRESETS

__all__ = [
    "ENCODER_PRESETS",
    "Attention",
    "Block",
    "Mlp",
    "PatchEmbed3D",
    "Predictor",
    "RoPE3D",
    "VisionTransformer",
    "apply_rope",
    "init_weights",
    "interpolate_table",
    "sincos_3d_table",
]
