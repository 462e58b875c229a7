"""Inputs and outputs shared by the frozen-feature probes (attentive, linear, k-NN): load and validate feature
dicts, pool tokens, write checkpoints atomically, write `result.json` and the report.

Feature dicts are those of `vjepa eval extract` (evals/extract.py, format in docs/feature-files.md):
`{"format": "vjepa.features", "output": "pooled"|"frames"|"tokens", "features": [N, V, ...], "labels": [N], ...}`.
Probes accept either such a dict or the path of a file holding one. Every check names the source (file path or
"train"/"val") and the key at fault, and says what a wrong file is when it can tell (a backbone export, a
checkpoint folder, a probe checkpoint), so a swapped command-line argument fails with a readable message.

Shapes: N videos, V views (clips x spatial views), K tokens (or T' frames), D width, C classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vjepa.fileio import atomic_target

FEATURE_FORMAT = "vjepa.features"
PROBE_FORMAT = "vjepa.probe"
OUTPUTS = {"pooled": 3, "frames": 4, "tokens": 4}  # output kind -> ndim of "features" ([N, V, D] or [N, V, K, D])
BACKBONE_KEYS = ("encoder", "target_encoder", "predictor", "model", "state_dict", "module")

FeatureSource = str | os.PathLike | Mapping[str, Any]


class FeatureFormatError(ValueError):
    """A feature input is not a valid `vjepa.features` dict; the message names the file or split and the key."""


def _describe_non_features(obj: Any, source: str) -> str:
    hint = "pass the output of `vjepa eval extract`"
    if not isinstance(obj, Mapping):
        return f"{source}: expected a '{FEATURE_FORMAT}' dict, got {type(obj).__name__}; {hint}"
    fmt = obj.get("format")
    if fmt == PROBE_FORMAT:
        return f"{source}: is a probe checkpoint (format '{PROBE_FORMAT}'), not features; {hint}"
    if fmt is not None:
        return f"{source}: format {fmt!r} is not '{FEATURE_FORMAT}' (a backbone export?); {hint}"
    keys = sorted(map(str, obj))[:8]
    if any(k in obj for k in BACKBONE_KEYS) or any(
        isinstance(v, torch.Tensor) and "." in str(k) for k, v in obj.items()
    ):
        return f"{source}: looks like a backbone checkpoint or state dict (keys {keys}), not features; {hint}"
    return f"{source}: not a feature dict: no 'format' key (keys {keys}); {hint}"


def load_feature_file(path: str | os.PathLike) -> dict:
    """torch.load a feature file (tensors and plain containers only) and validate it; errors name the file."""
    p = Path(path)
    if p.is_dir():
        raise FeatureFormatError(
            f"{p}: is a folder (a run or checkpoint folder?), not a feature file of `vjepa eval extract`"
        )
    if not p.exists():
        raise FeatureFormatError(f"{p}: no such feature file")
    if p.suffix == ".safetensors":
        raise FeatureFormatError(f"{p}: is a safetensors file (a backbone export?), not a feature file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)  # large token files stay on disk
    except Exception as err:  # pickle, zip and weights_only refusals all mean "not a feature file"
        raise FeatureFormatError(f"{p}: cannot be read as a feature file ({type(err).__name__}: {err})") from err
    return check_features(obj, str(p))


def check_features(obj: Any, source: str) -> dict:
    """Validate a feature dict (format, output kind, shapes, dtypes, finiteness); return it as a plain dict."""
    if not isinstance(obj, Mapping) or obj.get("format") != FEATURE_FORMAT:
        raise FeatureFormatError(_describe_non_features(obj, source))
    out = obj.get("output")
    if out not in OUTPUTS:
        raise FeatureFormatError(f"{source}['output']: {out!r} is not one of {sorted(OUTPUTS)}")
    feats, labels = obj.get("features"), obj.get("labels")
    if not isinstance(feats, torch.Tensor) or not feats.is_floating_point():
        raise FeatureFormatError(f"{source}['features']: expected a float tensor, got {type(feats).__name__}")
    if feats.ndim != OUTPUTS[out]:
        want = "[N, V, D]" if out == "pooled" else "[N, V, K, D]"
        raise FeatureFormatError(f"{source}['features']: output {out!r} needs {want}, got shape {list(feats.shape)}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        got = f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise FeatureFormatError(f"{source}['labels']: expected int64 [N], got {got}")
    if labels.shape[0] != feats.shape[0]:
        raise FeatureFormatError(
            f"{source}: 'labels' has {labels.shape[0]} entries but 'features' has {feats.shape[0]} videos"
        )
    if feats.shape[0] == 0 or min(feats.shape) == 0:
        raise FeatureFormatError(f"{source}['features']: empty tensor of shape {list(feats.shape)}")
    if int(labels.min()) < 0:
        raise FeatureFormatError(f"{source}['labels']: negative label {int(labels.min())}")
    if not all(bool(torch.isfinite(chunk).all()) for chunk in feats.split(256)):  # chunks: no [N, V, K, D] mask
        raise FeatureFormatError(f"{source}['features']: contains NaN or infinite values")
    return dict(obj)


def as_features(src: FeatureSource, name: str) -> tuple[dict, str]:
    """A validated feature dict from a path or an in-memory dict, and the source name used in messages."""
    if isinstance(src, Mapping):
        return check_features(src, name), name
    return load_feature_file(src), str(src)


def check_pair(train: dict, val: dict, train_src: str, val_src: str) -> None:
    """Train and val features must have the same width D and the same output kind."""
    dt, dv = train["features"].shape[-1], val["features"].shape[-1]
    if dt != dv:
        raise FeatureFormatError(f"feature width differs: {train_src} has D={dt}, {val_src} has D={dv}")
    if (train["output"] == "pooled") != (val["output"] == "pooled"):
        raise FeatureFormatError(
            f"output kinds differ: {train_src} is {train['output']!r}, {val_src} is {val['output']!r}"
        )


def pooled_features(feats: dict) -> torch.Tensor:
    """[N, V, D] float32: pooled features as stored, or token/frame features averaged over K."""
    x = feats["features"]
    if feats["output"] == "pooled":
        return x.float()  # [N, V, D]
    return torch.cat([chunk.float().mean(dim=2) for chunk in x.split(256)])  # [N, V, D], chunked over videos


def num_classes(*label_sets: torch.Tensor) -> int:
    """C = 1 + the largest label seen in any split."""
    return 1 + max(int(labels.max()) for labels in label_sets)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves a torn file."""
    with atomic_target(path) as tmp:
        torch.save(obj, tmp)


def classification_figures(
    confusion: Sequence[Sequence[int]], per_class: Sequence[float], max_classes: int = 50
) -> dict[str, Callable[[Path], None]]:
    """Report figures (confusion matrix, per-class accuracy bars) when there are at most `max_classes` classes."""
    from vjepa.evals.report import plot_confusion, plot_per_class_bars

    names = [str(i) for i in range(len(per_class))]
    if len(names) > max_classes:
        return {}
    return {
        "confusion matrix": lambda path: plot_confusion(confusion, names, path),
        "per-class accuracy": lambda path: plot_per_class_bars(per_class, names, path),
    }


def write_result(
    out_dir: str | os.PathLike,
    title: str,
    result: dict,
    tables: dict[str, list[dict]] | None = None,
    figures: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write `result.json` and `report.md` (+ figures) into out_dir with evals/report.py; return the report path."""
    from vjepa.evals.report import write_report

    return write_report(out_dir, title, result, tables=tables, figures=figures)
