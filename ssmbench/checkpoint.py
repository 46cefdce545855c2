"""Durable runs: training checkpoints and kept models, next to the run's rows.

    <results_root>/<study>/rows/<run_id>.json          the finished run's rows (results.py)
    <results_root>/<study>/runs/<run_id>/checkpoint.pt  a run in progress: everything needed to continue it
    <results_root>/<study>/runs/<run_id>/progress.json  where it stands (step, status, held-out checks so far)
    <results_root>/<study>/runs/<run_id>/run.json       what the run is (model, task, seed, lr, steps, config)
    <results_root>/<study>/runs/<run_id>/model.pt       the trained model, kept for `ssmbench-eval`

Both .pt files are plain `torch.save` dicts of tensors, numbers, strings and lists, loadable with
`weights_only=True`, and written atomically (temp file, fsync, rename): a kill mid-write leaves the previous file
intact. A checkpoint that cannot be read is reported by name, moved aside, and the run starts over.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from .results import atomic_write, atomic_write_text

log = logging.getLogger("ssmbench")

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
PROGRESS = "progress.json"
RUN_INFO = "run.json"


def run_dir(results_root: str | Path, study: str, rid: str) -> Path:
    return Path(results_root) / study / "runs" / rid


def atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def to_cpu(obj: Any) -> Any:
    """A state dict with every tensor on the CPU (so a checkpoint loads on a machine without the GPU)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_torch_save(to_cpu(state), path)


def load_checkpoint(path: Path, run_id: str) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none. One that cannot be read, or that belongs to another
    run, is moved aside (`<name>.bad-<time>`) with a warning naming it, and the run starts over: never a crash
    loop on a file that will not load."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a ssmbench training checkpoint (no 'step')")
        if state.get("run_id") != run_id:
            raise ValueError(f"written for run {state.get('run_id')!r}, not {run_id!r}")
    except Exception as e:  # truncated, corrupt, foreign: all mean "start over"
        aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
        os.replace(path, aside)
        log.warning("checkpoint %s cannot be used (%s: %s); moved to %s, the run starts over", path,
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "", aside.name)
        return None
    return state


def write_progress(folder: Path, progress: dict[str, Any]) -> None:
    atomic_write_text(folder / PROGRESS, json.dumps(progress, indent=1, default=str) + "\n")


def write_run_info(folder: Path, info: dict[str, Any]) -> None:
    atomic_write_text(folder / RUN_INFO, json.dumps(info, indent=1, default=str) + "\n")


def save_model(folder: Path, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """The trained weights plus what rebuilds the model and its task (`meta`: model config, task config,
    vocab size, run id, seed, precision, eval settings)."""
    path = folder / MODEL
    atomic_torch_save({"model": to_cpu(model.state_dict()), **meta}, path)
    return path


def load_kept_model(path: Path):
    """A kept model's file and the model rebuilt from it (eval mode, on the CPU): (kept dict, LanguageModel)."""
    from ssmbench.models.lm import LanguageModel, ModelConfig

    kept = load_model_file(path)
    model = LanguageModel(ModelConfig(**kept["model_cfg"]), kept["vocab_size"])
    model.load_state_dict(kept["model"])
    return kept, model.eval()


def load_model_file(path: Path) -> dict[str, Any]:
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} cannot be read as a kept model: {type(e).__name__}: {e}") from e
    if not isinstance(kept, dict) or "model" not in kept or "model_cfg" not in kept:
        raise ValueError(f"{path} is not a ssmbench kept model (needs 'model' and 'model_cfg')")
    return kept
