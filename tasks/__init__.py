"""Synthetic task generators: `TASKS` maps a config name to its class.

Every task returns Batch(inputs, targets) with targets == IGNORE except at the scored positions; each class's
docstring gives its exact token layout.
"""
from .base import IGNORE, Batch, Task
from .induction import InductionHeads
from .mqar import MultiQueryAR
from .selective_copy import Copying, SelectiveCopying

TASKS: dict[str, type] = {
    "selective_copy": SelectiveCopying,
    "copy": Copying,
    "induction": InductionHeads,
    "mqar": MultiQueryAR,
}

__all__ = ["IGNORE", "Batch", "Task", "SelectiveCopying", "Copying", "InductionHeads", "MultiQueryAR", "TASKS"]
