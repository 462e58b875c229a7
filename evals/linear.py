"""Linear probe on pooled frozen features, plus the geometry metrics of the val features.

Protocol: token or frame features are mean-pooled over K to [N, V, D]; the V views of each video are averaged
to one [D] vector per video (train and val alike, so the probe and the geometry metrics see the same vectors).
Features are standardised with the train mean and std. The probe is multinomial logistic regression, trained
full-batch with L-BFGS (strong-Wolfe line search) on mean cross-entropy + wd/2 * |W|^2 (bias not penalised),
from zero weights: the problem is convex, so the result does not depend on a seed. The weight decay is chosen
from a small grid on a held-out part of train (a seeded random `holdout` fraction of the train videos; ties go
to the larger wd), then the probe is refit on all of train and scored on val. The val accuracy of every wd value
(each fitted on all of train) is reported as well, for reference, not for selection.

Departures: the V-JEPA papers report attentive probes, not linear ones; the DINOv2/v3 linear protocol trains
with SGD on augmented crops and picks the lr on val. This is the cheap, deterministic variant for CPU runs.

Geometry (evals/metrics.py): silhouette (cosine and euclidean), Calinski-Harabasz, intra/inter-class cosine
similarity and their ratio, on the raw (unstandardised) view-averaged val features; per-class accuracy, its
spread and the confusion matrix of the chosen probe on val.

Shapes: N videos, V views, K tokens, D width, C classes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from vjepa.evals.metrics import classification_summary, geometry_metrics, pair_similarities
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
from vjepa.evals.report import plot_similarity_histograms

from vjepa.seeding import make_generator

DEFAULT_WDS = (1e-4, 1e-3, 1e-2, 1e-1)


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Subtract the train mean and divide by the train std (1 where a feature is constant) of [N, D] features."""
    mean = train.mean(0)
    std = train.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Multinomial logistic regression by full-batch L-BFGS: (weight [D, C], bias [C], final objective)."""
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe", tolerance_change=1e-10
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * wd * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        objective = float(F.cross_entropy(x @ w + b, y) + 0.5 * wd * (w * w).sum())
    return w.detach(), b.detach(), objective


def _accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return float(((x @ w + b).argmax(1) == y).double().mean())


def run_linear(
    train_feats: FeatureSource,
    val_feats: FeatureSource,
    out_dir: str | Path | None,
    *,
    wds: Sequence[float] = DEFAULT_WDS,
    holdout: float = 0.2,
    max_iter: int = 200,
    seed: int = 0,
    figures: bool = True,
) -> dict:
    """Linear probe (wd chosen on a held-out part of train) and geometry metrics of the val features.

    `holdout=0` chooses the wd on val instead (reported as "selected_on": "val"). With an `out_dir`, writes
    result.json and report.md (figures unless `figures=False`).
    """
    t0 = time.perf_counter()
    train, train_src = as_features(train_feats, "train")
    val, val_src = as_features(val_feats, "val")
    check_pair(train, val, train_src, val_src)
    if not wds:
        raise ValueError("linear probe: empty weight-decay grid")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"linear probe: holdout must be in [0, 1), got {holdout}")
    c = num_classes(train["labels"], val["labels"])
    xt, yt = pooled_features(train).mean(1), train["labels"]  # [N, D], [N]
    xv, yv = pooled_features(val).mean(1), val["labels"]  # [M, D], [M]

    per_wd: list[dict] = []
    if holdout > 0:  # choose wd on a held-out part of train
        n_hold = int(round(holdout * xt.shape[0]))
        if n_hold < 1 or n_hold >= xt.shape[0]:
            raise ValueError(f"linear probe: holdout {holdout} of {xt.shape[0]} train videos leaves an empty split")
        perm = torch.randperm(xt.shape[0], generator=make_generator(seed, "linear-holdout"))
        fit_idx, hold_idx = perm[n_hold:], perm[:n_hold]
        xf, xh = standardise(xt[fit_idx], xt[hold_idx])
        for wd in wds:
            w, b, _ = fit_logistic(xf, yt[fit_idx], c, wd, max_iter)
            per_wd.append({"wd": wd, "holdout_accuracy": _accuracy(xh, yt[hold_idx], w, b)})
    else:
        per_wd = [{"wd": wd} for wd in wds]
    xs, xvs = standardise(xt, xv)
    fits = []
    for row in per_wd:  # every wd refit on all of train, scored on val (reported; chosen only when holdout=0)
        w, b, objective = fit_logistic(xs, yt, c, row["wd"], max_iter)
        fits.append((w, b))
        row.update(train_accuracy=_accuracy(xs, yt, w, b), train_objective=objective)
        row.update(val_accuracy=_accuracy(xvs, yv, w, b))
    key = "holdout_accuracy" if holdout > 0 else "val_accuracy"
    best = max(range(len(wds)), key=lambda i: (per_wd[i][key], wds[i]))
    w, b = fits[best]
    pred = (xvs @ w + b).argmax(1)  # [M]
    summary = classification_summary(pred, yv, c)
    result = {
        "eval": "linear",
        "accuracy": summary["accuracy"],
        "wd": wds[best],
        "selected_on": "holdout" if holdout > 0 else "val",
        "geometry": geometry_metrics(xv, yv),
        "config": {"wds": list(wds), "holdout": holdout, "max_iter": max_iter, "seed": seed, "views": "averaged"},
        "train": {"source": train_src, "videos": xt.shape[0], "views": train["features"].shape[1]},
        "val": {"source": val_src, "videos": xv.shape[0], "views": val["features"].shape[1]},
        "dim": xt.shape[1],
        "num_classes": c,
        **{k: v for k, v in summary.items() if k != "accuracy"},
        "per_wd": per_wd,
        "timings": {"total_s": time.perf_counter() - t0},
    }
    if out_dir is not None:
        g = result["geometry"]
        names = ("silhouette_cosine", "silhouette_euclidean", "calinski_harabasz", "intra_class_cosine",
                 "inter_class_cosine", "intra_inter_ratio")  # fmt: skip
        tables = {
            "Linear probe per weight decay": per_wd,
            "Geometry of the val features": [{"metric": name, "value": g[name]} for name in names],
        }
        figs = classification_figures(summary["confusion_matrix"], summary["per_class_accuracy"]) if figures else {}
        if figures and xv.shape[0] <= 4096:
            intra, inter = pair_similarities(xv, yv)
            figs["val cosine similarity"] = lambda path: plot_similarity_histograms(intra, inter, path)
        write_result(out_dir, "Linear probe and feature geometry", result, tables=tables, figures=figs)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vjepa eval linear --train FEATS --val FEATS --out DIR`."""
    parser.add_argument("--train", required=True, help="train feature file (`vjepa eval extract` output)")
    parser.add_argument("--val", required=True, help="val feature file (scored; geometry metrics computed on it)")
    parser.add_argument("--out", required=True, help="output folder for result.json and report.md")
    parser.add_argument("--wds", type=float, nargs="+", default=list(DEFAULT_WDS), help="weight-decay grid")
    parser.add_argument("--holdout", type=float, default=0.2, help="train fraction held out to pick wd (0: use val)")
    parser.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations per fit (200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split (0)")
    parser.add_argument("--no-figures", dest="figures", action="store_false", help="report without PNG figures")


def run(args: argparse.Namespace) -> int:
    """Run the linear probe and geometry metrics from parsed arguments; 0 on success, 2 with an error otherwise."""
    try:
        result = run_linear(
            args.train,
            args.val,
            args.out,
            wds=args.wds,
            holdout=args.holdout,
            max_iter=args.max_iter,
            seed=args.seed,
            figures=args.figures,
        )
    except (FeatureFormatError, ValueError) as err:
        print(f"vjepa eval linear: {err}", file=sys.stderr)
        return 2
    g = result["geometry"]
    print(
        f"linear probe accuracy {100 * result['accuracy']:.2f}% (wd {result['wd']:g}); silhouette cosine "
        f"{g['silhouette_cosine']:.3f}; wrote {Path(args.out) / 'result.json'}"
    )
    return 0
