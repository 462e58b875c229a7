"""Auxiliary objectives added to the V-JEPA loss: the protocol (base.py), lookup and building (registry.py), and
the built-in VICReg terms (vicreg.py). The catalogue of published objectives lives in `evals/objectives/`."""

from vjepa.objectives.base import AuxObjective, Dims, FamilyState, ObjectiveOutput, StepState, masked_mean
from vjepa.objectives.registry import Planned, catalogue, plan_objectives, register, resolve

__all__ = [
    "AuxObjective",
    "Dims",
    "FamilyState",
    "ObjectiveOutput",
    "Planned",
    "StepState",
    "catalogue",
    "masked_mean",
    "plan_objectives",
    "register",
    "resolve",
]
