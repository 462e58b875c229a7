"""Attentive probe on frozen token features: a grid of lr x weight-decay heads trained in parallel in one pass.

Paper: V-JEPA (Bardes et al. 2024) Sec. 4.3 and Appendix D.1; V-JEPA 2 (Assran et al. 2025) frozen evaluation.
- "v1": one cross-attention block: a learnable query q attends over the frozen tokens (keys and values from
  LayerNorm(tokens), the query itself is not normalised), the output is added back to q (residual), then a
  pre-LN GELU MLP (ratio 4) with residual; then LayerNorm and a linear classifier.
- "v2": four blocks: three pre-LN self-attention blocks over the tokens (the query is not involved), then the
  cross-attention block above.
Width = feature width D; heads default to 16 for D >= 1024 else D // 64 (at least 1). All Linear weights and
the query are trunc-normal (std 0.02), biases 0, LayerNorms 1/0, and the output projections of block i
(1-based) are divided by sqrt(2 i), as in the official attentive pooler.

The grid: every (lr, wd) pair of `lrs x wds` (lr-major) is one head. All heads start from the SAME initial
weights (drawn from the seed), so they differ only by their hyper-parameters, and head i of a grid equals a
probe trained alone with (lr_i, wd_i) and the same seed. `ProbeGrid` holds every parameter with a leading grid
dimension and runs all heads at once on each batch: batched matmuls; self-attention folds G into the SDPA
batch; the single-query cross-attention never projects the tokens to keys and values (the query is folded into
the key weights and the tokens are pooled before the value projection, see `_pooled_cross_attention`), which
cuts its cost from O(K D^2) to O(K D H) per sample and head. The per-head losses are summed before backward,
so each head receives exactly its own gradient. The grid keeps its parameters in two flat [G, P] tensors (with
and without weight decay) and `GridAdamW` runs torch's fused AdamW on their rows, head i with lr_i and wd_i
(2 G tensors per step instead of G x 40). `AttentiveProbe` is the readable one-head module (direct key and
value projections, explicit softmax attention): the oracle in tests and what `load_probe` returns.
Measured on CPU (1 thread; N=96 x V=3 x K=64 x D=192, batch 64, 6 heads): v1 grid 0.29 s/epoch, 6 single heads
one after another 0.57 s, the grid with direct key/value projections 2.0 s; v2 is compute-bound (the
self-attention blocks) and the grid is no faster than sequential heads on CPU (26 s/epoch either way).

Optimisation: AdamW (betas 0.9/0.999, eps 1e-8; no decay on biases and LayerNorms, as the official code),
learning rate linear warmup over `warmup_frac` of the steps then cosine to 0, constant weight decay,
cross-entropy with optional label smoothing. Training samples are every view of every training video (features
[N, V, K, D] give N*V samples); evaluation averages the softmax probabilities over the V views of each val
video (multi-clip x multi-view, e.g. 16x2x3) and reports top-1 accuracy per head after every epoch; the best
head (highest final val accuracy, then lowest train loss) is reported with its per-class accuracy and
confusion matrix. Batch order is a pure function of (seed, epoch) and the lr of the step, so a run resumed from
`probe.pt` (written atomically after every epoch) reproduces an uninterrupted one exactly.

Departures from the official code: the paper concatenates the tokens of several clips of a video into one probe
input; here each stored view (clip x spatial view) is a separate sample and predictions are averaged over
views. No data augmentation (features are extracted once). A LayerNorm precedes the linear classifier, as the
paper describes. Heads share their initial weights (the official heads are initialised independently).

Shapes: N videos, V views, K tokens, D width, H attention heads, hd = D / H, G grid heads, C classes, B batch.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evals.metrics import classification_summary
from evals.probe_io import (
    PROBE_FORMAT,
    FeatureFormatError,
    FeatureSource,
    as_features,
    atomic_save,
    check_pair,
    classification_figures,
    num_classes,
    write_result,
)
from vjepa.models.layers import Mlp, reference_attention
from vjepa.seeding import make_generator

VARIANTS = {"v1": 0, "v2": 3}  # self-attention blocks before the cross-attention block
LN_EPS = 1e-6
MLP_RATIO = 4
DEFAULT_LRS = (1e-3, 3e-4, 1e-4)
DEFAULT_WDS = (0.01, 0.1)


def default_num_heads(dim: int) -> int:
    return 16 if dim >= 1024 else max(1, dim // 64)


# ---------------------------------------------------------------------------------------------------------------
# One probe: the readable reference path.


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, d = x.shape
        q, kk, v = self.qkv(x).view(b, k, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(reference_attention(q, kk, v).transpose(1, 2).reshape(b, k, d))  # [B, K, D]


class _CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, k, d = x.shape
        h = self.num_heads
        q = self.q(query).view(1, 1, h, d // h).transpose(1, 2).expand(b, h, 1, d // h)  # [B, H, 1, hd]
        kk, v = self.kv(x).view(b, k, 2, h, d // h).permute(2, 0, 3, 1, 4)  # [B, H, K, hd] each
        return self.proj(reference_attention(q, kk, v).reshape(b, d))  # [B, D]


class _SelfBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = _SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(in_features=dim, hidden_features=MLP_RATIO * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _CrossBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = _CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(in_features=dim, hidden_features=MLP_RATIO * dim)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = query + self.attn(query, self.norm1(x))  # [B, D]
        return y + self.mlp(self.norm2(y))


class AttentiveProbe(nn.Module):
    """One attentive probe: tokens [B, K, D] -> logits [B, C]."""

    def __init__(self, *, dim: int, num_classes: int, num_heads: int | None = None, variant: str = "v1") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown attentive probe variant {variant!r}; valid: {sorted(VARIANTS)}")
        num_heads = num_heads or default_num_heads(dim)
        if dim % num_heads != 0:
            raise ValueError(f"attentive probe: width {dim} is not divisible by num_heads {num_heads}")
        self.variant, self.num_heads = variant, num_heads
        self.query = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(_SelfBlock(dim, num_heads) for _ in range(VARIANTS[variant]))
        self.cross = _CrossBlock(dim, num_heads)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """The official attentive-pooler init, drawn from `generator` (module order, so reproducible)."""
        for name, p in self.named_parameters():
            if name == "query" or (name.endswith(".weight") and p.ndim == 2):
                nn.init.trunc_normal_(p, std=0.02, generator=generator)
            else:
                p.fill_(1.0 if name.endswith(".weight") else 0.0)  # LayerNorm weight 1; every bias 0
        for i, block in enumerate([*self.blocks, self.cross], start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * i))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)  # [B, K, D]
        return self.head(self.norm(self.cross(self.query, x)))  # [B, C]


def _linear_weights(probe: AttentiveProbe) -> set[str]:
    return {f"{n}.weight" for n, m in probe.named_modules() if isinstance(m, nn.Linear)}


# ---------------------------------------------------------------------------------------------------------------
# G probes at once: parameters with a leading grid dimension.


def _ln(x: torch.Tensor, p: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """LayerNorm with per-head affine: x [M, D] (shared) or [G, M, D] -> [G, M, D]."""
    return torch.addcmul(
        p[f"{name}.bias"][:, None], F.layer_norm(x, x.shape[-1:], eps=LN_EPS), p[f"{name}.weight"][:, None]
    )


def _lin(x: torch.Tensor, p: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Per-head Linear: x [G, M, in] @ weight [G, in, out] + bias -> [G, M, out]."""
    return torch.baddbmm(p[f"{name}.bias"][:, None], x, p[f"{name}.weight"])


def _mlp(x: torch.Tensor, p: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return _lin(F.gelu(_lin(x, p, f"{name}.fc1")), p, f"{name}.fc2")


def _pooled_cross_attention(tokens: torch.Tensor, p: dict[str, torch.Tensor], h: int) -> torch.Tensor:
    """Cross-attention of each head's single query over LayerNorm(tokens), before the output projection.

    tokens: [B, K, D] (shared by all heads) or [G, B, K, D] -> [G, B, D]. With one query, keys and values need
    not be materialised: with LN(x) = xh * w + c and per-head slices Wk_h, Wv_h of the kv projection,
      score_h(x) = q_h . (LN(x) Wk_h + bk_h) / sqrt(hd) = xh . (w * (Wk_h q_h)) / sqrt(hd) + const,
      out_h = sum_k a_hk (LN(x_k) Wv_h + bv_h) = (sum_k a_hk xh_k) (w * Wv_h) + c Wv_h + bv_h,
    (the constant drops out of the softmax; the weights a_hk sum to 1). This costs O(K D H) per sample and head
    instead of the O(K D^2) of projecting every token; `AttentiveProbe` computes it the direct way.
    """
    g, d = p["query"].shape[0], p["query"].shape[-1]
    hd = d // h
    *_, b, k, _ = tokens.shape
    xh = F.layer_norm(tokens, (d,), eps=LN_EPS)  # [(G,) B, K, D]
    w, c = p["cross.norm1.weight"], p["cross.norm1.bias"]  # [G, D]
    wk, wv = p["cross.attn.kv.weight"].split(d, dim=2)  # [G, D, D] each
    bv = p["cross.attn.kv.bias"][:, d:]  # [G, D]
    q = _lin(p["query"], p, "cross.attn.q").view(g, h, hd)  # [G, H, hd]
    a = torch.einsum("gdhe,ghe->gdh", (w[:, :, None] * wk).view(g, d, h, hd), q) / math.sqrt(hd)  # [G, D, H]
    if tokens.ndim == 3:  # shared tokens: one GEMM for all heads
        scores = (xh.reshape(b * k, d) @ a.permute(1, 0, 2).reshape(d, g * h)).view(b, k, g, h)  # [B, K, G, H]
        attn = scores.permute(2, 0, 3, 1).softmax(dim=-1)  # [G, B, H, K]
        pooled = torch.einsum("gbhk,bkd->gbhd", attn, xh)  # [G, B, H, D]
    else:
        scores = torch.bmm(xh.reshape(g, b * k, d), a).view(g, b, k, h)  # [G, B, K, H]
        attn = scores.permute(0, 1, 3, 2).softmax(dim=-1)  # [G, B, H, K]
        pooled = torch.einsum("gbhk,gbkd->gbhd", attn, xh)  # [G, B, H, D]
    out = torch.einsum("gbhd,gdhe->gbhe", pooled, (w[:, :, None] * wv).view(g, d, h, hd))  # [G, B, H, hd]
    bias = torch.bmm(c[:, None], wv).squeeze(1) + bv  # [G, D]
    return out.reshape(g, b, d) + bias[:, None]  # [G, B, D]


class ProbeGrid:
    """G attentive probes of one architecture, their parameters in two flat leaf tensors [G, P] (with and without
    weight decay). `params` gives views name -> [G, ...] (Linear weights laid out [G, in, out]); gradients of the
    views land in the flat tensors, so the optimizer updates 2 G contiguous tensors (2 per head)."""

    KINDS = ("decay", "no_decay")

    def __init__(self, params: dict[str, torch.Tensor], *, variant: str, num_heads: int, linear: set[str]) -> None:
        self.variant, self.num_heads, self.linear = variant, num_heads, linear
        self.size, _, self.dim = params["query"].shape
        self.num_classes = params["head.bias"].shape[1]
        self.shapes = {n: tuple(p.shape[1:]) for n, p in params.items()}
        # as the official probes: no weight decay for biases and 1-D tensors (per head), i.e. LayerNorm weights
        self.names = {
            "decay": [n for n, p in params.items() if not n.endswith(".bias") and p.ndim > 2],
            "no_decay": [n for n, p in params.items() if n.endswith(".bias") or p.ndim <= 2],
        }
        self.flat = {
            kind: torch.cat([params[n].detach().reshape(self.size, -1) for n in names], dim=1).requires_grad_(True)
            for kind, names in self.names.items()
        }  # [G, P_kind] each

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """name -> [G, ...] views of the flat tensors (differentiable; in-place edits under no_grad persist)."""
        out = {}
        for kind, names in self.names.items():
            sizes = [math.prod(self.shapes[n]) for n in names]
            for n, t in zip(names, self.flat[kind].split(sizes, dim=1)):
                out[n] = t.view(self.size, *self.shapes[n])
        return out

    @classmethod
    def replicate(cls, probe: AttentiveProbe, size: int) -> ProbeGrid:
        """A grid of `size` copies of `probe`."""
        linear = _linear_weights(probe)
        params = {}
        for name, p in probe.named_parameters():
            p = p.detach().T if name in linear else p.detach()
            params[name] = p.unsqueeze(0).repeat(size, *[1] * p.ndim)
        return cls(params, variant=probe.variant, num_heads=probe.num_heads, linear=linear)

    def probe(self, i: int) -> AttentiveProbe:
        """Head i as a stand-alone AttentiveProbe (a copy)."""
        probe = AttentiveProbe(
            dim=self.dim, num_classes=self.num_classes, num_heads=self.num_heads, variant=self.variant
        )
        state = {n: (p[i].T if n in self.linear else p[i]).detach().clone() for n, p in self.params.items()}
        probe.load_state_dict(state)
        return probe.eval()

    def zero_grad(self) -> None:
        for t in self.flat.values():
            t.grad = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, K, D] (shared by all heads) -> logits [G, B, C]."""
        p, g, h = self.params, self.size, self.num_heads
        b, k, d = x.shape
        tokens = x  # [B, K, D]; becomes [G, B, K, D] after the first self-attention block
        for i in range(VARIANTS[self.variant]):
            pre = f"blocks.{i}"
            qkv = _lin(_ln(tokens.reshape(-1, b * k, d), p, f"{pre}.norm1"), p, f"{pre}.attn.qkv")  # [G, B*K, 3D]
            q, kk, v = qkv.view(g * b, k, 3, h, d // h).permute(2, 0, 3, 1, 4)  # [G*B, H, K, hd] each
            a = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(g, b * k, d)  # [G, B*K, D]
            tokens = tokens + _lin(a, p, f"{pre}.attn.proj").view(g, b, k, d)  # [G, B, K, D]
            tokens = tokens + _mlp(_ln(tokens.view(g, b * k, d), p, f"{pre}.norm2"), p, f"{pre}.mlp").view(g, b, k, d)
        y = p["query"] + _lin(_pooled_cross_attention(tokens, p, h), p, "cross.attn.proj")  # [G, B, D]
        y = y + _mlp(_ln(y, p, "cross.norm2"), p, "cross.mlp")
        return _lin(_ln(y, p, "norm"), p, "head")  # [G, B, C]

    __call__ = forward


class GridAdamW:
    """torch.optim.AdamW over the rows of a grid's flat tensors: head i has two parameter groups, its row of the
    decay tensor (weight decay wd_i) and its row of the no-decay tensor, both with learning rate lr_i."""

    def __init__(self, grid: ProbeGrid, hypers: Sequence[tuple[float, float]], *, fused: bool = True) -> None:
        self.links: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (row view, flat tensor, head)
        groups = []
        for i, (lr, wd) in enumerate(hypers):
            for kind in grid.KINDS:
                row = grid.flat[kind].detach()[i].requires_grad_(True)  # shares storage with the flat tensor
                self.links.append((row, grid.flat[kind], i))
                groups.append(
                    {"params": [row], "lr": lr, "base_lr": lr, "weight_decay": wd if kind == "decay" else 0.0}
                )
        self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8, fused=fused)

    def step(self, lr_scale: float) -> None:
        """One AdamW update of every head with lr_i * lr_scale, from the grads of the flat tensors."""
        for row, flat, i in self.links:
            row.grad = flat.grad[i]
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base lr at `step` (0-based): linear warmup to 1, then cosine to 0 at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of `epoch`: a permutation drawn from (seed, epoch) alone."""
    return torch.randperm(num_samples, generator=make_generator(seed, "attentive-order", epoch))


@torch.no_grad()
def predict_proba(grid: ProbeGrid, features: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Class probabilities [G, N, C] of videos [N, V, K, D]: softmax per view, averaged over the V views."""
    n, views, k, d = features.shape
    flat = features.reshape(n * views, k, d)  # [N*V, K, D], video-major
    probs = [grid(flat[s : s + batch_size].float()).softmax(-1) for s in range(0, n * views, batch_size)]
    return torch.cat(probs, dim=1).view(grid.size, n, views, -1).mean(dim=2)  # [G, N, C]


def _token_features(src: FeatureSource, name: str) -> tuple[dict, str]:
    feats, source = as_features(src, name)
    if feats["output"] == "pooled":
        raise FeatureFormatError(
            f"{source}['features']: the attentive probe needs token or frame features [N, V, K, D], got pooled "
            f"{list(feats['features'].shape)}; extract with --output tokens"
        )
    return feats, source


def _check_resumable(saved: dict, config: dict, path: Path) -> None:
    if saved.get("format") != PROBE_FORMAT:
        raise ValueError(f"{path}: not a probe checkpoint (format {saved.get('format')!r}); use another --out")
    diff = sorted(k for k in set(saved["config"]) | set(config) if saved["config"].get(k) != config.get(k))
    if diff:
        pairs = ", ".join(f"{k}: {saved['config'].get(k)!r} -> {config.get(k)!r}" for k in diff)
        raise ValueError(f"{path}: cannot resume, the run differs in {pairs}; use another --out or resume=False")


def _best_head(history_entry: dict) -> int:
    acc, loss = history_entry["val_accuracy"], history_entry["train_loss"]
    return min(range(len(acc)), key=lambda i: (-acc[i], loss[i], i))


def run_attentive(
    train_feats: FeatureSource,
    val_feats: FeatureSource,
    out_dir: str | Path,
    *,
    variant: str = "v1",
    lrs: Sequence[float] = DEFAULT_LRS,
    wds: Sequence[float] = DEFAULT_WDS,
    epochs: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    num_heads: int | None = None,
    resume: bool = True,
    warmup_frac: float = 0.1,
    label_smoothing: float = 0.0,
    stop_after: int | None = None,
    figures: bool = True,
) -> dict:
    """Train the lrs x wds grid of attentive probes on train features, score every head on val after each epoch.

    Checkpoints `out_dir/probe.pt` after every epoch and resumes from it when `resume` (the run's settings and
    data shapes must match). `stop_after=e` ends this call after epoch e (for preemption and resume tests).
    Writes `result.json` and report.md (with figures unless `figures=False`) and returns the result dict.
    """
    t_start = time.perf_counter()
    train, train_src = _token_features(train_feats, "train")
    val, val_src = _token_features(val_feats, "val")
    check_pair(train, val, train_src, val_src)
    if not lrs or not wds or epochs < 1 or batch_size < 1:
        raise ValueError(
            f"attentive probe: need lrs, wds, epochs >= 1, batch_size >= 1 (got {lrs}, {wds}, {epochs}, {batch_size})"
        )
    xt, yt = train["features"], train["labels"]  # [N, V, K, D], [N]
    xv, yv = val["features"], val["labels"]  # [M, V', K', D], [M]
    n, views, _, dim = xt.shape
    c = num_classes(yt, yv)
    num_heads = num_heads or default_num_heads(dim)
    x_train = xt.reshape(n * views, *xt.shape[2:])  # [N*V, K, D], video-major
    y_train = yt.repeat_interleave(views)  # [N*V]
    hypers = [(lr, wd) for lr in lrs for wd in wds]
    g = len(hypers)
    steps_per_epoch = math.ceil(n * views / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup_steps = round(warmup_frac * total_steps)
    config = {
        "variant": variant, "lrs": list(lrs), "wds": list(wds), "epochs": epochs, "batch_size": batch_size,
        "seed": seed, "num_heads": num_heads, "warmup_frac": warmup_frac, "label_smoothing": label_smoothing,
        "train_shape": list(xt.shape), "val_shape": list(xv.shape), "num_classes": c,
    }  # fmt: skip

    out = Path(out_dir)
    ckpt_path = out / "probe.pt"
    probe0 = AttentiveProbe(dim=dim, num_classes=c, num_heads=num_heads, variant=variant)
    probe0.reset_parameters(make_generator(seed, "attentive-init"))
    grid = ProbeGrid.replicate(probe0, g)
    opt = GridAdamW(grid, hypers)
    start, history = 0, []
    if resume and ckpt_path.exists():
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        _check_resumable(saved, config, ckpt_path)
        with torch.no_grad():
            for name, p in grid.params.items():
                p.copy_(saved["params"][name])  # into the flat tensors
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"]["torch"])
        start, history = saved["epoch"], saved["history"]

    train_s, eval_s, probs = [], [], None
    for epoch in range(start, epochs):
        if stop_after is not None and epoch >= stop_after:
            break
        t0 = time.perf_counter()
        order = epoch_order(n * views, seed, epoch)
        loss_sum = torch.zeros(g, dtype=torch.float64)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x, y = x_train[idx].float(), y_train[idx]  # [B, K, D], [B]
            logits = grid(x)  # [G, B, C]
            losses = (
                F.cross_entropy(logits.reshape(-1, c), y.repeat(g), label_smoothing=label_smoothing, reduction="none")
                .view(g, -1)
                .mean(1)
            )  # [G]
            grid.zero_grad()
            losses.sum().backward()  # heads share no parameters: each gets exactly its own gradient
            opt.step(lr_factor(epoch * steps_per_epoch + i, total_steps, warmup_steps))
            loss_sum += losses.detach().double() * len(idx)
        t1 = time.perf_counter()
        probs = predict_proba(grid, xv, batch_size)  # [G, M, C]
        val_acc = (probs.argmax(-1) == yv).double().mean(1)  # [G]
        eval_s.append(time.perf_counter() - t1)
        train_s.append(t1 - t0)
        history.append(
            {"epoch": epoch + 1, "train_loss": (loss_sum / (n * views)).tolist(), "val_accuracy": val_acc.tolist()}
        )
        state = {
            "format": PROBE_FORMAT, "kind": "attentive-grid", "config": config, "epoch": epoch + 1,
            "params": {k: v.detach().clone() for k, v in grid.params.items()}, "optimizer": opt.state_dict(),
            "rng": {"torch": torch.get_rng_state()}, "history": history, "hypers": hypers,
        }  # fmt: skip
        atomic_save(state, ckpt_path)

    if probs is None and history:  # nothing left to train: score the loaded heads again
        probs = predict_proba(grid, xv, batch_size)
    done = history[-1]["epoch"] if history else 0
    last = history[-1] if history else {"train_loss": [float("nan")] * g, "val_accuracy": [0.0] * g}
    best = _best_head(last)
    heads = [
        {"index": i, "lr": lr, "wd": wd, "val_accuracy": last["val_accuracy"][i], "train_loss": last["train_loss"][i]}
        for i, (lr, wd) in enumerate(hypers)
    ]
    summary = classification_summary(probs[best].argmax(-1), yv, c) if probs is not None else {}
    result = {
        "eval": "attentive",
        "accuracy": heads[best]["val_accuracy"],
        "best": heads[best],
        "variant": variant,
        "completed_epochs": done,
        "finished": done == epochs,
        "config": config,
        "train": {"source": train_src, "videos": n, "views": views, "tokens": xt.shape[2]},
        "val": {"source": val_src, "videos": xv.shape[0], "views": xv.shape[1], "tokens": xv.shape[2]},
        "dim": dim,
        "num_classes": c,
        **{k: v for k, v in summary.items() if k != "accuracy"},
        "heads": heads,
        "history": history,
        "checkpoint": str(ckpt_path),
        "timings": {
            "train_s_per_epoch": sum(train_s) / len(train_s) if train_s else None,
            "eval_s_per_epoch": sum(eval_s) / len(eval_s) if eval_s else None,
            "total_s": time.perf_counter() - t_start,
        },
    }
    figs = (
        classification_figures(summary["confusion_matrix"], summary["per_class_accuracy"])
        if summary and figures
        else {}
    )
    write_result(out, f"Attentive probe ({variant})", result, tables={"Grid heads (last epoch)": heads}, figures=figs)
    return result


def load_probe(path: str | Path, head: int | None = None) -> AttentiveProbe:
    """Head `head` (default: the best at the last epoch) of a `probe.pt` grid checkpoint, as an AttentiveProbe."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != PROBE_FORMAT or saved.get("kind") != "attentive-grid":
        raise ValueError(f"{path}: not an attentive probe checkpoint (format '{PROBE_FORMAT}', kind 'attentive-grid')")
    cfg = saved["config"]
    template = AttentiveProbe(
        dim=cfg["train_shape"][-1], num_classes=cfg["num_classes"], num_heads=cfg["num_heads"], variant=cfg["variant"]
    )
    grid = ProbeGrid(
        saved["params"], variant=cfg["variant"], num_heads=cfg["num_heads"], linear=_linear_weights(template)
    )
    return grid.probe(_best_head(saved["history"][-1]) if head is None else head)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vjepa eval attentive --train FEATS --val FEATS --out DIR`."""
    parser.add_argument("--train", required=True, help="train token features (`vjepa eval extract --output tokens`)")
    parser.add_argument("--val", required=True, help="val token features")
    parser.add_argument("--out", required=True, help="output folder: probe.pt (checkpoint), result.json, report.md")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="v1", help="v1: 1 cross block; v2: 3 self + 1")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS), help="learning rates of the grid")
    parser.add_argument("--wds", type=float, nargs="+", default=list(DEFAULT_WDS), help="weight decays of the grid")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads (16 if D >= 1024 else D // 64)")
    parser.add_argument("--warmup-frac", type=float, default=0.1, help="fraction of steps of linear lr warmup")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing probe.pt")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after this epoch (resume later)")
    parser.add_argument("--no-figures", dest="figures", action="store_false", help="report without PNG figures")


def run(args: argparse.Namespace) -> int:
    """Run the attentive probe grid from parsed arguments; 0 on success, 2 with a one-line error otherwise."""
    try:
        result = run_attentive(
            args.train, args.val, args.out, variant=args.variant, lrs=args.lrs, wds=args.wds, epochs=args.epochs,
            batch_size=args.batch_size, seed=args.seed, num_heads=args.num_heads, resume=args.resume,
            warmup_frac=args.warmup_frac, label_smoothing=args.label_smoothing, stop_after=args.stop_after,
            figures=args.figures,
        )  # fmt: skip
    except (FeatureFormatError, ValueError) as err:
        print(f"vjepa eval attentive: {err}", file=sys.stderr)
        return 2
    b = result["best"]
    print(
        f"attentive probe ({result['variant']}) epoch {result['completed_epochs']}/{args.epochs}: best head "
        f"lr {b['lr']:g} wd {b['wd']:g} val accuracy {100 * b['val_accuracy']:.2f}%; wrote {Path(args.out)}"
    )
    return 0
