"""Command-line entry points: `ssmbench` (train and evaluate, Hydra app) and `ssmbench-report`.

    ssmbench                                         # the default run: Mamba on selective copying, CPU-sized
    ssmbench task=induction model=transformer        # pick groups
    ssmbench -m experiment=demo                      # a whole study (a sweep)
    ssmbench -m model=mamba,s4 task.seq_len=128,256 seed=0,1,2
    ssmbench-report results/demo                     # tables and plots from a results folder
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .callbacks import OUTCOMES
from .checkpoint import CHECKPOINT, run_dir, write_progress, write_run_info
from .config import register_configs
from .gpu_slots import gpu_slot, jobs_per_gpu
from .results import finished, rows_path, run_id, write_rows
from .run import RunConfigError, execute, prepare
from .tracking import make_tracker

log = logging.getLogger("ssmbench")
register_configs()


def _visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# Sizes of the launcher presets (conf/hydra/launcher/local_gpus.yaml, ray.yaml), from SSMBENCH_JOBS_PER_GPU:
# `${ssmbench.gpu_jobs:J}` = visible GPUs (at least 1) x J concurrent jobs; `${ssmbench.gpu_share:J}` = the share of a
# GPU one job asks for (1/J; 0 without a GPU).
OmegaConf.register_new_resolver("ssmbench.gpu_jobs", lambda j: max(1, _visible_gpus()) * int(j), replace=True)
OmegaConf.register_new_resolver("ssmbench.gpu_share", lambda j: 1.0 / int(j) if _visible_gpus() else 0, replace=True)


def _in_sweep() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@contextmanager
def pinned_gpu(device: str, slot_dir: Path) -> Iterator[int | None]:
    """The GPU a job of a multirun sweep is pinned to, for the `with` block: with `device=auto` on a host where CUDA
    sees several GPUs, a GPU with a free slot (ssmbench/gpu_slots.py: the jobs a launcher runs side by side,
    hydra/launcher=local_gpus, spread over the host's GPUs whichever worker takes them). None when nothing is
    pinned (one GPU or none, an explicit device, a single run, or a scheduler that already gave the job one GPU).
    The slots live in `slot_dir`, the study's (not the sweep's folder: its name holds the time, which a worker
    process may resolve differently), so two sweeps of one study on one host share the GPUs too."""
    n = _visible_gpus() if device == "auto" and _in_sweep() else 0
    if n <= 1:
        yield None
        return
    with gpu_slot(slot_dir, n, jobs_per_gpu(), start=HydraConfig.get().job.num % n) as gpu:
        yield gpu


def run_one(cfg: DictConfig) -> list[dict] | None:
    """Run one config, honouring resume; returns its rows (None when skipped)."""
    # In the study's hydra/ folder, which git ignores.
    with pinned_gpu(cfg.device, Path(cfg.results_root) / cfg.study / "hydra" / ".gpu_slots") as gpu:
        return _run_one(cfg, gpu)


def _run_one(cfg: DictConfig, gpu: int | None) -> list[dict] | None:
    try:
        p = prepare(cfg)
    except RunConfigError as e:
        if _in_sweep():
            # One bad point of a sweep must not stop the others: record it as an error row and go on.
            rid = run_id({"invalid": OmegaConf.to_container(cfg, resolve=True)})
            write_rows(rows_path(cfg.results_root, cfg.study, rid),
                       [{"run_id": rid, "study": cfg.study, "task": cfg.task.get("name"),
                         "model": cfg.model.get("name"), "seed": cfg.seed, "status": "error",
                         "error": f"config error: {e}", "config": OmegaConf.to_yaml(cfg, resolve=True)}])
            log.error("config error: %s", e)
            OUTCOMES.append(("invalid", f"{cfg.model.get('name')} on {cfg.task.get('name')}", str(e)))
            return None
        raise
    if gpu is not None:
        # After prepare, so the identity (and run id) keeps device.type alone: a run is the same run on any GPU.
        p.device = torch.device("cuda", gpu)
        torch.cuda.set_device(gpu)  # Triton launches and CUDA graphs use the current device
    opened = open_run(cfg, p)
    if opened is None:
        return None
    rid, path, folder, label = opened
    tracker = make_tracker(cfg.logger, folder, OmegaConf.to_yaml(cfg, resolve=True), rid, f"{label} [{rid}]")
    rows = execute(p, rid, cfg.study, run_folder=folder, save_trained_model=cfg.save_model,
                   on_check=tracker.scalars)
    tracker.finish(rows if rows and rows[0]["status"] != "paused" else [])
    if gpu is not None:
        rows = [{**r, "gpu": gpu} for r in rows]
    if rows and rows[0]["status"] == "paused":
        log.info("run %s (%s) paused at step %d of %d (trainer.max_time_s=%s spent, or SIGTERM); checkpoint at %s: "
                 "run the same command again to continue", rid, label, rows[0]["steps"], p.trainer.steps,
                 p.trainer.max_time_s, folder / CHECKPOINT)
        OUTCOMES.append(("paused", f"{label} at step {rows[0]['steps']}/{p.trainer.steps}", str(folder)))
        return rows
    store_rows(rows, rid, path, folder, label)
    return rows


def open_run(cfg: DictConfig, p, info=log.info) -> tuple[str, Path, Path, str] | None:
    """A prepared run's id, rows file, run folder and label; None (said through `info`) when its rows exist and
    the config resumes. Otherwise its run.json is written, and without `resume` an old checkpoint removed."""
    rid = run_id(p.identity)
    path = rows_path(cfg.results_root, cfg.study, rid)
    folder = run_dir(cfg.results_root, cfg.study, rid)
    label = f"{p.model_cfg.name} on {cfg.task.name}, seed {cfg.seed}"
    if cfg.resume and finished(path, cfg.retry_failed):
        info("skipping run %s (%s): rows exist at %s", rid, label, path)
        OUTCOMES.append(("skipped", label, str(path)))
        return None
    if not cfg.resume:  # start over: a checkpoint left by an earlier call is not continued
        (folder / CHECKPOINT).unlink(missing_ok=True)
    write_run_info(folder, {"run_id": rid, "study": cfg.study, "model": p.model_cfg.name, "task": cfg.task.name,
                            "seed": cfg.seed, "lr": p.trainer.lr, "batch_size": p.trainer.batch_size,
                            "train_len": p.task.seq_len, "steps": p.trainer.steps,
                            "config": OmegaConf.to_yaml(cfg, resolve=True)})
    return rid, path, folder, label


def store_rows(rows: list[dict], rid: str, path: Path, folder: Path, label: str, info=log.info) -> None:
    """A run's rows (finished or failed, not paused) into the store, its progress file, and one log line a row."""
    write_rows(path, rows)
    # A finished run's rows are its result; the checkpoint only served to get here. A run that failed keeps its
    # checkpoint, so that `retry_failed=true` continues it rather than starting over.
    if rows[0]["status"] in ("ok", "nan"):
        (folder / CHECKPOINT).unlink(missing_ok=True)
    write_progress(folder, {"run_id": rid, "status": rows[0]["status"], "step": rows[0].get("steps"),
                            "rows": str(path), "updated": time.strftime("%Y-%m-%d %H:%M:%S")})
    for r in rows:
        info("%s %s L=%s: status=%s accuracy=%.4f params=%s train tok/s=%.0f", r["model"], r["task"],
             r["eval_len"], r["status"], r["accuracy"], r.get("params"), r.get("train_tokens_per_s", float("nan")))
    info("run %s (%s): rows written to %s", rid, label, path)
    status = rows[0]["status"]
    OUTCOMES.append(("finished" if status == "ok" else status, label, str(path)))


@hydra.main(version_base="1.3", config_path="pkg://ssmbench.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Returns the held-out accuracy at the training length (what `hydra/sweeper=optuna` maximises), or None
    for a run skipped, paused or failed."""
    try:
        rows = run_one(cfg)
    except RunConfigError as e:
        print(f"ssmbench: config error: {e}", file=sys.stderr)
        sys.exit(2)
    return training_length_accuracy(rows)


def training_length_accuracy(rows: list[dict] | None) -> float | None:
    for r in rows or []:
        if r.get("status") == "ok" and r.get("eval_len") == r.get("train_len"):
            return float(r["accuracy"])
    return None


def main() -> None:
    _hydra_main()


def report_main(argv: list[str] | None = None) -> None:
    from .report import main as report
    report(argv)


if __name__ == "__main__":
    main()
