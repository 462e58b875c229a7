"""The `vjepa` command: `vjepa pretrain`, `vjepa synth`, `vjepa data {make-shards,check,convert}`.

    vjepa pretrain --config configs/debug/tiny_cpu.yaml train.run_dir=runs/demo optim.lr=1e-3
    vjepa synth --out data/synth --num-videos 64
    vjepa data check data/synth/train.csv

`pretrain` runs unchanged under `torchrun --nproc_per_node N -m vjepa.cli pretrain ...` (see launch/).
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


# (subcommand, module with add_arguments(parser) and run(args) -> exit code, help)
DATA_TOOLS = [
    ("make-shards", "vjepa.data.make_shards", "pack a CSV list into WebDataset tar shards (optionally re-encoded)"),
    ("check", "vjepa.data.check", "scan a list, folder or shards; report bad files and write a cleaned list"),
    ("convert", "vjepa.data.convert", "turn Kinetics/SSv2/UCF-101/HMDB-51/Diving-48 annotations into CSV lists"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vjepa", description="V-JEPA video pretraining")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain an encoder (add key.sub=value overrides after the options)")
    p.add_argument("--config", "-c", default=None, help="YAML file listing differences from the defaults")
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
    d = sub.add_parser("data", help="dataset tools: make-shards, check, convert")
    tools = d.add_subparsers(dest="tool", required=True)
    for name, module, text in DATA_TOOLS:
        mod = importlib.import_module(module)
        t = tools.add_parser(name, help=text, description=mod.__doc__.split("\n\n")[0])
        mod.add_arguments(t)
        t.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
