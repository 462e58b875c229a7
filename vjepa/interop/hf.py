"""The Hugging Face `transformers` VJEPA2 layout, both directions: state dicts, the config, reading a folder.

Our RoPE encoder/predictor map one-to-one onto `encoder.embeddings.patch_embeddings.proj`, `encoder.layer.{i}.{norm1,
attention.{query,key,value,proj}, norm2, mlp.{fc1,fc2}}`, `encoder.layernorm`, `predictor.embeddings.
{predictor_embeddings, mask_tokens}`, `predictor.layer.{i}...`, `predictor.layernorm`, `predictor.proj`. Our fused
qkv [3D, D] is split into / joined from query, key, value (rows [q; k; v]); our mask tokens (K parameters [1, 1, P])
become one [K, 1, 1, P] tensor. The RoPE layout is the same (vjepa/models/pos_embed.py), so outputs agree to float
precision. Note `transformers`' predictor always uses mask token 1 (modulo the count): call ours with `family=1` to
compare. The layout only exists for V-JEPA 2-style models: a sin-cos model (V-JEPA 1) and a V-JEPA 2.1
deep-supervision model (model.levels > 1) are refused with the reason (`check_exportable`); a predictor's context
head (dense loss) has no place in it and is left out.

Shapes: B batch, N tokens, D encoder width, P predictor width, K mask tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vjepa.config import ModelConfig
from vjepa.fileio import atomic_target
from vjepa.models.build import NotABackboneError, backbone_of, build_pair, check_tensor_shapes
from vjepa.models.encoder import VisionTransformer
from vjepa.models.predictor import Predictor

if TYPE_CHECKING:
    from transformers import VJEPA2Config

SINCOS_REFUSAL = (
    "cannot export to the Hugging Face layout: this model uses the fixed 3D sin-cos position table of V-JEPA 1 "
    "(model.pos_embed=sincos), and transformers' VJEPA2Model only implements the 3D rotary positions of V-JEPA 2 "
    "(model.pos_embed=rope); its outputs would differ. Export to .pt or .safetensors instead."
)
LEVELS_REFUSAL = (
    "cannot export to the Hugging Face layout: this model uses V-JEPA 2.1 deep supervision (model.levels={levels}: "
    "per-level norms, a predictor input MLP and heads {levels} x the encoder width), which transformers' "
    "VJEPA2Model cannot hold. Export to .pt or .safetensors instead."
)


def _check_hf_compatible(encoder: VisionTransformer, predictor: Predictor) -> None:
    problems = []
    if encoder.pos_embed_type != "rope" or predictor.pos_embed_type != "rope":
        problems.append("transformers' VJEPA2 uses RoPE: build encoder and predictor with pos_embed='rope'")
    if predictor.embed_dim != encoder.embed_dim:
        problems.append(f"predictor embed_dim {predictor.embed_dim} != encoder width {encoder.embed_dim}")
    for name in ("img_size", "num_frames", "patch_size", "tubelet_size", "qkv_bias", "norm_eps"):
        if getattr(encoder, name) != getattr(predictor, name):
            problems.append(f"{name} differs: encoder {getattr(encoder, name)} vs predictor {getattr(predictor, name)}")
    if problems:
        raise ValueError("cannot express these models as a transformers VJEPA2Config:\n  " + "\n  ".join(problems))


def config_from_models(encoder: nn.Module, predictor: Predictor) -> VJEPA2Config:
    """The `transformers.VJEPA2Config` describing our RoPE encoder + predictor (needs the `hf` extra)."""
    from transformers import VJEPA2Config

    encoder = backbone_of(encoder)
    _check_hf_compatible(encoder, predictor)
    return VJEPA2Config(
        patch_size=encoder.patch_size,
        crop_size=encoder.img_size,
        frames_per_clip=encoder.num_frames,
        tubelet_size=encoder.tubelet_size,
        hidden_size=encoder.embed_dim,
        in_chans=encoder.in_chans,
        num_attention_heads=encoder.num_heads,
        num_hidden_layers=encoder.depth,
        mlp_ratio=encoder.mlp_ratio,
        layer_norm_eps=encoder.norm_eps,
        qkv_bias=encoder.qkv_bias,
        hidden_act="gelu",
        pred_hidden_size=predictor.pred_embed_dim,
        pred_num_attention_heads=predictor.num_heads,
        pred_num_hidden_layers=predictor.depth,
        pred_num_mask_tokens=predictor.num_mask_tokens,
        pred_zero_init_mask_tokens=True,
        pred_mlp_ratio=predictor.mlp_ratio,
    )


# Block tensors copied as they are: (our name, transformers' name); the fused qkv is split / joined on its own.
_BLOCK_NAMES = (
    ("norm1", "norm1"),
    ("norm2", "norm2"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
    ("attn.proj", "attention.proj"),
)


def _blocks_to_hf(sd: Mapping[str, torch.Tensor], depth: int, src: str, dst: str, out: dict) -> None:
    """Our `{src}{i}.*` block tensors -> HF `{dst}{i}.*` (fused qkv split into query/key/value)."""
    for i, p in ((i, p) for i in range(depth) for p in ("weight", "bias")):
        s, d = f"{src}{i}.", f"{dst}{i}."
        for ours, theirs in _BLOCK_NAMES:
            out[f"{d}{theirs}.{p}"] = sd[f"{s}{ours}.{p}"]
        if f"{s}attn.qkv.{p}" in sd:
            q, k, v = sd[f"{s}attn.qkv.{p}"].chunk(3, dim=0)  # each [D, D] or [D]
            out.update({f"{d}attention.query.{p}": q, f"{d}attention.key.{p}": k, f"{d}attention.value.{p}": v})


def _blocks_from_hf(sd: Mapping[str, torch.Tensor], depth: int, src: str, dst: str, out: dict) -> None:
    """HF `{src}{i}.*` block tensors -> our `{dst}{i}.*` (query/key/value joined into the fused qkv)."""
    for i, p in ((i, p) for i in range(depth) for p in ("weight", "bias")):
        s, d = f"{src}{i}.", f"{dst}{i}."
        for ours, theirs in _BLOCK_NAMES:
            out[f"{d}{ours}.{p}"] = sd[f"{s}{theirs}.{p}"]
        if f"{s}attention.query.{p}" in sd:
            parts = [sd[f"{s}attention.{n}.{p}"] for n in ("query", "key", "value")]
            out[f"{d}attn.qkv.{p}"] = torch.cat(parts, dim=0)  # [3D, D] or [3D]


def to_hf_state_dict(encoder: nn.Module, predictor: Predictor) -> dict[str, torch.Tensor]:
    """Our RoPE encoder + predictor -> a state dict that `transformers.VJEPA2Model` loads with strict=True."""
    encoder = backbone_of(encoder)
    _check_hf_compatible(encoder, predictor)
    e = {k: v.detach() for k, v in encoder.state_dict().items()}
    p = {k: v.detach() for k, v in predictor.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for t in ("weight", "bias"):
        out[f"encoder.embeddings.patch_embeddings.proj.{t}"] = e[f"patch_embed.proj.{t}"]
    _blocks_to_hf(e, encoder.depth, "blocks.", "encoder.layer.", out)
    for t in ("weight", "bias"):
        out[f"encoder.layernorm.{t}"] = e[f"norm.{t}"]
    tokens = [p[f"mask_tokens.{k}"] for k in range(predictor.num_mask_tokens)]  # each [1, 1, P]
    out["predictor.embeddings.mask_tokens"] = torch.stack(tokens, dim=0)  # [K, 1, 1, P]
    for t in ("weight", "bias"):
        out[f"predictor.embeddings.predictor_embeddings.{t}"] = p[f"embed.{t}"]
    _blocks_to_hf(p, predictor.depth, "blocks.", "predictor.layer.", out)
    for t in ("weight", "bias"):
        out[f"predictor.layernorm.{t}"] = p[f"norm.{t}"]
        out[f"predictor.proj.{t}"] = p[f"proj.{t}"]
    return {k: v.clone() for k, v in out.items()}


def from_hf_state_dict(sd: Mapping[str, torch.Tensor], encoder: nn.Module, predictor: Predictor) -> None:
    """Load a `transformers.VJEPA2Model` state dict (optionally prefixed `vjepa2.`) into our models, in place."""
    encoder = backbone_of(encoder)
    given = {k.removeprefix("vjepa2."): v for k, v in sd.items()}
    expected = {k: v.shape for k, v in to_hf_state_dict(encoder, predictor).items()}
    check_tensor_shapes(expected, {k: v.shape for k, v in given.items()}, "Hugging Face VJEPA2 state dict")
    e: dict[str, torch.Tensor] = {}
    for t in ("weight", "bias"):
        e[f"patch_embed.proj.{t}"] = given[f"encoder.embeddings.patch_embeddings.proj.{t}"]
        e[f"norm.{t}"] = given[f"encoder.layernorm.{t}"]
    _blocks_from_hf(given, encoder.depth, "encoder.layer.", "blocks.", e)
    p: dict[str, torch.Tensor] = {}
    tokens = given["predictor.embeddings.mask_tokens"]  # [K, 1, 1, P]
    for k in range(predictor.num_mask_tokens):
        p[f"mask_tokens.{k}"] = tokens[k]  # [1, 1, P]
    for t in ("weight", "bias"):
        p[f"embed.{t}"] = given[f"predictor.embeddings.predictor_embeddings.{t}"]
        p[f"norm.{t}"] = given[f"predictor.layernorm.{t}"]
        p[f"proj.{t}"] = given[f"predictor.proj.{t}"]
    _blocks_from_hf(given, predictor.depth, "predictor.layer.", "blocks.", p)
    encoder.load_state_dict(e, strict=True)
    predictor.load_state_dict(p, strict=True)


def check_exportable(model: ModelConfig) -> None:
    """ValueError with the reason when `model` has no Hugging Face equivalent."""
    if model.pos_embed != "rope":
        raise ValueError(SINCOS_REFUSAL)
    if model.levels != 1:
        raise ValueError(LEVELS_REFUSAL.format(levels=model.levels))


def payload(encoder: nn.Module, predictor: Predictor) -> tuple[VJEPA2Config, dict[str, torch.Tensor]]:
    """(transformers VJEPA2Config, HF state dict) of our models: everything a folder holds, computed before
    anything is written (needs transformers: the `hf` extra)."""
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError(f"the Hugging Face layout needs transformers: pip install 'vjepa-lab[hf]' ({err})") from None
    config = config_from_models(encoder, predictor)
    config.architectures = ["VJEPA2Model"]
    return config, to_hf_state_dict(encoder, predictor)


def write_folder(content: tuple[VJEPA2Config, dict[str, torch.Tensor]], folder: str | os.PathLike) -> Path:
    """Write a `payload` as config.json + model.safetensors, what `transformers.VJEPA2Model.from_pretrained(folder)`
    loads; the weights file appears complete or not at all."""
    from safetensors.torch import save_file

    config, sd = content
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    with atomic_target(folder / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})
    return folder


def model_config(c: Mapping[str, Any], source: str) -> ModelConfig:
    """Our ModelConfig of a Hugging Face VJEPA2 config.json (a dict): the RoPE architecture it describes."""
    if c.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: hidden_act {c.get('hidden_act')!r} is not supported (only gelu)")
    try:
        return ModelConfig(
            embed_dim=c["hidden_size"],
            depth=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"],
            mlp_ratio=c["mlp_ratio"],
            patch_size=c["patch_size"],
            tubelet_size=c["tubelet_size"],
            pos_embed="rope",
            qkv_bias=c.get("qkv_bias", True),
            pred_embed_dim=c["pred_hidden_size"],
            pred_depth=c["pred_num_hidden_layers"],
            pred_num_heads=c["pred_num_attention_heads"],
            pred_mlp_ratio=c["pred_mlp_ratio"],
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing entry {err}") from None


def is_folder(path: str | os.PathLike) -> bool:
    """A folder with a config.json: what `read_folder` reads (or refuses by its model type)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def read_folder(folder: str | os.PathLike) -> tuple[VisionTransformer, Predictor]:
    """Our encoder and predictor from a Hugging Face VJEPA2 folder (config.json + model.safetensors, possibly
    sharded with model.safetensors.index.json); keys may carry the `vjepa2.` prefix of the task models."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    c = json.loads((folder / "config.json").read_text())
    if c.get("model_type") != "vjepa2":
        raise NotABackboneError(f"{folder}: a Hugging Face folder of model_type {c.get('model_type')!r}, not vjepa2")
    source = f"{folder}/config.json"
    try:  # the architecture first: a config without it is named before any weights are read
        encoder, predictor = build_pair(
            model_config(c, source),
            frames_per_clip=c["frames_per_clip"],
            crop_size=c["crop_size"],
            num_mask_tokens=c["pred_num_mask_tokens"],
            norm_eps=c.get("layer_norm_eps", 1e-6),
            in_chans=c.get("in_chans", 3),
            meta=True,
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing entry {err}") from None
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
    files = [folder / f for f in files] or [folder / "model.safetensors"]
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{folder}: weights file {f.name} is missing")
        try:
            sd.update(load_file(str(f)))
        except SafetensorError as err:
            raise NotABackboneError(f"{f} is not a readable safetensors file: {err}") from None
    sd = {k: v.float() for k, v in sd.items() if k.removeprefix("vjepa2.").startswith(("encoder.", "predictor."))}
    encoder, predictor = encoder.to_empty(device="cpu"), predictor.to_empty(device="cpu")
    from_hf_state_dict(sd, encoder, predictor)
    return encoder, predictor
