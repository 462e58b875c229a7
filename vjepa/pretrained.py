"""Export the target encoder of a pretraining run to one file, and load any backbone for frozen evaluation.

`vjepa export RUN_DIR` reads the newest checkpoint of a run (or a given checkpoint folder) in one process, without
a process group, and writes the TARGET encoder (the EMA encoder the papers evaluate), optionally the predictor,
with the model config, as one file:
    .pt           torch.save dict {"format": "vjepa.encoder", "version", "model" (ModelConfig as dict), "data"
                  (frames_per_clip, crop_size), "step", "source", "encoder" (state dict), optional "predictor" and
                  "num_mask_tokens"}
    .safetensors  tensors "encoder.<name>" / "predictor.<name>"; the same information as JSON metadata strings
With the predictor come the auxiliary objectives' heads of the run, if it had any (.pt: "heads" {key: state dict}
and "objectives" (the config's entries); .safetensors: tensors "heads.<key>.<name>"), so an online probe or a
latent-dynamics head travels with its predictor.
and, with `--hf DIR`, a Hugging Face folder (config.json + model.safetensors) that `transformers.VJEPA2Model
.from_pretrained(DIR)` loads. That layout only exists for V-JEPA 2-style models (3D RoPE); a sin-cos model and a
V-JEPA 2.1 deep-supervision model (model.levels = 4: level norms and 4 D-wide predictor heads) are refused with the
reason. A predictor's V-JEPA 2.1 context head (dense loss) travels in .pt / .safetensors exports ("context_head");
the Hugging Face predictor has no place for it and is written without it.

`load_pretrained(path)` returns a frozen `VisionTransformer` (eval mode, no grad) from an export file, a run folder,
a checkpoint folder or a Hugging Face VJEPA2 folder; tensor names and shapes are checked first and every mismatch
is named. Anything else (a probe checkpoint, extracted features, an unrelated file) raises NotABackboneError saying
what the file is. `random_like` gives the same architecture freshly initialised (the random-init baseline).
The module gets the attributes `frames_per_clip`, `crop_size` and `source` (a description of where it came from).

Departures from the official code: the official evals load a `torch.save` training checkpoint and pick the
`target_encoder` entry by a config flag; ours reads the sharded DCP checkpoint directly and the exported file
carries the architecture, so no separate model config is needed to load it. A loaded model configured for
`attn_impl="flash"` is built with "sdpa" (PyTorch picks its flash kernel on GPU itself).

Shapes: none (state dicts only); D encoder width.
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
from torch import nn

from vjepa.config import Config, DataConfig, MaskConfig, MaskSpec, ModelConfig, load_config, to_dict
from vjepa.export import (
    CheckpointMismatchError,
    check_tensor_shapes,
    from_hf_state_dict,
    hf_config_from_models,
    to_hf_state_dict,
)
from vjepa.fileio import atomic_target
from vjepa.models.encoder import VisionTransformer
from vjepa.models.init import init_weights
from vjepa.models.predictor import Predictor

FORMAT = "vjepa.encoder"
VERSION = 1
TARGET_PREFIX = "models.target_encoder.backbone."  # DCP names of the target encoder (vjepa/train/loop.py)
PREDICTOR_PREFIX = "models.predictor."
HEADS_PREFIX = "models.objectives."  # auxiliary objectives' heads, "models.objectives.<key>.<name>"
HF_SINCOS_REFUSAL = (
    "cannot export to the Hugging Face layout: this model uses the fixed 3D sin-cos position table of V-JEPA 1 "
    "(model.pos_embed=sincos), and transformers' VJEPA2Model only implements the 3D rotary positions of V-JEPA 2 "
    "(model.pos_embed=rope); its outputs would differ. Export to .pt or .safetensors instead."
)
HF_LEVELS_REFUSAL = (
    "cannot export to the Hugging Face layout: this model uses V-JEPA 2.1 deep supervision (model.levels={levels}: "
    "per-level norms, a predictor input MLP and heads {levels} x the encoder width), which transformers' "
    "VJEPA2Model cannot hold. Export to .pt or .safetensors instead."
)
OTHER_FORMATS = {
    "vjepa.probe": "a probe checkpoint (a classifier trained on frozen features), not a video encoder; pass the "
    "backbone the probe was trained on (an export file, a run folder or a Hugging Face folder)",
    "vjepa.features": "a file of extracted features (vjepa eval extract), not a video encoder; load it with "
    "evals.extract.load_features",
}


class NotABackboneError(ValueError):
    """The file or folder does not hold a video encoder; the message says what it is."""


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


# --------------------------------------------------------------------------------------------- building models


def model_config_from_dict(d: Mapping[str, Any], source: str) -> ModelConfig:
    """ModelConfig from its dict form; unknown keys are an error naming the file and the valid keys."""
    valid = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ValueError(f"{source}: unknown model config keys {unknown}; valid: {sorted(valid)}")
    return ModelConfig(**dict(d))


def build_from_config(
    model: ModelConfig,
    *,
    frames_per_clip: int,
    crop_size: int,
    num_mask_tokens: int = 2,
    meta: bool = True,
    context_head: bool = False,
) -> tuple[VisionTransformer, Predictor]:
    """Encoder and predictor of this architecture, through the training code's `build_models` (one source of
    truth). meta=True builds them without memory, ready for `load_state_dict(assign=True)`. `context_head`: the
    predictor has the V-JEPA 2.1 context head."""
    from vjepa.train.loop import build_models  # the training loop imports much more; only needed here

    if model.attn_impl == "flash":
        model = dataclasses.replace(model, attn_impl="sdpa")
    cfg = Config(
        model=model,
        data=DataConfig(source="synthetic", frames_per_clip=frames_per_clip, crop_size=crop_size),
        mask=MaskConfig(families=tuple(MaskSpec() for _ in range(num_mask_tokens))),
    )
    if meta:
        with torch.device("meta"):
            encoder, predictor = build_models(cfg, context_head)
    else:
        encoder, predictor = build_models(cfg, context_head)
    return encoder.backbone, predictor


def _assign(module: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Check names and shapes (CheckpointMismatchError naming each difference), then load as float32."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_tensor_shapes(expected, {k: v.shape for k, v in sd.items()}, source)
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, assign=True)


def _finish(encoder: VisionTransformer, *, source: str, device: str | torch.device) -> VisionTransformer:
    encoder = encoder.to(device).eval().requires_grad_(False)
    encoder.frames_per_clip = encoder.num_frames
    encoder.crop_size = encoder.img_size
    encoder.source = source
    return encoder


# ------------------------------------------------------------------------------------------- reading sources


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
    encoder, predictor = build_from_config(
        cfg.model,
        frames_per_clip=cfg.data.frames_per_clip,
        crop_size=cfg.data.crop_size,
        num_mask_tokens=k,
        context_head=head,
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
            "its architecture with vjepa.export.load_official_vjepa1"
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


def _hf_modules(c: Mapping[str, Any], source: str) -> tuple[VisionTransformer, Predictor]:
    if c.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: hidden_act {c.get('hidden_act')!r} is not supported (only gelu)")
    common = dict(
        img_size=c["crop_size"],
        num_frames=c["frames_per_clip"],
        patch_size=c["patch_size"],
        tubelet_size=c["tubelet_size"],
        qkv_bias=c.get("qkv_bias", True),
        norm_eps=c.get("layer_norm_eps", 1e-6),
        pos_embed="rope",
    )
    encoder = VisionTransformer(
        in_chans=c.get("in_chans", 3),
        embed_dim=c["hidden_size"],
        depth=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        mlp_ratio=c["mlp_ratio"],
        **common,
    )
    predictor = Predictor(
        embed_dim=c["hidden_size"],
        pred_embed_dim=c["pred_hidden_size"],
        depth=c["pred_num_hidden_layers"],
        num_heads=c["pred_num_attention_heads"],
        mlp_ratio=c["pred_mlp_ratio"],
        num_mask_tokens=c["pred_num_mask_tokens"],
        **common,
    )
    return encoder, predictor


def load_hf_folder(folder: str | os.PathLike) -> tuple[VisionTransformer, Predictor]:
    """Our encoder and predictor from a Hugging Face VJEPA2 folder (config.json + model.safetensors, possibly
    sharded with model.safetensors.index.json); keys may carry the `vjepa2.` prefix of the task models."""
    from safetensors.torch import load_file

    folder = Path(folder)
    c = json.loads((folder / "config.json").read_text())
    if c.get("model_type") != "vjepa2":
        raise NotABackboneError(f"{folder}: a Hugging Face folder of model_type {c.get('model_type')!r}, not vjepa2")
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
    files = [folder / f for f in files] or [folder / "model.safetensors"]
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{folder}: weights file {f.name} is missing")
        sd.update(load_file(str(f)))
    sd = {k: v.float() for k, v in sd.items() if k.removeprefix("vjepa2.").startswith(("encoder.", "predictor."))}
    try:
        with torch.device("meta"):
            encoder, predictor = _hf_modules(c, str(folder))
    except KeyError as err:
        raise ValueError(f"{folder}/config.json: missing entry {err}") from None
    encoder, predictor = encoder.to_empty(device="cpu"), predictor.to_empty(device="cpu")
    from_hf_state_dict(sd, encoder, predictor)
    return encoder, predictor


# ------------------------------------------------------------------------------------------------ public API


def load_exported(path: str | os.PathLike, with_predictor: bool = False) -> Exported:
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


def load_pretrained(path: str | os.PathLike, device: str | torch.device = "cpu") -> VisionTransformer:
    """A frozen encoder (eval mode, requires_grad off) from an export file (.pt/.safetensors), a pretraining run
    folder (its latest checkpoint's target encoder), a checkpoint folder, or a Hugging Face VJEPA2 folder.

    Raises NotABackboneError for anything else (probe checkpoints, feature files, unrelated files) and
    CheckpointMismatchError naming the tensors when the weights do not fit the recorded architecture."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        encoder, _ = load_hf_folder(path)
        return _finish(encoder, source=f"Hugging Face VJEPA2 {path.resolve()}", device=device)
    ex = load_exported(path)
    encoder, _ = build_from_config(ex.model, frames_per_clip=ex.frames_per_clip, crop_size=ex.crop_size)
    _assign(encoder, ex.encoder, f"encoder of {path}")
    return _finish(encoder, source=f"{path.resolve()} (step {ex.step})", device=device)


def random_like(path_or_encoder: str | os.PathLike | nn.Module, seed: int) -> VisionTransformer:
    """The same architecture with the product's initialisation (`init_weights`) drawn from `seed`: the random-init
    baseline. The global RNG state is left untouched."""
    if isinstance(path_or_encoder, nn.Module):
        like = getattr(path_or_encoder, "backbone", path_or_encoder)
        if not isinstance(like, VisionTransformer):
            raise TypeError(f"random_like: expected a VisionTransformer, got {type(like).__name__}")
    else:
        like = load_pretrained(path_or_encoder)
    device = next(like.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = VisionTransformer(
            img_size=like.img_size,
            num_frames=like.num_frames,
            patch_size=like.patch_size,
            tubelet_size=like.tubelet_size,
            in_chans=like.in_chans,
            embed_dim=like.embed_dim,
            depth=like.depth,
            num_heads=like.num_heads,
            mlp_ratio=like.mlp_ratio,
            qkv_bias=like.qkv_bias,
            norm_eps=like.norm_eps,
            pos_embed=like.pos_embed_type,
            uniform_power=like.uniform_power,
            attn_impl=like.attn_impl,
            levels=like.levels,
        )
        init_weights(encoder)
    source = f"random init (seed {seed}) like {getattr(like, 'source', 'an encoder')}"
    return _finish(encoder, source=source, device=device)


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


def _hf_payload(ex: Exported) -> tuple[Any, dict[str, torch.Tensor]]:
    """(transformers VJEPA2Config, HF state dict); ValueError when the model has no HF equivalent."""
    if ex.model.pos_embed != "rope":
        raise ValueError(HF_SINCOS_REFUSAL)
    if ex.model.levels != 1:
        raise ValueError(HF_LEVELS_REFUSAL.format(levels=ex.model.levels))
    if ex.predictor is None:
        raise ValueError("the Hugging Face layout holds encoder and predictor: read the source with its predictor")
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError(f"--hf needs transformers: pip install 'vjepa[hf]' ({err})") from None
    encoder, predictor = build_from_config(
        ex.model,
        frames_per_clip=ex.frames_per_clip,
        crop_size=ex.crop_size,
        num_mask_tokens=ex.num_mask_tokens,
        context_head=ex.context_head,
    )
    _assign(encoder, ex.encoder, f"encoder of {ex.source}")
    _assign(predictor, ex.predictor, f"predictor of {ex.source}")
    config = hf_config_from_models(encoder, predictor)
    config.architectures = ["VJEPA2Model"]
    return config, to_hf_state_dict(encoder, predictor)


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
    if src.is_dir() and (src / "config.json").is_file():
        raise ValueError(f"{src} is already a Hugging Face folder; load it with load_pretrained")
    ex = load_exported(src, with_predictor=with_predictor or hf_dir is not None)
    if with_predictor and ex.predictor is None:
        raise ValueError(f"{src} holds no predictor (it was exported without --with-predictor)")
    hf = _hf_payload(ex) if hf_dir is not None else None  # refuse before writing anything
    # check the encoder against the recorded architecture before writing it
    encoder, _ = build_from_config(ex.model, frames_per_clip=ex.frames_per_clip, crop_size=ex.crop_size)
    _assign(encoder, ex.encoder, f"encoder of {ex.source}")
    result = {"source": ex.source, "step": ex.step, "out": None, "hf_dir": None, "with_predictor": with_predictor}
    result["encoder_params"] = sum(v.numel() for v in ex.encoder.values())
    if out is not None:
        write_export(
            ex if with_predictor else dataclasses.replace(ex, predictor=None, heads=None, objectives=None), out
        )
        result["out"] = str(out)
    if hf is not None:
        from safetensors.torch import save_file

        config, sd = hf
        folder = Path(hf_dir)
        folder.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(str(folder))
        with atomic_target(folder / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})
        result["hf_dir"] = str(folder)
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
