"""The FLOP model of a V-JEPA training step, model FLOP utilisation (MFU), and peak memory as runs report it.

Counted: multiply-accumulates of every matrix product, as 2 FLOPs each (the convention of the PaLM paper's MFU,
arXiv 2204.02311 App. B, and of torch.utils.flop_counter, which tests/test_flops.py checks this model against).
Norms, activations, softmax, RoPE, the loss and the optimiser are left out (a fraction of a percent for a ViT).

Per clip, with width D, MLP ratio r, depth L, n tokens through a transformer:
    block(n, D)        = 2 n D^2 (3 + 1 + 2 r)          qkv, output projection, the two MLP layers
                       + 4 n^2 D                          Q K^T and attention x V (within each sequence)
    patch embedding    = 2 N D (C t p^2)                  the Conv3d over the N tubelets of the clip
    target encoder     = patch embedding + L block(N, D)  forward only, the full clip
    context encoder    = patch embedding + sum_f L block(Kc_f, D)      (the clip is embedded once)
    predictor, family f = 2 Kc_f (l D) P  [embed]  + L_p block(Kc_f + Kt_f, P)  + 2 Kt_f P (l D)  [projection]
                         (l = deep-supervision levels; the V-JEPA 2.1 embed MLP adds 2 Kc_f (l D) D, and the
                         context head 2 Kc_f P (l D))
    step               = target + 3 (context + sum_f predictor_f)     backward = twice the forward
(pixel targets: no target encoder, and the predictor's projection goes to the C t p^2 pixels of a tubelet)
Kc_f, Kt_f are the kept context and target tokens of mask family f (valid tokens: padding is not model work).
MFU = step FLOPs x clips per second per GPU / the GPU's peak dense bf16 FLOP/s (PEAK_BF16_FLOPS, from NVIDIA's
data sheets, without sparsity); None where the peak is unknown (CPUs, unlisted GPUs: pass one explicitly).

Shapes: N tokens of the clip, Kc / Kt context / target tokens, D encoder width, P predictor width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Dense bf16 tensor-core peak per GPU, FLOP/s, matched against torch.cuda.get_device_name (first match wins).
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),  # SXM
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
)


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (torch.cuda.get_device_name), None when not listed."""
    for key, value in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def block_flops(tokens: float, width: int, mlp_ratio: float, attn_tokens: float | None = None) -> float:
    """One transformer block's forward on `tokens` tokens of one clip; attention over sequences of
    `attn_tokens` (default: one sequence of all the tokens)."""
    seq = tokens if attn_tokens is None else attn_tokens
    return 2 * tokens * width * width * (4 + 2 * mlp_ratio) + 4 * tokens * seq * width


@dataclass(frozen=True)
class StepShape:
    """What the FLOP model needs about a run: sizes of the clip, the encoder and the predictor."""

    tokens: int  # N
    patch_dim: int  # C t p^2
    width: int  # D
    depth: int
    mlp_ratio: float
    pred_width: int  # P
    pred_depth: int
    pred_mlp_ratio: float
    levels: int = 1
    context_head: bool = False
    pixel_targets: bool = False  # optim.target=pixels: no target encoder, the predictor outputs C t p^2 pixels

    @classmethod
    def from_config(cls, cfg) -> StepShape:
        from vjepa.pixels import pixel_dim

        m, d = cfg.model, cfg.data
        r = m.resolved()
        grid = (d.frames_per_clip // m.tubelet_size) * (d.crop_size // m.patch_size) ** 2
        return cls(
            tokens=grid,
            patch_dim=pixel_dim(3, m.tubelet_size, m.patch_size),
            width=r["embed_dim"],
            depth=r["depth"],
            mlp_ratio=r["mlp_ratio"],
            pred_width=m.pred_embed_dim,
            pred_depth=m.pred_depth,
            pred_mlp_ratio=m.predictor_arch()["mlp_ratio"],
            levels=m.levels,
            context_head=cfg.optim.dense_weight > 0,
            pixel_targets=cfg.optim.target == "pixels",
        )

    def encoder(self, tokens: Sequence[float] | None = None) -> float:
        """Forward FLOPs of an encoder per clip: the full clip (None) or kept token counts, one per family."""
        embed = 2 * self.tokens * self.patch_dim * self.width
        counts = [self.tokens] if tokens is None else list(tokens)
        return embed + sum(self.depth * block_flops(k, self.width, self.mlp_ratio) for k in counts)

    def predictor(self, ctx: float, tgt: float) -> float:
        """Forward FLOPs of the predictor per clip for one family with ctx context and tgt target tokens."""
        d_in, p = self.levels * self.width, self.pred_width
        embed = 2 * ctx * d_in * p if self.levels == 1 else 2 * ctx * d_in * self.width + 2 * ctx * self.width * p
        out_dim = self.patch_dim if self.pixel_targets else d_in
        out = 2 * tgt * p * out_dim + (2 * ctx * p * d_in if self.context_head else 0)
        return embed + self.pred_depth * block_flops(ctx + tgt, p, self.pred_mlp_ratio) + out

    def step(self, ctx: Sequence[float], tgt: Sequence[float]) -> dict[str, float]:
        """FLOPs per clip of one training step, by part, and their total ("step"); ctx, tgt: kept tokens per
        family."""
        target = 0.0 if self.pixel_targets else self.encoder(None)
        context = self.encoder(ctx)
        predictor = sum(self.predictor(c, t) for c, t in zip(ctx, tgt))
        return {
            "target_encoder": target,
            "context_encoder": context,
            "predictor": predictor,
            "backward": 2 * (context + predictor),
            "step": target + 3 * (context + predictor),
        }


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: the CUDA allocator's peak on a GPU, the process's max RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def mfu(step_flops: float, clips_per_s_per_device: float, peak: float | None) -> float | None:
    """Model FLOP utilisation in [0, 1] (None without a peak)."""
    if not peak:
        return None
    return step_flops * clips_per_s_per_device / peak
