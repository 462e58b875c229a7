"""Start `vjepa pretrain` on this machine with N processes through torchrun (CPU gloo or GPU NCCL).

    python -m launch.local --nproc 2 -- --config configs/debug/tiny_cpu.yaml train.run_dir=runs/ddp

Everything after `--` goes to `vjepa pretrain`. Equivalent to
`torchrun --standalone --nproc_per_node N -m vjepa.cli pretrain ...`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (GPUs, or CPU ranks)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the arguments of vjepa pretrain")
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
    cmd += ["-m", "vjepa.cli", "pretrain", *rest]
    print(" ".join(cmd), flush=True)
    env = dict(os.environ)
    if not any(k in env for k in ("OMP_NUM_THREADS",)):
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, args.nproc)))
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
