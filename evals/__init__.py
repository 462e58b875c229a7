"""Frozen evaluations and auxiliary objectives (probes, LiFT, latent dynamics, metrics). Depends on vjepa only."""
