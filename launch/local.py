"""Start `vjepa pretrain` on this machine with N processes through torchrun (CPU gloo or GPU NCCL).

    vjepa launch local --nproc 2 -- --config configs/debug/tiny_cpu.yaml train.run_dir=runs/ddp
    python -m vjepa.launch.local --nproc 2 -- ...        # the same

Everything after `--` goes to `vjepa pretrain`. Equivalent to
`torchrun --standalone --nproc_per_node N -m vjepa.cli pretrain ...`; the exit status is torchrun's (a worker's
preemption status 75 becomes torchrun's failure status 1: for requeue-on-preemption use `vjepa launch slurm`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (GPUs, or CPU ranks)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the arguments of vjepa pretrain")


def pretrain_command(nproc: int, pretrain_args: list[str], torchrun: bool | None = None) -> list[str]:
    """`vjepa pretrain` with these arguments under torchrun with `nproc` processes (default: only when nproc > 1),
    else in this interpreter."""
    if not (nproc > 1 if torchrun is None else torchrun):
        return [sys.executable, "-m", "vjepa.cli", "pretrain", *pretrain_args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, "-m", "vjepa.cli", "pretrain", *pretrain_args]


def run(args: argparse.Namespace) -> int:
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    cmd = pretrain_command(args.nproc, rest, torchrun=True)  # torchrun even for 1 process, as documented
    print(" ".join(cmd), flush=True)
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, args.nproc)))
    return subprocess.call(cmd, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vjepa.launch.local")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
