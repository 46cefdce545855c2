"""What every figure family shares: the models (fresh, or one kept trained model in its role), the sequences they
read, hooks that catch a layer's inputs, and the record of a drawn figure (file and caption).

Nothing here changes the model code: intermediate values come from forward hooks and the layers' own helpers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from ssmbench.checkpoint import load_kept_model
from ssmbench.models.lm import LanguageModel, ModelConfig
from ssmbench.models.registry import ConfigError
from ssmbench.run import RunConfigError
from ssmbench.run import build_task as build_run_task
from ssmbench.tasks import InductionHeads, SelectiveCopying

from .config import ROLES, ExplainConfig, ExplainConfigError

# Token classes of a selective-copying sequence, drawn as a strip above the per-position panels.
TOKEN_COLOURS = {"noise": "#d9d9d9", "data": "#000000", "marker": "#969696"}
DATA_MARK = "#000000"  # data-token positions in line plots (thin vertical lines)


@dataclass
class Drawn:
    """One figure: its file stem, title (a line of captions.md) and caption."""

    key: str
    title: str
    caption: str
    png: Path


@dataclass
class Figured:
    """A model in one role of the figures. `name` is the model's config name (its colour: plots.model_colour)."""

    role: str
    name: str
    model: LanguageModel
    provenance: str  # "fresh, random initialisation with seed 0" or "trained, <path>, run ..., N steps on ..."
    trained: bool


@dataclass
class Setting:
    """Everything the figure families read: the models by role, the two tasks and their sequences."""

    cfg: ExplainConfig
    models: dict[str, Figured]
    copy_task: SelectiveCopying
    copy_inputs: torch.Tensor  # Long[L]
    induction_task: InductionHeads
    induction_inputs: torch.Tensor  # Long[L]
    kept: dict[str, Any] | None


# ---------------------------------------------------------------------------------------------------------------
# Models and inputs

def role_of(model_cfg: ModelConfig) -> str:
    """The role a kept model takes: that of the fresh model with the same sequence layer."""
    layer = dict(model_cfg.layer).get("name")
    for role, name in ROLES.items():
        if name == layer:
            return role
    raise ExplainConfigError(f"model_path: the kept model's layer {layer!r} has no figure; the figures read the "
                             f"layers {sorted(ROLES.values())}")


def build_fresh(role: str, model_cfg: ModelConfig, vocab_size: int, seed: int) -> LanguageModel:
    torch.manual_seed(seed)
    try:
        return LanguageModel(model_cfg, vocab_size).eval()
    except ConfigError as e:
        raise ExplainConfigError(f"models.{role}: {e}") from e


def load_kept(path: str) -> tuple[dict[str, Any], LanguageModel]:
    """A kept model (checkpoint.save_model's file: weights, model config, task, vocab size) and its model."""
    try:
        return load_kept_model(Path(path))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ExplainConfigError(f"model_path={path}: {type(e).__name__}: {e}") from e


def build_task(task: dict[str, Any]):
    """The kept model's task, from its config (_target_ and the constructor's arguments): run.build_task's."""
    try:
        return build_run_task(OmegaConf.create(task))[0]
    except RunConfigError as e:  # an import error, or a task whose arguments have changed since the run
        raise ExplainConfigError(f"model_path: the kept model's task {task} cannot be rebuilt: {e}") from e


def make_setting(cfg: ExplainConfig) -> Setting:
    kept, kept_model, kept_role = None, None, None
    if cfg.model_path:
        kept, kept_model = load_kept(cfg.model_path)
        kept_role = role_of(kept_model.cfg)
    vocab = kept["vocab_size"] if kept else cfg.inputs.vocab_size
    kept_task = build_task(kept["task"]) if kept and "task" in kept else None

    models = {}
    for role, model_cfg in cfg.models.items():
        if role == kept_role:
            task = kept.get("task") or {}
            models[role] = Figured(role, kept_model.cfg.name, kept_model,
                                   f"trained, {cfg.model_path}, run {kept.get('run_id')}, {kept.get('steps')} steps "
                                   f"on {task.get('name', '?')} at L={task.get('seq_len', '?')}", True)
        else:
            models[role] = Figured(role, model_cfg.name, build_fresh(role, model_cfg, vocab, cfg.seed),
                                   f"fresh, random initialisation with seed {cfg.seed}", False)

    # Selective copying: the kept model's own task when it is one (its data count, its training length).
    try:
        if isinstance(kept_task, SelectiveCopying):
            copy_task = SelectiveCopying(seq_len=cfg.inputs.seq_len or kept_task.seq_len,
                                         vocab_size=kept_task.vocab_size, n_data=kept_task.n_data)
        else:
            copy_task = SelectiveCopying(seq_len=cfg.inputs.seq_len or 64, vocab_size=vocab, n_data=cfg.inputs.n_data)
    except ValueError as e:
        raise ExplainConfigError(f"inputs (selective copying): {e}") from e
    try:
        ind_len = cfg.inputs.induction_len or (kept_task.seq_len if isinstance(kept_task, InductionHeads) else 32)
        ind_task = InductionHeads(seq_len=ind_len, vocab_size=vocab)
    except ValueError as e:
        raise ExplainConfigError(f"inputs.induction_len: {e}") from e
    g = torch.Generator().manual_seed(cfg.seed)
    copy_inputs = copy_task.sample(1, generator=g).inputs[0]
    ind_inputs = ind_task.sample(1, generator=g).inputs[0]
    for role, m in models.items():
        if cfg.block >= len(m.model.blocks):
            raise ExplainConfigError(f"block={cfg.block}, but the {role} model ({m.name}) has "
                                     f"{len(m.model.blocks)} blocks")
    return Setting(cfg, models, copy_task, copy_inputs, ind_task, ind_inputs, kept)


# ---------------------------------------------------------------------------------------------------------------
# Hooks and helpers

@contextmanager
def catch_call(module: nn.Module):
    """Within the block, the positional and keyword inputs and the output of `module`'s last call."""
    store: dict[str, Any] = {}

    def hook(_mod, args, kwargs, out):
        store.update(args=args, kwargs=kwargs, out=out)

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield store
    finally:
        handle.remove()


@torch.no_grad()
def layer_io(model: LanguageModel, block: int, inputs: torch.Tensor) -> dict[str, Any]:
    """Run the model on one sequence (Long[L]) and return what the sequence layer of `block` saw and gave."""
    layer = model.blocks[block].layer
    with catch_call(layer) as store:
        model(inputs[None])
    if "args" not in store:
        raise RuntimeError(f"{type(layer).__name__} of block {block} was not called through forward() "
                           "(a fused path bypassed it); run on the CPU")
    return store


def token_classes(task: SelectiveCopying, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Positions of noise, data and marker tokens in a selective-copying sequence (see its docstring)."""
    context = inputs.shape[0] - task.n_data
    pos = torch.arange(inputs.shape[0])
    return {"noise": pos[(inputs == 0) & (pos < context)], "data": pos[(inputs >= 2) & (pos < context)],
            "marker": pos[pos >= context]}


def token_strip(ax, task: SelectiveCopying, inputs: torch.Tensor) -> None:
    """A one-row strip: noise, data and marker positions in their colours, with a legend beside it."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    classes = token_classes(task, inputs)
    row = torch.zeros(inputs.shape[0], dtype=torch.long)
    for i, name in enumerate(TOKEN_COLOURS):
        row[classes[name]] = i
    ax.imshow(row[None].numpy(), aspect="auto", cmap=ListedColormap(list(TOKEN_COLOURS.values())), vmin=0,
              vmax=len(TOKEN_COLOURS) - 1, interpolation="nearest", extent=(-0.5, inputs.shape[0] - 0.5, 0, 1))
    ax.set_yticks([])
    ax.set_ylabel("token", rotation=0, ha="right", va="center")
    ax.tick_params(axis="x", labelbottom=False)
    ax.legend([Patch(color=c, ec="black", lw=0.5) for c in TOKEN_COLOURS.values()], list(TOKEN_COLOURS),
              loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=3, frameon=False, fontsize=8,
              borderaxespad=0.1, handlelength=1.2)


def mark_data(ax, task: SelectiveCopying, inputs: torch.Tensor, label: bool = True) -> None:
    """Thin vertical lines at the data-token positions and a shaded band over the markers."""
    classes = token_classes(task, inputs)
    for i, p in enumerate(classes["data"].tolist()):
        ax.axvline(p, color=DATA_MARK, lw=0.6, ls=":", alpha=0.8, label="data token" if label and i == 0 else None)
    m = classes["marker"]
    if len(m):
        ax.axvspan(m[0] - 0.5, m[-1] + 0.5, color=TOKEN_COLOURS["marker"], alpha=0.2, lw=0,
                   label="markers" if label else None)


def provenance_line(setting: Setting, roles: list[str]) -> str:
    return "; ".join(f"{setting.models[r].name}: {setting.models[r].provenance}" for r in roles)

