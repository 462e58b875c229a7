"""The one place models are constructed: encoder and predictor from a ModelConfig, and state dicts put into them.

Training (`build_models(cfg)`), loading (vjepa/pretrained.py, vjepa/exports.py), the random-init baseline
(`same_architecture`) and the Hugging Face reader (vjepa/interop/hf.py) all build through these functions, so an
architecture option added to ModelConfig reaches every path. `build_pair` takes the model config plus the two data
facts an architecture depends on (frames per clip and crop size: the position grid) and the predictor's own
options; `meta=True` builds without memory, for `load_state(..., assign=True)`.

Every state-dict load goes through `check_tensor_shapes` first: a CheckpointMismatchError names each missing,
unexpected and mis-shaped tensor at once, before anything is copied (nothing is half-loaded).

Shapes: none (modules and state dicts only).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vjepa.config import ModelConfig
from vjepa.models.encoder import VisionTransformer
from vjepa.models.init import init_weights
from vjepa.models.predictor import Predictor
from vjepa.pixels import pixel_dim

if TYPE_CHECKING:
    from vjepa.config import Config
    from vjepa.models.multimask import MultiMaskEncoder


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the model: lists missing, unexpected and mis-shaped names."""


class NotABackboneError(ValueError):
    """The file or folder does not hold a video encoder; the message says what it is."""


def model_config_from_dict(d: Mapping[str, Any], source: str) -> ModelConfig:
    """ModelConfig from its dict form; unknown keys are an error naming the file and the valid keys."""
    valid = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ValueError(f"{source}: unknown model config keys {unknown}; valid: {sorted(valid)}")
    return ModelConfig(**dict(d))


def _common(model: ModelConfig, frames_per_clip: int, crop_size: int) -> dict[str, Any]:
    return dict(
        img_size=crop_size,
        num_frames=frames_per_clip,
        patch_size=model.patch_size,
        tubelet_size=model.tubelet_size,
        qkv_bias=model.qkv_bias,
        pos_embed=model.pos_embed,
        uniform_power=model.uniform_power,
        attn_impl=model.attn_impl,
    )


def build_pair(
    model: ModelConfig,
    *,
    frames_per_clip: int,
    crop_size: int,
    num_mask_tokens: int = 2,
    context_head: bool = False,
    pixel_target: bool = False,
    init: bool = True,
    meta: bool = False,
    norm_eps: float = 1e-6,
    in_chans: int = 3,
) -> tuple[VisionTransformer, Predictor]:
    """Encoder and predictor of `model`'s architecture for clips of `frames_per_clip` x `crop_size`^2.

    num_mask_tokens: one per mask family; context_head: the V-JEPA 2.1 context head (dense loss); pixel_target:
    the predictor ends in a Linear to the pixels of a tubelet (optim.target=pixels, vjepa/pixels.py). init: the
    product's initialisation (`init_weights`, drawing from the global RNG). meta: no memory (implies no init).
    norm_eps / in_chans: fixed by this product (1e-6, RGB), given by foreign configs (a Hugging Face folder's)."""
    arch, pred_arch = model.resolved(), model.predictor_arch()
    common = dict(_common(model, frames_per_clip, crop_size), norm_eps=norm_eps)
    with torch.device("meta") if meta else contextlib.nullcontext():
        encoder = VisionTransformer(
            embed_dim=arch["embed_dim"],
            depth=arch["depth"],
            num_heads=arch["num_heads"],
            mlp_ratio=arch["mlp_ratio"],
            levels=model.levels,
            in_chans=in_chans,
            **common,
        )
        pixels = pixel_dim(encoder.in_chans, model.tubelet_size, model.patch_size) if pixel_target else 0
        predictor = Predictor(
            embed_dim=arch["embed_dim"],
            pred_embed_dim=model.pred_embed_dim,
            depth=model.pred_depth,
            num_heads=pred_arch["num_heads"],
            mlp_ratio=pred_arch["mlp_ratio"],
            num_mask_tokens=num_mask_tokens,
            pixel_dim=pixels,
            levels=model.levels,
            context_head=context_head,
            **common,
        )
    if init and not meta:
        init_weights(encoder, rescale=model.init_rescale)
        init_weights(predictor, rescale=model.init_rescale)
    return encoder, predictor


def build_models(cfg: Config, context_head: bool | None = None) -> tuple[MultiMaskEncoder, Predictor]:
    """The training pair of a run's config, initialised: the encoder wrapped for multi-mask use and the predictor
    with one mask token per mask family. `context_head` None: on when the config's dense loss is."""
    from vjepa.models.multimask import MultiMaskEncoder

    encoder, predictor = build_pair(
        cfg.model,
        frames_per_clip=cfg.data.frames_per_clip,
        crop_size=cfg.data.crop_size,
        num_mask_tokens=len(cfg.mask.families),
        context_head=cfg.optim.dense_weight > 0 if context_head is None else context_head,
        pixel_target=cfg.optim.target == "pixels",
    )
    return MultiMaskEncoder(encoder), predictor


def same_architecture(like: VisionTransformer) -> VisionTransformer:
    """A new encoder with `like`'s architecture (its constructor's parameters), initialised with `init_weights`
    from the global RNG: the random-init baseline of an encoder whatever file it came from."""
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
    return encoder


def backbone_of(encoder: nn.Module) -> VisionTransformer:
    """The VisionTransformer itself, or the one a wrapper holds as `.backbone` (e.g. MultiMaskEncoder)."""
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


def load_state(module: nn.Module, sd: Mapping[str, torch.Tensor], source: str, assign: bool = True) -> None:
    """Check names and shapes against `module` (CheckpointMismatchError naming each difference), then load the
    floating tensors as float32. assign=True replaces the parameters (a meta-built module gets real ones)."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_tensor_shapes(expected, {k: v.shape for k, v in sd.items()}, source)
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, assign=assign)
