"""Launchers for `vjepa pretrain`: `slurm` (submitit, requeue on preemption, code snapshots) and `local` (torchrun).
Run them as `vjepa launch slurm|local ...` (or `python -m vjepa.launch.slurm|local`); `job` is what a submitted job
runs. The folder is installed as the package `vjepa.launch` (setup.py)."""
