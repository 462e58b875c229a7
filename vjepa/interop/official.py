"""Import checkpoints of the official V-JEPA 1 code (facebookresearch/jepa) into our models.

An official checkpoint is a `torch.save` dict with `encoder`, `predictor`, `target_encoder`, ... whose names are
prefixed `module.backbone.`: encoder names equal ours after stripping the prefix; predictor names equal ours after
also stripping `predictor_` (`predictor_blocks.3.attn.qkv.weight` -> `blocks.3.attn.qkv.weight`). Every mismatch
(missing, unexpected, wrong shape) is reported at once, by name, before anything is copied. Official V-JEPA 1
models use the 3D sin-cos position table: build ours with model.pos_embed=sincos (and its uniform_power).

Shapes: none (state dicts only).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from vjepa.models.build import backbone_of, check_tensor_shapes
from vjepa.models.predictor import Predictor

PREFIXES = ("module.", "backbone.")


def _strip_prefix(name: str) -> str:
    for prefix in PREFIXES:
        name = name.removeprefix(prefix)
    return name


def _predictor_name(ours: str) -> str:
    """Our predictor name -> the official one (prefix stripped): `X` -> `predictor_X`; `mask_tokens.k` unchanged."""
    return ours if ours.startswith("mask_tokens.") else "predictor_" + ours


def _map_part(
    module: nn.Module, raw: Mapping[str, Any], to_official: Callable[[str], str], source: str
) -> dict[str, torch.Tensor]:
    """Check one official sub-dict against `module` in the official namespace (names as the checkpoint spells
    them, less the 'module.'/'backbone.' prefix); return it under our names."""
    given = {_strip_prefix(k): v for k, v in raw.items()}  # official names
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


def load_vjepa1(
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
        raise ValueError(f"load_vjepa1: which must be 'encoder' or 'target_encoder', got {which!r}")
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
    encoder = backbone_of(encoder)
    enc_sd = _map_part(encoder, ckpt[which], lambda name: name, f"{source}[{which!r}]")
    pred_sd = None
    if predictor is not None:
        pred_sd = _map_part(predictor, ckpt["predictor"], _predictor_name, f"{source}['predictor']")
    encoder.load_state_dict(enc_sd, strict=True)  # only after every part was checked: nothing half-loaded
    if predictor is not None:
        predictor.load_state_dict(pred_sd, strict=True)
