"""The `vjepa` command: pretrain, synth, export, `data {make-shards,...}`, `eval {extract,...}`, `launch {slurm,local}`.

    vjepa pretrain --config configs/debug/tiny_cpu.yaml train.run_dir=runs/demo optim.lr=1e-3
    vjepa synth --out data/synth --num-videos 64
    vjepa data check data/synth/train.csv
    vjepa export runs/demo --out demo.safetensors
    vjepa eval run configs/eval/synthetic_check.yaml

    vjepa launch slurm --nodes 2 --gpus-per-node 8 --partition learn -- --config configs/pretrain/vitl16.yaml

`pretrain` runs unchanged under `torchrun --nproc_per_node N -m vjepa.cli pretrain ...` (what `vjepa launch local`
does). Its exit status: 0 done, 2 bad input, 3 non-finite loss, 75 stopped by SIGTERM/SIGUSR1/SIGUSR2 after writing
a checkpoint (run it again to resume).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vjepa import __version__
from vjepa.config import ConfigError, load_config


def _pretrain(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        from vjepa.config import dump_config

        print(dump_config(cfg))
        return 0
    from vjepa.train.loop import main

    return main(cfg)


def _synth(args: argparse.Namespace) -> int:
    from vjepa.data.synthetic import write_synthetic

    csv = write_synthetic(
        args.out, num_videos=args.num_videos, num_frames=args.frames, size=args.size, seed=args.seed, fps=args.fps
    )
    print(f"wrote {args.num_videos} videos and {csv}")
    return 0


# Command groups: `vjepa GROUP TOOL ...` runs a module with add_arguments(parser) and run(args) -> exit code.
# Only the chosen tool's module is imported.
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "data": (
        "dataset tools: make-shards, check, convert",
        {
            "make-shards": ("vjepa.tools.make_shards", "pack a CSV list into tar shards (optionally re-encoded)"),
            "check": ("vjepa.tools.check", "scan a list, folder or shards; report bad files, write a cleaned list"),
            "convert": ("vjepa.tools.convert", "turn Kinetics/SSv2/UCF-101/HMDB-51/Diving-48 annotations into lists"),
        },
    ),
    "launch": (
        "cluster launch: slurm (submitit; --executor local runs it on this machine), local (torchrun)",
        {
            "slurm": ("vjepa.launch.slurm", "submit pretraining to SLURM: validated first, requeued on preemption"),
            "local": ("vjepa.launch.local", "pretrain with N processes on this machine through torchrun"),
        },
    ),
    "eval": (
        "frozen evaluation: extract, attentive, linear, knn, chiral, lift, pca, run",
        {
            "extract": ("vjepa.evals.extract", "extract clip features of a CSV list with a frozen encoder"),
            "attentive": ("vjepa.evals.attentive", "attentive probe grid (lr x wd) on extracted token features"),
            "linear": ("vjepa.evals.linear", "linear probe and feature-geometry metrics on pooled features"),
            "knn": ("vjepa.evals.knn", "k-NN accuracy (k = 1, 3, 5, cosine) on pooled features"),
            "chiral": ("vjepa.evals.chiral", "chiral action recognition: temporally opposite class pairs"),
            "lift": ("vjepa.evals.lift", "train LiFT on per-frame features and probe encoder (+) LiFT"),
            "pca": ("vjepa.evals.pca", "picture of a video beside the top-3 PCA components of its patch tokens"),
            "run": ("vjepa.evals.run", "run the evaluations of an eval config for several backbones and seeds"),
        },
    ),
}
# Single commands implemented by a module the same way.
MODULE_COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("vjepa.exports", "export a run's target encoder (+ predictor) as .pt/.safetensors or HF layout"),
    "sweep": (
        "vjepa.evals.sweep",
        "seeded ablation sweep: pretrain, probe and aggregate every (arm, seed); `report DIR`",
    ),
    "objectives": ("vjepa.objectives.listing", "list the auxiliary objectives: options, default weight, source"),
}


def _run_module(module_name: str, prog: str, argv: list[str]) -> int:
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=prog, description=module.__doc__.split("\n\n")[0])
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vjepa", description="V-JEPA video pretraining")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain an encoder (add key.sub=value overrides after the options)")
    p.add_argument(
        "--config",
        "-c",
        action="append",
        default=None,
        help="YAML file listing differences from the defaults; repeat to layer files (each over the ones before,"
        " e.g. --config configs/debug/tiny_cpu.yaml --config configs/ablations/ld.yaml)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, applied last")
    p.set_defaults(func=_pretrain)
    s = sub.add_parser("synth", help="write the built-in synthetic videos as mp4 files plus a CSV list")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--num-videos", type=int, default=64)
    s.add_argument("--frames", type=int, default=32)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--fps", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth)
    for name, (_, text) in MODULE_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)  # built when chosen (main)
    for group, (text, tools) in GROUPS.items():
        g = sub.add_parser(group, help=text)
        names = g.add_subparsers(dest="tool", required=True)
        for name, (_, tool_help) in tools.items():
            names.add_parser(name, help=tool_help)  # the real parser is built when the tool is chosen (main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] in GROUPS and argv[1] in GROUPS[argv[0]][1]:
        return _run_module(GROUPS[argv[0]][1][argv[1]][0], f"vjepa {argv[0]} {argv[1]}", argv[2:])
    if argv and argv[0] in MODULE_COMMANDS:
        return _run_module(MODULE_COMMANDS[argv[0]][0], f"vjepa {argv[0]}", argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
