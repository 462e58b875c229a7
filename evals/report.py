"""Evaluation reports: `result.json` + `report.md` (+ PNG figures) in an evaluation's output folder.

Every evaluation (probes, k-NN, chiral, LiFT, PCA) ends with `write_report(out_dir, title, result, tables=,
figures=)`. `result.json` holds the result dict as JSON (sorted keys; tensors and numpy values become numbers
or lists; non-finite floats become null, since JSON has no NaN). `report.md` holds the title, the key numbers
(numeric leaves of the result outside its "config"), the given tables in markdown and the figures, each
written as `<name>.png` beside the report and linked from it. `combine_results` puts several results (files,
folders or dicts) into one markdown table: an eval config that runs several evaluations in one job reports
them in one table.

Figures are callables `fn(path: Path) -> None`; the helpers below (`plot_confusion`,
`plot_similarity_histograms`, `plot_per_class_bars`) use matplotlib, imported lazily, without pyplot (a bare
`matplotlib.figure.Figure` renders with Agg, so no global backend is touched). Without matplotlib a figure
raises ModuleNotFoundError; the report then says which figures were skipped (install matplotlib) and writes
everything else.

Not from a paper: the reporting conventions of this repository.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

FigureFn = Callable[[Path], None]
RESULT_FILE = "result.json"
REPORT_FILE = "report.md"
SKIP_KEYS = ("config",)  # subtrees left out of key numbers and combined tables


# ---------------------------------------------------------------------------------------------------------------
# JSON


def to_jsonable(obj: Any) -> Any:
    """Tensors, numpy values, paths and tuples -> plain JSON types; NaN/inf -> None."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        return to_jsonable(obj.item() if obj.ndim == 0 else obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, without importing numpy
        return to_jsonable(obj.tolist())
    raise TypeError(f"result value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def flatten_numbers(result: Mapping[str, Any], *, skip: Sequence[str] = SKIP_KEYS) -> dict[str, float | int]:
    """Numeric leaves of a nested dict as {"a.b.c": value}, in insertion order; subtrees named in `skip` dropped."""
    out: dict[str, float | int] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                if str(k) not in skip:
                    visit(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, torch.Tensor) and value.ndim == 0:
            visit(prefix, value.item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = value

    visit("", to_jsonable(result))
    return out


# ---------------------------------------------------------------------------------------------------------------
# markdown


def format_value(value: Any) -> str:
    """A table cell: floats with 4 significant digits, None as '-', '|' escaped."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return format_value(value.item())
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows (dicts) -> a markdown table; columns default to the union of the rows' keys in first-seen order."""
    if not rows:
        return "(no rows)\n"
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _key_numbers(result: Mapping[str, Any], limit: int = 16, max_depth: int = 2) -> str:
    """Numeric leaves at most max_depth levels deep (e.g. "accuracy.avg", not "per_pair.avg.a/b")."""
    nums = flatten_numbers(result)
    items = [(k, v) for k, v in nums.items() if k.count(".") < max_depth]
    if not items:
        return "(no numbers)\n"
    lines = [f"- **{k}**: {format_value(v)}" for k, v in items[:limit]]
    if len(items) > limit:
        lines.append(f"- ... {len(items) - limit} more in {RESULT_FILE}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# report


def write_report(
    out_dir: str | Path,
    title: str,
    result: dict,
    *,
    tables: dict[str, list[dict]] | None = None,
    figures: dict[str, FigureFn] | None = None,
) -> Path:
    """Write result.json, report.md and `<name>.png` per figure into out_dir; return the path of report.md.

    A figure whose callable raises ModuleNotFoundError for matplotlib is skipped with a note in the report;
    any other error propagates.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = to_jsonable(result)
    (out / RESULT_FILE).write_text(json.dumps(payload, sort_keys=True, indent=2, allow_nan=False) + "\n")

    parts = [f"# {title}\n", "## Key numbers\n", _key_numbers(payload)]
    for name, rows in (tables or {}).items():
        parts += [f"## {name}\n", markdown_table(rows)]
    written, skipped = [], []
    for name, fn in (figures or {}).items():
        path = out / f"{_file_stem(name)}.png"
        try:
            fn(path)
        except ModuleNotFoundError as e:
            if e.name is None or e.name.split(".")[0] != "matplotlib":
                raise
            skipped.append(name)
            continue
        written.append((name, path.name))
    if written or skipped:
        parts.append("## Figures\n")
        parts += [f"![{name}]({fname})\n" for name, fname in written]
        if skipped:
            parts.append(f"Figures skipped (install matplotlib): {', '.join(skipped)}\n")
    parts.append(f"Full numbers: [{RESULT_FILE}]({RESULT_FILE})\n")
    report = out / REPORT_FILE
    report.write_text("\n".join(parts))
    return report


def _file_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    if not stem:
        raise ValueError(f"figure name {name!r} gives an empty file name")
    return stem


def load_result(path: str | Path) -> dict:
    """A result.json file, or a folder holding one -> dict."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULT_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no {RESULT_FILE} at {path}")
    return json.loads(p.read_text())


def combine_results(
    results: Sequence[str | Path | Mapping[str, Any]],
    *,
    names: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> str:
    """Several results -> one markdown table, one row each, one column per numeric key (dotted path).

    results: result dicts, result.json files or evaluation folders. Row names: `names`, else the result's
    "name" or "eval" entry, else the folder name, else "result <i>". keys: the columns to show (default: the
    union of numeric leaves outside "config", first-seen order); a missing value shows as '-'.
    """
    if names is not None and len(names) != len(results):
        raise ValueError(f"{len(names)} names for {len(results)} results")
    rows = []
    for i, r in enumerate(results):
        if isinstance(r, Mapping):
            res, default = dict(r), f"result {i}"
        else:
            res = load_result(r)
            p = Path(r)
            default = (p if p.is_dir() else p.parent).name or f"result {i}"
        name = names[i] if names is not None else str(res.get("name", res.get("eval", default)))
        rows.append({"name": name, **flatten_numbers(res)})
    columns = ["name", *(keys if keys is not None else dict.fromkeys(k for row in rows for k in row if k != "name"))]
    return markdown_table(rows, columns)


# ---------------------------------------------------------------------------------------------------------------
# figures (matplotlib, lazily imported)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # lazy: optional dependency

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _as_list(x: Any) -> list:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().tolist()
    return [float(v) for v in x]


def plot_confusion(
    matrix: torch.Tensor | Sequence[Sequence[float]], class_names: Sequence[str], path: str | Path
) -> None:
    """Confusion matrix [C, C] (rows true, columns predicted; counts or rates) as a heat map PNG."""
    m = torch.as_tensor(matrix, dtype=torch.float32)
    c = len(class_names)
    if m.shape != (c, c):
        raise ValueError(f"confusion matrix of shape {tuple(m.shape)} for {c} class names")
    size = 2.5 + 0.4 * c
    fig = _figure(size, size)
    ax = fig.subplots()
    im = ax.imshow(m.numpy(), cmap="Blues")
    ax.set_xticks(range(c), labels=list(class_names), rotation=90)
    ax.set_yticks(range(c), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 20:
        hi = float(m.max()) if m.numel() else 0.0
        for i in range(c):
            for j in range(c):
                v = float(m[i, j])
                ax.text(
                    j, i, f"{v:.2g}", ha="center", va="center", fontsize=7, color="white" if v > hi / 2 else "black"
                )
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(Path(path))


def plot_similarity_histograms(intra: torch.Tensor, inter: torch.Tensor, path: str | Path, bins: int = 50) -> None:
    """Histograms of intra-class and inter-class cosine similarities (any shapes, flattened) in one PNG."""
    a, b = _as_list(torch.as_tensor(intra).flatten()), _as_list(torch.as_tensor(inter).flatten())
    fig = _figure(6, 4)
    ax = fig.subplots()
    ax.hist(a, bins=bins, alpha=0.6, density=True, label=f"intra-class (n={len(a)})")
    ax.hist(b, bins=bins, alpha=0.6, density=True, label=f"inter-class (n={len(b)})")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend()
    fig.savefig(Path(path))


def plot_per_class_bars(
    values: torch.Tensor | Sequence[float], class_names: Sequence[str], path: str | Path, ylabel: str = "accuracy"
) -> None:
    """One bar per class (e.g. per-class accuracy or spread) in a PNG."""
    v = _as_list(values)
    if len(v) != len(class_names):
        raise ValueError(f"{len(v)} values for {len(class_names)} class names")
    fig = _figure(2.5 + 0.35 * len(v), 4)
    ax = fig.subplots()
    ax.bar(range(len(v)), v)
    ax.set_xticks(range(len(v)), labels=list(class_names), rotation=90)
    ax.set_ylabel(ylabel)
    fig.savefig(Path(path))
