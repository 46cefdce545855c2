"""One run: validate the config, build task and model, train, evaluate at every length, return the rows.

Everything that can be checked is checked before training starts (`prepare`), so a bad config fails in
seconds, naming the key. Failures after that (divergence, out of memory, a crash in a layer) become rows with
their status and error, so a sweep keeps going and the report shows what happened.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ssmbench.kernels.selective_scan import BackendUnavailable, available_backends, resolve_backend
from ssmbench.models.lm import LanguageModel, ModelConfig
from ssmbench.models.registry import ConfigError, check_block_keys

from .checkpoint import save_model
from .config import INVOCATION_KEYS, EvalConfig, TrainerConfig
from .env import environment
from .env import resolve_device as _resolve_device
from .evaluate import autocast_factory, evaluate_length
from .gpu_turns import GPU_TURNS
from .metrics import free_cached_memory, is_out_of_memory
from .results import rows_dir
from .tracking import TrackingError, check_logger
from .train import TrainerConfigError, train, validate_trainer

log = logging.getLogger("ssmbench")


class RunConfigError(ValueError):
    """The config cannot describe a run; the message names the key."""


@dataclass
class Prepared:
    cfg: DictConfig
    task: Any
    task_params: dict[str, Any]
    model_cfg: ModelConfig
    trainer: TrainerConfig
    eval: EvalConfig
    device: torch.device
    precision: str
    eval_lengths: list[int]
    identity: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    return _resolve_device(name, RunConfigError)


def build_task(task_cfg: DictConfig):
    params = {k: v for k, v in OmegaConf.to_container(task_cfg, resolve=True).items() if k not in ("_target_", "name")}
    try:
        cls = get_class(task_cfg._target_)
    except Exception as e:
        raise RunConfigError(f"task._target_={task_cfg._target_!r} cannot be imported: {e}") from e
    try:
        return cls(**params), params
    except (ValueError, TypeError) as e:
        raise RunConfigError(f"task.{e}" if str(e).split()[0] in params else f"task: {e}") from e


def check_block_keys_used(model_cfg: ModelConfig) -> None:
    """model.expand, d_conv (mamba block), shift_d_state (h3), mlp_ratio (transformer, rnn): a block that does not
    use one takes it silently, so a value away from the default on such a block is a config error."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}
    check_block_keys(model_cfg.arch, dataclasses.asdict(model_cfg), defaults)


def check_scan_backend(model_cfg: ModelConfig, device: torch.device, device_key: str) -> None:
    """An explicit model.layer.scan_backend (triton, mamba_ssm) must be able to run on the run's device; otherwise
    the run would fail at its first step."""
    backend = dict(model_cfg.layer).get("scan_backend", "auto")
    try:
        scan_backend_of(model_cfg, device)
    except BackendUnavailable as e:
        on = f"device={device_key}" + (f" ({device})" if device_key != str(device) else "")
        raise RunConfigError(f"model.layer.scan_backend={backend} cannot run on {on}: {str(e).split(': ', 1)[-1]}; "
                             f"backends that can run here: auto, {', '.join(available_backends(device))}") from e


def check_eval_lengths(lengths: list[int]) -> None:
    seen, dups = set(), []
    for L in lengths:
        if L in seen and L not in dups:
            dups.append(L)
        seen.add(L)
    if dups:
        raise RunConfigError(f"eval.lengths={list(lengths)} repeats {', '.join(map(str, dups))}: each length is "
                             "evaluated once and gives one row; list every length once")


def check_study(study: str, results_root: str) -> None:
    """The study names a folder inside results_root: relative, not empty, and no '..' that leaves it."""
    s = str(study)
    norm = os.path.normpath(s) if s else ""
    if not s.strip() or os.path.isabs(s) or norm in (".", "") or norm == ".." or norm.startswith(".." + os.sep):
        raise RunConfigError(f"study={s!r} does not name a folder inside results_root={results_root!r}: a study is a "
                             "relative folder name such as study=demo or study=sweeps/a (no absolute path, no '..' "
                             "leading out)")


def results_write_problem(folder: Path) -> str | None:
    """None when `folder` is a writable folder or can be created as one; otherwise why not. Leaves nothing behind:
    a folder not there yet is checked through its nearest existing parent (where it would be created)."""
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} exists and is not a folder"
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".ssmbench-write-check-", suffix=".tmp")
    except OSError as e:
        return f"cannot create a file in {probe}: {e.strerror or e}"
    os.close(fd)
    os.unlink(tmp)
    return None


def check_results_writable(results_root: str, study: str) -> None:
    folder = rows_dir(results_root, study)
    problem = results_write_problem(folder)
    if problem is not None:
        raise RunConfigError(f"results_root={results_root!r} (study={study!r}): rows cannot be written to {folder}: "
                             f"{problem}")


def prepare(cfg: DictConfig) -> Prepared:
    """All validation that needs no training. Raises RunConfigError naming the offending key."""
    task, task_params = build_task(cfg.task)
    model_cfg = OmegaConf.to_object(cfg.model)
    trainer = OmegaConf.to_object(cfg.trainer)
    ev = OmegaConf.to_object(cfg.eval)
    try:
        validate_trainer(trainer)
        # Building the model on the meta device checks every model key (names, sizes, heads | d_model) at no cost.
        with torch.device("meta"):
            LanguageModel(model_cfg, task.vocab_size)
        check_block_keys_used(model_cfg)
    except (ConfigError, TrainerConfigError) as e:
        raise RunConfigError(str(e)) from e
    except ValueError as e:
        raise RunConfigError(f"model: {e}") from e
    try:
        check_logger(cfg.get("logger", "none"))
    except TrackingError as e:
        raise RunConfigError(str(e)) from e
    device = resolve_device(cfg.device)
    check_scan_backend(model_cfg, device, str(cfg.device))
    precision = trainer.precision if trainer.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    lengths = list(ev.lengths) or [task.seq_len]
    check_eval_lengths(lengths)
    for key in ("batch_size", "batches", "max_tokens"):
        if getattr(ev, key) <= 0:
            raise RunConfigError(f"eval.{key} must be > 0, got {getattr(ev, key)}")
    for L in lengths:
        try:
            task.sample(1, L, torch.Generator().manual_seed(0)) if L <= 4096 else None
        except ValueError as e:
            raise RunConfigError(f"eval.lengths: {L} is not a valid length for this task: {e}") from e
    if cfg.seed < 0:
        raise RunConfigError(f"seed must be >= 0, got {cfg.seed}")
    check_study(cfg.study, cfg.results_root)
    # Last, once the config is known good: that the rows can be stored, before any training is spent on them.
    check_results_writable(cfg.results_root, cfg.study)
    identity = {
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "trainer": {k: v for k, v in dataclasses.asdict(trainer).items() if k not in INVOCATION_KEYS},
        "eval": dataclasses.asdict(ev),
        "seed": cfg.seed,
        "device": device.type,
    }
    return Prepared(cfg, task, task_params, model_cfg, trainer, ev, device, precision, lengths, identity)


def scan_backend_of(model_cfg: ModelConfig, device: torch.device) -> str:
    layer = dict(model_cfg.layer)
    if layer.get("name") != "s6":
        return "none"
    return resolve_backend(layer.get("scan_backend", "auto"), device)


def check_seed_of(seed: int) -> int:
    """Held-out data comes from generators seeded apart from training, the same for every model with this seed:
    the checks during training use this seed, evaluation at length L `check_seed_of(seed) + 7919 * L`."""
    return 1_000_003 + seed


def eval_generator_seed(seed: int, length: int) -> int:
    return check_seed_of(seed) + 7919 * length


def base_row(p: Prepared, run_id: str, study: str) -> dict[str, Any]:
    """The columns every row of a run carries: what was run, on what."""
    return {
        "run_id": run_id,
        "study": study,
        "task": p.cfg.task.name,
        **{f"task.{k}": v for k, v in p.task_params.items()},
        "model": p.model_cfg.name,
        "arch": p.model_cfg.arch,
        "layer": p.model_cfg.layer.get("name"),
        "d_model": p.model_cfg.d_model,
        "n_layers": p.model_cfg.n_layers,
        "seed": p.cfg.seed,
        "train_len": p.task.seq_len,
        "batch_size": p.trainer.batch_size,
        "lr": p.trainer.lr,
        "precision": p.precision,
        "scan_backend": scan_backend_of(p.model_cfg, p.device),
        **environment(p.device),
        "config": OmegaConf.to_yaml(p.cfg, resolve=True),
    }


def build_model(p: Prepared) -> LanguageModel:
    """The run's model, initialised from its seed, on its device."""
    with GPU_TURNS.exclusive():  # the global generator is the process's: runs in threads take turns
        torch.manual_seed(p.cfg.seed)  # parameter init only; tasks draw from their own generator
        model = LanguageModel(p.model_cfg, p.task.vocab_size)
    return model.to(p.device)


def train_fields(res, params: int) -> dict[str, Any]:
    """The training columns of a run's rows, from its TrainResult."""
    return {
        "params": params,
        "steps": res.steps,
        "stopped_early": res.stopped_early,
        "train_time_s": res.train_time_s,
        "train_tokens_per_s": res.train_tokens_per_s,
        "train_peak_mem_bytes": res.train_peak_mem_bytes,
        "final_train_loss": res.final_train_loss,
        "final_train_accuracy": res.final_train_accuracy,
        "history": res.history,
        "resumes": res.resumes,
        "step_mode": res.step_mode,
        "step_mode_reason": res.step_mode_reason,
        "compile": res.compile,
        # every training call's options ("A then B" where pieces differed); `kernel_options` is this process's
        "train_kernel_options": res.kernel_options,
    }


def error_rows(p: Prepared, base: dict, params: int, e: BaseException, started: float) -> list[dict[str, Any]]:
    """The rows of a run that failed after validation (an error is a result, not a crash of the sweep)."""
    oom = is_out_of_memory(e)
    free_cached_memory(p.device)
    status = "oom" if oom else "error"
    log.error("run %s failed (%s): %s", base["run_id"], status, e)
    err = str(e).splitlines()[0] if oom else "".join(traceback.format_exception_only(type(e), e)).strip()
    return [{**base, "params": params, "eval_len": L, "status": status, "error": err[:2000],
             "accuracy": math.nan, "loss": math.nan, "steps": 0, "wall_s": time.perf_counter() - started}
            for L in p.eval_lengths]


def evaluated_rows(p: Prepared, model, res, base: dict, fields: dict, started: float) -> list[dict[str, Any]]:
    """A trained run's rows, one per evaluation length (status ok), or its training's outcome at every length
    (nan, ...)."""
    autocast = autocast_factory(p.device, p.precision)
    rows = []
    for L in p.eval_lengths:
        if res.status != "ok":
            ev = {"eval_len": L, "status": res.status, "error": res.error, "accuracy": math.nan, "loss": math.nan}
        else:
            g = torch.Generator(device=p.device).manual_seed(eval_generator_seed(p.cfg.seed, L))
            try:
                with GPU_TURNS.shared():
                    ev = evaluate_length(model, p.task, L, g, p.eval.batches, p.eval.batch_size, p.eval.max_tokens,
                                         p.device, autocast, p.eval.time_budget_s)
            except Exception as e:
                ev = {"eval_len": L, "status": "error", "accuracy": math.nan, "loss": math.nan,
                      "error": "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]}
        rows.append({**base, **fields, **ev})
    wall = time.perf_counter() - started
    return [{**r, "wall_s": wall} for r in rows]


def execute(p: Prepared, run_id: str, study: str, run_folder: Path | None = None,
            save_trained_model: bool = False, on_check=None) -> list[dict[str, Any]]:
    """Train and evaluate; always returns rows (one per evaluation length), whatever happened. With `run_folder`
    the run checkpoints there and continues from a checkpoint it finds; a run that pauses (its `max_time_s`
    budget spent, or SIGTERM) returns rows with status "paused", which are not results: the caller keeps them out
    of the store. A finished run's model is kept in `run_folder` when `save_trained_model`."""
    started = time.perf_counter()
    base = base_row(p, run_id, study)
    autocast = autocast_factory(p.device, p.precision)
    gen = torch.Generator(device=p.device).manual_seed(p.cfg.seed)
    check_seed = check_seed_of(p.cfg.seed)
    params = 0
    try:
        model = build_model(p)
        params = model.num_parameters()
        res = train(model, p.task, p.trainer, p.device, p.precision, autocast, gen, check_seed,
                    desc=f"{p.model_cfg.name} {p.cfg.task.name} L={p.task.seq_len} seed={p.cfg.seed} [{run_id}]",
                    run_folder=run_folder, run_id=run_id, on_check=on_check)
    except Exception as e:  # everything after validation is a result, not a crash of the sweep
        return error_rows(p, base, params, e, started)
    fields = train_fields(res, params)
    if res.status == "paused":
        return [{**base, **fields, "eval_len": L, "status": "paused", "error": "", "accuracy": math.nan,
                 "loss": math.nan, "wall_s": time.perf_counter() - started} for L in p.eval_lengths]
    if res.status == "ok" and run_folder is not None and save_trained_model:
        save_model(run_folder, model, kept_model_meta(p, run_id, res.steps))
    return evaluated_rows(p, model, res, base, fields, started)


def kept_model_meta(p: Prepared, run_id: str, steps: int) -> dict[str, Any]:
    """What ssmbench-eval needs besides the weights: the model and task to rebuild, and how it was run."""
    return {"run_id": run_id, "model_cfg": dataclasses.asdict(p.model_cfg),
            "task": OmegaConf.to_container(p.cfg.task, resolve=True), "vocab_size": p.task.vocab_size,
            "seed": p.cfg.seed, "precision": p.precision, "steps": steps,
            "config": OmegaConf.to_yaml(p.cfg, resolve=True)}
