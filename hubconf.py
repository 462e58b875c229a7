"""torch.hub entry points: a V-JEPA encoder from this checkout and an export file, a run folder or a Hugging Face
VJEPA2 folder (no download; the weights are the path's).

    encoder = torch.hub.load("/path/to/this/repo", "vjepa_encoder", source="local", path="runs/demo/encoder.pt")
    encoder = torch.hub.load("/path/to/this/repo", "vjepa_random", source="local", path="encoder.pt", seed=0)
    embedder = torch.hub.load("/path/to/this/repo", "vjepa_embedder", source="local", path="encoder.pt")
"""

dependencies = ["torch", "einops", "safetensors", "yaml"]


def vjepa_encoder(path: str, device: str = "cpu"):
    """The frozen encoder of `path` (vjepa.load_pretrained: export file, run or checkpoint folder, HF folder)."""
    from vjepa.pretrained import load_pretrained

    return load_pretrained(path, device=device)


def vjepa_random(path: str, seed: int = 0):
    """The architecture of `path` with a fresh initialisation from `seed` (the random-init baseline)."""
    from vjepa.pretrained import random_like

    return random_like(path, seed)


def vjepa_embedder(path: str, device: str = "cpu", **kwargs):
    """vjepa.Embedder over the encoder of `path` (features of whole videos); kwargs go to Embedder."""
    from vjepa.embed import Embedder
    from vjepa.pretrained import load_pretrained

    return Embedder(load_pretrained(path, device=device), device=device, **kwargs)
