"""Run the evaluations of one eval config for several backbones and seeds, and write one results table.

    vjepa eval run configs/eval/synthetic_check.yaml backbones=[runs/tiny_cpu,random:runs/tiny_cpu]

An eval config (YAML, strict like the pretraining config: unknown keys are errors naming the valid ones) lists
backbones (a run folder, checkpoint or export file; `random:<path>` is the same architecture at random
initialisation, drawn from each seed), seeds, the data (two CSV lists, or built-in synthetic videos written into
`<out>/data` with a seed disjoint from pretraining's) and evaluations (attentive, linear, knn, chiral, lift).
Token features are extracted once per backbone (per seed for random backbones) with `vjepa.evals.extract` and reused:
frame features (mean over space per time step) and pooled features (mean over all tokens) are derived from them.
Each evaluation of each backbone and seed writes its own folder `<out>/<backbone>/seed<s>/<eval>/` (result.json,
report.md); the job ends with `<out>/results.md` and `results.json`: one row per headline metric, one column per
backbone, mean +- std over seeds with the per-seed values.

Shapes: N videos, V views, K = T' * H' * W' tokens, D width.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vjepa.config import ConfigError, dump_config, load_typed

EVAL_KINDS = ("attentive", "linear", "knn", "chiral", "lift")


@dataclass(frozen=True, kw_only=True)
class EvalData:
    train_csv: str = ""  # empty: built-in synthetic videos
    val_csv: str = ""
    synthetic_train: int = 240  # videos per split when synthetic (12 motion classes, balanced)
    synthetic_val: int = 120
    synthetic_frames: int = 16
    synthetic_size: int = 64
    synthetic_seed: int = 1000  # pretraining renders with train.seed (0 by default): other videos


@dataclass(frozen=True, kw_only=True)
class ExtractSpec:
    clips: int = 1
    views: int = 1
    frames_per_clip: int = 16
    frame_step: int = 1
    crop_size: int = 64
    batch_size: int = 16


@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    kind: str = "attentive"  # attentive | linear | knn | chiral | lift
    name: str = ""  # row label; default: kind (+ variant)
    variant: str = "v1"  # attentive: v1 (1 cross-attention block) | v2 (4 blocks)
    epochs: int = 20
    lrs: tuple[float, ...] = (1e-3, 3e-4)
    wds: tuple[float, ...] = (0.01, 0.1)
    batch_size: int = 32
    embeddings: tuple[str, ...] = ("avg", "time_concat", "lift")  # chiral
    lift_epochs: int = 100  # chiral (embedding "lift") and lift: LiFT training (LiFT paper: width 384, 4 layers)
    lift_width: int = 384
    lift_depth: int = 4


@dataclass(frozen=True, kw_only=True)
class EvalRunConfig:
    backbones: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # column names; default from the paths
    seeds: tuple[int, ...] = (0, 1, 2)
    data: EvalData = field(default_factory=EvalData)
    extract: ExtractSpec = field(default_factory=ExtractSpec)
    evaluations: tuple[EvalSpec, ...] = (EvalSpec(kind="attentive"), EvalSpec(kind="chiral"))
    out: str = "runs/eval"


def load_eval_config(path: str | Path | None, overrides: list[str]) -> EvalRunConfig:
    cfg = load_typed(EvalRunConfig, path, overrides)
    if not cfg.backbones:
        raise ConfigError("backbones: list at least one backbone (a run folder, export file or random:<path>)")
    if cfg.names and len(cfg.names) != len(cfg.backbones):
        raise ConfigError(f"names: {len(cfg.names)} names for {len(cfg.backbones)} backbones")
    if not cfg.seeds:
        raise ConfigError("seeds: give at least one seed")
    if bool(cfg.data.train_csv) != bool(cfg.data.val_csv):
        raise ConfigError("data.train_csv and data.val_csv: give both or neither (neither: synthetic videos)")
    for i, spec in enumerate(cfg.evaluations):
        if spec.kind not in EVAL_KINDS:
            raise ConfigError(f"evaluations.{i}.kind: {spec.kind!r} is not one of {list(EVAL_KINDS)}")
    return cfg


def backbone_name(spec: str) -> str:
    random = spec.startswith("random:")
    path = Path(spec.removeprefix("random:"))
    stem = path.stem if path.suffix in (".pt", ".safetensors") else path.name
    return f"{stem} (random init)" if random else stem


def eval_name(spec: EvalSpec) -> str:
    return spec.name or (f"{spec.kind}-{spec.variant}" if spec.kind == "attentive" else spec.kind)


def synthetic_lists(cfg: EvalRunConfig) -> tuple[str, str]:
    """Write (once) the synthetic train/val videos into <out>/data; returns the two CSV paths."""
    from vjepa.data.synthetic import write_synthetic

    d = cfg.data
    root = Path(cfg.out) / "data"
    out = []
    for split, count, offset in (("train", d.synthetic_train, 0), ("val", d.synthetic_val, 1)):
        folder = root / split
        csv = folder / "train.csv"
        if not csv.exists():
            seed = d.synthetic_seed + offset
            write_synthetic(folder, num_videos=count, num_frames=d.synthetic_frames, size=d.synthetic_size, seed=seed)
        out.append(str(csv))
    return out[0], out[1]


def derived(feats: dict, output: str) -> dict:
    """Token features [N, V, K, D] -> frame features [N, V, T', D] or pooled [N, V, D] (a new dict)."""
    from vjepa.evals.lift import frame_features
    from vjepa.evals.probe_io import pooled_features

    if output == "tokens":
        return feats
    y = frame_features(feats, "features") if output == "frames" else pooled_features(feats)
    return {**feats, "features": y, "output": output}


def headline(spec: EvalSpec, result: dict) -> dict[str, float]:
    """The numbers of one evaluation that go into the summary table."""
    name = eval_name(spec)
    if spec.kind in ("attentive", "linear"):
        return {f"{name} top-1": float(result["accuracy"])}
    if spec.kind == "knn":
        return {f"knn k={k} top-1": float(v) for k, v in result["accuracy"].items()}
    if spec.kind == "chiral":
        return {f"chiral {emb}": float(v) for emb, v in result["mean_accuracy"].items()}
    return {f"lift probe {emb}": float(v) for emb, v in result["accuracy"].items()}


def run_one(spec: EvalSpec, train: dict, val: dict, out_dir: Path, seed: int) -> dict:
    from vjepa.evals.lift import LiftSettings

    lift = LiftSettings(epochs=spec.lift_epochs, width=spec.lift_width, depth=spec.lift_depth)
    if spec.kind == "attentive":
        from vjepa.evals.attentive import run_attentive

        return run_attentive(
            train, val, out_dir, variant=spec.variant, lrs=spec.lrs, wds=spec.wds, epochs=spec.epochs,
            batch_size=spec.batch_size, seed=seed,
        )  # fmt: skip
    if spec.kind == "linear":
        from vjepa.evals.linear import run_linear

        return run_linear(derived(train, "pooled"), derived(val, "pooled"), out_dir, seed=seed)
    if spec.kind == "knn":
        from vjepa.evals.knn import run_knn

        return run_knn(derived(train, "pooled"), derived(val, "pooled"), out_dir)
    if spec.kind == "chiral":
        from vjepa.evals.chiral import run_chiral

        frames_train, frames_val = derived(train, "frames"), derived(val, "frames")
        return run_chiral(frames_train, frames_val, out_dir, embeddings=spec.embeddings, seed=seed, lift=lift)
    from vjepa.evals.lift import run_lift

    return run_lift(derived(train, "frames"), derived(val, "frames"), out_dir, seed=seed, settings=lift)


def summarise(
    values: dict[str, dict[str, list[float]]], columns: list[str], percent: bool = True
) -> tuple[str, list[dict]]:
    """values[metric][column] = per-seed numbers -> markdown table (in % when `percent`) and JSON rows."""
    k = 100.0 if percent else 1.0
    rows, lines = [], ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for metric, per_col in values.items():
        cells, row = [], {"metric": metric}
        for col in columns:
            xs = per_col.get(col, [])
            if not xs:
                cells.append("-")
                continue
            mean = statistics.fmean(xs)
            std = statistics.stdev(xs) if len(xs) > 1 else 0.0
            fmt = ".1f" if percent else ".3g"
            cells.append(f"{k * mean:{fmt}} ± {k * std:{fmt}} ({', '.join(f'{k * x:{fmt}}' for x in xs)})")
            row[col] = {"mean": mean, "std": std, "values": xs}
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        rows.append(row)
    return "\n".join(lines) + "\n", rows


def run_eval_config(cfg: EvalRunConfig) -> dict:
    """Extract, evaluate every backbone x seed x evaluation, write results.md / results.json under cfg.out."""
    from vjepa.evals.extract import extract_features
    from vjepa.evals.metrics import token_statistics

    from vjepa.pretrained import load_pretrained, random_like

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_config.yaml").write_text(dump_config(cfg))
    train_csv, val_csv = (cfg.data.train_csv, cfg.data.val_csv) if cfg.data.train_csv else synthetic_lists(cfg)
    e = cfg.extract
    names = list(cfg.names) or [backbone_name(b) for b in cfg.backbones]
    values: dict[str, dict[str, list[float]]] = {}
    stats: dict[str, dict[str, list[float]]] = {}  # token statistics of the train features, per extraction
    timings: dict[str, float] = {}
    for bb, col in zip(cfg.backbones, names):
        random = bb.startswith("random:")
        path = bb.removeprefix("random:")
        base = load_pretrained(path)
        feats: dict[str, dict] = {}
        for seed in cfg.seeds:
            folder = out / col.replace(" ", "_").replace("(", "").replace(")", "") / f"seed{seed}"
            if random or not feats:
                encoder = random_like(base, seed) if random else base
                t0 = time.perf_counter()
                for split, csv in (("train", train_csv), ("val", val_csv)):
                    feats[split] = extract_features(
                        encoder, csv, folder / f"{split}_tokens.pt", clips=e.clips, views=e.views, output="tokens",
                        frames_per_clip=e.frames_per_clip, frame_step=e.frame_step, crop_size=e.crop_size,
                        batch_size=e.batch_size, seed=seed,
                    )  # fmt: skip
                timings[f"extract {col} seed {seed}"] = time.perf_counter() - t0
                x = feats["train"]["features"]  # [N, V, K, D]
                for metric, v in token_statistics(x.reshape(-1, *x.shape[2:])).items():
                    stats.setdefault(metric, {}).setdefault(col, []).append(v)
            for spec in cfg.evaluations:
                t0 = time.perf_counter()
                result = run_one(spec, feats["train"], feats["val"], folder / eval_name(spec), seed)
                timings[f"{eval_name(spec)} {col} seed {seed}"] = time.perf_counter() - t0
                for metric, v in headline(spec, result).items():
                    values.setdefault(metric, {}).setdefault(col, []).append(v)
                numbers = ", ".join(f"{k} {100 * v:.1f}%" for k, v in headline(spec, result).items())
                print(f"[eval] {col} seed {seed} {eval_name(spec)}: {numbers}", flush=True)
    table, rows = summarise(values, names)
    stats_table, stats_rows = summarise(stats, names, percent=False)
    per_kind: dict[str, float] = {}
    for key, seconds in timings.items():
        kind = key.split(" ")[0]
        per_kind[kind] = per_kind.get(kind, 0.0) + seconds
    text = (
        f"# Evaluation results\n\nBackbones: {', '.join(f'{n} = `{b}`' for n, b in zip(names, cfg.backbones))}; "
        f"seeds {list(cfg.seeds)}; train `{train_csv}`, val `{val_csv}`. Accuracy in %, mean ± std over seeds "
        f"(per-seed values).\n\n{table}\nToken features of the train split "
        f"(`vjepa.evals.metrics.token_statistics`; one extraction per pretrained backbone, one per seed at random "
        f"init):\n\n{stats_table}\n"
        "Time per evaluation kind (s, all backbones and seeds): "
        + ", ".join(f"{k} {v:.1f}" for k, v in per_kind.items())
        + "\n"
    )
    (out / "results.md").write_text(text)
    summary = {"rows": rows, "token_statistics": stats_rows, "columns": names, "seeds": list(cfg.seeds),
               "timings_s": timings, "train": train_csv, "val": val_csv}  # fmt: skip
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return {"table": table, "stats_table": stats_table, **summary}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help="eval config YAML (differences from the defaults)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. backbones=[runs/a,random:runs/a]")


def run(args: argparse.Namespace) -> int:
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config, *overrides]
    try:
        cfg = load_eval_config(config, overrides)
    except ConfigError as err:
        print(f"eval config error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = run_eval_config(cfg)
    print(result["table"])
    print(result["stats_table"])
    print(f"wrote {Path(cfg.out) / 'results.md'}")
    return 0
