"""Aggregate a sweep: per arm and metric the mean and std over pretraining seeds, the paired difference to the
baseline arm with its 95% interval, the cost of each arm, and the plots.

    vjepa sweep report runs/sweeps/objectives

Reads every `<sweep>/runs/<arm>/seed<s>/` that finished (`sweep_status.json` state `done`): the probe results of
`eval/results.json` (a run's value of a metric is the mean over its probe seeds), the token statistics of its
extracted features, and the training log (`run/log.jsonl`: final JEPA loss, effective rank of the targets,
seconds per step). Writes `results.json`, `results.csv` (one row per arm and metric), `results.md` and, with
matplotlib, `plots/<metric>.png` (bars: mean over seeds; points: seeds; whiskers: 95% interval of the mean) and
`plots/training_curves.png`.

The paired difference uses the seeds both arms finished: d_s = arm_s - baseline_s (the same pretraining seed
draws the same initial weights, data order and masks in both arms), interval mean(d) +- t_{0.975, n-1} sd(d) /
sqrt(n); a `*` marks an interval that excludes 0. With n seeds the interval is Student's t, exact for normal
differences; n = 1 gives no interval.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from vjepa.train.rundir import log_records

# Student's t 0.975 quantiles for 1..30 degrees of freedom (standard tables).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
PERCENT_PREFIXES = ("attentive", "linear", "knn", "chiral", "lift")  # accuracies, shown in %


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (Cornish-Fisher beyond the table)."""
    if df < 1:
        raise ValueError(f"t975: needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(xs: list[float]) -> tuple[float, float, float]:
    """(mean, std, half-width of the 95% interval of the mean); std and half-width 0 / nan for one value."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, 0.0, math.nan
    sd = statistics.stdev(xs)
    return m, sd, t975(len(xs) - 1) * sd / math.sqrt(len(xs))


def paired(arm: dict[int, float], base: dict[int, float]) -> dict:
    """Paired difference arm - baseline over their common seeds: mean, std, n, 95% interval, significance."""
    seeds = sorted(set(arm) & set(base))
    d = [arm[s] - base[s] for s in seeds]
    if not d:
        return {"n": 0}
    m, sd, half = mean_interval(d)
    out = {"n": len(d), "seeds": seeds, "diff": m, "diff_std": sd}
    if not math.isnan(half):
        out.update(lo=m - half, hi=m + half, significant=bool(m - half > 0 or m + half < 0))
    return out


def _load(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _sweep_file(path: Path) -> dict:
    """The resolved sweep file `vjepa sweep` wrote into its folder ({} when missing or unreadable)."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def run_metrics(folder: Path, status: dict, records: list[dict]) -> dict[str, float]:
    """Every number of one finished run: probe headlines (mean over probe seeds), token statistics, training
    (from its log records) and cost (from its status)."""
    out: dict[str, float] = {}
    res = _load(folder / "eval" / "results.json")
    if isinstance(res, dict):
        for key in ("rows", "token_statistics"):
            for row in res.get(key, []):
                cols = [v for k, v in row.items() if k != "metric" and isinstance(v, dict)]
                if cols:
                    name = row["metric"] if key == "rows" else f"features {row['metric']}"
                    out[name] = statistics.fmean(cols[0]["values"])
    if records:
        last = records[-1]
        for key, name in (("jepa_loss", "train jepa_loss"), ("target_rank", "train target_rank"),
                          ("token_spread", "train token_spread")):  # fmt: skip
            if isinstance(last.get(key), (int, float)):
                out[name] = float(last[key])
        times = [r["step_time"] for r in records[1:] if isinstance(r.get("step_time"), (int, float))]
        if times:
            out["cost s/step"] = statistics.median(times)
    for key, name in (("peak_rss_mb", "cost peak MB"), ("pretrain_s", "cost pretrain s"), ("eval_s", "cost eval s")):
        if isinstance(status.get(key), (int, float)):
            out[name] = float(status[key])
    return out


def collect(sweep: Path) -> dict:
    """{arm: {seed: metrics}} of the finished runs, the sweep's config (arms, baseline) and the unfinished runs."""
    cfg = _sweep_file(sweep / "sweep.yaml")
    arms_order = []
    runs: dict[str, dict[int, dict[str, float]]] = {}
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {}  # per run: (step, JEPA loss) of its log
    unfinished = []
    for status_file in sorted((sweep / "runs").glob("*/seed*/sweep_status.json")):
        folder = status_file.parent
        arm, seed = folder.parent.name, int(folder.name.removeprefix("seed"))
        status = _load(status_file) or {}
        if arm not in arms_order:
            arms_order.append(arm)
        if status.get("state") != "done":
            unfinished.append({"arm": arm, "seed": seed, "state": status.get("state"), "log": status.get("log"),
                               "error": status.get("error")})  # fmt: skip
            continue
        records = log_records(folder / "run")
        runs.setdefault(arm, {})[seed] = run_metrics(folder, status, records)
        curves.setdefault(arm, {})[seed] = [
            (r["step"], r["jepa_loss"]) for r in records if isinstance(r.get("jepa_loss"), (int, float))
        ]
    # the sweep file's order, then any arm found on disk only
    listed = [a.get("name") for a in cfg.get("arms", []) if isinstance(a, dict)]
    order = [a for a in listed if a in arms_order] + [a for a in arms_order if a not in listed]
    baseline = cfg.get("baseline") or (order[0] if order else "")
    return {"runs": runs, "curves": curves, "arms": order, "baseline": baseline, "unfinished": unfinished}


def aggregate(collected: dict) -> list[dict]:
    """One row per (arm, metric): n, mean, std, 95% half-width, paired difference to the baseline."""
    runs, base = collected["runs"], collected["baseline"]
    metrics: list[str] = []
    for per_seed in runs.values():
        for m in per_seed.values():
            metrics += [k for k in m if k not in metrics]
    rows = []
    for arm in collected["arms"]:
        for metric in metrics:
            values = {s: m[metric] for s, m in runs.get(arm, {}).items() if metric in m}
            if not values:
                continue
            mean, sd, half = mean_interval(list(values.values()))
            row = {"arm": arm, "metric": metric, "n": len(values), "mean": mean, "std": sd,
                   "ci95": None if math.isnan(half) else half, "values": values}  # fmt: skip
            if arm != base and base in runs:
                base_values = {s: m[metric] for s, m in runs[base].items() if metric in m}
                row["vs_baseline"] = paired(values, base_values)
            rows.append(row)
    return rows


def _scale(metric: str) -> float:
    return 100.0 if metric.startswith(PERCENT_PREFIXES) else 1.0


def _fmt(x: float, metric: str) -> str:
    k = _scale(metric)
    return f"{k * x:.1f}" if k == 100.0 else f"{x:.3g}"


def table(
    arms: list[str], base: str, rows: list[dict], names: list[str], with_diff: bool, labels: list[str] | None = None
) -> list[str]:
    """Markdown lines of one table: an arm per line, `names` (metrics) as columns (headed by `labels`), mean ± std
    and, with_diff, the paired difference to `base` with its 95% interval."""
    by = {(r["arm"], r["metric"]): r for r in rows}
    heads = labels or names
    lines = ["| arm | n | " + " | ".join(heads) + " |", "|---" * (len(names) + 2) + "|"]
    for arm in arms:
        cells, ns = [], set()
        for metric in names:
            r = by.get((arm, metric))
            if r is None:
                cells.append("-")
                continue
            ns.add(r["n"])
            cell = f"{_fmt(r['mean'], metric)} ± {_fmt(r['std'], metric)}"
            p = r.get("vs_baseline", {})
            if with_diff and "lo" in p:
                mark = " *" if p["significant"] else ""
                k = _scale(metric)
                d, lo, hi = (0.0 if abs(x) < 1e-9 else k * x for x in (p["diff"], p["lo"], p["hi"]))  # no -1e-16
                cell += f" (Δ {d:+.3g} [{lo:+.3g}, {hi:+.3g}]{mark})"
            cells.append(cell)
        n = "/".join(str(x) for x in sorted(ns)) or "0"
        lines.append(f"| {arm}{' (baseline)' if arm == base else ''} | {n} | " + " | ".join(cells) + " |")
    return lines


def compact_table(results: dict, metrics: list[str], labels: list[str] | None = None) -> str:
    """A table of some metrics of a finished report (its results.json), e.g. for a README."""
    known = {r["metric"] for r in results["rows"]}
    missing = [m for m in metrics if m not in known]
    if missing:
        raise ValueError(f"no metric {missing[0]!r} in the report; there are: {', '.join(sorted(known))}")
    return "\n".join(table(results["arms"], results["baseline"], results["rows"], metrics, True, labels)) + "\n"


def markdown(collected: dict, rows: list[dict]) -> str:
    base = collected["baseline"]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    quality = [m for m in metrics if not m.startswith("cost")]
    cost = [m for m in metrics if m.startswith("cost")]
    arms = collected["arms"]
    text = [
        "# Sweep results",
        "",
        f"Mean ± std over pretraining seeds (n); accuracies in %. Δ: paired difference to `{base}` over the seeds "
        "both finished, with its 95% Student-t interval; `*` where the interval excludes 0.",
        "",
        *table(arms, base, rows, quality, True),
        "",
        "Cost per run (seconds per step: median of the logged windows; peak resident memory of the pretraining "
        "process; wall seconds of pretraining and of the evaluations):",
        "",
        *table(arms, base, rows, cost, False),
        "",
    ]
    if collected["unfinished"]:
        text += ["Unfinished runs:", ""]
        text += [f"- {u['arm']} seed {u['seed']}: {u['state']} {u.get('error') or ''} (log {u.get('log')})"
                 for u in collected["unfinished"]]  # fmt: skip
        text.append("")
    return "\n".join(text)


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["arm", "metric", "n", "mean", "std", "ci95", "diff", "diff_lo", "diff_hi", "significant", "values"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            p = r.get("vs_baseline", {})
            w.writerow({"arm": r["arm"], "metric": r["metric"], "n": r["n"], "mean": r["mean"], "std": r["std"],
                        "ci95": r["ci95"], "diff": p.get("diff"), "diff_lo": p.get("lo"), "diff_hi": p.get("hi"),
                        "significant": p.get("significant"),
                        "values": " ".join(f"{s}:{v:.6g}" for s, v in sorted(r["values"].items()))})  # fmt: skip


def plot(sweep: Path, collected: dict, rows: list[dict]) -> list[str]:
    """PNG figures under <sweep>/plots; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    folder = sweep / "plots"
    folder.mkdir(exist_ok=True)
    written = []
    arms = collected["arms"]
    for metric in dict.fromkeys(r["metric"] for r in rows):
        k = _scale(metric)
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(arms) + 1), 3.2))
        for i, arm in enumerate(arms):
            r = next((x for x in rows if x["arm"] == arm and x["metric"] == metric), None)
            if r is None:
                continue
            ax.bar(i, k * r["mean"], color="C0" if arm != collected["baseline"] else "C1", alpha=0.6)
            if r["ci95"] is not None:
                ax.errorbar(i, k * r["mean"], yerr=k * r["ci95"], color="k", capsize=3)
            ax.scatter([i] * r["n"], [k * v for v in r["values"].values()], color="k", s=8, zorder=3)
        ax.set_xticks(range(len(arms)), arms, rotation=60, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
        fig.tight_layout()
        name = "".join(c if c.isalnum() else "_" for c in metric) + ".png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(str(folder / name))
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, arm in enumerate(arms):
        for j, (_, pts) in enumerate(sorted(collected["curves"].get(arm, {}).items())):
            if pts:
                ax.plot(*zip(*pts), color=f"C{i % 10}", alpha=0.7, lw=1, label=arm if j == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("JEPA loss")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(folder / "training_curves.png", dpi=110)
    plt.close(fig)
    written.append(str(folder / "training_curves.png"))
    return written


def write_report(sweep: Path) -> dict:
    """Aggregate the finished runs of `sweep` into results.{json,csv,md} and plots; returns them."""
    sweep = Path(sweep)
    if not (sweep / "runs").is_dir():
        raise ValueError(f"{sweep}: not a sweep folder (no runs/)")
    collected = collect(sweep)
    rows = aggregate(collected)
    text = markdown(collected, rows)
    plots = plot(sweep, collected, rows)
    if plots:
        text += "\nPlots: " + ", ".join(f"`{Path(p).relative_to(sweep)}`" for p in plots) + "\n"
    (sweep / "results.md").write_text(text)
    write_csv(sweep / "results.csv", rows)
    summary = {"baseline": collected["baseline"], "arms": collected["arms"], "rows": rows,
               "unfinished": collected["unfinished"], "plots": plots}  # fmt: skip
    (sweep / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    return {**summary, "markdown": text}
