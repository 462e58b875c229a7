"""Attentive probe on frozen token features: a grid of lr x weight-decay heads trained in parallel in one pass.

Paper: V-JEPA (Bardes et al. 2024) Sec. 4.3 and Appendix D.1; V-JEPA 2 (Assran et al. 2025) frozen evaluation.
The probe modules ("v1": one cross-attention block, "v2": three self-attention blocks then the cross-attention
block; `AttentiveProbe`, the batched `ProbeGrid` and its optimizer `GridAdamW`) are in evals/attentive_probe.py;
this module is the training and evaluation driver: data, lr schedule, epochs, checkpoints and the CLI.

The grid: every (lr, wd) pair of `lrs x wds` (lr-major) is one head. All heads start from the SAME initial
weights (drawn from the seed), so they differ only by their hyper-parameters, and head i of a grid equals a
probe trained alone with (lr_i, wd_i) and the same seed. The per-head losses are summed before backward, so
each head receives exactly its own gradient.

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
views. No data augmentation (features are extracted once). Heads share their initial weights (the official
heads are initialised independently). (The architecture's departure, a LayerNorm before the classifier, is
noted in evals/attentive_probe.py.)

Shapes: N videos, V views, K tokens, D width, G grid heads, C classes, B batch.
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
from vjepa.evals.attentive_probe import (
    VARIANTS,
    AttentiveProbe,
    GridAdamW,
    ProbeGrid,
    default_num_heads,
    linear_weight_names,
)
from vjepa.evals.metrics import classification_summary
from vjepa.evals.probe_io import (
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

from vjepa.seeding import make_generator

DEFAULT_LRS = (1e-3, 3e-4, 1e-4)
DEFAULT_WDS = (0.01, 0.1)


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
        saved["params"], variant=cfg["variant"], num_heads=cfg["num_heads"], linear=linear_weight_names(template)
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
