"""Finding objectives by name, checking their config entries, and building them for a run.

A config lists objectives as `objectives: [{name: ld, weight: 1.0, options: {...}, lr_scale: 1, wd_scale: 1}]`.
`name` is a catalogue name or an import path `package.module:Class`. Catalogue names come from the modules in
`train.objective_modules` (default `vjepa.evals.objectives`, the catalogue shipped beside the trainer): importing such
a module registers its objectives with `@register`. The trainer itself never imports the catalogue by name; the
config does, so a lab can point `train.objective_modules` at its own package. The built-in `vicreg` objective
(the VICReg terms of `optim.enc_var_weight` / `optim.enc_cov_weight`) lives in `vjepa.objectives.vicreg`.

A weight of 0 is the same as leaving the objective out: it is not built, owns no parameters, costs nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vjepa.objectives.base import AuxObjective, Dims

if TYPE_CHECKING:
    from vjepa.config import Config, ObjectiveSpec

BUILTIN_MODULES = ("vjepa.objectives.vicreg",)
_REGISTRY: dict[str, type[AuxObjective]] = {}


def register(cls: type[AuxObjective]) -> type[AuxObjective]:
    """Class decorator: make `cls` available by `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__}: an objective needs a name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"objective name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


class ObjectiveLookupError(ValueError):
    """An objective name, import path or catalogue module cannot be resolved; the message names the key."""


# Catalogue modules under their names before the evals/ and launch/ folders were installed inside the vjepa
# package (a top-level `evals` collides with another distribution): older run configs name them so.
RENAMED_MODULES = {"evals.objectives": "vjepa.evals.objectives"}


def _import(module: str, key: str) -> Any:
    module = RENAMED_MODULES.get(module, module)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ObjectiveLookupError(f"{key}: cannot import {module!r} ({err})") from None


def catalogue(modules: Sequence[str] = ()) -> dict[str, type[AuxObjective]]:
    """Every registered objective after importing the built-ins and `modules`: name -> class, sorted by name."""
    for module in (*BUILTIN_MODULES, *modules):
        _import(module, "train.objective_modules")
    return dict(sorted(_REGISTRY.items()))


def resolve(name: str, modules: Sequence[str] = (), key: str = "objectives") -> type[AuxObjective]:
    """The class named `name` (catalogue name or `package.module:Class`)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        cls = getattr(_import(module, key), attr, None)
        if not (isinstance(cls, type) and issubclass(cls, AuxObjective)):
            raise ObjectiveLookupError(f"{key}: {name!r} does not name an AuxObjective subclass")
        return cls
    found = _REGISTRY.get(name)
    if found is None:
        found = catalogue(modules).get(name)
    if found is None:
        raise ObjectiveLookupError(f"{key}: unknown objective {name!r}; valid: {sorted(catalogue(modules))}")
    return found


def parse_options(cls: type[AuxObjective], options: dict[str, Any], key: str) -> Any:
    """The objective's typed Options from a config mapping; unknown options and wrong types name the key."""
    from vjepa.config import ConfigError, _merge

    try:
        opts = _merge(cls.Options(), options, key)
    except ConfigError as err:
        raise ObjectiveLookupError(str(err)) from None
    check = getattr(opts, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise ObjectiveLookupError(f"{key}: {problem}")
    return opts


def weight_of(spec: ObjectiveSpec, cls: type[AuxObjective]) -> float:
    return cls.default_weight if spec.weight is None else spec.weight


@dataclasses.dataclass(frozen=True)
class Planned:
    """One objective of a run: its key in `models["objectives"]`, weight, optimiser multipliers and module."""

    key: str
    weight: float
    lr_scale: float
    wd_scale: float
    module: AuxObjective


def specs_of(cfg: Config) -> list[ObjectiveSpec]:
    """The config's objectives, with the VICReg terms of optim.enc_var_weight / enc_cov_weight as the built-in
    `vicreg` objective (weight 1, those two as its coefficients) first."""
    from vjepa.config import ObjectiveSpec

    o = cfg.optim
    specs = list(cfg.objectives)
    if o.enc_var_weight > 0 or o.enc_cov_weight > 0:
        vicreg = ObjectiveSpec(name="vicreg", weight=1.0, options={"var": o.enc_var_weight, "cov": o.enc_cov_weight})
        specs.insert(0, vicreg)
    return specs


def check_objectives(cfg: Config) -> None:
    """Every objective entry resolves, with valid options and multipliers (raises ObjectiveLookupError)."""
    modules = cfg.train.objective_modules
    for i, spec in enumerate(cfg.objectives):
        key = f"objectives.{i}"
        if not spec.name:
            raise ObjectiveLookupError(f"{key}.name: give the objective's name (see `vjepa objectives`)")
        cls = resolve(spec.name, modules, f"{key}.name")
        parse_options(cls, spec.options, f"{key}.options")
        for field in ("weight", "lr_scale", "wd_scale"):
            value = getattr(spec, field)
            if value is not None and value < 0:
                raise ObjectiveLookupError(f"{key}.{field}={value} must be >= 0")


def plan_objectives(cfg: Config, dims: Dims) -> list[Planned]:
    """Build the objectives of a run with a weight above 0, keyed by name (name_1, name_2 for repeats)."""
    modules = cfg.train.objective_modules
    out: list[Planned] = []
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs_of(cfg)):
        cls = resolve(spec.name, modules, f"objectives.{i}.name")
        weight = weight_of(spec, cls)
        if weight <= 0:
            continue
        options = parse_options(cls, spec.options, f"objectives.{i}.options")
        n = seen.get(cls.name, 0)
        seen[cls.name] = n + 1
        key = cls.name if n == 0 else f"{cls.name}_{n}"
        out.append(Planned(key, weight, spec.lr_scale, spec.wd_scale, cls(options, dims)))
    return out
