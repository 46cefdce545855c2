"""Structured config schemas, registered in Hydra's ConfigStore.

Every group has a dataclass schema, so Hydra rejects a mistyped key or a wrong type before any work starts,
naming the key (`task.seq_lenn`, `trainer.lr=fast`). Values are then checked by the objects themselves
(a task's constructor, the model registry, `validate_trainer`), again naming the key. A task's schema is not
written here: `task_schema` derives it from the task's own dataclass, for every task in `ssmbench.tasks.TASKS`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ssmbench.models.lm import ModelConfig
from ssmbench.tasks import TASKS, task_target


# ---- tasks: one schema per generator, derived from the generator's own dataclass ----------------------------
@dataclass
class TaskConfig:
    _target_: str = MISSING
    name: str = MISSING


def task_schema(name: str, cls: type) -> type:
    """The structured-config schema of task `name`: a TaskConfig whose `_target_` is the class's import path
    (`ssmbench.tasks.task_target`) and `name` is `name`, followed by the class's dataclass fields with their
    types and defaults (a field without a default is MISSING: the task's yaml must set it). Hydra then rejects
    a key the task does not take, or a value of the wrong type, naming `task.<key>` and the schema
    `<Class>Config`."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"task {name!r}: {cls.__qualname__} must be a dataclass (its fields are the config keys)")
    hints = typing.get_type_hints(cls)
    fields: list[tuple] = [("_target_", str, field(default=task_target(cls))), ("name", str, field(default=name))]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in ("_target_", "name"):
            raise TypeError(f"task {name!r}: {cls.__qualname__} has a field {f.name!r}, which the config keeps for "
                            "itself")
        if f.default is not dataclasses.MISSING:
            spec = field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            spec = field(default_factory=f.default_factory)
        else:
            spec = field(default=MISSING)
        fields.append((f.name, hints[f.name], spec))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields, bases=(TaskConfig,),
                                      namespace={"__module__": __name__})


def task_schemas() -> dict[str, type]:
    """name -> schema for every task in the registry (`ssmbench.tasks.TASKS`), at the time of the call."""
    return {name: task_schema(name, cls) for name, cls in TASKS.items()}


# ---- training and evaluation -------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    ssm_lr: Optional[float] = None  # learning rate of the SSM parameter group; None = lr
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 50
    schedule: str = "cosine"  # constant | cosine (after warmup)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    check_every: int = 100  # steps between accuracy checks on held-out data (for early stop and the log)
    check_batch_size: Optional[int] = None  # sequences per check; None = batch_size (one training batch)
    target_accuracy: Optional[float] = None  # stop early once held-out accuracy reaches this (0..1)
    max_train_time_s: Optional[float] = None  # cap on training time summed over resumes; the run then finishes
    step_mode: str = "auto"  # auto (graphs on CUDA, eager on CPU) | eager | graphs (the step as one CUDA graph)
    # torch.compile of the forward and loss (their backward with them): none | default |
    # max-autotune-no-cudagraphs (modes that bring their own CUDA graphs would fight step_mode=graphs)
    compile: str = "none"
    # ---- how this invocation runs; none of these changes the result, so none enters the run id ----
    max_time_s: Optional[float] = None  # this call's wall-clock budget: then checkpoint and pause (status paused)
    checkpoint_every_s: Optional[float] = 600.0  # write a checkpoint this often (and at every pause)
    checkpoint_every_steps: Optional[int] = None  # and/or every this many steps
    log_every: int = 100  # steps between reads of the device-side loss/accuracy (each read waits for the GPU)
    progress: bool = True  # progress bar with loss and accuracy


# Keys of TrainerConfig that say how a call runs, not what it computes: a paused run continues under other values.
INVOCATION_KEYS = ("max_time_s", "checkpoint_every_s", "checkpoint_every_steps", "log_every", "progress",
                   "step_mode", "compile")


@dataclass
class EvalConfig:
    lengths: list[int] = field(default_factory=list)  # empty: evaluate at the training length only
    batch_size: int = 64
    batches: int = 4
    max_tokens: int = 1 << 22  # per batch; long lengths get smaller batches (at least 1 sequence)
    time_budget_s: Optional[float] = None  # per length: no new batch once this is spent (the row counts what ran)


@dataclass
class Config:
    task: Any = MISSING
    model: ModelConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    study: str = "default"  # names the results folder: <results_root>/<study>/ (experiment files set it)
    results_root: str = "results"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = True  # skip runs whose rows already exist, continue runs that left a checkpoint
    save_model: bool = True  # keep the trained model (runs/<run_id>/model.pt) for ssmbench-eval
    logger: str = "none"  # none | tensorboard | wandb | mlflow (offline, under runs/<run_id>/; ssmbench/tracking.py)
    retry_failed: bool = False  # with resume, run again the runs whose rows record a failure


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name, schema in task_schemas().items():
        cs.store(group="task", name=f"{name}_schema", node=schema)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)


def compose_config(overrides: list[str]):
    """The run config that `ssmbench <overrides>` would get, composed outside a Hydra app (benchmarks, tests)."""
    from hydra import compose, initialize_config_module

    register_configs()
    with initialize_config_module(config_module="ssmbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)
