"""The catalogue of auxiliary objectives for V-JEPA pretraining (the protocol: vjepa/objectives/base.py).

Importing this package registers every objective below by name; `vjepa objectives` lists them with their options,
default weights and sources. A config turns one on with `objectives: [{name: ..., weight: ..., options: {...}}]`.
"""

import importlib

# One module per group of objectives; each registers its classes with vjepa.objectives.register on import.
MODULES = (
    "vjepa.objectives.vicreg",
    "vjepa.evals.objectives.hard_regions",
    "vjepa.evals.objectives.dynamics",
    "vjepa.evals.objectives.temporal",
    "vjepa.evals.objectives.straighten",
    "vjepa.evals.objectives.lift_aux",
    "vjepa.evals.objectives.sigreg",
)

for _name in MODULES:
    importlib.import_module(_name)
