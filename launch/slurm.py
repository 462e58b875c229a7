"""Submit `vjepa pretrain` to SLURM with submitit: one task per GPU, NCCL, torchrun-style variables.

    python -m launch.slurm --nodes 16 --gpus-per-node 8 --partition learn --time 4320 \
        -- --config configs/pretrain/vitl16.yaml train.run_dir=/checkpoint/me/vitl16

This is the only place that reads SLURM variables: each task maps SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID
and the first node of SLURM_JOB_NODELIST to RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR, then calls the same
`vjepa.cli` entry point as a local run. A preempted or timed-out job is requeued and resumes from the latest
checkpoint in train.run_dir (train.resume is on by default).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def slurm_env_to_torch(env: dict[str, str], port: int = 29500) -> dict[str, str]:
    """The torchrun variables for this SLURM task; raises KeyError naming a missing SLURM variable."""
    for key in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST"):
        if key not in env:
            raise KeyError(f"{key} is not set: launch.slurm must run inside a SLURM task")
    nodelist = env["SLURM_JOB_NODELIST"]
    try:
        master = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        master = nodelist.split(",")[0].split("[")[0]
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env["SLURM_LOCALID"],
        "MASTER_ADDR": master,
        "MASTER_PORT": env.get("MASTER_PORT", str(port)),
    }


class Task:
    """The callable submitit runs in every task; checkpoint() makes preemption requeue the same task."""

    def __init__(self, pretrain_args: list[str]) -> None:
        self.pretrain_args = pretrain_args

    def __call__(self) -> int:
        os.environ.update(slurm_env_to_torch(dict(os.environ)))
        from vjepa.cli import main

        return main(["pretrain", *self.pretrain_args])

    def checkpoint(self):  # submitit hook on preemption / timeout
        import submitit

        return submitit.helpers.DelayedSubmission(Task(self.pretrain_args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpus-per-task", type=int, default=12)
    parser.add_argument("--mem-gb", type=int, default=0, help="0: the partition's default")
    parser.add_argument("--partition", default="")
    parser.add_argument("--account", default="")
    parser.add_argument("--time", type=int, default=4320, help="minutes")
    parser.add_argument("--log-dir", default="runs/slurm_logs")
    parser.add_argument("--job-name", default="vjepa")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the arguments of vjepa pretrain")
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest

    import submitit

    executor = submitit.AutoExecutor(folder=args.log_dir, slurm_max_num_timeout=20)
    params = dict(
        nodes=args.nodes,
        tasks_per_node=args.gpus_per_node,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        timeout_min=args.time,
        name=args.job_name,
    )
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    extra = {k: v for k, v in (("partition", args.partition), ("account", args.account)) if v}
    executor.update_parameters(**params, **{f"slurm_{k}": v for k, v in extra.items()})
    job = executor.submit(Task(rest))
    print(f"submitted job {job.job_id}; logs in {args.log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
