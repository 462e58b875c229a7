"""Load any backbone for frozen evaluation, and the random-init baseline of its architecture.

`load_pretrained(path)` returns a frozen `VisionTransformer` (eval mode, no grad) from an export file
(vjepa/exports.py), a run folder, a checkpoint folder or a Hugging Face VJEPA2 folder (vjepa/interop/hf.py);
tensor names and shapes are checked first and every mismatch is named. Anything else (a probe checkpoint,
extracted features, an unrelated file) raises NotABackboneError saying what the file is. `random_like` gives the
same architecture freshly initialised. The module gets the attributes `frames_per_clip`, `crop_size` and `source`
(a description of where it came from). A model configured for `attn_impl="flash"` is built with "sdpa"
(PyTorch picks its flash kernel on GPU itself).

`warm_start_weights(path)` reads the same sources for `train.init_from` (a new run starting from published or
exported weights, vjepa/train/loop.py): the encoder's and, where the source has one, the predictor's state dicts.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from vjepa.exports import build_loaded, read_source
from vjepa.interop import hf
from vjepa.models.build import backbone_of, same_architecture
from vjepa.models.encoder import VisionTransformer


def _finish(encoder: VisionTransformer, *, source: str, device: str | torch.device) -> VisionTransformer:
    encoder = encoder.to(device).eval().requires_grad_(False)
    encoder.frames_per_clip = encoder.num_frames
    encoder.crop_size = encoder.img_size
    encoder.source = source
    return encoder


def load_pretrained(path: str | os.PathLike, device: str | torch.device = "cpu") -> VisionTransformer:
    """A frozen encoder (eval mode, requires_grad off) from an export file (.pt/.safetensors), a pretraining run
    folder (its latest checkpoint's target encoder), a checkpoint folder, or a Hugging Face VJEPA2 folder.

    Raises NotABackboneError for anything else (probe checkpoints, feature files, unrelated files) and
    CheckpointMismatchError naming the tensors when the weights do not fit the recorded architecture."""
    path = Path(path)
    if hf.is_folder(path):
        encoder, _ = hf.read_folder(path)
        return _finish(encoder, source=f"Hugging Face VJEPA2 {path.resolve()}", device=device)
    ex = read_source(path)
    encoder, _ = build_loaded(ex)
    return _finish(encoder, source=f"{path.resolve()} (step {ex.step})", device=device)


def random_like(path_or_encoder: str | os.PathLike | nn.Module, seed: int) -> VisionTransformer:
    """The same architecture with the product's initialisation (`init_weights`) drawn from `seed`: the random-init
    baseline. The global RNG state is left untouched."""
    if isinstance(path_or_encoder, nn.Module):
        try:
            like = backbone_of(path_or_encoder)
        except TypeError as err:
            raise TypeError(f"random_like: {err}") from None
    else:
        like = load_pretrained(path_or_encoder)
    device = next(like.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = same_architecture(like)
    source = f"random init (seed {seed}) like {getattr(like, 'source', 'an encoder')}"
    return _finish(encoder, source=source, device=device)


def warm_start_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, str]:
    """(encoder state dict, predictor state dict or None, a description) from an export file or a Hugging Face
    VJEPA2 folder, for a run's `train.init_from`. The predictor comes with a Hugging Face folder and with an
    export written `--with-predictor`."""
    path = Path(path)
    if hf.is_folder(path):
        encoder, predictor = hf.read_folder(path)
        return encoder.state_dict(), predictor.state_dict(), f"Hugging Face VJEPA2 folder {path}"
    ex = read_source(path, with_predictor=True)  # the training run checks the tensors against its own models
    return ex.encoder, ex.predictor, f"{path} (step {ex.step} of {ex.source})"
