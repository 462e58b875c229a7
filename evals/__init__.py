"""Frozen evaluations and auxiliary objectives (probes, LiFT, latent dynamics, metrics). Depends on vjepa only.

The folder is installed as the package `vjepa.evals` (setup.py): a top-level `evals` would collide with the
unrelated `evals` distribution on the package index."""
