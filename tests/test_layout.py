"""Package layout rules, checked on the source: the offline dataset tools (vjepa/tools/) stay out of training.

No module of vjepa/ outside vjepa/tools/ imports vjepa.tools (absolute or relative, at the top or inside a
function). Imports are read with `ast`, so strings and comments that mention the tools do not count, and
vjepa/cli.py's subcommand table (module names as strings, imported on demand) is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vjepa"
TOOLS = "vjepa.tools"


def module_name(path: Path) -> str:
    """Dotted name of a .py file below ROOT (a package's __init__.py is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of everything the source imports, relative imports resolved against `module`.

    `from a.b import c` gives both a.b and a.b.c (c may be a submodule); every import statement counts,
    wherever it is (module level, functions, try blocks, TYPE_CHECKING blocks)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def tools_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    return [
        f"line {line}: {name}"
        for line, name in imported_modules(source, module, is_package=is_package)
        if name == TOOLS or name.startswith(TOOLS + ".")
    ]


def test_nothing_outside_vjepa_tools_imports_it():
    offenders = {}
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name == TOOLS or name.startswith(TOOLS + "."):
            continue
        checked += 1
        bad = tools_imports(path.read_text(), name, is_package=path.name == "__init__.py")
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert checked > 20  # the walk found the package (vjepa/data, vjepa/train, ...)
    assert not offenders, f"vjepa.tools is offline tooling; training-path modules must not import it: {offenders}"


@pytest.mark.parametrize(
    "source, module, is_package",
    [
        ("import vjepa.tools.check\n", "vjepa.data.loader", False),
        ("import vjepa.tools as t\n", "vjepa.train.loop", False),
        ("from vjepa.tools.reencode import target_size\n", "vjepa.data.synthetic", False),
        ("from vjepa.tools import make_shards\n", "vjepa.data.video", False),
        ("from vjepa import tools\n", "vjepa.cli", False),
        ("def f():\n    from vjepa.tools.convert_io import ConvertError\n", "vjepa.data.video", False),
        ("try:\n    import vjepa.tools.check\nexcept ImportError:\n    pass\n", "vjepa.train.step", False),
        ("from ..tools import check\n", "vjepa.data.loader", False),
        ("from ..tools.reencode import probe_video\n", "vjepa.data.synthetic", False),
        ("from . import tools\n", "vjepa", True),
        ("from .tools import check\n", "vjepa.cli", False),
    ],
)
def test_the_rule_catches_every_import_form(source, module, is_package):
    assert tools_imports(source, module, is_package=is_package)


@pytest.mark.parametrize(
    "source, module, is_package",
    [
        ('"""Run `vjepa data check` (vjepa/tools/check.py)."""\n', "vjepa.data.media", False),
        ('TOOLS = {"check": ("vjepa.tools.check", "scan a list")}\n', "vjepa.cli", False),
        ("# from vjepa.tools import check\nimport vjepa.toolsy\n", "vjepa.data.video", False),
        ("from vjepa.data.media import VIDEO_EXTENSIONS\nfrom . import media\n", "vjepa.data", True),
        ("from .media import is_image\n", "vjepa.data.video", False),
    ],
)
def test_the_rule_ignores_other_imports_and_mentions(source, module, is_package):
    assert not tools_imports(source, module, is_package=is_package)


# Dependencies point one way: the models know nothing of training, loading or interop; interop knows models
# (and the export format) but not training. Each rule: (package, prefixes its modules must not import).
ONE_WAY = [
    ("vjepa.models", ("vjepa.train", "vjepa.data", "vjepa.exports", "vjepa.pretrained", "vjepa.interop", "evals")),
    ("vjepa.interop", ("vjepa.train", "vjepa.data", "vjepa.pretrained", "evals")),
    ("vjepa.exports", ("vjepa.pretrained", "vjepa.data", "evals")),
]


def _forbidden(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package, forbidden", ONE_WAY, ids=[rule[0] for rule in ONE_WAY])
def test_dependencies_point_one_way(package, forbidden):
    paths = sorted(PACKAGE.rglob("*.py"))
    mine = [p for p in paths if module_name(p) == package or module_name(p).startswith(package + ".")]
    assert mine, package
    offenders = {
        str(p.relative_to(ROOT)): bad
        for p in mine
        if (
            bad := [
                f"line {line}: {name}"
                for line, name in imported_modules(p.read_text(), module_name(p), is_package=p.name == "__init__.py")
                if _forbidden(name, forbidden)
            ]
        )
    }
    assert not offenders, f"{package} must not import {forbidden}: {offenders}"


def test_models_are_constructed_only_in_build():
    """VisionTransformer( and Predictor( are called in vjepa/models/build.py only (and the modules' own files):
    training, loading, random init and the Hugging Face reader all build through it."""
    allowed = {"vjepa/models/build.py", "vjepa/models/encoder.py", "vjepa/models/predictor.py"}
    offenders = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "evals").rglob("*.py")]):
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("VisionTransformer", "Predictor"):
                if rel not in allowed:
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders


def test_one_top_level_package():
    """evals/ and launch/ are installed as vjepa.evals and vjepa.launch (setup.py; top-level `evals` and `launch`
    distributions exist on the package index): no file of the repository imports them under the bare names,
    which from a checkout would load a second copy of every module."""
    offenders = []
    files = [
        ROOT / "hubconf.py",
        *[p for d in ("vjepa", "evals", "launch", "tests", "bench") for p in (ROOT / d).rglob("*.py")],
    ]
    for path in files:
        for line, name in imported_modules(path.read_text(), "x"):
            if name.split(".")[0] in ("evals", "launch"):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not offenders, offenders
