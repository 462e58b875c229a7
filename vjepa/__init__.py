"""V-JEPA video pretraining: models, masks, FSDP2 training, export and probing.

The names most users need are here, imported on first use (so `import vjepa` stays light):
    vjepa.load_pretrained(path)   an encoder from an export file, a run folder or checkpoint, or a Hugging Face folder
    vjepa.random_like(path, seed) the same architecture with a fresh initialisation (the random-init baseline)
    vjepa.Embedder(path)          features of whole videos from a frozen encoder
    vjepa.export(run, out)        a run's target encoder (optionally its predictor) as one .pt/.safetensors file
                                  and/or a Hugging Face folder (`vjepa export`; the format: vjepa/exports.py)
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_pretrained": "vjepa.pretrained",
    "random_like": "vjepa.pretrained",
    "Embedder": "vjepa.embed",
    "export": "vjepa.exports",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vjepa' has no attribute {name!r}")
