"""Checkpoint interop with other codebases: `hf` (the Hugging Face `transformers` VJEPA2 layout, both directions)
and `official` (importing checkpoints of the official V-JEPA 1 code). Both depend on vjepa.models only."""
