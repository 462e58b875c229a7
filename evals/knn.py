"""k-NN classification of frozen features with cosine similarity (k = 1, 3, 5 by default).

Protocol (as the k-NN evaluation of the DINOv3-vs-V-JEPA 2 analysis, arXiv 2509.21595, Sec. 3.4): the train
split is the memory bank, each val video is a query. Token or frame features are first mean-pooled to [N, V, D];
each view is L2-normalised and the V views of a video are averaged (then normalised again), giving one unit
vector per video. Similarity is the dot product of unit vectors (cosine).

Neighbours: the k most similar train videos; equal similarities are ordered by train index (stable sort), so
the neighbour set is deterministic. Votes:
- "uniform" (default): one vote per neighbour; a tie between classes goes to the smallest class index
  (scikit-learn's `KNeighborsClassifier(weights="uniform")` rule, which tests use as an oracle);
- "similarity": each neighbour votes with its cosine similarity; ties again go to the smallest class index.
The DINO-style temperature-weighted vote (exp(s / T)) is not implemented.

Shapes: N train videos, M val (query) videos, V views, D width, C classes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from vjepa.evals.metrics import classification_summary
from vjepa.evals.probe_io import (
    FeatureFormatError,
    FeatureSource,
    as_features,
    check_pair,
    classification_figures,
    num_classes,
    pooled_features,
    write_result,
)

WEIGHTS = ("uniform", "similarity")
DEFAULT_KS = (1, 3, 5)


def video_embeddings(features: torch.Tensor) -> torch.Tensor:
    """[N, V, D] -> [N, D] unit vectors: normalise each view, average the views, normalise again."""
    return F.normalize(F.normalize(features.float(), dim=-1).mean(dim=1), dim=-1)


def knn_predict(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    query: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    num_classes: int,
    weights: str = "uniform",
    max_chunk_elements: int = 1 << 25,
) -> dict[int, torch.Tensor]:
    """Predicted class [M] for each k, from train [N, D] (labels [N]) and query [M, D] (normalised here)."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown k-NN weights {weights!r}; valid: {WEIGHTS}")
    if max(ks) > train.shape[0] or min(ks) < 1:
        raise ValueError(f"k must be in 1..{train.shape[0]} (train size), got {list(ks)}")
    t = F.normalize(train.float(), dim=-1)  # [N, D]
    k_max = max(ks)
    chunk = max(1, max_chunk_elements // t.shape[0])  # query rows per [m, N] similarity block
    preds: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for start in range(0, query.shape[0], chunk):
        q = F.normalize(query[start : start + chunk].float(), dim=-1)  # [m, D]
        sim = q @ t.T  # [m, N]
        order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k_max]  # [m, k_max]
        nb_labels = train_labels[order]  # [m, k_max]
        nb_votes = sim.gather(1, order) if weights == "similarity" else torch.ones_like(sim[:, :k_max])  # [m, k_max]
        votes = F.one_hot(nb_labels, num_classes).to(nb_votes.dtype) * nb_votes[..., None]  # [m, k_max, C]
        cum = votes.cumsum(dim=1)  # [m, k_max, C]: votes of the first k neighbours at index k-1
        for k in ks:
            preds[k].append(cum[:, k - 1].argmax(dim=1))  # argmax returns the first (smallest) tied class
    return {k: torch.cat(p) for k, p in preds.items()}


def run_knn(
    train_feats: FeatureSource,
    val_feats: FeatureSource,
    out_dir: str | Path | None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    weights: str = "uniform",
    figures: bool = True,
) -> dict:
    """k-NN accuracy of val videos against the train bank for each k; writes result.json and report.md (figures
    unless `figures=False`) to out_dir when given."""
    t0 = time.perf_counter()
    train, train_src = as_features(train_feats, "train")
    val, val_src = as_features(val_feats, "val")
    check_pair(train, val, train_src, val_src)
    c = num_classes(train["labels"], val["labels"])
    bank = video_embeddings(pooled_features(train))  # [N, D]
    queries = video_embeddings(pooled_features(val))  # [M, D]
    preds = knn_predict(bank, train["labels"], queries, ks, num_classes=c, weights=weights)
    summaries = {k: classification_summary(p, val["labels"], c) for k, p in preds.items()}
    best_k = max(ks, key=lambda k: (summaries[k]["accuracy"], -k))
    result = {
        "eval": "knn",
        "accuracy": {str(k): summaries[k]["accuracy"] for k in ks},
        "best_k": best_k,
        "config": {"ks": list(ks), "weights": weights, "similarity": "cosine", "views": "normalised view average"},
        "train": {"source": train_src, "videos": bank.shape[0], "views": train["features"].shape[1]},
        "val": {"source": val_src, "videos": queries.shape[0], "views": val["features"].shape[1]},
        "dim": bank.shape[1],
        "num_classes": c,
        "per_k": {str(k): {n: v for n, v in summaries[k].items() if n != "confusion_matrix"} for k in ks},
        "per_class_accuracy": summaries[best_k]["per_class_accuracy"],
        "confusion_matrix": summaries[best_k]["confusion_matrix"],
        "timings": {"total_s": time.perf_counter() - t0},
    }
    if out_dir is not None:
        rows = [
            {"k": k, "accuracy": s["accuracy"], "balanced accuracy": s["balanced_accuracy"]}
            for k, s in summaries.items()
        ]
        figs = classification_figures(result["confusion_matrix"], result["per_class_accuracy"]) if figures else {}
        write_result(out_dir, "k-NN probe (cosine)", result, tables={"k-NN top-1 accuracy": rows}, figures=figs)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vjepa eval knn --train FEATS --val FEATS --out DIR`."""
    parser.add_argument("--train", required=True, help="train feature file (`vjepa eval extract` output): the bank")
    parser.add_argument("--val", required=True, help="val feature file: the queries")
    parser.add_argument("--out", required=True, help="output folder for result.json and report.md")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="values of k (1 3 5)")
    parser.add_argument("--weights", choices=WEIGHTS, default="uniform", help="vote weighting (uniform)")
    parser.add_argument("--no-figures", dest="figures", action="store_false", help="report without PNG figures")


def run(args: argparse.Namespace) -> int:
    """Run the k-NN evaluation from parsed arguments; 0 on success, 2 with a one-line error otherwise."""
    try:
        result = run_knn(args.train, args.val, args.out, ks=args.ks, weights=args.weights, figures=args.figures)
    except (FeatureFormatError, ValueError) as err:
        print(f"vjepa eval knn: {err}", file=sys.stderr)
        return 2
    accs = ", ".join(f"k={k}: {100 * a:.2f}%" for k, a in result["accuracy"].items())
    print(f"k-NN accuracy {accs}; wrote {Path(args.out) / 'result.json'}")
    return 0
