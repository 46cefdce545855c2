"""Synthetic task generators: `TASKS` maps a config name to its class (the task registry).

Every task returns Batch(inputs, targets) with targets == IGNORE except at the scored positions; each class's
docstring gives its exact token layout.

A task class is a dataclass whose fields are its config keys: `ssmbench.config.task_schema` turns each entry of
`TASKS` into the Hydra schema of `conf/task/<name>.yaml` (`_target_`, `name`, then the fields with their types and
defaults), so a new task needs no schema of its own.
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


def register_task(name: str, cls: type) -> type:
    """Add a task from outside this package (a test, a plugin) to `TASKS`; its schema is registered with the
    others by `ssmbench.config.register_configs`. Returns cls. A name already taken by another class is an error."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"task name must be an identifier (it names conf/task/<name>.yaml), got {name!r}")
    if TASKS.get(name, cls) is not cls:
        raise ValueError(f"task name {name!r} is taken by {TASKS[name].__qualname__}")
    TASKS[name] = cls
    return cls


def task_target(cls: type) -> str:
    """The import path a task config's `_target_` names: `ssmbench.tasks.<Class>` for a class this package
    exports (the run ids of the built-in tasks hash this string, so it must not move), else the class's own
    module path."""
    if globals().get(cls.__name__) is cls:
        return f"{__name__}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


__all__ = ["IGNORE", "Batch", "Task", "SelectiveCopying", "Copying", "InductionHeads", "MultiQueryAR", "TASKS",
           "register_task", "task_target"]
