"""`vjepa objectives`: every auxiliary objective with its options, default weight and source.

    vjepa objectives                 # a table: name, default weight, options (name=default), summary, source
    vjepa objectives --json          # one JSON object per objective
    vjepa objectives --modules mylab.objectives   # also (or instead) a lab's own catalogue

Turn one on in a config with `objectives: [{name: NAME, weight: W, options: {...}}]` (docs/objectives.md).
"""

from __future__ import annotations

import argparse
import json

from vjepa.objectives.base import option_fields
from vjepa.objectives.registry import ObjectiveLookupError, catalogue

DEFAULT_MODULES = ("vjepa.evals.objectives",)


def describe(modules: tuple[str, ...] = DEFAULT_MODULES) -> list[dict]:
    """One record per registered objective, sorted by name."""
    out = []
    for name, cls in catalogue(modules).items():
        out.append(
            {
                "name": name,
                "default_weight": cls.default_weight,
                "options": {n: {"type": t, "default": d} for n, t, d in option_fields(cls)},
                "summary": cls.summary,
                "source": cls.source,
                "class": f"{cls.__module__}:{cls.__qualname__}",
            }
        )
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--modules", nargs="+", default=list(DEFAULT_MODULES), help="catalogue modules to import (their objectives)"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def run(args: argparse.Namespace) -> int:
    try:
        records = describe(tuple(args.modules))
    except ObjectiveLookupError as err:
        print(f"error: {err}")
        return 2
    if args.json:
        for r in records:
            print(json.dumps(r, default=str))
        return 0
    for r in records:
        opts = ", ".join(f"{n}={o['default']!r}" for n, o in r["options"].items()) or "-"
        print(f"{r['name']:<12} weight {r['default_weight']:<6g} {r['summary']}")
        print(f"{'':<12} options: {opts}")
        print(f"{'':<12} source: {r['source']}")
    print(f"{len(records)} objectives; turn one on with objectives: [{{name: ..., weight: ..., options: {{...}}}}]")
    return 0
