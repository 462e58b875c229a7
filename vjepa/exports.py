"""The export file: one file holding a run's target encoder (optionally its predictor) with its architecture.

`vjepa export RUN_DIR` (`export`) reads the newest checkpoint of a run (or a given checkpoint folder) in one
process, without a process group, and writes the TARGET encoder (the EMA encoder the papers evaluate), optionally
the predictor, with the model config, as one file:
    .pt           torch.save dict {"format": "vjepa.encoder", "version", "model" (ModelConfig as dict), "data"
                  (frames_per_clip, crop_size), "step", "source", "encoder" (state dict), optional "predictor" and
                  "num_mask_tokens"}
    .safetensors  tensors "encoder.<name>" / "predictor.<name>"; the same information as JSON metadata strings
With the predictor come the auxiliary objectives' heads of the run, if it had any (.pt: "heads" {key: state dict}
and "objectives" (the config's entries); .safetensors: tensors "heads.<key>.<name>"), so an online probe or a
latent-dynamics head travels with its predictor; so does a V-JEPA 2.1 context head (dense loss, "context_head").
With `--hf DIR` it also writes a Hugging Face folder (vjepa/interop/hf.py) that `transformers.VJEPA2Model
.from_pretrained(DIR)` loads; models without that layout are refused with the reason before anything is written.

`read_source(path)` gives an `Exported` from an export file, a run folder or a checkpoint folder; anything else (a
probe checkpoint, extracted features, an official training checkpoint, an unrelated file) raises
NotABackboneError saying what it is. Loading into a model is vjepa/pretrained.py's job.

Departure from the official code: the official evals load a `torch.save` training checkpoint and pick the
`target_encoder` entry by a config flag; ours reads the sharded DCP checkpoint directly and the exported file
carries the architecture, so no separate model config is needed to load it.

Shapes: none (state dicts only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vjepa.config import ModelConfig, load_config, to_dict
from vjepa.fileio import atomic_target
from vjepa.models.build import (
    CheckpointMismatchError,
    NotABackboneError,
    build_pair,
    check_tensor_shapes,
    load_state,
    model_config_from_dict,
)
from vjepa.models.encoder import VisionTransformer
from vjepa.models.predictor import Predictor

FORMAT = "vjepa.encoder"
VERSION = 1
TARGET_PREFIX = "models.target_encoder.backbone."  # DCP names of the target encoder (vjepa/train/loop.py)
PREDICTOR_PREFIX = "models.predictor."
HEADS_PREFIX = "models.objectives."  # auxiliary objectives' heads, "models.objectives.<key>.<name>"
OTHER_FORMATS = {
    "vjepa.probe": "a probe checkpoint (a classifier trained on frozen features), not a video encoder; pass the "
    "backbone the probe was trained on (an export file, a run folder or a Hugging Face folder)",
    "vjepa.features": "a file of extracted features (vjepa eval extract), not a video encoder; load it with "
    "vjepa.evals.extract.load_features",
}


@dataclasses.dataclass
class Exported:
    """Everything an export file holds: architecture, provenance and state dicts (our parameter names)."""

    model: ModelConfig
    frames_per_clip: int
    crop_size: int
    step: int
    source: str
    encoder: dict[str, torch.Tensor]
    predictor: dict[str, torch.Tensor] | None = None
    num_mask_tokens: int = 2
    heads: dict[str, dict[str, torch.Tensor]] | None = None  # auxiliary objectives' parameters, by objective key
    objectives: list[dict[str, Any]] | None = None  # the run's `objectives` config entries
    context_head: bool = False  # the predictor has the V-JEPA 2.1 context head (a run with the dense loss)


def _resolve_checkpoint(path: Path) -> tuple[Path, Path]:
    """(checkpoint folder, run folder) for a run folder or a checkpoint folder."""
    from vjepa.train.checkpoint import latest_checkpoint

    if (path / "meta.json").is_file():
        return path, path.parent.parent  # run/checkpoints/step_XXXXXXXX
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no complete checkpoint under {path / 'checkpoints'} (is the run started?)")
    return ckpt, path


def read_checkpoint(path: str | os.PathLike, with_predictor: bool = False) -> Exported:
    """The target encoder (and predictor) of a DCP checkpoint, read in this process without a process group.

    path: a run folder (its latest checkpoint) or a checkpoint folder `run/checkpoints/step_XXXXXXXX`; the
    architecture comes from the run's config.yaml and is checked against the checkpoint's tensor shapes. A
    pixel-target run's predictor (optim.target=pixels) is no feature predictor: with_predictor refuses it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    from vjepa.train.checkpoint import read_meta

    ckpt, run_dir = _resolve_checkpoint(Path(path))
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{ckpt}: the run's config.yaml is missing (looked for {config_file})")
    cfg = load_config(config_file)
    if with_predictor and cfg.optim.target == "pixels":
        raise ValueError(
            f"{ckpt}: a pixel-target run (optim.target=pixels) has a predictor of pixels, not features; "
            "read or export its target encoder only"
        )
    meta = read_meta(ckpt)
    k = len(cfg.mask.families)
    head = cfg.optim.dense_weight > 0
    encoder, predictor = build_pair(
        _loadable(cfg.model),
        frames_per_clip=cfg.data.frames_per_clip,
        crop_size=cfg.data.crop_size,
        num_mask_tokens=k,
        context_head=head,
        meta=True,
    )
    parts = [("target_encoder.backbone.", encoder)] + ([("predictor.", predictor)] if with_predictor else [])
    prefixes = [p for p, _ in parts] + (["objectives."] if with_predictor else [])
    saved = meta["shapes"]  # names as in the training ModuleDict, without the "models." of DCP
    for prefix, module in parts:
        given = {n.removeprefix(prefix): s for n, s in saved.items() if n.startswith(prefix)}
        expected = {n: v.shape for n, v in module.state_dict().items()}
        check_tensor_shapes(expected, given, f"checkpoint {ckpt} ({prefix}*) vs {config_file}")
    listing = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    wanted = {}
    for prefix in prefixes:
        for name, item in listing.items():
            if name.startswith("models." + prefix) and hasattr(item, "size"):
                wanted[name] = torch.empty(item.size, dtype=item.properties.dtype)
    with warnings.catch_warnings():  # DCP warns that it loads in one process: that is the intent
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(wanted, checkpoint_id=str(ckpt), no_dist=True)
    enc_sd = {n.removeprefix(TARGET_PREFIX): t for n, t in wanted.items() if n.startswith(TARGET_PREFIX)}
    pred_sd = {n.removeprefix(PREDICTOR_PREFIX): t for n, t in wanted.items() if n.startswith(PREDICTOR_PREFIX)}
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for n, t in wanted.items():
        if n.startswith(HEADS_PREFIX):
            key, _, name = n.removeprefix(HEADS_PREFIX).partition(".")
            heads.setdefault(key, {})[name] = t
    return Exported(
        model=cfg.model,
        frames_per_clip=cfg.data.frames_per_clip,
        crop_size=cfg.data.crop_size,
        step=int(meta["step"]),
        source=str(ckpt.resolve()),
        encoder=enc_sd,
        predictor=pred_sd if with_predictor else None,
        num_mask_tokens=k,
        heads=heads if with_predictor and heads else None,
        objectives=[to_dict(spec) for spec in cfg.objectives] if with_predictor and heads else None,
        context_head=head,
    )


def _describe_other(d: Mapping, source: str) -> str:
    fmt = d.get("format")
    if isinstance(fmt, str) and fmt in OTHER_FORMATS:
        return f"{source} is {OTHER_FORMATS[fmt]}"
    if fmt is not None:
        return f"{source} has format {fmt!r}, not {FORMAT!r}: it is not a video encoder export"
    keys = sorted(map(str, d))
    if {"encoder", "target_encoder"} <= set(d):
        return (
            f"{source} looks like an official V-JEPA training checkpoint (keys {keys[:8]}); import it into a model of "
            "its architecture with vjepa.interop.official.load_vjepa1"
        )
    return f"{source} is a dict with keys {keys[:10]} but no 'format': {FORMAT!r}; export one with `vjepa export RUN`"


def _from_pt_dict(d: Mapping, source: str) -> Exported:
    if d.get("format") != FORMAT:
        raise NotABackboneError(_describe_other(d, source))
    if int(d.get("version", 0)) > VERSION:
        raise ValueError(f"{source}: export version {d.get('version')} is newer than this code reads ({VERSION})")
    missing = [k for k in ("model", "data", "encoder") if k not in d]
    if missing:
        raise ValueError(f"{source}: a {FORMAT} file without entries {missing}")
    return Exported(
        model=model_config_from_dict(d["model"], source),
        frames_per_clip=int(d["data"]["frames_per_clip"]),
        crop_size=int(d["data"]["crop_size"]),
        step=int(d.get("step", -1)),
        source=str(d.get("source", source)),
        encoder=dict(d["encoder"]),
        predictor=dict(d["predictor"]) if d.get("predictor") is not None else None,
        num_mask_tokens=int(d.get("num_mask_tokens", 2)),
        heads={k: dict(v) for k, v in d["heads"].items()} if d.get("heads") else None,
        objectives=list(d["objectives"]) if d.get("objectives") else None,
        context_head=bool(d.get("context_head", False)),
    )


def read_export(path: str | os.PathLike) -> Exported:
    """Read a .pt or .safetensors export; NotABackboneError for any other kind of file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as err:
            raise NotABackboneError(f"{path} is not a readable safetensors file: {err}") from None
        if meta.get("format") != FORMAT:
            what = "a Hugging Face weights file? Load its folder (with config.json)" if "format" in meta else "no"
            raise NotABackboneError(f"{path}: safetensors without {FORMAT!r} metadata ({what}: {meta.get('format')})")
        d: dict[str, Any] = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "source")}
        d.update(format=meta["format"], source=meta.get("source", str(path)))
        d["encoder"] = {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
        pred = {k.removeprefix("predictor."): v for k, v in tensors.items() if k.startswith("predictor.")}
        d["predictor"] = pred or None
        heads: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("heads."):
                key, _, name = k.removeprefix("heads.").partition(".")
                heads.setdefault(key, {})[name] = v
        d["heads"] = heads or None
        return _from_pt_dict(d, str(path))
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NotABackboneError(
            f"{path} is not a backbone: not a PyTorch checkpoint that loads with weights_only=True ({first}). "
            "Expected an export (.pt/.safetensors from `vjepa export`), a run folder or a Hugging Face folder."
        ) from None
    if not isinstance(d, Mapping):
        raise NotABackboneError(f"{path} holds a {type(d).__name__}, not a {FORMAT} dict: not a backbone")
    return _from_pt_dict(d, str(path))


def read_source(path: str | os.PathLike, with_predictor: bool = False) -> Exported:
    """An Exported from a run folder, a checkpoint folder or an export file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        if (path / "checkpoints").is_dir() or (path / "meta.json").is_file():
            return read_checkpoint(path, with_predictor)
        raise NotABackboneError(
            f"{path} is a folder but neither a pretraining run (checkpoints/), a checkpoint folder (meta.json) "
            "nor a Hugging Face VJEPA2 folder (config.json)"
        )
    return read_export(path)


def _loadable(model: ModelConfig) -> ModelConfig:
    """A model config built for loading: attn_impl=flash becomes sdpa (PyTorch picks its flash kernel on GPU)."""
    return dataclasses.replace(model, attn_impl="sdpa") if model.attn_impl == "flash" else model


def build_loaded(ex: Exported, with_predictor: bool = False) -> tuple[VisionTransformer, Predictor | None]:
    """Encoder (and, with_predictor, predictor) of `ex`'s architecture holding its weights as float32 on the CPU,
    checked by name and shape first (CheckpointMismatchError naming every difference)."""
    encoder, predictor = build_pair(
        _loadable(ex.model),
        frames_per_clip=ex.frames_per_clip,
        crop_size=ex.crop_size,
        num_mask_tokens=ex.num_mask_tokens,
        context_head=ex.context_head,
        meta=True,
    )
    load_state(encoder, ex.encoder, f"encoder of {ex.source}")
    if not with_predictor:
        return encoder, None
    if ex.predictor is None:
        raise ValueError(f"{ex.source} holds no predictor")
    load_state(predictor, ex.predictor, f"predictor of {ex.source}")
    return encoder, predictor


def _write_pt(ex: Exported, out: Path) -> None:
    d: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": to_dict(ex.model),
        "data": {"frames_per_clip": ex.frames_per_clip, "crop_size": ex.crop_size},
        "step": ex.step,
        "source": ex.source,
        "encoder": ex.encoder,
    }
    if ex.predictor is not None:
        d.update(predictor=ex.predictor, num_mask_tokens=ex.num_mask_tokens, context_head=ex.context_head)
    if ex.heads:
        d.update(heads=ex.heads, objectives=ex.objectives)
    with atomic_target(out) as tmp:
        torch.save(d, tmp)


def _write_safetensors(ex: Exported, out: Path) -> None:
    from safetensors.torch import save_file

    tensors = {f"encoder.{k}": v.contiguous() for k, v in ex.encoder.items()}
    if ex.predictor is not None:
        tensors.update({f"predictor.{k}": v.contiguous() for k, v in ex.predictor.items()})
    for key, sd in (ex.heads or {}).items():
        tensors.update({f"heads.{key}.{k}": v.contiguous() for k, v in sd.items()})
    meta = {
        "format": FORMAT,
        "version": json.dumps(VERSION),
        "model": json.dumps(to_dict(ex.model)),
        "data": json.dumps({"frames_per_clip": ex.frames_per_clip, "crop_size": ex.crop_size}),
        "step": json.dumps(ex.step),
        "source": ex.source,
    }
    if ex.predictor is not None:
        meta["num_mask_tokens"] = json.dumps(ex.num_mask_tokens)
        meta["context_head"] = json.dumps(ex.context_head)
    if ex.heads:
        meta["objectives"] = json.dumps(ex.objectives)
    with atomic_target(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def write_export(ex: Exported, out: str | os.PathLike) -> Path:
    """Write an Exported to `out` (.pt or .safetensors, by suffix), atomically."""
    out = Path(out)
    if out.suffix not in (".pt", ".safetensors"):
        raise ValueError(f"export: {out} must end in .pt or .safetensors")
    (_write_pt if out.suffix == ".pt" else _write_safetensors)(ex, out)
    return out


def export(
    run_dir_or_checkpoint: str | os.PathLike,
    out_path: str | os.PathLike | None,
    *,
    with_predictor: bool = False,
    hf_dir: str | os.PathLike | None = None,
) -> dict:
    """Write the target encoder (and, with_predictor, the predictor) of a run, a checkpoint folder or an export
    file to `out_path` (.pt or .safetensors) and/or to a Hugging Face folder `hf_dir`. Everything is checked
    before anything is written. Returns a summary (paths, step, source, parameter count, seconds)."""
    start = time.perf_counter()
    out = Path(out_path) if out_path is not None else None
    if out is None and hf_dir is None:
        raise ValueError("export: give an output file (.pt / .safetensors), a Hugging Face folder, or both")
    if out is not None and out.suffix not in (".pt", ".safetensors"):
        raise ValueError(f"export: {out} must end in .pt or .safetensors")
    src = Path(run_dir_or_checkpoint)
    from vjepa.interop import hf

    if hf.is_folder(src):
        raise ValueError(f"{src} is already a Hugging Face folder; load it with load_pretrained")
    ex = read_source(src, with_predictor=with_predictor or hf_dir is not None)
    if with_predictor and ex.predictor is None:
        raise ValueError(f"{src} holds no predictor (it was exported without --with-predictor)")
    hf_payload = None
    if hf_dir is not None:  # refuse before writing anything
        hf.check_exportable(ex.model)
        if ex.predictor is None:
            raise ValueError("the Hugging Face layout holds encoder and predictor: read the source with its predictor")
        hf_payload = hf.payload(*build_loaded(ex, with_predictor=True))
    else:  # check the encoder against the recorded architecture before writing it
        build_loaded(ex)
    result = {"source": ex.source, "step": ex.step, "out": None, "hf_dir": None, "with_predictor": with_predictor}
    result["encoder_params"] = sum(v.numel() for v in ex.encoder.values())
    if out is not None:
        write_export(
            ex if with_predictor else dataclasses.replace(ex, predictor=None, heads=None, objectives=None), out
        )
        result["out"] = str(out)
    if hf_payload is not None:
        result["hf_dir"] = str(hf.write_folder(hf_payload, hf_dir))
    result["seconds"] = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_DIR", help="pretraining run folder, checkpoint folder or export file")
    parser.add_argument("--out", default=None, help="output file, .pt or .safetensors (default RUN_DIR/encoder.pt)")
    parser.add_argument(
        "--with-predictor",
        action="store_true",
        help="also write the predictor (and the auxiliary objectives' heads, if any)",
    )
    parser.add_argument("--hf", default=None, metavar="DIR", help="also write a Hugging Face VJEPA2 folder (RoPE only)")


def run(args: argparse.Namespace) -> int:
    out = args.out
    if out is None and args.hf is None:
        src = Path(args.source)
        out = str((src if src.is_dir() else src.parent) / "encoder.pt")
    try:
        result = export(args.source, out, with_predictor=args.with_predictor, hf_dir=args.hf)
    except (NotABackboneError, CheckpointMismatchError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    written = [p for p in (result["out"], result["hf_dir"]) if p]
    print(
        f"exported the target encoder{' and predictor' if args.with_predictor else ''} of {result['source']} "
        f"(step {result['step']}, {result['encoder_params'] / 1e6:.2f}M parameters) to {', '.join(written)} "
        f"in {result['seconds']:.1f}s"
    )
    return 0
