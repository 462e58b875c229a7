"""Context/target masks for V-JEPA (paper Sec. 3.2, Sec. 4.3 ablations, Appendix B).

Families: multi-block 3D (default), random-tube[r], causal multi-block[p], blocks placed uniformly or by motion
(motion.py, FLD motion-guided masking); `MaskGenerator` samples them for a batch as index tensors [B, K] (flat
(t, h, w) row-major token indices; the training stream draws them per batch, vjepa/data/loader.py),
`gather_tokens` applies them.

Shapes: B batch, N tokens, K kept tokens, D width.
"""

from vjepa.masks.collator import FamilyMasks, MaskGenerator
from vjepa.masks.ops import coords_to_idx, gather_tokens, idx_to_coords, index_to_mask, mask_to_index

__all__ = [
    "FamilyMasks",
    "MaskGenerator",
    "coords_to_idx",
    "gather_tokens",
    "idx_to_coords",
    "index_to_mask",
    "mask_to_index",
]
