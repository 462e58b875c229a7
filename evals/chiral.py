"""Chiral action recognition: linear separability of temporally opposite action pairs on frozen clip embeddings.

`vjepa eval chiral --train FEATS --val FEATS --out DIR [--pairs FILE] [--classes FILE]` takes frame features
(`vjepa eval extract` with output "frames", [N, V, T', D]) of a train and a val split; for every pair of opposite
classes it fits a binary ridge classifier on the train videos of the two classes and scores it on the val videos
of the two classes; the result is the mean val accuracy over pairs (and each pair's), for each embedding.

Paper: Bagad & Zisserman, "Chirality in Action" (LiFT paper), Sec. 3 "Evaluation protocol" (a linear classifier
per chiral group, mean test accuracy over groups) and Table 2 (pooling matters: "average" vs "time concat.").
Embeddings, from the frame features (a V-JEPA frame feature is the mean of one tubelet step's tokens over space):
  "avg"          mean over T' (= the mean over all tokens)                                 [N, D]
  "time_concat"  the T' frame features concatenated in time order                          [N, T' * D]
  "lift"         the LiFT descriptor [z_s; z_d] (evals/lift.py), LiFT trained on the train
                 split's frame features (every view a sample; labels unused)               [N, 2 * width]
  "a+b"          concatenation of the named embeddings, e.g. "avg+lift" (LiFT paper, Table 5)
A video's embedding is the mean over its V views of the per-view embeddings.

The probe is evals/ridge.py: a closed-form ridge classifier on standardised features, alpha chosen per pair and
embedding from a grid by exact leave-one-out accuracy on the train videos of the pair. Departures from the paper:
the paper trains its linear probes by gradient descent and trains LiFT on Kinetics-400, not on the evaluation's
train split; its chiral groups come from SSv2/EPIC/Charades labels, ours from a pair file (or, by default, the
synthetic motion classes of vjepa.data.synthetic, whose pairs are exact time reversals).

Pair file: one pair per line, `classA classB`, each a class name (from --classes, default the synthetic class
names) or a class index; blank lines and text after '#' are ignored. Errors name the file and line.

Shapes: N videos, V views, T' time steps (tubelet steps), D width, F embedding width, P pairs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from vjepa.evals.lift import LiFT, LiftSettings, frame_features, train_lift, video_lift_descriptors
from vjepa.evals.probe_io import as_features, check_pair
from vjepa.evals.report import plot_per_class_bars, write_report
from vjepa.evals.ridge import ALPHAS, fit_ridge_cv

from vjepa.data.synthetic import MOTION_CLASSES, OPPOSITE_PAIRS

BASE_EMBEDDINGS = ("avg", "time_concat", "lift")
DEFAULT_EMBEDDINGS = ("avg", "time_concat", "lift")


class PairFileError(ValueError):
    """A malformed pair or class-name file; the message starts with `file:line:`."""


def default_pairs() -> tuple[list[tuple[int, int]], list[str]]:
    """The synthetic motion classes' opposite pairs and class names (vjepa.data.synthetic)."""
    return [tuple(p) for p in OPPOSITE_PAIRS], list(MOTION_CLASSES)


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line (e.g. classes.txt of `vjepa synth`); line i (non-blank) names class i."""
    names = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            raise PairFileError(f"{path}:{lineno}: a class name must be one word, got {name!r}")
        if name in names:
            raise PairFileError(f"{path}:{lineno}: class name {name!r} repeats line {names.index(name) + 1}")
        names.append(name)
    if not names:
        raise PairFileError(f"{path}: no class names")
    return names


def parse_pairs(path: str | Path, class_names: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """A pair file -> [(a, b)] class indices. Tokens are class names (when class_names is given) or indices
    (0 <= i < len(class_names) when given). Raises PairFileError naming file:line."""
    lookup = {name: i for i, name in enumerate(class_names or [])}
    pairs: list[tuple[int, int]] = []
    seen: dict[frozenset[int], int] = {}
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{lineno}"
        tokens = line.replace(",", " ").split()
        if len(tokens) != 2:
            raise PairFileError(f"{where}: expected two classes 'classA classB', got {len(tokens)} fields: {line!r}")
        idx = []
        for tok in tokens:
            if tok in lookup:
                idx.append(lookup[tok])
            elif tok.lstrip("-").isdigit():
                i = int(tok)
                if i < 0 or (class_names is not None and i >= len(class_names)):
                    n = "?" if class_names is None else len(class_names)
                    raise PairFileError(f"{where}: class index {i} out of range (classes 0..{n}-1)")
                idx.append(i)
            else:
                known = f"known names: {', '.join(class_names)}" if class_names else "no class names given (--classes)"
                raise PairFileError(f"{where}: unknown class {tok!r}; {known}")
        if idx[0] == idx[1]:
            raise PairFileError(f"{where}: a pair needs two different classes, got {tokens[0]!r} twice")
        key = frozenset(idx)
        if key in seen:
            raise PairFileError(f"{where}: pair {tokens[0]} {tokens[1]} repeats line {seen[key]}")
        seen[key] = lineno
        pairs.append((idx[0], idx[1]))
    if not pairs:
        raise PairFileError(f"{path}: no pairs")
    return pairs


def check_embedding_names(names: Sequence[str]) -> None:
    if not names:
        raise ValueError(f"no embeddings requested; valid: {BASE_EMBEDDINGS} and '+' concatenations")
    for name in names:
        for part in name.split("+"):
            if part not in BASE_EMBEDDINGS:
                raise ValueError(f"unknown embedding {name!r} (part {part!r}); valid: {BASE_EMBEDDINGS} joined by '+'")


def pooled_embedding(frames: torch.Tensor, kind: str) -> torch.Tensor:
    """Non-parametric pooling of frame features [N, V, T', D] -> per-video embedding [N, F] (mean over views)."""
    if kind == "avg":
        return frames.mean(dim=(1, 2))  # [N, D]
    if kind == "time_concat":
        return frames.flatten(2).mean(dim=1)  # [N, T' * D], time-major: frame 0's D values first
    raise ValueError(f"unknown pooling {kind!r}; valid: 'avg', 'time_concat'")


def build_embeddings(
    train_frames: torch.Tensor, val_frames: torch.Tensor, names: Sequence[str], lift_model: LiFT | None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (train [N, F], val [N', F])} for the requested names; "lift" needs lift_model."""
    base: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for part in dict.fromkeys(p for n in names for p in n.split("+")):
        if part == "lift":
            if lift_model is None:
                raise ValueError("embedding 'lift' needs a trained LiFT model")
            base[part] = (
                video_lift_descriptors(lift_model, train_frames),
                video_lift_descriptors(lift_model, val_frames),
            )
        else:
            base[part] = (pooled_embedding(train_frames, part), pooled_embedding(val_frames, part))
    return {n: tuple(torch.cat([base[p][i] for p in n.split("+")], dim=1) for i in (0, 1)) for n in names}


def pair_name(pair: tuple[int, int], class_names: Sequence[str] | None) -> str:
    a, b = pair
    if class_names is not None and max(a, b) < len(class_names):
        return f"{class_names[a]}/{class_names[b]}"
    return f"{a}/{b}"


def run_chiral(
    train_feats: dict | str | Path,
    val_feats: dict | str | Path,
    out_dir: str | Path | None,
    *,
    pairs: Sequence[tuple[int, int]] | str | Path | None = None,
    class_names: Sequence[str] | None = None,
    embeddings: Sequence[str] = DEFAULT_EMBEDDINGS,
    seed: int = 0,
    lift: LiftSettings | None = None,
    lift_model: LiFT | None = None,
    alphas: Sequence[float] = ALPHAS,
    log_every: int = 0,
) -> dict:
    """Chiral accuracy per pair and embedding; writes result.json and report.md into out_dir (unless None).

    pairs: [(a, b)] class indices, a pair file, or None for the synthetic classes' OPPOSITE_PAIRS (and their names
    when class_names is None). lift: LiFT training settings (default LiftSettings()); lift_model: a trained LiFT to
    use instead of training one on the train split.
    """
    t_start = time.perf_counter()
    lift = LiftSettings() if lift is None else lift
    check_embedding_names(embeddings)
    if pairs is None:
        pairs, default_names = default_pairs()
        class_names = default_names if class_names is None else class_names
    elif isinstance(pairs, (str, Path)):
        pairs = parse_pairs(pairs, class_names)
    pairs = [(int(a), int(b)) for a, b in pairs]
    train, train_src = as_features(train_feats, "train")
    val, val_src = as_features(val_feats, "val")
    check_pair(train, val, train_src, val_src)
    tr, va = frame_features(train, train_src), frame_features(val, val_src)  # [N, V, T', D]
    if tr.shape[2] != va.shape[2]:
        raise ValueError(f"train ({train_src}) has T'={tr.shape[2]} time steps, val ({val_src}) has T'={va.shape[2]}")
    y_tr, y_va = train["labels"], val["labels"]

    lift_s, trained_lift = 0.0, False
    if lift_model is None and any("lift" in n.split("+") for n in embeddings):
        t0 = time.perf_counter()
        lift_model, _ = train_lift(tr.flatten(0, 1), seed=seed, log_every=log_every, **asdict(lift))
        lift_s, trained_lift = time.perf_counter() - t0, True
    embs = build_embeddings(tr, va, embeddings, lift_model)

    per_pair: dict[str, dict[str, float]] = {n: {} for n in embeddings}
    alpha: dict[str, dict[str, float]] = {n: {} for n in embeddings}
    rows = []
    for a, b in pairs:
        name = pair_name((a, b), class_names)
        m_tr = (y_tr == a) | (y_tr == b)  # [N]
        m_va = (y_va == a) | (y_va == b)  # [N']
        for split, y, m in (("train", y_tr, m_tr), ("val", y_va, m_va)):
            for c in (a, b):
                if not bool((y[m] == c).any()):
                    raise ValueError(f"pair {name}: no {split} videos of class {c}")
        row: dict = {"pair": name, "train": int(m_tr.sum()), "val": int(m_va.sum())}
        for emb, (e_tr, e_va) in embs.items():
            clf, _ = fit_ridge_cv(e_tr[m_tr], y_tr[m_tr], alphas=alphas)
            per_pair[emb][name] = row[emb] = clf.accuracy(e_va[m_va], y_va[m_va])
            alpha[emb][name] = clf.alpha
        rows.append(row)
    mean_acc = {emb: sum(v.values()) / len(v) for emb, v in per_pair.items()}
    rows.append({"pair": "mean", "train": None, "val": None, **mean_acc})
    result = {
        "eval": "chiral",
        "mean_accuracy": mean_acc,
        "per_pair": per_pair,
        "alpha": alpha,
        "num_pairs": len(pairs),
        "num_train": int(tr.shape[0]),
        "num_val": int(va.shape[0]),
        "embedding_dims": {n: int(e[0].shape[1]) for n, e in embs.items()},
        "seed": seed,
        "timings": {"lift_train_s": lift_s, "total_s": time.perf_counter() - t_start},
        "config": {
            "pairs": [list(p) for p in pairs],
            "class_names": list(class_names) if class_names is not None else None,
            "embeddings": list(embeddings),
            "alphas": list(alphas),
            "lift": asdict(lift) if trained_lift else ("given model" if lift_model is not None else None),
            "train": train_src,
            "val": val_src,
        },
    }
    if out_dir is not None:
        names, values = list(mean_acc), list(mean_acc.values())
        write_report(
            out_dir,
            "Chiral action recognition",
            result,
            tables={"Val accuracy per pair (binary ridge probe)": rows},
            figures={"mean_accuracy": lambda p: plot_per_class_bars(values, names, p, ylabel="mean chiral accuracy")},
        )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="train features (output frames or tokens)")
    parser.add_argument("--val", required=True, help="val features (output 'frames' or 'tokens')")
    parser.add_argument("--out", required=True, help="output folder (result.json, report.md)")
    parser.add_argument("--pairs", default=None, help="pair file: 'classA classB' per line (default: synthetic pairs)")
    parser.add_argument("--classes", default=None, help="class names, one per line (default: synthetic classes)")
    parser.add_argument(
        "--embeddings",
        default=",".join(DEFAULT_EMBEDDINGS),
        help=f"comma-separated, from {BASE_EMBEDDINGS} or '+' concatenations (e.g. avg+lift)",
    )
    parser.add_argument("--lift-epochs", type=int, default=LiftSettings.epochs)
    parser.add_argument("--lift-width", type=int, default=LiftSettings.width)
    parser.add_argument("--lift-batch-size", type=int, default=LiftSettings.batch_size)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    class_names = read_class_names(args.classes) if args.classes else None
    settings = LiftSettings(epochs=args.lift_epochs, width=args.lift_width, batch_size=args.lift_batch_size)
    result = run_chiral(
        args.train,
        args.val,
        args.out,
        pairs=args.pairs,
        class_names=class_names,
        embeddings=[e.strip() for e in args.embeddings.split(",") if e.strip()],
        seed=args.seed,
        lift=settings,
        log_every=10,
    )
    acc = " ".join(f"{k} {v:.4f}" for k, v in result["mean_accuracy"].items())
    print(f"mean chiral accuracy over {result['num_pairs']} pairs: {acc}  -> {args.out}/report.md")
    return 0
