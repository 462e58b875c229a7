"""Checkpoint interop: Hugging Face `transformers` VJEPA2 conversion and official V-JEPA 1 checkpoint import.

Hugging Face (V-JEPA 2 layout, `VJEPA2Model`): our RoPE encoder/predictor map one-to-one onto
`encoder.embeddings.patch_embeddings.proj`, `encoder.layer.{i}.{norm1, attention.{query,key,value,proj}, norm2,
mlp.{fc1,fc2}}`, `encoder.layernorm`, `predictor.embeddings.{predictor_embeddings, mask_tokens}`,
`predictor.layer.{i}...`, `predictor.layernorm`, `predictor.proj`. Our fused qkv [3D, D] is split into / joined
from query, key, value (rows [q; k; v]); our mask tokens (K parameters [1, 1, P]) become one [K, 1, 1, P] tensor.
The RoPE layout is the same (pos_embed.py), so outputs agree to float precision. Note `transformers`' predictor
always uses mask token 1 (modulo the count): call ours with `family=1` to compare.

Official V-JEPA 1 (`torch.save` dict with `encoder`, `predictor`, `target_encoder`, ...; names prefixed
`module.backbone.`): encoder names equal ours after stripping the prefix; predictor names equal ours after also
stripping `predictor_` (`predictor_blocks.3.attn.qkv.weight` -> `blocks.3.attn.qkv.weight`). Every mismatch
(missing, unexpected, wrong shape) is reported at once, by name, before anything is copied.

Shapes: B batch, N tokens, D encoder width, P predictor width, K mask tokens.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vjepa.models.encoder import VisionTransformer
from vjepa.models.predictor import Predictor

if TYPE_CHECKING:
    from transformers import VJEPA2Config

OFFICIAL_PREFIXES = ("module.", "backbone.")


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the model: lists missing, unexpected and mis-shaped names."""


def _unwrap_encoder(encoder: nn.Module) -> VisionTransformer:
    """Accept a VisionTransformer or a wrapper holding one as `.backbone` (e.g. MultiMaskEncoder)."""
    inner = getattr(encoder, "backbone", encoder)
    if not isinstance(inner, VisionTransformer):
        raise TypeError(f"expected a VisionTransformer (or a wrapper with .backbone), got {type(encoder).__name__}")
    return inner


def check_tensor_shapes(expected: Mapping[str, Sequence[int]], given: Mapping[str, Sequence[int]], source: str) -> None:
    """Raise CheckpointMismatchError naming every missing, unexpected and mis-shaped tensor (name -> shape)."""
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(given[k])} vs model {tuple(expected[k])}"
        for k in expected
        if k in given and tuple(given[k]) != tuple(expected[k])
    )
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match the model:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise CheckpointMismatchError("\n".join(lines))


# ----------------------------------------------------------------------------------------------- Hugging Face


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


def hf_config_from_models(encoder: nn.Module, predictor: Predictor) -> VJEPA2Config:
    """The `transformers.VJEPA2Config` describing our RoPE encoder + predictor (needs the `hf` extra)."""
    from transformers import VJEPA2Config

    encoder = _unwrap_encoder(encoder)
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


def _blocks_to_hf(sd: Mapping[str, torch.Tensor], depth: int, src: str, dst: str, out: dict) -> None:
    """Our `{src}{i}.*` block tensors -> HF `{dst}{i}.*` (fused qkv split into query/key/value)."""
    for i in range(depth):
        s, d = f"{src}{i}.", f"{dst}{i}."
        for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            for p in ("weight", "bias"):
                out[f"{d}{name}.{p}"] = sd[f"{s}{name}.{p}"]
        for p in ("weight", "bias"):
            out[f"{d}attention.proj.{p}"] = sd[f"{s}attn.proj.{p}"]
            if f"{s}attn.qkv.{p}" in sd:
                q, k, v = sd[f"{s}attn.qkv.{p}"].chunk(3, dim=0)  # each [D, D] or [D]
                out[f"{d}attention.query.{p}"] = q
                out[f"{d}attention.key.{p}"] = k
                out[f"{d}attention.value.{p}"] = v


def _blocks_from_hf(sd: Mapping[str, torch.Tensor], depth: int, src: str, dst: str, out: dict) -> None:
    """HF `{src}{i}.*` block tensors -> our `{dst}{i}.*` (query/key/value joined into the fused qkv)."""
    for i in range(depth):
        s, d = f"{src}{i}.", f"{dst}{i}."
        for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            for p in ("weight", "bias"):
                out[f"{d}{name}.{p}"] = sd[f"{s}{name}.{p}"]
        for p in ("weight", "bias"):
            out[f"{d}attn.proj.{p}"] = sd[f"{s}attention.proj.{p}"]
            if f"{s}attention.query.{p}" in sd:
                parts = [sd[f"{s}attention.{n}.{p}"] for n in ("query", "key", "value")]
                out[f"{d}attn.qkv.{p}"] = torch.cat(parts, dim=0)  # [3D, D] or [3D]


def to_hf_state_dict(encoder: nn.Module, predictor: Predictor) -> dict[str, torch.Tensor]:
    """Our RoPE encoder + predictor -> a state dict that `transformers.VJEPA2Model` loads with strict=True."""
    encoder = _unwrap_encoder(encoder)
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
    encoder = _unwrap_encoder(encoder)
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


# ------------------------------------------------------------------------------------------ official V-JEPA 1


def _strip_official_prefix(name: str) -> str:
    for prefix in OFFICIAL_PREFIXES:
        name = name.removeprefix(prefix)
    return name


def _official_predictor_name(ours: str) -> str:
    """Our predictor name -> the official one (prefix stripped): `X` -> `predictor_X`; `mask_tokens.k` unchanged."""
    return ours if ours.startswith("mask_tokens.") else "predictor_" + ours


def _map_official_part(
    module: nn.Module, raw: Mapping[str, Any], to_official: Callable[[str], str], source: str
) -> dict[str, torch.Tensor]:
    """Check one official sub-dict against `module` in the official namespace (names as the checkpoint spells
    them, less the 'module.'/'backbone.' prefix); return it under our names."""
    given = {_strip_official_prefix(k): v for k, v in raw.items()}  # official names
    ours_sd = module.state_dict()
    ours_of = {to_official(k): k for k in ours_sd}  # official name -> our name
    expected = {name: ours_sd[ours].shape for name, ours in ours_of.items()}
    check_tensor_shapes(
        expected, {k: v.shape for k, v in given.items()}, f"{source} (names without the 'module.backbone.' prefix)"
    )
    mapped = {ours_of[name]: value for name, value in given.items()}
    table = getattr(module, "pos_embed", None)
    if isinstance(table, torch.Tensor) and "pos_embed" in mapped:
        diff = (mapped["pos_embed"].float() - table.float()).abs().max().item()
        if diff > 1e-4:
            warnings.warn(
                f"{source}: its sin-cos table differs from the one this model builds (max |diff| {diff:.3g}); "
                "check uniform_power. Loading the checkpoint's table.",
                stacklevel=3,
            )
    return mapped


def load_official_vjepa1(
    path_or_state: str | os.PathLike | Mapping[str, Any],
    encoder: nn.Module,
    predictor: Predictor | None = None,
    which: str = "target_encoder",
) -> None:
    """Import an official V-JEPA 1 checkpoint into our sin-cos encoder (and predictor), in place.

    `which` picks the encoder weights: "target_encoder" (the EMA encoder, the one evaluated) or "encoder".
    Raises CheckpointMismatchError naming every missing, unexpected or mis-shaped tensor.
    """
    if which not in ("encoder", "target_encoder"):
        raise ValueError(f"load_official_vjepa1: which must be 'encoder' or 'target_encoder', got {which!r}")
    if isinstance(path_or_state, (str, os.PathLike)):
        source = os.fspath(path_or_state)
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
    else:
        source, ckpt = "checkpoint dict", path_or_state
    if not isinstance(ckpt, Mapping):
        raise TypeError(f"{source}: expected a dict checkpoint, got {type(ckpt).__name__}")
    wanted = [which] + (["predictor"] if predictor is not None else [])
    absent = [k for k in wanted if k not in ckpt]
    if absent:
        raise KeyError(f"{source}: no entries {absent}; top-level keys are {sorted(map(str, ckpt))}")
    encoder = _unwrap_encoder(encoder)
    enc_sd = _map_official_part(encoder, ckpt[which], lambda name: name, f"{source}[{which!r}]")
    pred_sd = None
    if predictor is not None:
        pred_sd = _map_official_part(predictor, ckpt["predictor"], _official_predictor_name, f"{source}['predictor']")
    encoder.load_state_dict(enc_sd, strict=True)  # only after every part was checked: nothing half-loaded
    if predictor is not None:
        predictor.load_state_dict(pred_sd, strict=True)
